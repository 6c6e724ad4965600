"""Many-Well 32-D Boltzmann generator: a normalizing flow trained on the target of many_well.py.

The target is `many_well.ManyWell` (16 copies of the 2-D double well of the FAB paper,
exact log Z = 164.6957 because the copies separate; 2^16 modes). A generic coupling flow
(`fepy.Flow.rq_spline`: rational-quadratic splines, conditioners that see the whole other
half, no knowledge of the pair structure) is trained by one of three objectives (``data``):

* ``"fab"`` (default): `fepy.FAB`, the alpha = 2 divergence with AIS towards p^2/q from the
  flow itself (Midgley et al., ICLR 2023), no data. Each of the ``steps`` steps is one AIS
  pass of ``fab_samples`` particles (`fepy.Wasserstein`, ``fab_ais_steps`` linear steps of
  `fepy.HMC` with ``fab_leapfrog`` leapfrog steps, step size from ``fab_step_size`` adapted to
  acceptance 0.65 and carried between passes) stored in a `fepy.ReplayBuffer` of
  ``fab_buffer`` passes (filled with ``fab_buffer_min`` passes first), then ``fab_updates``
  Adam steps on samples drawn from the buffer (FAB's Algorithm 2).
* ``"smc"``: `fepy.ForwardKL` (maximum likelihood) on the weighted particles of an SMC run of
  many_well.py (its defaults with ``smc_particles`` particles: the data visit every mode,
  which reverse KL alone tends to drop), mixed with ``reverse`` x the reverse KL of the exact
  energy. The SMC log Z is never used.
* ``"none"``: `fepy.ReverseKL` alone.

Adam's learning rate decays from ``lr`` to 0 (cosine) over all optimizer steps.

Two estimators of log Z from the trained flow :math:`q` (``estimator``), each on
``estimate_samples`` = 2,000 samples (FAB's protocol):

* ``"flow"``: importance sampling with fresh samples,
  :math:`\\log\\hat Z = \\log\\frac1n\\sum_i e^{-U(x_i)}/q(x_i)`, its delta-method standard
  error and the Kish ESS (the solver's own summary). Target evaluations: n.
* ``"flow_ais"`` (FAB-style flow + AIS, Midgley et al. 2023): the flow is the base
  :math:`q_0 = q` of `fepy.Particles` and ``ais_steps`` steps anneal
  :math:`\\gamma_\\lambda \\propto q^{1-\\lambda} e^{-\\lambda U}` (linear :math:`\\lambda`)
  with ``ais_leapfrog`` leapfrog steps of `fepy.HMC` (fixed ``ais_step_size``) per step.
  ``ais_resample = True``: the SMC sampler `fepy.WassersteinFisherRao`, reweight /
  resample when an island's ESS < 1/2 / move, on ``ais_islands`` independent islands whose
  :math:`\\hat Z` spread gives the standard error. ``ais_resample = False`` (default, FAB's
  evaluation: 8 steps of 5 leapfrog steps): plain annealed
  importance sampling, `fepy.Wasserstein`, every particle its own island, so that each
  particle's AIS weight :math:`w_i = \\prod_k (\\gamma_{k+1}/\\gamma_k)(x_i^{(k)})` is an
  independent unbiased :math:`\\hat Z` and the standard error is that of their mean (delta
  method). The moves correct the flow's shape within each well; no HMC move crosses the
  10 kT barrier, so the mass of each of the :math:`2^{16}` modes comes from the flow,
  corrected by the weights, and with resampling by moving particles between modes. Target energy-and-gradient evaluations:
  n (1 + ``ais_steps`` x ``ais_leapfrog``), plus as many flow log q evaluations.

``energy_evaluations`` counts the target evaluations of each stage (SMC data, training,
estimate) as FAB counts them. `estimate_errors` repeats the estimate on independent batches of
``estimate_samples`` (FAB's README protocol: per seed, the mean absolute error of 10 batches of
2,000). Reference: log Z exact by quadrature.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy._estimators import kish_ess, log_z_and_stderr
from fepy.cli import load_model

many_well = load_model(Path(__file__).with_name("many_well.py"))  # the target: one concept, one place

DEFAULTS = dict(
    seed=0,
    copies=16,
    data="fab",  # fab: FAB (alpha-2 + AIS, no data) | smc: forward KL on SMC particles (+ reverse KL) | none: reverse KL
    smc_particles=10_000,
    reverse=1.0,  # weight of the reverse KL in the forward-KL loss (data = smc)
    layers=4,
    knots=8,
    interval=3.0,
    width=64,
    depth=1,
    permutation="reverse",  # reverse (RealNVP alternating halves) | random
    steps=400,  # fab: AIS passes (x fab_updates optimizer steps); smc/none: optimizer steps (1000 in the smc rows)
    batch=256,  # data = smc: forward-KL minibatch
    samples=256,  # data = smc/none: reverse-KL samples per step
    lr=1e-3,  # peak of a cosine decay to 0 over all optimizer steps (2e-3 in the smc rows)
    fab_samples=256,  # AIS particles per pass
    fab_ais_steps=8,  # annealing steps q -> p^2/q (FAB's many-well config: 8)
    fab_leapfrog=5,  # HMC leapfrog steps per annealing step (FAB: 5)
    fab_step_size=0.1,  # initial HMC step size, adapted to acceptance 0.65
    fab_buffer=100,  # replay-buffer capacity, in passes
    fab_buffer_min=10,  # passes that fill the buffer before training
    fab_updates=4,  # optimizer steps per AIS pass (FAB: 4)
    estimate_samples=2000,  # samples (particles) of the final estimate
    estimator="flow_ais",  # flow: importance sampling from the flow | flow_ais: AIS from the flow as base
    ais_steps=8,  # annealing steps q -> p (100 with resampling in the smc rows)
    ais_leapfrog=5,  # HMC leapfrog steps per annealing step
    ais_step_size=0.1,  # HMC step size, fixed (an adapted one would couple the AIS chains; 0.15 in the smc rows)
    ais_resample=False,  # True: SMC, resampling within ais_islands islands | False: AIS, one island per particle
    ais_islands=8,
)

DATA = ("fab", "smc", "none")

ESTIMATORS = ("flow", "flow_ais")


def reference(config) -> dict:
    c = {**DEFAULTS, **config}
    log_z = c["copies"] * many_well.log_z_per_copy()
    return dict(log_z=log_z, free_energy=-log_z)


def training_data(config):
    """Positions and log-weights of the SMC particles of many_well.py (its defaults, this seed)."""
    c = {**DEFAULTS, **config}
    problem = many_well.build(dict(seed=c["seed"], copies=c["copies"], particles=c["smc_particles"]))
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                        key=jax.random.fold_in(jax.random.key(c["seed"]), 2))
    return sol.family.positions, sol.family.log_weights


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    if c["data"] not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {c['data']!r}")
    if c["estimator"] not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {c['estimator']!r}")
    target = many_well.ManyWell(dim=2 * c["copies"])
    flow = fepy.Flow.rq_spline(
        jax.random.key(c["seed"]), target.dim, layers=c["layers"], knots=c["knots"], interval=c["interval"],
        width=c["width"], depth=c["depth"], permutation=c["permutation"],
    )
    updates = c["steps"] * (c["fab_updates"] if c["data"] == "fab" else 1)
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(optax.cosine_decay_schedule(c["lr"], updates)))
    if c["data"] == "fab":
        solver = fab_solver(c, optimizer)
    elif c["data"] == "smc":
        positions, log_weights = training_data(c)
        solver = fepy.ForwardKL(optimizer, positions, c["batch"], log_weights=log_weights, reverse=c["reverse"],
                                samples=c["samples"], summary_samples=c["estimate_samples"])
    else:
        solver = fepy.ReverseKL(optimizer, samples=c["samples"], summary_samples=c["estimate_samples"])
    return fepy.Problem(target, flow, solver, c["steps"])


def fab_solver(config, optimizer) -> fepy.FAB:
    """FAB with a replay buffer: AIS (one island, HMC step size adapted between passes) towards p^2/q."""
    c = {**DEFAULTS, **config}
    move = fepy.HMC(step_size=c["fab_step_size"], num_steps=c["fab_leapfrog"])
    ais = fepy.Wasserstein(schedule=fepy.Linear(c["fab_ais_steps"]), move=move, islands=1)
    buffer = fepy.ReplayBuffer(capacity=c["fab_buffer"] * c["fab_samples"], min_size=c["fab_buffer_min"] * c["fab_samples"],
                               updates=c["fab_updates"])
    return fepy.FAB(optimizer, ais, c["fab_ais_steps"], samples=c["fab_samples"], buffer=buffer,
                    summary_samples=c["estimate_samples"])


def ais_solver(config):
    """The annealing from the flow to the target: AIS (one island per particle) or SMC."""
    c = {**DEFAULTS, **config}
    move = fepy.HMC(step_size=c["ais_step_size"], num_steps=c["ais_leapfrog"], adapt=False)
    schedule = fepy.Linear(c["ais_steps"])
    if c["ais_resample"]:
        return fepy.WassersteinFisherRao(schedule=schedule, move=move, islands=c["ais_islands"])
    return fepy.Wasserstein(schedule=schedule, move=move, islands=c["estimate_samples"])


def flow_ais(target, flow, config, key) -> dict:
    """log Z by annealing from the trained flow (its base view, `fepy.Particles.from_base`)."""
    c = {**DEFAULTS, **config}
    family = fepy.Particles.from_base(flow, c["estimate_samples"], key=jax.random.fold_in(key, 0))
    solver = ais_solver(c)
    sol = fepy.minimize(target, family, solver, steps=c["ais_steps"], key=jax.random.fold_in(key, 1))
    return dict(log_z=sol.log_z, log_z_stderr=sol.log_z_stderr, ess=sol.ess, ess_fraction=sol.ess_fraction,
                estimate_energy_evals=sol.energy_evals)


def energy_evaluations(config) -> dict:
    """Target energy(-and-gradient) evaluations of each stage, as FAB counts them: the SMC data
    (particles x (1 + steps x moves x leapfrog) of many_well.py), training (FAB: its AIS passes,
    the buffer's filling included, x samples x (1 + AIS steps x leapfrog); reverse KL: samples
    per step; the forward KL needs none) and the estimate (the AIS count is its solver's)."""
    c = {**DEFAULTS, **config}
    smc = {**many_well.DEFAULTS, "particles": c["smc_particles"]}
    data = 0
    if c["data"] == "smc":
        moves = 1 + smc["steps"] * smc["moves_per_step"] * (smc["leapfrog_steps"] if smc["move"] == "hmc" else 1)
        data = smc["particles"] * moves
    if c["data"] == "fab":
        training = (c["steps"] + c["fab_buffer_min"]) * c["fab_samples"] * (1 + c["fab_ais_steps"] * c["fab_leapfrog"])
    else:
        training = c["samples"] * c["steps"] if (c["data"] == "none" or c["reverse"] > 0) else 0
    return dict(data_energy_evals=data, training_energy_evals=training)


def flow_is(target, flow, n, key) -> dict:
    """log Z by importance sampling with ``n`` fresh flow samples: its delta-method standard error and the Kish ESS."""
    x, log_q = flow.sample_and_log_prob(key, n)
    log_w = jax.vmap(target.log_density)(x) - log_q
    log_z, stderr = log_z_and_stderr(log_w)
    ess = kish_ess(log_w)
    return dict(log_z=float(log_z), log_z_stderr=float(stderr), ess=float(ess), ess_fraction=float(ess) / n,
                estimate_energy_evals=float(n))


def estimate(target, flow, config, key) -> dict:
    """The ``estimator``'s log Z on ``estimate_samples`` samples (``log_z``, ``log_z_stderr``, ``ess``,
    ``ess_fraction``, ``estimate_energy_evals``)."""
    c = {**DEFAULTS, **config}
    if c["estimator"] == "flow_ais":
        return {k: float(v) for k, v in flow_ais(target, flow, c, key).items()}
    return flow_is(target, flow, c["estimate_samples"], key)


def estimate_errors(target, flow, config, batches: int) -> np.ndarray:
    """log Z error of ``batches`` independent estimates (FAB's protocol: 10 batches of 2,000
    samples per seed, whose mean absolute error is the seed's figure); keys independent of
    the ``observables`` estimate."""
    c = {**DEFAULTS, **config}
    key = jax.random.key(c["seed"] + 40_000)
    exact = reference(c)["log_z"]
    return np.array([estimate(target, flow, c, jax.random.fold_in(key, b))["log_z"] - exact for b in range(batches)])


def observables(target, family, config) -> dict:
    """The estimate of ``estimator`` from the trained flow (``log_z``, ``log_z_stderr``, ``ess``,
    ``estimate_energy_evals``; they replace the training summary's in ``fepy run``), the flow-only
    IS estimate on ``estimate_samples`` fresh samples (``flow_log_z``, ``flow_log_z_stderr``,
    ``flow_ess``: the estimate itself for ``estimator = "flow"``), the fraction of flow samples
    in the d > 0 well of each pair (exact: 0.844... per pair) and the energy-evaluation budget."""
    c = {**DEFAULTS, **config}
    x = family.sample(jax.random.key(c["seed"] + 10_000), c["estimate_samples"])
    out = dict(positive_well_fraction=float(jnp.mean(x[:, 0::2] > 0)), positive_well_exact=positive_well_mass(),
               **energy_evaluations(c))
    key = jax.random.key(c["seed"] + 30_000)
    flow = flow_is(target, family, c["estimate_samples"], jax.random.fold_in(key, 2))
    out.update(flow_log_z=flow["log_z"], flow_log_z_stderr=flow["log_z_stderr"], flow_ess=flow["ess"])
    out.update(flow if c["estimator"] == "flow" else estimate(target, family, c, key))
    return out


def positive_well_mass() -> float:
    """Mass of d > 0 of e^{0.5 d + 6 d^2 - d^4}, by quadrature."""
    from scipy.integrate import quad

    f = lambda d: np.exp(0.5 * d + 6 * d**2 - d**4)
    plus = quad(f, 0, np.inf, epsabs=0, epsrel=1e-12)[0]
    minus = quad(f, -np.inf, 0, epsabs=0, epsrel=1e-12)[0]
    return plus / (plus + minus)


def plots(target, family, out, config) -> list[str]:
    """2-D marginal of (d_1, d_2) of flow samples against the exact product density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(family.sample(jax.random.key(config["seed"] + 20_000), 20_000))
    grid = np.linspace(-2.8, 2.8, 200)
    marginal = np.exp(0.5 * grid + 6 * grid**2 - grid**4)
    marginal /= np.trapezoid(marginal, grid)
    exact = marginal[:, None] * marginal[None, :]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
    axes[0].contourf(grid, grid, exact.T, levels=20)
    axes[0].set_title("exact p(d1, d2)")
    axes[1].hist2d(x[:, 0], x[:, 2], bins=100, range=[[-2.8, 2.8], [-2.8, 2.8]], density=True)
    axes[1].set_title("flow samples (d1, d2)")
    for ax in axes:
        ax.set_xlabel("d1")
    axes[0].set_ylabel("d2")
    fig.tight_layout()
    fig.savefig(Path(out) / "marginals.png", dpi=100)
    plt.close(fig)
    return ["marginals.png"]
