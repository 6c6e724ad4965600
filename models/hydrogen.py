"""Hydrogen atom with the one-parameter ansatz psi = exp(-alpha r), exact at alpha = 1 (E = -0.5 Ha).

A check of the whole QMC chain: starting from ``alpha0``, VMC (or WQMC) drives alpha to 1,
where the local energy is -1/2 at every walker (zero variance).
"""

import jax

import fepy
from fepy.apps.qvmc import HydrogenicAnsatz, MolecularHamiltonian, qmc_solver

DEFAULTS = dict(
    seed=0, walkers=512, steps=300, alpha0=0.6, solver="vmc_sr", learning_rate=0.05,
    mcmc_steps=10, step_size=0.5, window=100,
)
REFERENCE = dict(energy=-0.5, alpha=1.0)


def observables(target, family) -> dict:
    return dict(alpha=float(family.ansatz.alpha))


def build(config):
    c = {**DEFAULTS, **config}
    hamiltonian = MolecularHamiltonian.atom(1)
    family = fepy.Wavefunction.initialize(
        HydrogenicAnsatz(c["alpha0"]), c["walkers"], key=jax.random.key(c["seed"]), centers=[0.0, 0.0, 0.0]
    )
    solver = qmc_solver(
        c["solver"], learning_rate=c["learning_rate"], mcmc_steps=c["mcmc_steps"],
        step_size=c["step_size"], window=c["window"],
    )
    return fepy.Problem(hamiltonian, family, solver, c["steps"])
