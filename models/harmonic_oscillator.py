"""Particles in an isotropic harmonic trap, V = omega^2 |x|^2 / 2: exact E = omega / 2 per coordinate.

Distinguishable particles (or bosons) with the Gaussian ansatz exp(-a |x|^2 / 2): the
exact ground state is a = omega, where the local energy is omega * dim / 2 at every walker
(zero variance), so VMC must reach the exact energy to round-off.
"""

import jax
import jax.numpy as jnp

import fepy
from fepy.apps.qvmc import GaussianAnsatz, HarmonicTrap, qmc_solver

DEFAULTS = dict(
    seed=0, particles=2, space_dim=3, omega=1.0, a0=0.6, walkers=512, steps=300,
    solver="vmc_sr", learning_rate=0.05, mcmc_steps=10, step_size=0.5, window=100,
)


def reference(config) -> dict:
    c = {**DEFAULTS, **config}
    return dict(energy=c["omega"] * c["particles"] * c["space_dim"] / 2, a=c["omega"])


REFERENCE = reference({})


def observables(target, family) -> dict:
    return dict(a=float(family.ansatz.omega))


def build(config):
    c = {**DEFAULTS, **config}
    trap = HarmonicTrap(omega=c["omega"], n_particles=c["particles"], space_dim=c["space_dim"])
    family = fepy.Wavefunction.initialize(
        GaussianAnsatz(c["a0"]), c["walkers"], key=jax.random.key(c["seed"]), centers=jnp.zeros(trap.dim)
    )
    solver = qmc_solver(
        c["solver"], learning_rate=c["learning_rate"], mcmc_steps=c["mcmc_steps"],
        step_size=c["step_size"], window=c["window"],
    )
    return fepy.Problem(trap, family, solver, c["steps"])
