"""Many-Well 32-D: 16 independent copies of the 2-D double well of the FAB paper.

E(d, v) = -0.5 d - 6 d^2 + d^4 + v^2 / 2 for each pair (x_{2i}, x_{2i+1}) = (d, v), at
beta = 1. The pairs separate, so log Z = 16 log(int e^{0.5d + 6d^2 - d^4} dd * sqrt(2 pi))
= 16 x 10.29348 = 164.6957, computed here by 1-D quadrature. Each copy has two wells near
d = +-1.7 holding 0.844 / 0.156 of the mass, so the target has 2^16 modes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from scipy.integrate import quad

import fepy

DEFAULTS = dict(
    seed=0,
    particles=10_000,
    steps=800,
    copies=16,
    solver="wfr",  # wfr | wasserstein | fisher_rao
    move="hmc",  # hmc | mala
    step_size=0.1,
    leapfrog_steps=10,
    base_scale=2.0,
    moves_per_step=1,
    islands=4,  # few large islands: SMC error grows fast as particles per island fall in 32-D
    schedule="power",  # power: lambda = (k / (steps/2))^4 | adaptive: conditional-ESS tempering
    cess=0.95,
)


def log_z_per_copy() -> float:
    """log of int e^{0.5 d + 6 d^2 - d^4} dd * sqrt(2 pi), by adaptive quadrature (rel. error 1e-13)."""
    integral, _ = quad(lambda d: np.exp(0.5 * d + 6 * d**2 - d**4), -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    return float(np.log(integral) + 0.5 * np.log(2 * np.pi))


REFERENCE = dict(log_z=16 * log_z_per_copy(), free_energy=-16 * log_z_per_copy())


class ManyWell(fepy.Energy):
    """sum over copies of -0.5 d - 6 d^2 + d^4 + v^2/2, with x = (d_1, v_1, d_2, v_2, ...)."""

    dim: int
    beta: float = 1.0

    def energy(self, x):
        d, v = x[0::2], x[1::2]
        return jnp.sum(-0.5 * d - 6 * d**2 + d**4 + 0.5 * v**2)


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    target = ManyWell(dim=2 * c["copies"])
    base = dist.Normal(jnp.zeros(target.dim), c["base_scale"]).to_event(1)
    family = fepy.Particles.from_base(base, c["particles"], key=jax.random.key(c["seed"]))
    if c["schedule"] == "adaptive":
        schedule = fepy.AdaptiveCESS(cess=c["cess"])
    else:
        schedule = fepy.Power(c["steps"] // 2, exponent=4.0)
    if c["move"] == "hmc":
        move = fepy.HMC(step_size=c["step_size"], num_steps=c["leapfrog_steps"])
    else:
        move = fepy.MALA(step_size=c["step_size"])
    solver = fepy.particle_solver(
        c["solver"], schedule=schedule, move=move, islands=c["islands"], moves_per_step=c["moves_per_step"]
    )
    return fepy.Problem(target, family, solver, c["steps"])
