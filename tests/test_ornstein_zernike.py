"""Ornstein-Zernike pipeline against closed forms: Fourier-Bessel pairs, Percus-Yevick hard spheres, planar kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from fepy.apps.dft.ornstein_zernike import (
    RadialGrid,
    direct_correlation,
    direct_correlation_continued,
    percus_yevick_hard_spheres,
    percus_yevick_inverse_compressibility,
    percus_yevick_planar,
    planar_direct_correlation,
    total_correlation,
)


def py_c_hat(k, eta, nodes=600):
    """PY ĉ(k) = 4π ∫_0^1 r² c(r) sinc(kr) dr by Gauss-Legendre quadrature of the closed-form c (exact to round-off)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = 0.5 * (x + 1), 0.5 * w
    c = np.asarray(percus_yevick_hard_spheres(x, eta))
    kx = np.asarray(k)[:, None] * x
    return 4 * np.pi * (np.sinc(kx / np.pi) * (x**2 * c * w)).sum(1)


def py_h(grid, eta):
    """PY h(r) on the grid: ĥ = ĉ/(1 − ρĉ) from the exact ĉ, then the inverse transform."""
    rho = 6 * eta / np.pi
    c_hat = py_c_hat(grid.k, eta)
    return np.asarray(grid.inverse(c_hat / (1 - rho * c_hat)))


def test_transform_of_gaussian_is_exact():
    grid = RadialGrid(4096, 0.01)
    r, k = grid.r, grid.k
    np.testing.assert_allclose(grid.forward(jnp.exp(-(r**2))), np.pi**1.5 * jnp.exp(-(k**2) / 4), atol=1e-13)
    np.testing.assert_allclose(grid.inverse(np.pi**1.5 * jnp.exp(-(k**2) / 4)), jnp.exp(-(r**2)), atol=1e-13)


def test_round_trip_is_exact_off_the_origin():
    grid = RadialGrid(1000, 0.02)
    f = jax.random.normal(jax.random.key(0), (3, grid.n))
    back = grid.inverse(grid.forward(f))
    np.testing.assert_allclose(back[:, 1:], f[:, 1:], atol=1e-12)
    h = jnp.exp(-grid.r) * jnp.cos(3 * grid.r)
    np.testing.assert_allclose(total_correlation(direct_correlation(h, grid, 0.4), grid, 0.4)[1:], h[1:], atol=1e-12)


@pytest.mark.parametrize("eta", [0.2, 0.4])
def test_percus_yevick_core_condition_and_contact_converge(eta):
    """h from the exact PY ĉ by inverse OZ is −1 inside the core; at r = σ it is the mean of −1 and g(σ⁺) − 1.

    The spectrum is cut at k_max = π/Δr and ĥ ~ k⁻² (h jumps at σ), so the error is first
    order in Δr: halving Δr halves it. The bounds are the Gibbs estimate J Δr/(π² d) for a
    jump J at distance d, with d = 1/4 in the core.
    """
    contact = (1 + eta / 2) / (1 - eta) ** 2  # PY g(σ⁺)
    errors = []
    for dr in (0.01, 0.005):
        grid = RadialGrid(int(round(40 / dr)), dr)
        h = py_h(grid, eta)
        r = np.asarray(grid.r)
        core = (r > 0.25) & (r < 0.75)
        at_sigma = int(round(1 / dr))
        errors.append((np.max(np.abs(h[core] + 1)), abs(h[at_sigma] - (contact - 2) / 2)))
        assert errors[-1][0] < 0.6 * dr * contact
        assert errors[-1][1] < 2 * dr * contact
    core_ratio = errors[0][0] / errors[1][0]
    assert 1.6 < core_ratio < 2.5, errors


@pytest.mark.parametrize("eta", [0.1, 0.45])
def test_forward_inversion_recovers_percus_yevick_c(eta):
    """c = OZ⁻¹[h] matches the Wertheim-Thiele c(r) (error from the k cut, largest next to the jump at σ).

    Bound: the Gibbs estimate J Δr/(π² d) with the jump J = |c(σ⁻)| at distance d ≥ 0.1.
    """
    grid = RadialGrid(4096, 0.01)
    rho = 6 * eta / np.pi
    c = np.asarray(direct_correlation(py_h(grid, eta), grid, rho))
    exact = np.asarray(percus_yevick_hard_spheres(grid.r, eta))
    r = np.asarray(grid.r)
    jump = abs(float(percus_yevick_hard_spheres(1 - 1e-12, eta)))
    away = (r > 0.1) & (np.abs(r - 1) > 0.1)
    assert np.max(np.abs(c - exact)[away]) < 1.5 * grid.dr * jump
    assert np.max(np.abs(c[r >= 1.5])) < 0.35 * grid.dr * jump  # d = 1/2
    # compressibility sum rule 1 − ρĉ(0) = β ∂p/∂ρ (PY), ĉ(0) by the transform of the closed-form c
    sum_rule = 1 - rho * grid.forward(exact)[0]
    np.testing.assert_allclose(sum_rule, percus_yevick_inverse_compressibility(eta), rtol=5e-5)


