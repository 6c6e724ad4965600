"""Hard rods: the density profile of Percus's exact functional (fepy.Picard) against GCMC within statistical error.

Percus's functional is exact for hard rods in any external potential, so the equilibrium
DFT profile and the grand-canonical simulation of the same system must agree to within the
simulation's error bars. Both use one `fepy.Grid` and one ``beta_external``:

- GCMC (`fepy.apps.dft.gcmc`) takes βV as constant on each cell [k dx, (k+1) dx) and
  measures cell averages of ρ;
- the DFT takes the same numbers as point values at the cell centres and solves for ρ there.

The two readings differ by O(dx²) (a cell average against a centre value, and a
piecewise-constant against a smooth potential), and the DFT adds its own O(dx²) grid error.
The test measures that difference instead of assuming it small: it solves the DFT once
more on a grid 4 times finer with the cell-constant potential (the GCMC system itself, up
to O((dx/4)²)), averages it over the GCMC cells, and requires the same-grid DFT to be
within half a GCMC standard error of it in every compared cell, so that the grid shifts
no z-score by more than 0.5. Measured at dx = 0.025σ: at most 0.16-0.23 standard errors
over five GCMC seeds, at the contact cell of a wall next to a -2.3 kT well (0.54 at
dx = 0.05σ with the same counts per cell and block). Then the z-scores
(GCMC − DFT) / stderr are checked as in ``tests/test_gcmc.py``: every |z| below max(5, the
Student-t quantile that one of the compared values exceeds with probability 1e-4), 6.28
here, and mean z² within 5 sqrt(2/count) + 0.1 of 1, ±0.47 here (over the five seeds:
max |z| 3.0-4.9, mean z² 0.99-1.23 per system).

Systems (L = 10σ, periodic box, dx = 0.025σ): a random potential between hard walls of
random widths, a random potential without walls, and a plain slit (hard walls, V = 0); the
random potentials are `RandomExternalPotentials` with βμ in (0, 1) (bulk packing fraction
0.36-0.5) and Gaussians at least 0.25σ wide, so that no cell packs so densely that
the grid error at a wall exceeds the statistical one.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import fepy
from fepy.apps.dft import HardRods
from fepy.apps.dft.gcmc import GrandCanonicalMC, HardRodPair
from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials

LENGTH, DX, REFINE = 10.0, 0.025, 4
BLOCKS, SWEEPS_PER_BLOCK = 32, 4000


def assert_within_errors(simulated, predicted, stderr, what: str, blocks: int = BLOCKS):
    """The z-score criterion of the module docstring; returns z."""
    simulated, predicted, stderr = (np.ravel(np.asarray(a, np.float64)) for a in (simulated, predicted, stderr))
    assert np.all(stderr > 0), f"{what}: zero standard error"
    z = (simulated - predicted) / stderr
    limit = max(5.0, stats.t.ppf(1 - 1e-4 / z.size, blocks - 1))
    assert np.max(np.abs(z)) < limit, f"{what}: max |z| = {np.max(np.abs(z)):.2f} >= {limit:.2f}"
    chi2 = np.mean(z**2)
    assert abs(chi2 - 1) < 5 * math.sqrt(2 / z.size) + 0.1, f"{what}: mean z^2 = {chi2:.3f} over {z.size} values"
    return z


def solve(grid, beta_external, beta_mu, steps: int):
    """Percus DFT profiles of the batch, Picard + Anderson from a uniform start."""
    target = fepy.GrandPotential.from_chemical_potential(grid, HardRods(), beta_mu, beta_external)
    start = fepy.GridDensity(jnp.where(target.allowed, target.rho_bulk[:, None], 0.0), grid)
    sol = fepy.minimize(target, start, fepy.Picard(mixing=0.1, anderson=10), steps=steps,
                        key=jax.random.key(0), chunk_size=steps)
    assert sol.summary["residual"] < 1e-10, f"DFT not converged on {grid}: {sol.summary['residual']:.2e}"
    return np.asarray(sol.family.rho)


def test_percus_profiles_match_gcmc_within_statistical_error():
    grid = fepy.Grid(int(round(LENGTH / DX)), DX)
    x = np.asarray(grid.points)
    smooth = dict(beta_mu=(0.0, 1.0), gaussian_amplitude=2.0, gaussian_width=(0.25, 1.0), max_wavenumber=4)
    walled, mu_walled = RandomExternalPotentials(grid, wall_probability=1.0, wall_width=(0.5, 1.5), **smooth).sample(
        jax.random.key(0), 1)
    open_, mu_open = RandomExternalPotentials(grid, wall_probability=0.0, **smooth).sample(jax.random.key(1), 1)
    slit = jnp.asarray(np.where((x < 1.0) | (x >= LENGTH - 1.0), np.inf, 0.0))[None]
    beta_v = jnp.concatenate([walled, open_, slit])
    beta_mu = jnp.concatenate([mu_walled, mu_open, jnp.array([1.0])])

    sim = GrandCanonicalMC(grid, HardRodPair(), int(LENGTH) + 2)
    result = sim.run(beta_v, beta_mu, jax.random.key(2), blocks=BLOCKS, sweeps_per_block=SWEEPS_PER_BLOCK,
                     equilibration=500)
    assert np.all(np.asarray(result.capacity_rejections) == 0)
    rho_mc, err = np.asarray(result.density), np.asarray(result.density_stderr)

    rho_dft = solve(grid, beta_v, beta_mu, steps=600)
    fine = fepy.Grid(grid.n * REFINE, DX / REFINE)
    rho_fine = solve(fine, jnp.repeat(beta_v, REFINE, axis=-1), beta_mu, steps=1200)
    cell_mean = rho_fine.reshape(*rho_fine.shape[:-1], grid.n, REFINE).mean(axis=-1)

    allowed = np.isfinite(np.asarray(beta_v))
    assert np.all(rho_mc[~allowed] == 0) and np.all(rho_dft[~allowed] == 0)
    # the grid's O(dx^2) against the statistical error, measured
    grid_error = np.abs(rho_dft - cell_mean)[allowed] / err[allowed]
    assert grid_error.max() < 0.5, f"same-grid DFT vs cell-averaged fine DFT: {grid_error.max():.2f} stderr"

    for i, name in enumerate(["random potential + walls", "random potential", "hard slit"]):
        assert_within_errors(rho_mc[i][allowed[i]], rho_dft[i][allowed[i]], err[i][allowed[i]], f"{name} rho(x)")
    number_dft = np.asarray(grid.integrate(jnp.asarray(rho_dft)))
    assert_within_errors(result.number, number_dft, result.number_stderr, "<N>")
