"""Building blocks that QMC model files share: walker starting points and a solver from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ..._problem import Problem
from ...families.wavefunction import Wavefunction
from ...solvers.moves import RandomWalk
from ...solvers.qmc import VMC, WQMC, StochasticReconfiguration
from .ansatz import FermiNet, SlaterJastrow
from .hamiltonians import MolecularHamiltonian

SOLVERS = ("vmc", "vmc_sr", "wqmc", "wfr")


def electron_centers(hamiltonian: MolecularHamiltonian) -> Float[Array, " dim"]:
    """Each electron on a nucleus: nuclei take electrons in turn by remaining charge, and each
    nucleus's electrons alternate up, down, up, ... (spin-up electrons first in ``x``).

    The walkers start at these centers plus Gaussian noise, so every electron begins near
    an atom, e.g. LiH: Li gets up, down, up and H gets down.
    """
    remaining = np.asarray(hamiltonian.charges, float).copy()
    taken = np.zeros_like(remaining, dtype=int)
    spins = {"up": [], "down": []}
    for _ in range(hamiltonian.n_electrons):
        atom = int(np.argmax(remaining))
        remaining[atom] -= 1
        spins["up" if taken[atom] % 2 == 0 else "down"].append(atom)
        taken[atom] += 1
    up, down = spins["up"], spins["down"]
    while len(up) > hamiltonian.n_up:  # ions and high-spin states: move the surplus
        down.append(up.pop())
    while len(down) > hamiltonian.n_down:
        up.append(down.pop())
    return jnp.asarray(hamiltonian.nuclei)[jnp.asarray(up + down, int)].reshape(-1)


def qmc_solver(
    name: str,
    *,
    learning_rate: float,
    mcmc_steps: int = 10,
    step_size: float = 0.5,
    window: int = 100,
    damping: float = 1e-3,
    clip: float = 5.0,
):
    """One of ``vmc`` (Adam), ``vmc_sr`` (stochastic reconfiguration + SGD), ``wqmc`` (Adam) or
    ``wfr`` (WQMC + VMC directions, Adam), with a random-walk sampler of width ``step_size`` bohr."""
    sampler = RandomWalk(step_size=step_size)
    common = dict(sampler=sampler, mcmc_steps=mcmc_steps, window=window, clip=clip)
    if name == "vmc":
        return VMC(optax.adam(learning_rate), **common)
    if name == "vmc_sr":
        return VMC(optax.sgd(learning_rate), sr=StochasticReconfiguration(damping), **common)
    if name == "wqmc":
        return WQMC(optax.adam(learning_rate), **common)
    if name == "wfr":
        return WQMC(optax.adam(learning_rate), fisher_rao=1.0, **common)
    raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")


ANSATZE = ("ferminet", "slater_jastrow")


def molecule_problem(hamiltonian: MolecularHamiltonian, config: dict) -> Problem:
    """The `fepy.Problem` of a molecular model file from its config.

    Keys: ``seed``, ``walkers``, ``steps``, ``ansatz`` (``ferminet`` | ``slater_jastrow``),
    ``hidden`` (FermiNet width), ``determinants``, ``solver`` (see `qmc_solver`),
    ``learning_rate``, ``mcmc_steps``, ``step_size`` (bohr), ``window``, ``init_scale`` (bohr).
    """
    key_ansatz, key_walkers = jax.random.split(jax.random.key(config["seed"]))
    args = (hamiltonian.nuclei, hamiltonian.charges, hamiltonian.n_up, hamiltonian.n_down)
    if config["ansatz"] == "ferminet":
        width = config["hidden"]
        ansatz = FermiNet(*args, hidden=(width, width), determinants=config["determinants"], key=key_ansatz)
    elif config["ansatz"] == "slater_jastrow":
        ansatz = SlaterJastrow(*args, key=key_ansatz)
    else:
        raise ValueError(f"ansatz must be one of {ANSATZE}, got {config['ansatz']!r}")
    family = Wavefunction.initialize(
        ansatz,
        config["walkers"],
        key=key_walkers,
        centers=electron_centers(hamiltonian),
        scale=config["init_scale"],
    )
    solver = qmc_solver(
        config["solver"],
        learning_rate=config["learning_rate"],
        mcmc_steps=config["mcmc_steps"],
        step_size=config["step_size"],
        window=config["window"],
    )
    return Problem(hamiltonian, family, solver, config["steps"])


MOLECULE_DEFAULTS = dict(
    seed=0,
    walkers=512,
    steps=2000,
    ansatz="ferminet",
    hidden=32,
    determinants=4,
    solver="vmc_sr",  # best of vmc / vmc_sr / wqmc / wfr on He and H2 (benchmarks/README.md)
    learning_rate=0.03,  # tuned on He for vmc_sr; 1e-2 was best for the Adam solvers
    mcmc_steps=10,
    step_size=0.3,
    window=200,
    init_scale=0.5,
)