def test_percus_yevick_planar_closed_form_against_quadrature():
    eta = 0.35
    for z in (0.0, 0.3, 0.77, 0.999, 1.2):
        numeric = 2 * np.pi * integrate.quad(lambda r: r * float(percus_yevick_hard_spheres(r, eta)), z, 1.0)[0]
        np.testing.assert_allclose(percus_yevick_planar(z, eta), numeric, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(percus_yevick_planar(-z, eta), numeric, rtol=1e-12, atol=1e-12)


def test_planar_integral_is_second_order_and_integrates_to_c_hat_zero():
    """c2 from c on the grid vs the closed form: O(Δr²) away from the jump, and ∫c2 dz = ĉ(0)."""
    eta = 0.3
    z = np.arange(0, 1.6, 0.01)
    away = np.abs(z - 1) > 0.05
    errors = []
    for dr in (0.02, 0.01):
        grid = RadialGrid(2048, dr)
        c2 = np.asarray(planar_direct_correlation(percus_yevick_hard_spheres(grid.r, eta), grid, z))
        errors.append(np.max(np.abs(c2 - np.asarray(percus_yevick_planar(z, eta)))[away]))
    assert errors[1] < 2e-4 * abs(float(percus_yevick_planar(0.0, eta)))
    assert 3.0 < errors[0] / errors[1] < 5.0, errors
    lam1 = (1 + 2 * eta) ** 2 / (1 - eta) ** 4
    c_hat_zero = (1 - lam1) / (6 * eta / np.pi)  # from 1 − ρĉ(0) = λ1
    zz = np.linspace(-1, 1, 20001)
    np.testing.assert_allclose(integrate.trapezoid(percus_yevick_planar(zz, eta), zz), c_hat_zero, rtol=1e-7)


@pytest.mark.parametrize("eta", [0.3, 0.45])
def test_continuation_recovers_percus_yevick_from_a_half_box(eta):
    """h known only for r ≤ 3σ (a simulation's half box); the PY continuation restores c and the compressibility.

    Setting h = 0 beyond 3σ instead gives a wrong (even negative) 1 − ρĉ(0).
    """
    grid = RadialGrid(4096, 0.01)
    rho = 6 * eta / np.pi
    h = py_h(grid, eta)
    r = np.asarray(grid.r)
    out = direct_correlation_continued(h, grid, rho, 3.0, jnp.zeros(grid.n), closure="py")
    assert out.residual < 1e-10 and out.iterations < 30
    exact = np.asarray(percus_yevick_hard_spheres(grid.r, eta))
    jump = abs(float(percus_yevick_hard_spheres(1 - 1e-12, eta)))
    away = (r > 0.1) & (np.abs(r - 1) > 0.1)
    assert np.max(np.abs(np.asarray(out.c) - exact)[away]) < 1.5 * grid.dr * jump
    np.testing.assert_allclose(np.asarray(out.h)[r > 3], h[r > 3], atol=2e-3)  # the tail h beyond the data
    truth = float(percus_yevick_inverse_compressibility(eta))
    np.testing.assert_allclose(float(out.inverse_compressibility()), truth, rtol=1e-3)
    truncated = 1 - rho * grid.forward(direct_correlation(np.where(r <= 3, h, 0.0), grid, rho))[0]
    assert abs(float(truncated) - truth) > 0.2 * truth
    # the kernel integrates to ĉ(0); c2 is even in z
    z = np.arange(-6, 6.0001, 0.01)
    np.testing.assert_allclose(integrate.trapezoid(out.planar(z), z), out.c_hat_zero(), rtol=1e-4)


def test_continuation_vmaps_over_densities():
    grid = RadialGrid(1024, 0.01)
    etas = np.array([0.2, 0.3])
    hs = np.stack([py_h(grid, e) for e in etas])
    rhos = 6 * etas / np.pi

    def solve(h, rho):
        return direct_correlation_continued(h, grid, rho, 3.0, jnp.zeros(grid.n), closure="hnc").inverse_compressibility()

    batched = jax.jit(jax.vmap(solve))(hs, rhos)
    # the HNC tail closure on PY data: close to the PY compressibility (c beyond 3σ is O(h²))
    np.testing.assert_allclose(batched, percus_yevick_inverse_compressibility(etas), rtol=3e-3)


def test_validation():
    with pytest.raises(ValueError, match="n must be"):
        RadialGrid(2, 0.1)
    with pytest.raises(ValueError, match="dr must be"):
        RadialGrid(100, 0.0)
    grid = RadialGrid(100, 0.1)
    with pytest.raises(ValueError, match="shape"):
        grid.forward(np.zeros(99))
    with pytest.raises(ValueError, match="density"):
        direct_correlation(np.zeros(100), grid, -1.0)
    with pytest.raises(ValueError, match="r_match"):
        direct_correlation_continued(np.zeros(100), grid, 0.5, 20.0, np.zeros(100))
    with pytest.raises(ValueError, match="closure"):
        direct_correlation_continued(np.zeros(100), grid, 0.5, 3.0, np.zeros(100), closure="msa")
    with pytest.raises(ValueError, match="beta_u"):
        direct_correlation_continued(np.zeros(100), grid, 0.5, 3.0, np.full(100, np.inf))
    with pytest.raises(ValueError, match="max_iter"):
        direct_correlation_continued(np.zeros(100), grid, 0.5, 3.0, np.zeros(100), max_iter=0)
    with pytest.raises(ValueError, match="one-dimensional"):
        planar_direct_correlation(np.zeros(100), grid, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="packing_fraction"):
        percus_yevick_hard_spheres(0.5, 1.2)
