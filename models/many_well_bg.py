"""Many-Well 32-D Boltzmann generator: a normalizing flow trained on the target of many_well.py.

The target is `many_well.ManyWell` (16 copies of the 2-D double well of the FAB paper,
exact log Z = 164.6957 because the copies separate; 2^16 modes). A generic coupling flow
(`fepy.Flow.rq_spline`: rational-quadratic splines, conditioners that see the whole other
half, no knowledge of the pair structure) is trained with `fepy.ForwardKL` (maximum
likelihood) on the weighted particles of an SMC run of many_well.py (``data = "smc"``, the
model's own defaults with ``smc_particles`` particles: the data visit every mode, which
reverse KL alone tends to drop), mixed with ``reverse`` x the reverse KL of the exact
energy; ``data = "none"`` trains by `fepy.ReverseKL` alone. The estimates are the flow's
alone: importance sampling with ``estimate_samples`` fresh samples,
:math:`\\log\\hat Z = \\log\\frac1n\\sum_i e^{-U(x_i)}/q(x_i)` with its delta-method standard
error and the Kish ESS; the SMC log Z is not used. Reference: log Z exact by quadrature.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy.cli import load_model

many_well = load_model(Path(__file__).with_name("many_well.py"))  # the target: one concept, one place

DEFAULTS = dict(
    seed=0,
    copies=16,
    data="smc",  # smc: forward KL on SMC particles (+ reverse KL) | none: reverse KL only
    smc_particles=10_000,
    reverse=1.0,  # weight of the reverse KL in the forward-KL loss (data = smc)
    layers=4,
    knots=8,
    interval=3.0,
    width=64,
    depth=1,
    permutation="reverse",  # reverse (RealNVP alternating halves) | random
    steps=2000,
    batch=256,
    samples=256,  # reverse-KL samples per step
    lr=2e-3,  # peak of a cosine decay to 0
    estimate_samples=2000,  # samples of the final importance-sampling estimate
)


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
    if c["data"] not in ("smc", "none"):
        raise ValueError(f"data must be 'smc' or 'none', got {c['data']!r}")
    target = many_well.ManyWell(dim=2 * c["copies"])
    flow = fepy.Flow.rq_spline(
        jax.random.key(c["seed"]), target.dim, layers=c["layers"], knots=c["knots"], interval=c["interval"],
        width=c["width"], depth=c["depth"], permutation=c["permutation"],
    )
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(optax.cosine_decay_schedule(c["lr"], c["steps"])))
    if c["data"] == "smc":
        positions, log_weights = training_data(c)
        solver = fepy.ForwardKL(optimizer, positions, c["batch"], log_weights=log_weights, reverse=c["reverse"],
                                samples=c["samples"], summary_samples=c["estimate_samples"])
    else:
        solver = fepy.ReverseKL(optimizer, samples=c["samples"], summary_samples=c["estimate_samples"])
    return fepy.Problem(target, flow, solver, c["steps"])


def observables(target, family, config) -> dict:
    """Fraction of flow samples in the d > 0 well of each pair (exact: 0.844... per pair)."""
    x = family.sample(jax.random.key(config["seed"] + 10_000), config["estimate_samples"])
    return dict(positive_well_fraction=float(jnp.mean(x[:, 0::2] > 0)), positive_well_exact=positive_well_mass())


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
