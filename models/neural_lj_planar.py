r"""A neural functional for the supercritical 3-D Lennard-Jones fluid in planar geometry, learned from bulk MD only.

The setting of Dijkman, Dijkstra, van Roij, Welling, van de Meent & Ensing, PRL 134, 056103
(2025): the LJ fluid cut and shifted at r_c = ``cutoff`` (σ) at T* = kT/ε = ``temperature``
(supercritical: T_c ≈ 1.08 for r_c = 2.5σ), density varying along z in a periodic box of
``length`` σ on a grid of spacing ``dz`` (kT units, lengths in σ, densities per σ³).

1. **Bulk data** (`fepy.apps.dft.bulk_correlation_data`): Langevin MD (jax-md) of
   ``n_particles`` particles at ``state_points`` densities evenly spaced in
   [``density_min``, ``density_max``], g(r) → OZ (HNC-continued) → the planar c2(z) on the
   grid spacing, and βμ_exc by Widom insertion.
2. **Pair-correlation matching** (`fepy.apps.dft.neural.pair_correlation_loss`): the bulk
   Hessian of a `NeuralFunctional` (kernels of half-width ``radius``, so correlations up to
   2·radius = r_c) on the periodic grid is fitted to −c2 (images summed,
   `BulkCorrelationData.periodic_kernel`) and its first derivative to βμ_exc with weight
   ``mu_weight``, Adam with a cosine-decayed rate for ``train_steps`` steps. No
   inhomogeneous data is used. (The weight: the c2 integrals, ĉ(0) = −dβμ_exc/dρ, carry
   errors of 0.3-0.5σ³ at the low densities, where the half-box g(r) ends early, so with
   weight 1 the fit traded 0.04 kT of βμ_exc at ρ = 0.1 for the Hessian, a 4 % density
   error in dilute regions; weight 10 fits βμ_exc to 0.02 kT.)
3. **Held-out test**: ``held_out`` random environments (`RandomExternalPotentials`: sinusoids,
   Gaussian wells/barriers up to ``gaussian_amplitude`` kT and hard walls, βμ in
   [``beta_mu_min``, ``beta_mu_max``], seed 10000 + ``seed``), solved with `fepy.Picard`.

The reference is planar GCMC (`fepy.apps.dft.gcmc_planar`) in the same potentials: a
``side`` x ``side`` x ``length`` periodic box, ``replicas`` chains of ``blocks`` x
``sweeps_per_block`` sweeps, ρ(z) in bins of ``bin_cells`` grid cells. The summary has
``mae_vs_gcmc`` (mean |ρ_DFT − ρ_GCMC| over the mean GCMC density, the DFT profile averaged
onto the bins, mean over the environments) beside ``gcmc_noise_floor`` (the GCMC's mean
standard error, same normalisation; pure noise gives a mean |Δ| of about 0.8 of it) and
``chi2_vs_gcmc`` (mean squared z-score; 1 when the DFT is exact), and the same for the
analytic baseline, White Bear II FMT with the Barker-Henderson diameter of the WCA core plus
the mean-field WCA attraction of the cut-and-shifted potential, at the same βμ
(``baseline_*``), and at the neural functional's bulk density, i.e. with the MD data's
equation of state, which isolates the structure (``baseline_matched_*``). ``density.png``
shows the profiles. Times of the three stages are reported
(``bulk_seconds``, ``train_seconds``, ``gcmc_seconds``), and ``gcmc_max_density``, the
largest simulated density, to tell environments inside the trained densities from those
beyond them (``mae_vs_gcmc_worst`` is the worst environment).

Measured (defaults, seeds 0 and 1, 6 environments): inside the trained densities (5 of 6)
the neural profiles are within 1.2-1.8 % of the GCMC (noise floors 1.0-1.1 %, mean z²
2.1-3.9), the baseline 7-19 % at the same βμ and 1.5-4.3 % (z² 5-27) at matched bulk
density; an attractive wall adsorbing up to ρ = 2.2, far beyond the densest state point,
gave 7.4 % (z² 39) against the baseline's 3 %: the network does not extrapolate the
packing of dense adsorbed layers.

The defaults are a CPU budget (about 7 + 5 + 6 minutes on two loaded cores for MD, training
and GCMC): 6 state points of N = 256 (12000 steps each), dz = 0.01 as in the paper.
"""

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import integrate

