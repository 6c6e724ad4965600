"""Hard spheres by fundamental measure theory and the mean-field Lennard-Jones attraction (kT, σ units).

Bulk limits are compared with closed forms (Carnahan-Starling, Percus-Yevick, the
integrated WCA attraction) to round-off; the grid weights are exact for uniform
densities, so grid quantities of a uniform fluid are checked to round-off as well.
"""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

import fepy
from fepy.apps.dft import FMT, MeanFieldAttraction, integrated_attraction, planar_kernel, rosenfeld, white_bear_ii
from fepy.apps.dft.fmt import _white_bear_factor, _white_bear_ii_factors, white_bear
from fepy.apps.dft.lj import R_MIN
from fepy.cli import load_model

ETAS = np.linspace(0.1, 0.45, 8)


def _rho(eta):
    return 6.0 * np.asarray(eta) / np.pi


def carnahan_starling(eta):
    """βp and βμ_exc of Carnahan & Starling, J. Chem. Phys. 51, 635 (1969)."""
    rho = _rho(eta)
    return (
        rho * (1 + eta + eta**2 - eta**3) / (1 - eta) ** 3,
        (8 * eta - 9 * eta**2 + 3 * eta**3) / (1 - eta) ** 3,
    )


def percus_yevick_compressibility(eta):
    """βp and βμ_exc of the Percus-Yevick compressibility route (Thiele 1963, Wertheim 1963)."""
    rho = _rho(eta)
    return (
        rho * (1 + eta + eta**2) / (1 - eta) ** 3,
        -np.log(1 - eta) + (14 * eta - 13 * eta**2 + 5 * eta**3) / (2 * (1 - eta) ** 3),
    )


@pytest.mark.parametrize(
    "phi, closed_form",
    [(white_bear_ii, carnahan_starling), (white_bear, carnahan_starling), (rosenfeld, percus_yevick_compressibility)],
)
def test_bulk_equation_of_state(phi, closed_form):
    fmt = FMT(phi)
    pressure, mu = closed_form(ETAS)
    np.testing.assert_allclose(fmt.bulk_pressure(_rho(ETAS)), pressure, rtol=1e-10, atol=0)
    np.testing.assert_allclose(fmt.bulk_chemical_potential(_rho(ETAS)), mu, rtol=1e-10, atol=0)
    np.testing.assert_allclose(fmt.packing_fraction(_rho(ETAS)), ETAS, rtol=1e-15)


@pytest.mark.parametrize("phi", [white_bear_ii, white_bear, rosenfeld])
def test_gibbs_duhem(phi):
    """dβp/dρ = ρ dβμ/dρ with βμ = ln ρ + βμ_exc (one thermodynamics from one Φ)."""
    fmt = FMT(phi)
    rho = _rho(ETAS)
    dp = jax.jit(jax.vmap(jax.grad(fmt.bulk_pressure)))(rho)
    dmu = 1.0 / rho + jax.jit(jax.vmap(jax.grad(fmt.bulk_chemical_potential)))(rho)
    np.testing.assert_allclose(dp, rho * dmu, rtol=1e-12)


def test_white_bear_ii_factors_series_and_closed_form_agree():
    """φ2, φ3 switch from their Taylor series to the closed forms at n3 = 0.1, without a step."""
    for factor in _white_bear_ii_factors(jnp.array([np.nextafter(0.1, 0.0), 0.1])):
        # the closed forms lose ~1e-16/n3^3 to cancellation: 1e-13 at the switch
        assert float(factor[0]) == pytest.approx(float(factor[1]), rel=1e-13)
    phi2, phi3 = _white_bear_ii_factors(jnp.array([0.0, 1e-3]))
    np.testing.assert_allclose(phi2, [1.0, 1.0 + 1e-3 / 2 + 3e-6 / 10], rtol=1e-9)
    np.testing.assert_allclose(phi3, [1.0, 1.0 - 1e-3 / 8 - 1e-6 / 20], rtol=1e-9)
    # zero density (the empty margins beyond a wall): finite free energy and derivative
    grid = fepy.Grid(50, 0.05, "empty", "empty")
    gradient = jax.jit(FMT().derivative, static_argnums=1)(jnp.zeros(50), grid, 0.0)
    assert np.all(np.isfinite(gradient)) and np.all(gradient == 0.0)


