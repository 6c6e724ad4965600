"""Double well 2-D: a tilted quartic well in x times a harmonic well in y.

U(x, y) = barrier (x^2 - 1)^2 - tilt x + y^2 / 2 at temperature T (beta = 1 / T). With the
defaults (barrier 3, tilt 0.5, T = 1) there are two wells near x = +-1 separated by a
barrier of 2.5 kT (from the left well) to 3.5 kT (from the right); the tilt makes the
right well about 2.5 times more likely (weights 0.71 / 0.29, ``right_well``). x and y separate, so

    log Z = log int e^{-beta (barrier (x^2-1)^2 - tilt x)} dx + log sqrt(2 pi T),

the first factor by 1-D adaptive quadrature, the second exactly; the mean energy
<U> = <barrier (x^2-1)^2 - tilt x> + T/2 likewise.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from scipy.integrate import quad

import fepy

DEFAULTS = dict(
    seed=0,
    particles=4000,
    steps=300,
    solver="wfr",  # wfr | wasserstein | fisher_rao
    step_size=0.1,
    barrier=3.0,
    tilt=0.5,
    temperature=1.0,
    base_scale=2.0,
    islands=16,
)


def exact(barrier: float, tilt: float, temperature: float) -> dict:
    """log Z, F = -T log Z, <U> and the weight of x > 0 by quadrature in x (and exactly in y)."""
    beta = 1.0 / temperature
    u = lambda x: barrier * (x**2 - 1) ** 2 - tilt * x  # noqa: E731
    # shift by the minimum of u so that the integrand stays O(1) at low temperature
    u_min = min(u(x) for x in np.linspace(-2, 2, 4001))
    weight = lambda x: np.exp(-beta * (u(x) - u_min))  # noqa: E731
    opts = dict(epsabs=0, epsrel=1e-13, limit=200)
    z_x, _ = quad(weight, -np.inf, np.inf, **opts)
    u_x, _ = quad(lambda x: u(x) * weight(x), -np.inf, np.inf, **opts)
    z_right, _ = quad(weight, 0, np.inf, **opts)
    log_z = float(np.log(z_x) - beta * u_min + 0.5 * np.log(2 * np.pi * temperature))
    return dict(
        log_z=log_z,
        free_energy=-temperature * log_z,
        energy=float(u_x / z_x + temperature / 2),
        right_well=float(z_right / z_x),
    )


REFERENCE = exact(DEFAULTS["barrier"], DEFAULTS["tilt"], DEFAULTS["temperature"])


def reference(config) -> dict:
    """The exact figures for another barrier, tilt or temperature (``fepy run --set``)."""
    c = {**DEFAULTS, **config}
    if (c["barrier"], c["tilt"], c["temperature"]) == (DEFAULTS["barrier"], DEFAULTS["tilt"], DEFAULTS["temperature"]):
        return dict(REFERENCE)
    return exact(c["barrier"], c["tilt"], c["temperature"])


class DoubleWell(fepy.Energy):
    """U(x, y) = barrier (x^2 - 1)^2 - tilt x + y^2 / 2."""

    barrier: float = 3.0
    tilt: float = 0.5
    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        return self.barrier * (x[0] ** 2 - 1) ** 2 - self.tilt * x[0] + 0.5 * x[1] ** 2


def right_well(target, particles) -> float:
    """Weight of the particles with x > 0."""
    return float(jnp.sum(particles.weights * (particles.positions[:, 0] > 0)))


def observables(target, particles) -> dict:
    """Figures written to summary.json beside the solver's estimates."""
    return dict(right_well=right_well(target, particles))


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    temperature = float(c["temperature"])
    # T = 0 would divide by zero; beta = inf is then refused by fepy.Energy like any bad beta
    beta = math.inf if temperature == 0 else 1.0 / temperature
    try:
        target = DoubleWell(c["barrier"], c["tilt"], beta=beta)
    except ValueError as e:
        raise ValueError(f"temperature must be finite and > 0, got {temperature} ({e})") from e
    base = dist.Normal(jnp.zeros(2), c["base_scale"]).to_event(1)
    family = fepy.Particles.from_base(base, c["particles"], key=jax.random.key(c["seed"]))
    schedule = fepy.Power(max(c["steps"] // 2, 1), exponent=4.0)
    move = fepy.MALA(step_size=c["step_size"])
    solver = fepy.particle_solver(c["solver"], schedule=schedule, move=move, islands=c["islands"])
    return fepy.Problem(target, family, solver, c["steps"])