import fepy
from fepy.apps.dft import (
    FMT, CutShiftedLennardJones, LangevinMD, LennardJonesPair, MeanFieldAttraction, bulk_correlation_data,
)
from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials
from fepy.apps.dft.gcmc_planar import PlanarGrandCanonicalMC, bin_average
from fepy.apps.dft.lj import R_MIN
from fepy.apps.dft.neural import NeuralFunctional, pair_correlation_loss, train

DEFAULTS = dict(
    seed=0, temperature=2.0, cutoff=2.5, length=10.0, dz=0.01,
    density_min=0.1, density_max=0.85, state_points=6, n_particles=256, md_equilibration=2000, md_blocks=10,
    md_samples_per_block=100, insertions=50,
    radius=1.25, features=8, degree=6, width=64, depth=2, train_steps=3000, learning_rate=3e-3, mu_weight=10.0,
    held_out=3, beta_mu_min=-1.4, beta_mu_max=-0.3, gaussian_amplitude=3.0,
    side=5.0, capacity=256, bin_cells=10, replicas=8, blocks=8, sweeps_per_block=400, equilibration=300,
    steps=800, mixing=0.1, anderson=8,
)


def _check(config) -> dict:
    c = {**DEFAULTS, **config}
    n = round(c["length"] / c["dz"])
    if not (c["dz"] > 0 and math.isclose(n * c["dz"], c["length"], rel_tol=1e-9)):
        raise ValueError(f"length must be a positive multiple of dz > 0, got length={c['length']!r}, dz={c['dz']!r}")
    if not c["temperature"] > 0:
        raise ValueError(f"temperature T* must be > 0, got {c['temperature']!r}")
    if not 0 < c["density_min"] < c["density_max"]:
        raise ValueError("need 0 < density_min < density_max")
    if not c["beta_mu_min"] < c["beta_mu_max"]:
        raise ValueError("beta_mu_min must be below beta_mu_max")
    if not c["length"] >= 2 * c["cutoff"]:
        raise ValueError(f"length must be at least twice the cutoff {c['cutoff']}, got {c['length']!r}")
    return c


def _key(c) -> tuple:
    return tuple(sorted(c.items()))


def _grid(c) -> fepy.Grid:
    return fepy.Grid(round(c["length"] / c["dz"]), c["dz"])