def test_white_bear_factor_series_and_closed_form_agree():
    """White Bear's g(n3) = [n3 + (1 - n3)^2 ln(1 - n3)]/n3^2 switches to its series below n3 = 0.1
    without a step, is 3/2 at n3 = 0, and both White Bears differ at a wall (n2v != 0)."""
    g = _white_bear_factor(jnp.array([np.nextafter(0.1, 0.0), 0.1, 0.0, 1e-3]))
    assert float(g[0]) == pytest.approx(float(g[1]), rel=1e-14)  # the closed form loses ~1e-15 at 0.1
    np.testing.assert_allclose(g[2:], [1.5, 1.5 - 1e-3 / 3 - 1e-6 / 12 - 1e-9 / 30], rtol=1e-13)
    n2, n3, n2v = 2.0, 0.3, -0.5
    args = tuple(jnp.asarray(v) for v in (n2 / np.pi, n2 / (2 * np.pi), n2, n3, n2v / (2 * np.pi), n2v))
    assert abs(float(white_bear(*args)) - float(white_bear_ii(*args))) > 1e-4  # 3.7e-4 kT/σ³ here


@pytest.mark.parametrize("dx, quadrature", [(0.01, 1), (0.037, 1), (0.037, 3)])
@pytest.mark.parametrize("edges", ["periodic", "bulk"])
def test_uniform_fluid_on_a_grid_is_bulk(dx, quadrature, edges):
    """Exact weights: a uniform profile has the bulk μ_exc at every point (any dx, also R/dx not
    whole, and between the points: with a 3-point quadrature of Φ in each cell)."""
    fluid = FMT() + MeanFieldAttraction(temperature=1.5, cutoff=2.5)
    grid = fepy.Grid(400, dx, edges, edges, quadrature=quadrature)
    rho_b = _rho(0.35)
    rho = jnp.full(grid.n, rho_b)
    derivative = jax.jit(fluid.derivative, static_argnums=1)(rho, grid, rho_b)
    np.testing.assert_allclose(derivative, fluid.bulk_chemical_potential(rho_b), rtol=1e-12)
    if edges == "periodic":
        assert float(fluid.free_energy(rho, grid, rho_b)) == pytest.approx(
            grid.length * float(fluid.bulk_free_energy_density(rho_b)), rel=1e-12
        )


def test_vector_weighted_density_is_minus_gradient_of_n3():
    """n2v = -dn3/dz: negative where the density rises with z (the sign convention of w2v)."""
    grid = fepy.Grid(500, 0.01)
    z = grid.points
    rho = 0.6 + 0.3 * jnp.sin(2 * jnp.pi * z / grid.length)
    n2, n3, n2v = (n[..., 0] for n in FMT().weighted_densities(rho, grid, 0.6))  # at the points (midpoint rule)
    gradient = (jnp.roll(n3, -1) - jnp.roll(n3, 1)) / (2 * grid.dx)
    # central differences and the piecewise-linear density: O(dx^2) relative to |dn3/dz| ~ 0.2
    np.testing.assert_allclose(n2v, -gradient, atol=1e-5)
    assert n2v[10] < 0  # the density rises at z = 0.1


# ---------------------------------------------------------------------- mean-field attraction


def _wca_attraction(r, cutoff):
    return np.where(r < R_MIN, -1.0, np.where(r < cutoff, 4 * (r**-12 - r**-6), 0.0))


