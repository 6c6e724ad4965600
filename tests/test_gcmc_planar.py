"""Planar GCMC of 3-D fluids against exact statistical mechanics (float64 via conftest).

Comparisons are z-scores (simulation - exact) / standard error with batch-means errors over
B pooled blocks; for a correct sampler each z follows a Student t with B - 1 degrees of
freedom. Every |z| must stay below max(5, the t quantile one of the compared values exceeds
with probability 1e-4) and, over many bins, the mean z² within 5 sqrt(2 / count) + 0.1 of 1
(a bias spread over the profile, or a wrong error bar, fails it). Runs are seeded.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fepy import Grid
from fepy.apps.dft.bulk_lj import CutShiftedLennardJones, LangevinMD
from fepy.apps.dft.gcmc import LennardJonesPair
from fepy.apps.dft.gcmc_planar import PlanarGrandCanonicalMC, bin_average
from fepy.apps.dft.ornstein_zernike import RadialGrid

T = 2.0  # supercritical (T_c ≈ 1.08 for LJ cut and shifted at 2.5σ)


def assert_z_scores(simulated, exact, stderr, what: str, blocks: int):
    simulated, exact, stderr = (np.ravel(np.asarray(a, np.float64)) for a in (simulated, exact, stderr))
    assert np.all(stderr > 0), f"{what}: zero standard error where a fluctuation is expected"
    z = (simulated - exact) / stderr
    limit = max(5.0, stats.t.ppf(1 - 1e-4 / z.size, blocks - 1))
    assert np.max(np.abs(z)) < limit, f"{what}: max |z| = {np.max(np.abs(z)):.2f} > {limit:.2f} (z = {np.round(z, 2)})"
    if z.size >= 10:
        chi2 = np.mean(z**2)
        assert abs(chi2 - 1) < 5 * math.sqrt(2 / z.size) + 0.1, f"{what}: chi2/dof = {chi2:.3f} over {z.size} values"
    return z


def test_lennard_jones_pair_is_the_bulk_md_potential_over_kT():
    """The GCMC's βu is the MD's cut-and-shifted u / T* (the same fluid as `bulk_correlation_data`)."""
    r = np.linspace(0.8, 3.0, 221)
    np.testing.assert_allclose(
        LennardJonesPair(epsilon=1 / T, cutoff=2.5)(r), CutShiftedLennardJones(2.5)(r) / T, rtol=1e-12, atol=1e-15
    )


def test_ideal_gas_profile_is_boltzmann_in_walls_and_wells():
    """ρ(z) = e^{βμ - βV(z)} (Λ = σ), bin-averaged over the grid cells, and 0 inside walls."""
    grid = Grid(500, 0.02)
    z = np.asarray(grid.points)
    smooth = 0.8 * np.sin(2 * np.pi * z / grid.length) - 1.5 * np.exp(-((z - 6) ** 2) / 0.5)
    beta_v = np.where((z > 2.0) & (z < 3.0), np.inf, smooth)
    beta_mu = math.log(0.2)
    sim = PlanarGrandCanonicalMC(grid, 4.0, None, 160, bin_cells=25, max_displacement=1.0)
    result = sim.run(beta_v, beta_mu, jax.random.key(0), replicas=2, blocks=16, sweeps_per_block=40, equilibration=40)
    assert float(result.capacity_rejections) == 0
    exact = np.asarray(bin_average(jnp.exp(beta_mu - jnp.asarray(beta_v)), 25))
    inside_wall = exact == 0
    assert inside_wall.sum() == 2 and np.all(np.asarray(result.density)[inside_wall] == 0)
    assert_z_scores(result.density[~inside_wall], exact[~inside_wall], result.density_stderr[~inside_wall],
                    "ideal-gas rho(z)", result.blocks)
    number = grid.integrate(jnp.exp(beta_mu - jnp.asarray(beta_v))) * sim.side**2
    assert_z_scores(result.number, number, result.number_stderr, "ideal-gas N", result.blocks)


def virial_coefficients(pair, grid=RadialGrid(2**12, 0.005)):
    """B2 = -f̂(0)/2 and B3 = -(1/3)∫f̂³ d³k/(2π)³ of the Mayer function f = e^{-βu} - 1 (σ³, σ⁶)."""
    r = grid.r
    f = jnp.where(r > 0.3, jnp.expm1(-pair(jnp.maximum(r, 0.3))), -1.0)
    f_hat = grid.forward(f)
    return float(-0.5 * f_hat[0]), float(-grid.inverse(f_hat**3)[0] / 3)


def test_dilute_lennard_jones_density_matches_the_virial_series():
    """Bulk LJ (T* = 2, cut and shifted at 2.5σ) at βμ = ln ρ + 2B2ρ + (3/2)B3ρ², ρ = 0.05: ⟨N⟩/V = ρ.

    B2 = -0.772σ³, B3 = 1.878σ⁶ (radial transforms, converged to 1e-6); βμ_exc = -0.074 kT,
    a 7 % effect on the density. The neglected (4/3)B4ρ³ is about 3e-4 kT for |B4| ≲ 2σ⁹
    (LJ at T* = 2), 0.03 % of ρ, a tenth of the statistical error (0.3 %).
    """
    pair = LennardJonesPair(epsilon=1 / T, cutoff=2.5)
    b2, b3 = virial_coefficients(pair)
    rho = 0.05
    beta_mu = math.log(rho) + 2 * b2 * rho + 1.5 * b3 * rho**2
    grid = Grid(100, 0.1)
    sim = PlanarGrandCanonicalMC(grid, 5.0, pair, 40, max_displacement=1.0)
    result = sim.run(jnp.zeros(grid.n), beta_mu, jax.random.key(1), replicas=8, blocks=8, sweeps_per_block=300,
                     equilibration=100)
    assert float(result.capacity_rejections) == 0
    assert_z_scores(result.mean_density, rho, result.mean_density_stderr, "dilute LJ density", result.blocks)
    assert float(result.mean_density_stderr) < 0.005 * rho


def test_seeded_systems_do_not_depend_on_their_batch():
    """System i with key[i] gives the same chains alone as in a batch; results are reproducible."""
    grid = Grid(100, 0.1)
    sim = PlanarGrandCanonicalMC(grid, 5.0, LennardJonesPair(epsilon=0.5), 48, bin_cells=10)
    keys = jax.random.split(jax.random.key(3), 2)
    beta_v = jnp.stack([jnp.zeros(grid.n), jnp.where(grid.points < 1.0, jnp.inf, 0.0)])
    batch = sim.run(beta_v, jnp.array([-1.5, -1.0]), keys, replicas=2, blocks=2, sweeps_per_block=5, equilibration=5)
    alone = sim.run(beta_v[1], -1.0, keys[1], replicas=2, blocks=2, sweeps_per_block=5, equilibration=5)
    np.testing.assert_allclose(batch.density_blocks[1], alone.density_blocks, rtol=1e-12)
    assert batch.density_blocks.shape == (2, 4, 10) and batch.state.positions.shape == (2, 2, 48, 3)
    assert np.all(np.asarray(batch.density)[1, 0] == 0)  # the wall covers the first bin
    again = sim.run(beta_v[1], -1.0, keys[1], replicas=2, blocks=2, sweeps_per_block=5, equilibration=5,
                    state=alone.state)
    assert np.all(np.asarray(again.number) > 0)


def test_validation():
    grid = Grid(100, 0.1)
    pair = LennardJonesPair()
    with pytest.raises(ValueError, match="periodic"):
        PlanarGrandCanonicalMC(Grid(100, 0.1, "empty", "empty"), 5.0, pair, 10)
    with pytest.raises(ValueError, match="twice the pair cutoff"):
        PlanarGrandCanonicalMC(grid, 4.0, pair, 10)
    with pytest.raises(ValueError, match="divide"):
        PlanarGrandCanonicalMC(grid, 5.0, pair, 10, bin_cells=3)
    with pytest.raises(ValueError, match="capacity"):
        PlanarGrandCanonicalMC(grid, 5.0, pair, 0)
    sim = PlanarGrandCanonicalMC(grid, 5.0, pair, 10)
    with pytest.raises(ValueError, match="shape"):
        sim.run(jnp.zeros(99), 0.0, jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        sim.run(jnp.full(100, -jnp.inf), 0.0, jax.random.key(0))
    with pytest.raises(ValueError, match="replicas"):
        sim.run(jnp.zeros(100), 0.0, jax.random.key(0), replicas=1, blocks=1)
    with pytest.raises(ValueError, match="typed key"):
        sim.run(jnp.zeros(100), 0.0, jax.random.PRNGKey(0))


@pytest.mark.slow
def test_dense_lennard_jones_density_matches_widom_from_molecular_dynamics():
    """Bulk LJ at T* = 2: GCMC at βμ = ln ρ + βμ_exc(Widom, MD at ρ = 0.5) returns ρ within the joint error.

    The MD's Widom error δβμ maps to the density error ρ δβμ / (β ∂p/∂ρ), with β ∂p/∂ρ of
    the JZG equation of state (the full LJ fluid: only the error's scale is taken from it).
    The boxes differ (MD: N = 256 cube; GCMC: 5 x 5 x 10 σ, N ≈ 125); finite-size effects on
    βμ_exc are O(1/N), below the errors.
    """
    from fepy.apps.dft.bulk_lj import JohnsonZollwegGubbins

    rho = 0.5
    md = LangevinMD(n_particles=256, equilibration_steps=2000, blocks=10, samples_per_block=100, insertions=50)
    sample = md.run(jax.random.key(4), rho, T)
    beta_mu = math.log(rho) + float(sample.beta_mu_exc)
    grid = Grid(100, 0.1)
    sim = PlanarGrandCanonicalMC(grid, 5.0, LennardJonesPair(epsilon=1 / T, cutoff=2.5), 220)
    result = sim.run(jnp.zeros(grid.n), beta_mu, jax.random.key(5), replicas=2, blocks=16, sweeps_per_block=400,
                     equilibration=400)
    assert float(result.capacity_rejections) == 0
    widom = rho * float(sample.beta_mu_exc_stderr) / float(JohnsonZollwegGubbins().inverse_compressibility(rho, T))
    stderr = math.hypot(float(result.mean_density_stderr), widom)
    z = (float(result.mean_density) - rho) / stderr
    assert abs(z) < 4, f"GCMC density {float(result.mean_density):.4f} vs {rho} (z = {z:.2f}, error {stderr:.2g})"