def barker_henderson_diameter(temperature: float) -> float:
    r"""The hard-sphere diameter of the WCA core, :math:`d = \int_0^{r_m}\big[1 - e^{-\beta u_{rep}(r)}\big]\,dr` (σ).

    :math:`u_{rep} = 4\varepsilon[(\sigma/r)^{12} - (\sigma/r)^6] + \varepsilon` for :math:`r < r_m = 2^{1/6}\sigma`
    (J. A. Barker & D. Henderson, J. Chem. Phys. 47, 4714 (1967)); about 0.99σ at T* = 2.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature T* must be finite and > 0, got {temperature!r}")

    def integrand(r):
        return -math.expm1(-(4.0 * (r**-12 - r**-6) + 1.0) / temperature)

    return integrate.quad(integrand, 0.0, R_MIN, epsabs=1e-13, epsrel=1e-12)[0]


def baseline(c) -> fepy.SumFunctional:
    """White Bear II FMT (Barker-Henderson diameter) + mean-field WCA attraction of the cut-and-shifted LJ."""
    return FMT(diameter=barker_henderson_diameter(c["temperature"])) + MeanFieldAttraction(
        temperature=c["temperature"], cutoff=c["cutoff"], shift=True
    )


def environments(c):
    """The held-out (βV_ext on the grid cells, βμ), ``held_out`` of them, from seed 10000 + ``seed``."""
    potentials = RandomExternalPotentials(
        _grid(c), beta_mu=(c["beta_mu_min"], c["beta_mu_max"]), gaussian_amplitude=c["gaussian_amplitude"],
        wall_probability=1.0,
    )
    return potentials.sample(jax.random.key(10_000 + c["seed"]), c["held_out"])


@functools.lru_cache(maxsize=2)
def _bulk(items: tuple):
    c = dict(items)
    md = LangevinMD(
        n_particles=c["n_particles"], equilibration_steps=c["md_equilibration"], blocks=c["md_blocks"],
        samples_per_block=c["md_samples_per_block"], insertions=c["insertions"],
        potential=CutShiftedLennardJones(c["cutoff"]),
    )
    densities = np.linspace(c["density_min"], c["density_max"], c["state_points"])
    begin = time.perf_counter()
    data = bulk_correlation_data(densities, c["temperature"], c["seed"], md, dz=c["dz"])
    return data, time.perf_counter() - begin


def bulk_data(c):
    """`BulkCorrelationData` of the state points and the seconds it took (cached per config)."""
    return _bulk(_key(c))


@functools.lru_cache(maxsize=2)
def _trained(items: tuple):
    c = dict(items)
    data, _ = _bulk(items)
    grid = _grid(c)
    kernel = data.periodic_kernel(grid)
    start = NeuralFunctional(
        radius=c["radius"], features=c["features"], degree=c["degree"], width=c["width"], depth=c["depth"],
        max_density=1.2, key=jax.random.key(c["seed"]),
    )
    optimizer = optax.adam(optax.cosine_decay_schedule(c["learning_rate"], c["train_steps"], 0.01))
    begin = time.perf_counter()
    functional, losses = train(
        start, lambda f: pair_correlation_loss(f, grid, data.density, kernel, data.beta_mu_exc, c["mu_weight"]),
        optimizer, c["train_steps"],
    )
    return functional, losses, time.perf_counter() - begin


def trained_functional(c) -> tuple[NeuralFunctional, np.ndarray, float]:
    """Bulk MD → c2 → pair-correlation matching: the functional, losses per step, training time (s; cached)."""
    return _trained(_key(c))


@functools.lru_cache(maxsize=2)
def _gcmc(items: tuple):
    c = dict(items)
    beta_external, beta_mu = environments(c)
    simulator = PlanarGrandCanonicalMC(
        _grid(c), c["side"], LennardJonesPair(epsilon=1.0 / c["temperature"], cutoff=c["cutoff"]), c["capacity"],
        bin_cells=c["bin_cells"],
    )
    begin = time.perf_counter()
    result = simulator.run(
        beta_external, beta_mu, jax.random.split(jax.random.key(20_000 + c["seed"]), c["held_out"]),
        replicas=c["replicas"], blocks=c["blocks"], sweeps_per_block=c["sweeps_per_block"],
        equilibration=c["equilibration"],
    )
    seconds = time.perf_counter() - begin
    if float(jnp.max(result.capacity_rejections)):
        raise RuntimeError("the reference GCMC filled its capacity; raise capacity")
    return np.asarray(result.bins.points), np.asarray(result.density), np.asarray(result.density_stderr), seconds


def gcmc_reference(c) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Bin centres, GCMC ρ(z) and its standard error (``held_out``, bins), and the seconds (cached per config)."""
    return _gcmc(_key(c))