@pytest.mark.parametrize("cutoff", [2.5, 4.0, math.inf])
def test_integrated_attraction(cutoff):
    r"""∫u_att d³r = -(32√2/9)π εσ³ + 16π[1/(3 r_c³) - 1/(9 r_c⁹)] (the tail beyond r_c removed).

    The core -ε over r < 2^{1/6} gives -(4π/3)√2, the LJ tail from 2^{1/6} to ∞ gives
    16π[σ^6/(3r³) - σ^12/(9r⁹)] at r = 2^{1/6}, i.e. -(40/(9√2))π; the bulk mean-field free
    energy is then βf_att = ½ρ²∫βu_att = -(16√2/9)πρ²/T* without a cutoff.
    """
    removed = 16 * np.pi * (1 / (3 * cutoff**3) - 1 / (9 * cutoff**9)) if math.isfinite(cutoff) else 0.0
    exact = -32 * math.sqrt(2) / 9 * math.pi + removed
    assert integrated_attraction(cutoff) == pytest.approx(exact, rel=1e-14)
    radial = quad(lambda r: 4 * np.pi * r**2 * _wca_attraction(r, cutoff), 0, R_MIN)[0] + quad(
        lambda r: 4 * np.pi * r**2 * _wca_attraction(r, cutoff), R_MIN, cutoff, limit=200
    )[0]
    planar = 2 * quad(planar_kernel, 0, R_MIN, args=(cutoff,))[0] + 2 * quad(
        planar_kernel, R_MIN, cutoff, args=(cutoff,), limit=200
    )[0]
    assert radial == pytest.approx(exact, rel=1e-10)
    assert planar == pytest.approx(exact, rel=1e-10)
    attraction = MeanFieldAttraction(temperature=1.3, cutoff=cutoff if math.isfinite(cutoff) else 2.5)
    rho = 0.7
    if math.isfinite(cutoff):
        assert float(attraction.bulk_free_energy_density(rho)) == pytest.approx(0.5 * rho**2 * exact / 1.3, rel=1e-14)


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, R_MIN, 1.5, 2.4, 3.0])
def test_planar_kernel_is_the_potential_integrated_over_the_plane(z):
    """Φ_att(z) = ∫dx dy u_att(sqrt(x² + y² + z²)) = 2π∫_{|z|}^∞ r u_att(r) dr, here by quadrature."""
    cutoff = 2.5
    pieces = [max(z, 0.0), *(b for b in (R_MIN, cutoff) if b > z), max(cutoff, z)]
    expected = sum(
        quad(lambda r: 2 * np.pi * r * _wca_attraction(r, cutoff), a, b)[0] for a, b in zip(pieces[:-1], pieces[1:])
    )
    assert planar_kernel(z, cutoff) == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert planar_kernel(-z, cutoff) == planar_kernel(z, cutoff)


@pytest.mark.parametrize("dx", [0.01, 0.05, 0.13])
def test_attraction_grid_weights_sum_to_the_integral(dx):
    """Exact weights (breakpoint at 2^{1/6}): Σ_k c_k = ∫βΦ_att dz to round-off at any spacing."""
    attraction = MeanFieldAttraction(temperature=0.9, cutoff=3.0)
    assert attraction.weights(dx).sum() == pytest.approx(integrated_attraction(3.0) / 0.9, rel=1e-13)


def test_hard_spheres_plus_attraction_bulk():
    """βp = βp_CS + ½ρ²∫βu_att and βμ_exc = βμ_CS + ρ∫βu_att: the van der Waals-like fluid."""
    temperature, cutoff = 1.5, 2.5
    fluid = FMT(white_bear_ii) + MeanFieldAttraction(temperature=temperature, cutoff=cutoff)
    assert isinstance(fluid, fepy.SumFunctional) and len((fluid + fluid).terms) == 4
    a = integrated_attraction(cutoff) / temperature
    pressure, mu = carnahan_starling(ETAS)
    rho = _rho(ETAS)
    np.testing.assert_allclose(fluid.bulk_pressure(rho), pressure + 0.5 * rho**2 * a, rtol=1e-10)
    np.testing.assert_allclose(fluid.bulk_chemical_potential(rho), mu + rho * a, rtol=1e-10)
    assert fluid.max_density() == pytest.approx(6 / np.pi)


