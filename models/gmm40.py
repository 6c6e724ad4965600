"""GMM40: the 40-mode 2-D Gaussian mixture of the FAB paper (Midgley et al., ICLR 2023).

Equal weights, means drawn uniformly in [-40, 40]^2 from a fixed seed, isotropic
standard deviation softplus(1) = 1.3133. The energy is U(x) = -log p(x) of the
*normalised* mixture at beta = 1, so log Z = 0 exactly and F = 0.

The means come from ``jax.random.key(mean_seed)``, not from FAB's torch seed, so the
layout differs from FAB's figure while every property (box, widths, log Z) is the same.
"""

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import fepy

DEFAULTS = dict(
    seed=0,
    particles=10_000,
    steps=500,
    solver="wfr",  # wfr | wasserstein | fisher_rao
    step_size=1.0,
    base_scale=30.0,
    islands=16,
    mean_seed=0,
)
REFERENCE = dict(log_z=0.0, free_energy=0.0, modes=40)

MODES = 40
STD = float(jax.nn.softplus(1.0))  # 1.3133


class GaussianMixture(fepy.Energy):
    """U(x) = -log (1/K) sum_k N(x; mu_k, sigma^2 I), a normalised mixture: Z = 1 at beta = 1."""

    means: jax.Array
    std: float
    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        log_components = jnp.sum(
            jax.scipy.stats.norm.logpdf(x, self.means, self.std), axis=-1
        )
        return -(jax.nn.logsumexp(log_components) - jnp.log(self.means.shape[0]))


def mixture_means(seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (MODES, 2), minval=-40.0, maxval=40.0)


def mode_weights(target: GaussianMixture, particles: fepy.Particles) -> jax.Array:
    """Weight of the particles nearest each mixture mean (sums to 1)."""
    d2 = jnp.sum((particles.positions[:, None, :] - target.means[None]) ** 2, axis=-1)
    nearest = jnp.argmin(d2, axis=1)
    return jnp.zeros(target.means.shape[0]).at[nearest].add(particles.weights)


def observables(target, particles) -> dict:
    """Figures written to summary.json beside the solver's estimates."""
    w = mode_weights(target, particles)
    return dict(
        modes=int(jnp.sum((w > 1 / 80) & (w < 1 / 20))),
        mode_weight_min=float(w.min()),
        mode_weight_max=float(w.max()),
    )


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    target = GaussianMixture(mixture_means(c["mean_seed"]), STD)
    base = dist.Normal(jnp.zeros(2), c["base_scale"]).to_event(1)
    family = fepy.Particles.from_base(base, c["particles"], key=jax.random.key(c["seed"]))
    schedule = fepy.Power(c["steps"] // 2, exponent=4.0)
    move = fepy.MALA(step_size=c["step_size"])
    solver = fepy.particle_solver(c["solver"], schedule=schedule, move=move, islands=c["islands"])
    return fepy.Problem(target, family, solver, c["steps"])
