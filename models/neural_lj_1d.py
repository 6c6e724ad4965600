r"""A neural density functional for a 1-D Lennard-Jones fluid, learned from bulk simulations only.

Train, then solve (kT units, lengths in σ, densities per σ):

1. bulk grand-canonical Monte Carlo (`fepy.apps.dft.gcmc_dataset.generate_bulk`) of the
   truncated and shifted LJ fluid (βε = ``beta_epsilon``, cutoff ``cutoff``) at
   ``systems`` chemical potentials from ``beta_mu_min`` to ``bulk_beta_mu_max`` (by default
   the environments' range; widening it to 6 made the unweighted loss dominated by the
   dense states and the held-out error worse, benchmarks/dft_neural.py): densities and g(x);
2. g(x) -> c(x) by the 1-D Ornstein-Zernike equation, and pair-correlation matching
   (Dijkman et al., PRL 134, 056103 (2025)): the `NeuralFunctional`'s bulk Hessian is fitted
   to -c(x) and its first derivative to βμ_exc, with Adam for ``train_steps`` steps;
3. the trained functional in `fepy.Picard` at a held-out environment (a random external
   potential with hard walls and a random βμ in [``beta_mu_min``, ``beta_mu_max``], seed
   ``seed``) that no training data saw.

The reference is a long GCMC run in that same environment; the summary has
``mae_vs_gcmc`` (mean |ρ_DFT - ρ_GCMC| over the mean GCMC density) beside
``gcmc_noise_floor`` (the GCMC's own mean standard error, same normalisation), and
``density.png`` shows both profiles.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy.apps.dft import GrandCanonicalMC, LennardJonesPair
from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials, generate_bulk
from fepy.apps.dft.neural import NeuralFunctional, pair_correlation_data, pair_correlation_loss, train

DEFAULTS = dict(
    seed=0, length=20.0, dx=0.05, beta_epsilon=1.0, cutoff=2.5, beta_mu_min=-1.0, beta_mu_max=2.0,
    bulk_beta_mu_max=2.0, systems=16, capacity=26, blocks=16, sweeps_per_block=400, equilibration=500,
    reference_sweeps_per_block=2000,
    radius=1.25, features=8, degree=4, width=32, depth=2, train_steps=2000, learning_rate=3e-3,
    steps=600, mixing=0.2, anderson=5,
)


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    if not (c["dx"] > 0 and c["length"] >= 2 * c["cutoff"]):
        raise ValueError(f"need dx > 0 and a box length >= 2 cutoffs, got dx={c['dx']!r}, length={c['length']!r}")
    if not c["beta_mu_min"] < min(c["beta_mu_max"], c["bulk_beta_mu_max"]):
        raise ValueError("beta_mu_min must be below beta_mu_max and bulk_beta_mu_max")
    if not c["beta_epsilon"] >= 0:
        raise ValueError(f"beta_epsilon must be >= 0, got {c['beta_epsilon']!r}")
    return c


def _setup(c):
    grid = fepy.Grid(int(round(c["length"] / c["dx"])), c["dx"])
    pair = LennardJonesPair(epsilon=c["beta_epsilon"], cutoff=c["cutoff"])
    potentials = RandomExternalPotentials(grid, beta_mu=(c["beta_mu_min"], c["beta_mu_max"]), wall_probability=1.0)
    beta_external, beta_mu = potentials.sample(jax.random.key(10_000 + c["seed"]), 1)
    return grid, pair, beta_external[0], beta_mu[0]


@functools.lru_cache(maxsize=4)
def _gcmc_reference(items: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Long GCMC at the held-out environment: density and its standard error (cached per config)."""
    c = dict(items)
    grid, pair, beta_external, beta_mu = _setup(c)
    result = GrandCanonicalMC(grid, pair, c["capacity"]).run(
        beta_external, beta_mu, jax.random.key(20_000 + c["seed"]), blocks=c["blocks"],
        sweeps_per_block=c["reference_sweeps_per_block"], equilibration=c["equilibration"],
    )
    if int(np.sum(result.capacity_rejections)):
        raise RuntimeError("the reference GCMC filled its capacity; raise capacity")
    return np.asarray(result.density), np.asarray(result.density_stderr)


def reference(config) -> dict:
    c = _check(config)
    rho, err = _gcmc_reference(tuple(sorted(c.items())))
    grid = _setup(c)[0]
    return dict(profile=dict(x=np.asarray(grid.points), rho=rho, label="GCMC (held out)"))


def observables(target, family, config) -> dict:
    rho = np.asarray(family.rho)
    reference_rho, reference_err = _gcmc_reference(tuple(sorted(_check(config).items())))
    scale = reference_rho.mean()
    return dict(
        mae_vs_gcmc=float(np.abs(rho - reference_rho).mean() / scale),
        gcmc_noise_floor=float(reference_err.mean() / scale),
        number=float(family.number()),
        bulk_density=float(target.rho_bulk),
    )


def trained_functional(c) -> tuple[NeuralFunctional, np.ndarray]:
    """Bulk GCMC -> c(x) -> pair-correlation matching: the trained functional and its loss history."""
    grid, pair, _, _ = _setup(c)
    simulator = GrandCanonicalMC(grid, pair, c["capacity"], pair_range=c["length"] / 2)
    bulk = generate_bulk(
        simulator, np.linspace(c["beta_mu_min"], c["bulk_beta_mu_max"], c["systems"]), seed=c["seed"],
        blocks=c["blocks"], sweeps_per_block=c["sweeps_per_block"], equilibration=c["equilibration"],
    )
    direct = pair_correlation_data(bulk["r"], bulk["g"], bulk["density"], grid)
    mu_exc = jnp.asarray(bulk["beta_mu"] - np.log(bulk["density"]))
    start = NeuralFunctional(
        radius=c["radius"], features=c["features"], degree=c["degree"], width=c["width"], depth=c["depth"],
        max_density=1.2, key=jax.random.key(c["seed"]),
    )
    optimizer = optax.adam(optax.cosine_decay_schedule(c["learning_rate"], c["train_steps"], 0.01))
    return train(start, lambda f: pair_correlation_loss(f, grid, jnp.asarray(bulk["density"]), direct, mu_exc),
                 optimizer, c["train_steps"])


def build(config):
    c = _check(config)
    grid, _, beta_external, beta_mu = _setup(c)
    functional, _ = trained_functional(c)
    target = fepy.GrandPotential.from_chemical_potential(grid, functional, beta_mu, beta_external)
    family = fepy.GridDensity(jnp.where(jnp.isfinite(beta_external), target.rho_bulk, 0.0), grid)
    return fepy.Problem(target, family, fepy.Picard(mixing=c["mixing"], anderson=c["anderson"]), c["steps"])
