"""Bulk Lennard-Jones pipeline: jax-md simulation against exact virial series and the JZG equation of state; data for pair-correlation matching.

Statistical checks allow 4 block standard errors (10 blocks of 60 samples, 3 τ each, longer
than the correlation times of p, U and the Widom average) plus the stated systematic error
of the reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from fepy.apps.dft.bulk_lj import (
    BulkCorrelationData,
    CutShiftedLennardJones,
    JohnsonZollwegGubbins,
    LangevinMD,
    bulk_correlation_data,
    ganguly_van_der_vegt,
)
from fepy.apps.dft.ornstein_zernike import RadialGrid

T = 2.0  # supercritical (T_c ≈ 1.31 for the full LJ fluid, ≈ 1.08 cut and shifted at 2.5σ)


def virial_coefficients(potential, temperature):
    """B2 = −ĉf(0)/2 and B3 = −(1/3)∫ f̂³ d³k/(2π)³ of the Mayer function f = e^{−βu} − 1 (σ³, σ⁶), by the radial transforms."""
    grid = RadialGrid(2**14, 0.002)
    r = grid.r
    f = jnp.where(r > 0.3, jnp.expm1(-potential(jnp.maximum(r, 0.3)) / temperature), -1.0)
    f_hat = grid.forward(f)
    return float(-0.5 * f_hat[0]), float(-grid.inverse(f_hat**3)[0] / 3)


def test_virial_coefficients_by_transform_match_quadrature():
    """The transform route to B2, B3 reproduces the hard-sphere values 2π/3 and 5π²/18 and the LJ B2 by quadrature."""
    grid = RadialGrid(2**14, 0.001)
    f_hat = grid.forward(jnp.where(grid.r < 1, -1.0, jnp.where(grid.r == 1, -0.5, 0.0)))
    np.testing.assert_allclose(-0.5 * f_hat[0], 2 * np.pi / 3, rtol=1e-6)
    np.testing.assert_allclose(-grid.inverse(f_hat**3)[0] / 3, 5 * np.pi**2 / 18, rtol=2e-3)
    lj = lambda r: 4 * (r**-12 - r**-6)  # noqa: E731
    b2 = -2 * np.pi * integrate.quad(lambda r: np.expm1(-lj(r) / T) * r * r, 1e-3, 60, limit=400)[0]
    np.testing.assert_allclose(virial_coefficients(lj, T)[0], b2, rtol=2e-4)  # the grid ends at 33σ: tail ~1e-4


def test_johnson_zollweg_gubbins_critical_point_and_second_virial():
    """The transcribed MBWR reproduces the critical point JZG report (T_c = 1.313, ρ_c = 0.310, p_c = 0.13) and B2(T)."""
    eos = JohnsonZollwegGubbins()
    dp = jax.grad(eos.pressure, 0)
    derivatives = jax.jit(lambda rho, t: jnp.stack([dp(rho, t), jax.grad(dp, 0)(rho, t)]))
    rho_c, t_c = optimize.fsolve(lambda v: np.asarray(derivatives(v[0], v[1])), [0.3, 1.3], xtol=1e-12)
    assert abs(t_c - 1.313) < 2e-3 and abs(rho_c - 0.310) < 3e-3
    assert abs(float(eos.pressure(rho_c, t_c)) - 0.13) < 5e-3
    lj = lambda r: 4 * (r**-12 - r**-6)  # noqa: E731
    for t in (1.0, 2.0, 4.0):
        b2 = -2 * np.pi * integrate.quad(lambda r: np.expm1(-lj(r) / t) * r * r, 1e-3, 60, limit=400)[0]
        rho = 1e-5
        b2_eos = (float(eos.pressure(rho, t)) / (rho * t) - 1) / rho
        assert abs(b2_eos - b2) < 0.01 * abs(b2) + 0.01
    # thermodynamic consistency of the autodiff routes: μ = A/N + p_exc/ρ and U = ∂(βA)/∂β
    rho, t = 0.6, 1.7
    a = float(eos.excess_free_energy(rho, t))
    np.testing.assert_allclose(eos.excess_chemical_potential(rho, t), a + (float(eos.pressure(rho, t)) - rho * t) / rho)
    h = 1e-5
    beta_a = lambda b: float(eos.excess_free_energy(rho, 1 / b)) * b  # noqa: E731
    np.testing.assert_allclose(eos.excess_energy(rho, t), (beta_a(1 / t + h) - beta_a(1 / t - h)) / (2 * h), rtol=1e-7)


def test_cut_shifted_potential_and_tail_corrections():
    p = CutShiftedLennardJones(2.5)
    np.testing.assert_allclose(p.shift, 4 * (2.5**-12 - 2.5**-6))
    np.testing.assert_allclose(p(2 ** (1 / 6)), -1 - p.shift, rtol=1e-14)
    assert abs(float(p(2.5 - 1e-9))) < 1e-9 and float(p(2.5)) == 0 and float(p(0.0)) == 0
    assert np.isfinite(jax.grad(lambda r: p(r))(0.0)) and float(jax.grad(lambda r: p(r))(3.0)) == 0
    rho = 0.6
    lj = lambda r: 4 * (r**-12 - r**-6)  # noqa: E731
    dlj = lambda r: 4 * (-12 * r**-13 + 6 * r**-7)  # noqa: E731
    energy = 2 * np.pi * rho * integrate.quad(lambda r: r * r * lj(r), 2.5, np.inf)[0]
    pressure = -2 * np.pi / 3 * rho**2 * integrate.quad(lambda r: r**3 * dlj(r), 2.5, np.inf)[0]
    np.testing.assert_allclose(p.tail_energy(rho), energy, rtol=1e-10)
    np.testing.assert_allclose(p.tail_pressure(rho), pressure, rtol=1e-10)
    np.testing.assert_allclose(p.tail_chemical_potential(rho), 2 * energy, rtol=1e-10)
    with pytest.raises(ValueError, match="r_cut"):
        CutShiftedLennardJones(1.0)


def test_ganguly_van_der_vegt_is_exact_for_an_ideal_gas():
    n, rho = 200, 0.4
    r = np.arange(300) * 0.01
    g = np.full((2, 300), (n - 1) / n)
    np.testing.assert_allclose(ganguly_van_der_vegt(g, r, [rho, rho], n), 1.0, rtol=1e-13)


@pytest.fixture(scope="module")
def sample():
    """N = 128 at ρ = 0.1 and 0.5, T* = 2, cut and shifted at 2.5σ: 7000 steps each, one vmapped program."""
    md = LangevinMD(n_particles=128, equilibration_steps=1000, blocks=10, samples_per_block=60, insertions=20)
    return md.run_batch(jax.random.key(0), jnp.array([0.1, 0.5]), T)


def test_simulation_structure_and_temperature(sample):
    r = np.asarray(sample.r)
    g = np.asarray(sample.g)
    assert np.all(g[:, r < 0.8] == 0)  # βu(0.8) ≈ 21: no pair that close
    assert np.all(np.abs(r[np.argmax(g, axis=1)] - 1.1) < 0.06)  # first peak near the minimum 2^(1/6)
    tail = r > 2.6
    gv = np.asarray(ganguly_van_der_vegt(sample.g_blocks, r, sample.density[:, None], sample.n_particles))
    tail_blocks = gv[..., tail].mean(-1)  # (2, blocks)
    stderr = tail_blocks.std(-1, ddof=1) / np.sqrt(tail_blocks.shape[-1])
    assert np.all(np.abs(tail_blocks.mean(-1) - 1) < 4 * stderr + 0.005)
    kinetic = np.asarray(sample.kinetic_temperature)
    assert np.all(np.abs(kinetic - T) < 4 * np.asarray(sample.kinetic_temperature_stderr))


def test_low_density_pressure_and_widom_against_virial_series(sample):
    """ρ = 0.1: βp/ρ = 1 + B2ρ + B3ρ² and βμ_exc = 2B2ρ + (3/2)B3ρ² of the simulated potential (exact to O(ρ³))."""
    b2, b3 = virial_coefficients(CutShiftedLennardJones(2.5), T)
    rho = 0.1
    b4_bound = 2.0  # |B4| of LJ at T* = 2 is below 1 σ⁹; the omitted terms are below bound ρ⁴ T and 4/3 bound ρ³
    pressure = rho * T * (1 + b2 * rho + b3 * rho**2)
    assert abs(float(sample.pressure[0]) - pressure) < 4 * float(sample.pressure_stderr[0]) + b4_bound * rho**4 * T
    mu = 2 * b2 * rho + 1.5 * b3 * rho**2
    assert abs(float(sample.beta_mu_exc[0]) - mu) < 4 * float(sample.beta_mu_exc_stderr[0]) + 4 / 3 * b4_bound * rho**3


def test_dense_state_against_johnson_zollweg_gubbins(sample):
    """ρ = 0.5: p, U/N and βμ_exc corrected to the full LJ fluid (tails with g = 1, shift to first order) vs the JZG EOS.

    Systematic allowances: JZG fit ≈ 2 % in p and 1 % in U (their Tables 3-4 residuals);
    βμ also carries the first-order shift correction (≈ 0.03 kT).
    """
    eos = JohnsonZollwegGubbins()
    rho = 0.5
    p, p_err = float(sample.full_lj_pressure()[1]), float(sample.pressure_stderr[1])
    assert abs(p - float(eos.pressure(rho, T))) < 4 * p_err + 0.02 * float(eos.pressure(rho, T))
    u, u_err = float(sample.full_lj_energy()[1]), float(sample.energy_stderr[1])
    assert abs(u - float(eos.excess_energy(rho, T))) < 4 * u_err + 0.01 * abs(float(eos.excess_energy(rho, T)))
    mu, mu_err = float(sample.full_lj_beta_mu_exc()[1]), float(sample.beta_mu_exc_stderr[1])
    assert abs(mu - float(eos.excess_chemical_potential(rho, T)) / T) < 4 * mu_err + 0.03


TINY = LangevinMD(n_particles=64, equilibration_steps=200, blocks=4, samples_per_block=5, steps_per_sample=5, insertions=8)


def test_correlation_data_reproducible_saved_and_consistent(tmp_path):
    densities = [0.2, 0.3]
    data = bulk_correlation_data(densities, T, seed=3, md=TINY, oz_points=2048, path=tmp_path / "lj.npz")
    again = BulkCorrelationData.load(tmp_path / "lj.npz")
    for name in data.__dataclass_fields__:
        np.testing.assert_array_equal(np.asarray(getattr(again, name)), np.asarray(getattr(data, name)))
    same = bulk_correlation_data(densities, T, seed=3, md=TINY, oz_points=2048)
    np.testing.assert_array_equal(same.c2, data.c2)
    np.testing.assert_array_equal(same.beta_mu_exc, data.beta_mu_exc)
    runs = [TINY.run_batch(jax.random.key(seed), jnp.asarray(densities), T).g_blocks for seed in (3, 4)]
    assert not np.allclose(runs[0], runs[1])  # another seed, another trajectory
    # the DFT grid: z = m dz; c2 integrates to ĉ(0) = (1 − (1 − ρĉ(0)))/ρ; c2(0) = 2π∫ r c dr
    z = np.asarray(data.z)
    np.testing.assert_allclose(np.diff(z), 0.01, atol=1e-12)
    assert z[-1] == pytest.approx(5.0) and data.c2.shape == (2, z.size) and data.c2_stderr.shape == (2, z.size)
    rho = np.asarray(data.density)
    c_hat_zero = (1 - np.asarray(data.inverse_compressibility)) / rho
    full = np.concatenate([np.asarray(data.c2)[:, :0:-1], np.asarray(data.c2)], axis=1)
    np.testing.assert_allclose(integrate.trapezoid(full, dx=0.01, axis=1), c_hat_zero, rtol=2e-3, atol=2e-3)
    r = np.arange(2048) * TINY.bin_width
    np.testing.assert_allclose(2 * np.pi * integrate.trapezoid(r * np.asarray(data.c), r, axis=1), data.c2[:, 0], rtol=1e-3)
    assert np.all(np.asarray(data.c2_stderr) >= 0) and np.all(np.asarray(data.inverse_compressibility_stderr) > 0)
    assert np.all(np.isfinite(np.asarray(data.beta_mu_exc))) and np.all(np.asarray(data.beta_mu_exc_stderr) > 0)


def test_validation():
    with pytest.raises(ValueError, match="n_particles"):
        LangevinMD(n_particles=1)
    with pytest.raises(ValueError, match="dt"):
        LangevinMD(dt=0.0)
    with pytest.raises(ValueError, match="below r_cut"):
        LangevinMD(n_particles=16).run(jax.random.key(0), 0.8, T)
    with pytest.raises(ValueError, match="densities"):
        LangevinMD().run_batch(jax.random.key(0), jnp.array([0.5, -0.1]), T)
    with pytest.raises(ValueError, match="temperature"):
        LangevinMD().run(jax.random.key(0), 0.5, 0.0)
    with pytest.raises(ValueError, match="seed"):
        bulk_correlation_data([0.3], T, seed=1.5, md=TINY)
    with pytest.raises(ValueError, match="one temperature"):
        bulk_correlation_data([0.3], [T, T], seed=1, md=TINY)
    with pytest.raises(ValueError, match="oz_points"):
        bulk_correlation_data([0.3], T, seed=1, md=TINY, oz_points=256)


def test_periodic_kernel_sums_images():
    """On a periodic grid the kernel holds c2 at each offset, images summed; Σ K dx = ∫ c2 dz = ĉ(0) when L ≥ 2 z_max."""
    from fepy.families.grid import Grid

    z = np.arange(301) * 0.01
    c2 = np.stack([np.cos(z) * (3 - z), (3 - z) ** 2])
    two, grid3 = jnp.zeros(2), jnp.zeros((2, 3))
    data = BulkCorrelationData(
        density=jnp.ones(2), temperature=jnp.asarray(T), beta_mu_exc=two, beta_mu_exc_stderr=two,
        beta_pressure=two, beta_pressure_stderr=two, r=jnp.zeros(3), g=grid3, g_stderr=grid3, c=grid3,
        z=jnp.asarray(z), c2=jnp.asarray(c2), c2_stderr=jnp.zeros_like(c2), inverse_compressibility=two,
        inverse_compressibility_stderr=two, r_cut=2.5, n_particles=64, seed=0,
    )  # fmt: skip
    wide = data.periodic_kernel(Grid(1000, 0.01))
    np.testing.assert_allclose(wide[:, :301], c2)
    np.testing.assert_allclose(wide[:, 1000 - 300:], c2[:, 1:][:, ::-1])
    np.testing.assert_allclose(wide[:, 301:700], 0.0)
    narrow = data.periodic_kernel(Grid(250, 0.01))  # L = 2.5 < 2 z_max: images overlap
    expected = np.zeros((2, 250))
    for i in range(250):
        for image in range(-3, 4):
            if abs(i + 250 * image) <= 300:
                expected[:, i] += c2[:, abs(i + 250 * image)]
    np.testing.assert_allclose(narrow, expected)
    np.testing.assert_allclose(narrow.sum(1) * 0.01, 2 * c2.sum(1) * 0.01 - c2[:, 0] * 0.01, rtol=1e-12)
    with pytest.raises(ValueError, match="dx"):
        data.periodic_kernel(Grid(1000, 0.02))
    with pytest.raises(ValueError, match="periodic"):
        data.periodic_kernel(Grid(1000, 0.01, "empty", "empty"))


@pytest.mark.slow
def test_compressibility_sum_rule_from_simulation():
    """1 − ρĉ(0) from simulated g(r) (finite-size corrected, OZ with HNC continuation beyond 3σ) = β ∂p/∂ρ.

    The reference is the JZG EOS moved to the cut-and-shifted fluid, β∂p/∂ρ − 2βp_tail/ρ
    (p_cs = p − p_tail, as in `BulkSample.full_lj_pressure`); allowance 3 jackknife errors
    plus 5 % (the EOS derivative and the first-order tail). N = 256, 40 000 steps per density.
    """
    md = LangevinMD(n_particles=256, equilibration_steps=2000, blocks=20, samples_per_block=200, insertions=20)
    densities = np.array([0.3, 0.5])
    data = bulk_correlation_data(densities, T, seed=11, md=md, r_match=3.0)
    eos = JohnsonZollwegGubbins()
    tail = CutShiftedLennardJones(2.5).tail_pressure(densities)
    reference = np.asarray(eos.inverse_compressibility(densities, T)) - 2 * np.asarray(tail) / (densities * T)
    got, err = np.asarray(data.inverse_compressibility), np.asarray(data.inverse_compressibility_stderr)
    assert np.all(np.abs(got - reference) < 3 * err + 0.05 * reference), (got, err, reference)