def solve(c, functional, beta_external, beta_mu, rho_bulk=None) -> tuple[np.ndarray, float]:
    """`fepy.Picard` profiles of ``functional`` at (βV_ext, βμ), or at the βμ of its bulk density ``rho_bulk``
    when given, started from the bulk density; and the residual."""
    grid = _grid(c)
    if rho_bulk is None:
        target = fepy.GrandPotential.from_chemical_potential(grid, functional, beta_mu, beta_external)
    else:
        target = fepy.GrandPotential.from_bulk_density(grid, functional, rho_bulk, beta_external)
    start = jnp.where(jnp.isfinite(beta_external), target.rho_bulk[..., None], 0.0)
    sol = fepy.minimize(target, fepy.GridDensity(start, grid), fepy.Picard(mixing=c["mixing"], anderson=c["anderson"]),
                        steps=c["steps"], key=jax.random.key(0))
    return np.asarray(sol.family.rho), float(sol.summary["residual"])


def compare(c, rho) -> dict:
    """Mean |Δρ|/mean ρ (mean and worst over environments) and mean z² of DFT profiles against the GCMC bins."""
    _, reference_rho, reference_err, _ = gcmc_reference(c)
    binned = np.asarray(bin_average(jnp.asarray(rho), c["bin_cells"]))
    scale = reference_rho.mean(axis=-1)
    fluid = reference_err > 0  # bins inside walls are exactly 0 in both
    z = np.where(fluid, (binned - reference_rho) / np.where(fluid, reference_err, 1.0), 0.0)
    mae = np.abs(binned - reference_rho).mean(axis=-1) / scale
    return dict(mae=float(np.mean(mae)), worst=float(np.max(mae)),
                chi2=float(np.mean(np.sum(z**2, axis=-1) / np.sum(fluid, axis=-1))))


def reference(config) -> dict:
    c = _check(config)
    x, rho, err, _ = gcmc_reference(c)
    return dict(profile=[dict(x=x, rho=r, rho_stderr=e, label="GCMC (held out)") for r, e in zip(rho, err)])


def observables(target, family, config) -> dict:
    c = _check(config)
    _, reference_rho, reference_err, gcmc_seconds = gcmc_reference(c)
    neural = compare(c, np.asarray(family.rho))
    beta_external, beta_mu = environments(c)
    base = baseline(c)
    base_rho, base_residual = solve(c, base, beta_external, beta_mu)
    base_cmp = compare(c, base_rho)
    matched = compare(c, solve(c, base, beta_external, beta_mu, target.rho_bulk)[0])
    _, losses, train_seconds = trained_functional(c)
    return dict(
        mae_vs_gcmc=neural["mae"],
        mae_vs_gcmc_worst=neural["worst"],
        chi2_vs_gcmc=neural["chi2"],
        gcmc_noise_floor=float(np.mean(reference_err.mean(axis=-1) / reference_rho.mean(axis=-1))),
        gcmc_max_density=float(reference_rho.max()),
        baseline_mae_vs_gcmc=base_cmp["mae"],
        baseline_chi2_vs_gcmc=base_cmp["chi2"],
        baseline_residual=base_residual,
        baseline_matched_mae_vs_gcmc=matched["mae"],
        baseline_matched_chi2_vs_gcmc=matched["chi2"],
        bulk_density=float(jnp.mean(target.rho_bulk)),
        baseline_bulk_density=float(jnp.mean(base.bulk_density(beta_mu))),
        final_loss=float(losses[-1]),
        bulk_seconds=bulk_data(c)[1],
        train_seconds=train_seconds,
        gcmc_seconds=gcmc_seconds,
    )


def build(config):
    c = _check(config)
    beta_external, beta_mu = environments(c)
    functional, _, _ = trained_functional(c)
    grid = _grid(c)
    target = fepy.GrandPotential.from_chemical_potential(grid, functional, beta_mu, beta_external)
    family = fepy.GridDensity(jnp.where(jnp.isfinite(beta_external), target.rho_bulk[:, None], 0.0), grid)
    return fepy.Problem(target, family, fepy.Picard(mixing=c["mixing"], anderson=c["anderson"]), c["steps"])
