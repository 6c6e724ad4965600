"""What the particle Boltzmann-generator model files share (models/dw4_bg.py, models/lj13_bg.py).

A run: equilibrium samples of the target by fepy's SMC + MCMC (`equilibrium_samples`: a
training set and an independent held-out set, since the papers' MD datasets are not available
offline), an equivariant `fepy.CNF` (EGNN field, `CoMFreeGaussian` base) trained on the training
set by `fepy.FlowMatching`, then ESS, log Z, NLL of the held-out set and the plots
(`evaluation`). Keys of ``config``:

* data: ``seed``, ``train_samples``, ``test_samples``, ``data_base_scale`` (width of the SMC's
  Gaussian start), ``anneal_steps``, ``decorrelation_steps``, ``data_step_size`` and
  ``data_leapfrog`` (the `fepy.HMC` move, step size adapted);
* flow: ``base_scale``, ``width``, ``layers`` (EGNN), ``ode_steps`` (0: adaptive Dormand-Prince
  with ``rtol``/``atol``; n: n fixed steps);
* training: ``coupling`` (``equivariant``: `OrbitAlignment`, ``ot``: `fepy.OTCoupling`,
  ``independent``), ``sigma``, ``steps``, ``batch``, ``lr`` (peak of a cosine decay);
* evaluation: ``estimate_samples`` flow samples for the importance weights, ``chunk`` rows per
  compiled ODE batch.
"""

import jax
import optax

from ..._problem import Problem
from ...families.cnf import CNF
from ...solvers.flow_matching import FlowMatching, OTCoupling
from ...solvers.moves import HMC
from .coupling import OrbitAlignment
from .egnn import EGNNField
from .evaluation import Analysis, analyze, metrics, plot
from .particles import CoMFreeGaussian, EquilibriumSamples, _ParticleEnergy, equilibrium_samples

COUPLINGS = ("equivariant", "ot", "independent")


def _key(config: dict, stream: int):
    """Independent key streams of a run: 0 training data, 1 held-out data, 2 network, 3 estimate."""
    return jax.random.fold_in(jax.random.key(config["seed"]), stream)


def data(target: _ParticleEnergy, config: dict, held_out: bool) -> EquilibriumSamples:
    """The training set (``train_samples``) or the independent held-out set (``test_samples``)."""
    n = config["test_samples"] if held_out else config["train_samples"]
    move = HMC(step_size=config["data_step_size"], num_steps=config["data_leapfrog"])
    return equilibrium_samples(target, n, key=_key(config, 1 if held_out else 0), base_scale=config["data_base_scale"],
                               move=move, anneal_steps=config["anneal_steps"],
                               decorrelation_steps=config["decorrelation_steps"])


def coupling(target: _ParticleEnergy, name: str):
    if name == "equivariant":
        return OrbitAlignment(target.n_particles, target.space_dim)
    if name == "ot":
        return OTCoupling()
    if name == "independent":
        return None
    raise ValueError(f"coupling must be one of {COUPLINGS}, got {name!r}")


def cnf(target: _ParticleEnergy, config: dict) -> CNF:
    """The untrained equivariant CNF: EGNN field (zero at the start) on the centre-of-mass-free Gaussian."""
    field = EGNNField(_key(config, 2), target.n_particles, target.space_dim, width=config["width"],
                      layers=config["layers"])
    return CNF(field, CoMFreeGaussian(target.n_particles, target.space_dim, config["base_scale"]),
               steps=config["ode_steps"] or None, rtol=config["rtol"], atol=config["atol"])


def problem(target: _ParticleEnergy, config: dict) -> Problem:
    """Training data, the CNF and the flow-matching solver (Adam, cosine-decayed ``lr``)."""
    train = data(target, config, held_out=False)
    optimizer = optax.adam(optax.cosine_decay_schedule(config["lr"], config["steps"]))
    solver = FlowMatching(optimizer, train.positions, config["batch"], sigma=config["sigma"],
                          coupling=coupling(target, config["coupling"]))
    return Problem(target, cnf(target, config), solver, config["steps"])


def evaluate(target: _ParticleEnergy, flow: CNF, test: EquilibriumSamples, config: dict) -> Analysis:
    """`evaluation.analyze` of the trained flow: ``estimate_samples`` fresh samples and the held-out set."""
    return analyze(target, flow, test.positions, n=config["estimate_samples"], key=_key(config, 3),
                   chunk=config["chunk"])


def analysis(target: _ParticleEnergy, flow: CNF, config: dict) -> tuple[Analysis, EquilibriumSamples]:
    """The held-out set (`data`) and the flow's `evaluate` on it (a model file's ``analyze``)."""
    test = data(target, config, held_out=True)
    return evaluate(target, flow, test, config), test


def observables(target: _ParticleEnergy, result: tuple[Analysis, EquilibriumSamples], config: dict) -> dict:
    """`evaluation.metrics` against the held-out set's SMC log Z, and the energy evaluations spent
    on the held-out data."""
    result_analysis, test = result
    out = metrics(target, result_analysis, test)
    out.update(test_data_energy_evals=float(test.energy_evals), test_data_acceptance=float(test.acceptance))
    return out


def plots(target: _ParticleEnergy, result: tuple[Analysis, EquilibriumSamples], out, name: str) -> list[str]:
    """``distances_energies.png`` (`evaluation.plot`)."""
    result_analysis, test = result
    m = metrics(target, result_analysis, test)
    plot(target, result_analysis, f"{out}/distances_energies.png",
         f"{name}: ESS {m['ess_fraction']:.1%}, NLL {m['nll']:.2f} (KL(p||q) {m['kl_forward']:.2f})")
    return ["distances_energies.png"]
