"""Transition paths on the Müller-Brown surface, from the deepest minimum A to the minimum B.

Reference dynamics: overdamped Langevin, dx = -grad U dt / gamma + sqrt(2 kT / gamma) dW, with
kT = 0.5 (surface units), gamma = 1, 500 Euler-Maruyama steps of 1e-4 (T = 0.05: a transition
in the reference dynamics is a ~1e-90 event, the barrier being 106 units = 212 kT). The target
path measure weights a path by exp(-|x_T - x_B|^2 / (2 w^2)), w = 0.05; a path "hits" when it
ends within 0.1 of B. The control is a time-dependent MLP force (64 x 2, SiLU) on top of a
steered-MD spring (kappa = 2000 along the straight line A -> B, trained with the network), so
that training starts from paths that reach B; `fepy.PathKL` with the PIPS objective
(`RelativeEntropy`) then lowers the path free energy F = E_Q[control cost + terminal cost]
(in kT), which bends the paths over the lowest saddle.

Writes ``hit_fraction`` (reference 1), ``max_energy`` = ETS, the mean over hitting paths of the
highest potential energy along the path (reference: ``saddle_energy`` = -40.665, the highest
saddle on the minimum-energy path, found by Newton's method; every continuous path from A to B
crosses that saddle's energy, so ``max_energy`` >= it), the lowest and highest path maxima,
the reference-dynamics log-likelihood of the paths, the energy evaluations spent (training +
evaluation), and ``paths.png`` (paths over the contours). ``--set objective=log_variance``
trains the same control with the log-variance objective (learned log Z, replay buffer).
"""

import jax
import numpy as np
import optax

import fepy
from fepy._output import plot_paths_2d
from fepy.apps.tps import MullerBrown, muller_brown, stationary_point
from fepy.apps.tps.metrics import transition_state_energy

DEFAULTS = dict(
    seed=0,
    steps=1000,  # training iterations
    trajectories=64,
    objective="relative_entropy",  # relative_entropy (PIPS) | log_variance
    buffer_size=512,
    replay=8,  # log_variance: buffer updates per rollout
    learning_rate=1e-2,
    temperature=0.5,
    friction=1.0,
    dt=1e-4,
    path_steps=500,
    width=0.05,
    radius=0.1,
    stiffness=2000.0,
    hidden=64,
    depth=2,
    evaluation_paths=1024,
)

U = MullerBrown()
A = stationary_point(U, muller_brown.MINIMUM_A)
B = stationary_point(U, muller_brown.MINIMUM_B)
SADDLE = stationary_point(U, muller_brown.SADDLE_HIGH)
REFERENCE = dict(hit_fraction=1.0, saddle_energy=float(U(SADDLE)))


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    if c["objective"] not in ("relative_entropy", "log_variance"):
        raise ValueError(f"objective must be relative_entropy or log_variance, got {c['objective']!r}")
    target = fepy.PathMeasure(U, A, fepy.EndPoint(B, c["width"], c["radius"]), temperature=c["temperature"],
                              friction=c["friction"], dt=c["dt"], steps=c["path_steps"])
    control = fepy.Control.mlp(2, key=jax.random.key(c["seed"]), width=c["hidden"], depth=c["depth"], scale=100.0,
                               steer=(A, B, c["stiffness"]))
    objective = (fepy.RelativeEntropy() if c["objective"] == "relative_entropy"
                 else fepy.LogVariance(buffer_size=c["buffer_size"], replay=c["replay"]))
    schedule = optax.cosine_decay_schedule(c["learning_rate"], max(c["steps"], 1), 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1e3), optax.adam(schedule))
    return fepy.Problem(target, control, fepy.PathKL(optimizer, c["trajectories"], objective), c["steps"])


def analyze(target, family, config) -> fepy.Paths:
    """``evaluation_paths`` fresh paths of the trained control (key ``seed + 10000``), for both hooks."""
    c = {**DEFAULTS, **config}
    return target.simulate(family, jax.random.key(c["seed"] + 10_000), c["evaluation_paths"])


def observables(target, family, config, analysis) -> dict:
    """Hit fraction, ETS (``max_energy``) and path statistics of the evaluation paths (`analyze`)."""
    c = {**DEFAULTS, **config}
    paths = analysis
    hits = np.asarray(target.hits(paths))
    peaks = np.asarray(target.energies(paths)).max(axis=1)
    train_evals = c["steps"] * c["trajectories"] * c["path_steps"]
    return dict(
        hit_fraction=float(hits.mean()),
        max_energy=transition_state_energy(target, paths, hits)[0],
        max_energy_lowest=float(peaks.min()),
        max_energy_highest=float(peaks.max()),
        control_cost_mean=float(np.mean(paths.control_cost)),
        log_likelihood=float(np.mean(target.log_likelihood(paths))),
        final_distance=float(np.mean(np.linalg.norm(np.asarray(paths.final) - np.asarray(B), axis=1))),
        energy_evals=train_evals + c["evaluation_paths"] * (2 * c["path_steps"] + 1),
    )


def plots(target, family, out, config, analysis) -> list[str]:
    """``paths.png``: the evaluation paths (`analyze`) over the surface's contours."""
    paths = analysis
    marks = dict(A=A, B=B, saddle=SADDLE)
    plot_paths_2d(out / "paths.png", U, paths.positions, target.hits(paths), (-1.6, 1.2, -0.4, 2.0), marks,
                  clip=50.0, title="Müller-Brown: controlled paths A -> B (blue: hit B)")
    return ["paths.png"]