# ---------------------------------------------------------------------- solved profiles (model files)

MODELS = Path(__file__).resolve().parents[1] / "models"


def _solve(name, **config):
    """Build and solve a model file; the Picard residual max|ρ_EL - ρ| must be at round-off."""
    model = load_model(MODELS / f"{name}.py")
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    assert sol.residual < 1e-10
    return model, problem, sol


def _wall_contact(functional, eta, dx, steps=300):
    model, problem, sol = _solve("hard_spheres_wall", functional=functional, packing_fraction=eta, dx=dx, steps=steps)
    observed = model.observables(problem.target, sol.family)
    return observed["contact_density"], model.reference(dict(functional=functional, packing_fraction=eta))


def test_contact_theorem_at_a_hard_wall():
    """ρ(0⁺) = βp (Carnahan-Starling) for White Bear II at η = 0.4, to 1e-4 after dx -> 0.

    The solved profile carries an O(dx²) discretisation error (`test_contact_theorem_convergence`
    measures the order): measured 2.0e-4 βp at dx = 0.01 and 4.8e-5 βp at 0.005; one
    Richardson step from the two leaves O(dx³), measured -3.8e-6 βp.
    """
    coarse, reference = _wall_contact("white_bear_ii", 0.4, 0.01, steps=200)  # converged in ~100 steps
    fine, _ = _wall_contact("white_bear_ii", 0.4, 0.005, steps=200)
    extrapolated = (4 * fine - coarse) / 3
    assert extrapolated == pytest.approx(reference["beta_pressure"], rel=1e-4)
    assert abs(fine - reference["beta_pressure"]) < abs(coarse - reference["beta_pressure"]) / 3  # O(dx^2)


@pytest.mark.slow
@pytest.mark.parametrize("functional", ["white_bear_ii", "rosenfeld"])
def test_contact_theorem_convergence(functional):
    """At η = 0.45, ρ(0⁺) - βp falls as dx² and Richardson from the two finest grids gives βp to 1e-6.

    Measured orders between successive dx = 0.01, 0.005, 0.0025, 0.00125: 2.11, 2.05, 2.02
    (White Bear II) and 2.18, 2.09, 2.03 (Rosenfeld), approaching 2 from above as the
    O(dx³) remainder dies out; extrapolated errors 1e-7 βp and 2e-7 βp.
    """
    spacings = [0.01, 0.005, 0.0025, 0.00125]
    results = [_wall_contact(functional, 0.45, dx) for dx in spacings]
    contacts, beta_p = np.array([contact for contact, _ in results]), results[0][1]["beta_pressure"]
    order = np.log2((contacts[:-1] - beta_p) / (contacts[1:] - beta_p))
    assert np.all((order > 1.95) & (order < 2.25)) and abs(order[-1] - 2.0) < 0.05, order
    assert (4 * contacts[-1] - contacts[-2]) / 3 == pytest.approx(beta_p, rel=1e-6)


def test_slit_sum_rule_lennard_jones_liquid():
    """ρ(0⁺) = -∂(βΩ/A)/∂H in a slit of width 10σ (liquid, T* = 1.0, ρ_b = 0.75), to O(dz²).

    Both sides carry an O(dz²) discretisation error; at dz = 0.01 they differ by 1.3e-5
    (relative). The solvation force f_s = -∂Ω/∂H/A - p of this narrow slit (~1e-4 βp) is
    larger than that: the sum rule is checked, not the wide-slit limit.
    """
    model, problem, sol = _solve("lj_slit", temperature=1.0, density=0.75, width=10.0, dz=0.01, steps=100)
    observed = model.observables(problem.target, sol.family)
    assert observed["contact_density"] == pytest.approx(observed["wall_pressure"], rel=5e-5)
    assert observed["contact_density_right"] == pytest.approx(observed["contact_density"], rel=1e-12)
    beta_p = model.reference(dict(temperature=1.0, density=0.75))["beta_pressure"]
    assert abs(observed["wall_pressure"] / beta_p - 1) > 3e-5
