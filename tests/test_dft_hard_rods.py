"""Hard rods in 1-D (Percus's exact functional) and the two DFT solvers (kT units, lengths in σ = 1).

Physics is the oracle: Percus's functional is exact, so its bulk limit must be the
Tonks gas, its second derivative the exact direct correlation function, and its hard-wall
profile the exact one of rods whose gaps are independent exponentials (contact theorem
ρ(0⁺) = βp, adsorption from the renewal theorem). The Fisher-Rao (`fepy.Picard`) and
Wasserstein (`fepy.DynamicDFT`) flows must both end at that profile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

import fepy
from fepy.apps.dft import (
    HardRods,
    direct_correlation,
    tonks_density,
    tonks_excess_chemical_potential,
    tonks_pressure,
    wall_adsorption,
    wall_density,
)
from fepy.families.grid import contact_density
from fepy.physics.convolution import convolve, kernel_weights, pad_stack, point_weights
from fepy.cli import load_model, main

ETAS = np.array([0.05, 0.2, 0.4, 0.5, 0.7, 0.9, 0.99])
KEY = jax.random.key(0)


def wall_problem(eta, dx, length, rho_start=None):
    """Rods at a hard wall (left edge) in contact with bulk at packing eta beyond the right edge."""
    n = int(round(length / dx))
    grid = fepy.Grid(n, dx, "empty", "bulk")
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), eta, jnp.zeros(n))
    rho = jnp.full(n, eta) if rho_start is None else jnp.asarray(rho_start)
    return target, fepy.GridDensity(rho, grid)


def solve(target, family, solver, steps):
    return fepy.minimize(target, family, solver, steps=steps, key=KEY)


# ---------------------------------------------------------------------------- bulk


def test_bulk_equation_of_state_is_tonks():
    rods = HardRods()
    np.testing.assert_allclose(rods.bulk_pressure(ETAS), ETAS / (1 - ETAS), rtol=1e-10, atol=0)
    mu_exc = -np.log(1 - ETAS) + ETAS / (1 - ETAS)
    np.testing.assert_allclose(rods.bulk_chemical_potential(ETAS), mu_exc, rtol=1e-10, atol=0)
    np.testing.assert_allclose(tonks_pressure(ETAS), ETAS / (1 - ETAS), rtol=1e-13)
    np.testing.assert_allclose(tonks_excess_chemical_potential(ETAS), mu_exc, rtol=1e-13)
    beta_mu = np.log(ETAS) + mu_exc  # the bulk density is recovered from beta mu
    np.testing.assert_allclose(rods.bulk_density(beta_mu), ETAS, rtol=1e-12)


@pytest.mark.parametrize("quadrature", [1, 3])
@pytest.mark.parametrize("sigma", [1.0, 0.7])
@pytest.mark.parametrize("edges", [("periodic", "periodic"), ("empty", "bulk")])
def test_uniform_fluid_on_a_grid_is_bulk(sigma, edges, quadrature):
    """The grid weights are exact for a uniform density, at the points and between them: the
    functional derivative in a periodic box, and away from the edge next to bulk, is the bulk
    βμ_exc to round-off, with any number of quadrature points per cell."""
    rods, dx, eta = HardRods(sigma), 0.03, 0.6
    rho = eta / sigma
    grid = fepy.Grid(200, dx, *edges, quadrature=quadrature)
    derivative = np.asarray(rods.derivative(jnp.full(grid.n, rho), grid, rho))
    exact = float(tonks_excess_chemical_potential(rho, sigma))
    far = slice(None) if edges[0] == "periodic" else slice(int(2 * sigma / dx) + 2, None)
    np.testing.assert_allclose(derivative[far], exact, rtol=1e-12)
    periodic_fe = rods.free_energy(jnp.full(grid.n, rho), fepy.Grid(200, dx, quadrature=quadrature), rho)
    np.testing.assert_allclose(periodic_fe, grid.length * rods.bulk_free_energy_density(rho), rtol=1e-12)


@pytest.mark.parametrize("tau", [-0.004, 0.011])
def test_weights_are_exact_between_the_points(tau):
    """For a linear density a + b x (piecewise linear, so represented exactly) the weights at an
    offset τ from the points give the exact weighted densities at x_i + τ: ρ(x_i + τ - R) for
    the point kernel, 2R ρ(x_i + τ) for the step and (4πR³/3) ρ(x_i + τ) for w3 = π(R² - z²)
    (odd moments vanish); a stack of offsets (`pad_stack`) gives each of them."""
    dx, radius = 0.025, 0.5
    x = (np.arange(120) + 0.5) * dx
    rho = jnp.asarray(0.3 + 0.7 * x)
    linear = lambda y: 0.3 + 0.7 * y  # noqa: E731
    step = kernel_weights(np.ones_like, radius, dx, offset=tau)
    m = (len(step) - 1) // 2
    np.testing.assert_allclose(convolve(rho, step), 2 * radius * linear(x[m:-m] + tau), rtol=1e-13)
    point = point_weights(radius - tau, dx, m)
    np.testing.assert_allclose(convolve(rho, point), linear(x[m:-m] + tau - radius), rtol=1e-13)
    parabola = lambda z: np.pi * (radius**2 - z**2)  # noqa: E731
    stacked = pad_stack([kernel_weights(parabola, radius, dx), kernel_weights(parabola, radius, dx, offset=tau)])
    m = (stacked.shape[-1] - 1) // 2
    volume = 4 * np.pi * radius**3 / 3
    expected = np.stack([volume * linear(x[m:-m]), volume * linear(x[m:-m] + tau)], axis=-1)
    np.testing.assert_allclose(convolve(rho, stacked), expected, rtol=1e-13)


@pytest.mark.parametrize("eta", [0.3, 0.6, 0.9])
def test_direct_correlation_from_the_hessian(eta):
    """c(x_i - x_j) = -(1/dx²) ∂²βF_exc/∂ρ_i∂ρ_j on a uniform periodic grid (autodiff Hessian).

    With σ = 16 dx the exact hat-function weights make the discrete c equal to the exact one
    at every grid point except where the exact c is not smooth, where it is its average
    over one cell (the density is piecewise linear): at the kink x = 0 the term
    ρ(σ - |x|)/(1 - η)² is smoothed by +b dx/2, and at the jump |x| = σ the discrete value is
    the mean of both sides minus b dx/4, b = ρ/(1 - η)². Both vanish linearly in dx.
    The compressibility sum rule Σ c dx = -dβμ_exc/dρ holds exactly.
    """
    m, n = 8, 80
    dx = 0.5 / m
    grid = fepy.Grid(n, dx)
    rho = eta
    hessian = jax.hessian(lambda r: HardRods().free_energy(r, grid, rho))(jnp.full(n, rho))
    c = -np.asarray(hessian[0]) / dx**2
    offset = np.minimum(np.arange(n), n - np.arange(n)) * dx  # |x_0 - x_j| on the ring
    exact = np.asarray(direct_correlation(offset, rho))
    b = rho / (1 - eta) ** 2
    smooth = (offset > 0) & ~np.isclose(offset, 1.0)
    np.testing.assert_allclose(c[smooth], exact[smooth], rtol=0, atol=1e-10)
    np.testing.assert_allclose(c[0], exact[0] + b * dx / 2, rtol=1e-12)
    at_sigma = np.isclose(offset, 1.0)
    np.testing.assert_allclose(c[at_sigma], exact[at_sigma] - b * dx / 4, rtol=1e-12)
    slope = 1 / (1 - eta) + 1 / (1 - eta) ** 2  # d beta mu_exc / d rho
    np.testing.assert_allclose(np.sum(c) * dx, -slope, rtol=1e-12)


def test_exact_wall_profile_sum_rules():
    """The reference profile itself: ρ(0) = βp, ρ(∞) = ρ_b, ∫(ρ - ρ_b) = Γ (renewal theorem)."""
    for eta in (0.2, 0.5, 0.8):
        beta_p = float(tonks_pressure(eta))
        assert wall_density(np.array([0.0]), beta_p)[0] == pytest.approx(beta_p, rel=1e-14)
        assert wall_density(np.array([60.0]), beta_p)[0] == pytest.approx(eta, abs=1e-8)
        pieces = [quad(lambda x: wall_density(np.array([x]), beta_p)[0] - eta, k, k + 1)[0] for k in range(60)]
        assert sum(pieces) == pytest.approx(wall_adsorption(beta_p), abs=1e-8)
    assert wall_adsorption(1e-12) == pytest.approx(0.0, abs=1e-9)  # ideal gas limit
    with pytest.raises(ValueError, match="x >= 0"):
        wall_density(np.array([-0.1]), 1.0)


# ---------------------------------------------------------------------------- hard wall


def test_contact_theorem_richardson():
    """ρ(0⁺) → βp as dx → 0 at η = 0.5, observed order 2, and 1e-6 after Richardson extrapolation.

    Measured (ρ(0⁺) - βp): 8.8e-5, 2.2e-5, 5.5e-6 at dx = 0.02, 0.01, 0.005; order 2.000;
    Richardson error 2e-10. The profile converges to the exact one at the same order.
    """
    eta, length = 0.5, 8.0
    beta_p = float(tonks_pressure(eta))
    contacts, profile_errors = [], []
    for dx in (0.02, 0.01, 0.005):
        target, family = wall_problem(eta, dx, length)
        sol = solve(target, family, fepy.Picard(mixing=0.1, anderson=10), steps=120)
        assert sol.residual < 1e-12
        contacts.append(float(contact_density(sol.family.rho)))
        exact = wall_density(np.asarray(family.grid.points), beta_p)
        profile_errors.append(np.max(np.abs(np.asarray(sol.family.rho) - exact)))
        adsorption = float(family.grid.integrate(sol.family.rho - eta))
        assert adsorption == pytest.approx(wall_adsorption(beta_p), abs=5 * dx**2)
    c1, c2, c3 = contacts
    order = np.log2((c1 - c2) / (c2 - c3))  # from the three values alone, not from beta p
    print(f"contact errors {np.array(contacts) - beta_p}, observed order {order:.4f}")
    assert order == pytest.approx(2.0, abs=0.02)
    richardson = (2**order * c3 - c2) / (2**order - 1)
    assert abs(richardson - beta_p) < 1e-6
    assert abs(c3 - beta_p) > 1e-6  # the extrapolation, not the finest grid, reaches 1e-6
    profile_order = np.log2(np.array(profile_errors[:-1]) / np.array(profile_errors[1:]))
    np.testing.assert_allclose(profile_order, 2.0, atol=0.05)
    assert profile_errors[-1] < 1e-5


def test_anderson_converges_at_a_dense_wall():
    """η = 0.85 at a hard wall: Anderson reaches a residual of 1e-10 in a few hundred steps
    (plain Picard at this mixing still has a residual of 3 after 600). At this density the
    first layer is close packed to 1 - n1 ≈ e^{-βpσ} = 3e-3, and with the midpoint rule for Φ
    the contact density is 26 % high (`fepy.Grid`): the contact theorem is checked at η = 0.5,
    and at η = 0.9 with 32 quadrature points per cell."""
    target, family = wall_problem(0.85, 0.02, 8.0)
    sol = solve(target, family, fepy.Picard(mixing=0.02, anderson=10), steps=600)
    steps_needed = int(np.argmax(sol.trace["residual"] < 1e-10)) + 1
    print(f"eta 0.85 wall: Anderson {steps_needed} steps to 1e-10")
    assert sol.residual < 1e-10 and steps_needed < 600


def test_converged_at_packing_0_9():
    """η = 0.9 in a periodic box with βV = sin(2πx/L): Anderson converges, and faster than plain Picard."""
    eta, n, dx = 0.9, 500, 0.02
    grid = fepy.Grid(n, dx)
    potential = jnp.sin(2 * jnp.pi * grid.points / grid.length)
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), eta, potential)
    family = fepy.GridDensity(jnp.full(n, eta), grid)
    anderson = solve(target, family, fepy.Picard(mixing=0.01, anderson=10), steps=200)
    plain = solve(target, family, fepy.Picard(mixing=0.01), steps=200)
    first = lambda sol: int(np.argmax(sol.trace["residual"] < 1e-10)) + 1  # noqa: E731
    print(f"eta 0.9 periodic: Anderson {first(anderson)}, plain {first(plain)} steps to 1e-10")
    assert anderson.residual < 1e-12 and plain.residual < 1e-10
    assert first(anderson) < first(plain) / 2
    np.testing.assert_allclose(anderson.family.rho, plain.family.rho, atol=1e-10)


def dense_wall_path(eta, dx, length, quadrature):
    """Rods at a hard wall with bulk beyond the right edge, along βp = 1 + t(βp(eta) - 1), t in [0, 1]
    (η = 0.5 at t = 0), and the uniform fluid at η = 0.5 to start from."""
    n = int(round(length / dx))
    grid = fepy.Grid(n, dx, "empty", "bulk", quadrature=quadrature)
    beta_p = float(tonks_pressure(eta))

    def path(t):
        return fepy.GrandPotential.from_bulk_density(grid, HardRods(), tonks_density(1.0 + t * (beta_p - 1.0)), jnp.zeros(n))

    return path, fepy.GridDensity(jnp.full(n, 0.5), grid)


def test_continuation_reaches_packing_0_9_at_a_wall():
    """η = 0.9 at a hard wall from the uniform fluid at η = 0.5: `fepy.continuation` in βp (8 stages,
    each Picard + Anderson from the profile before) reaches a residual of 1e-10 (measured: 2400
    steps, no stage retried). The mixing is half Picard's bulk stability bound 2(1 - η)²; the
    first layer, close packed to 1 - n1 ≈ e^{-βpσ} = 1.2e-4, is Anderson's. Started in one
    stage the solve fails (as does Picard from the uniform fluid at η = 0.9, at some
    settings), is retried with halved increments of t and ends at the same profile. The contact
    density is within the grid's error of βp (-4.05 % at dx = 0.02 with 4 quadrature points)."""
    path, family = dense_wall_path(0.9, 0.02, 10.0, quadrature=4)
    solver = fepy.Picard(mixing=0.01, anderson=20)
    sol = fepy.continuation(path, family, solver, key=KEY, tolerance=1e-10)
    assert sol.residual <= 1e-10 and sol.steps == len(sol.trace["residual"])
    stage_t = np.unique(sol.trace["path"])
    np.testing.assert_allclose(stage_t, np.arange(1, 9) / 8)  # every stage converged at the first try
    assert np.all(np.diff(sol.trace["path"]) >= 0)
    contact = float(contact_density(sol.family.rho))
    assert contact / float(tonks_pressure(0.9)) - 1 == pytest.approx(-0.0405, abs=0.001)
    jump = fepy.continuation(path, family, solver, key=KEY, tolerance=1e-10, stages=1, steps=500)
    attempts = jump.trace["path"][np.r_[0, np.flatnonzero(np.diff(jump.trace["path"])) + 1]]
    assert attempts[0] == 1.0 and attempts[1] == 0.5 and np.any(np.diff(attempts) < 0)  # retried
    np.testing.assert_allclose(jump.family.rho, sol.family.rho, rtol=1e-8)


def test_continuation_refuses_bad_input_and_reports_a_stage_that_does_not_converge():
    path, family = dense_wall_path(0.9, 0.05, 4.0, quadrature=1)
    solver = fepy.Picard(mixing=0.01, anderson=5)
    for kwargs, message in (
        (dict(stages=0), "stages"), (dict(steps=1.5), "steps"), (dict(chunk_size=0), "chunk_size"),
        (dict(halvings=-1), "halvings"), (dict(tolerance=0.0), "tolerance"),
    ):
        with pytest.raises(ValueError, match=f"continuation {message}"):
            fepy.continuation(path, family, solver, key=KEY, **{"tolerance": 1e-10, **kwargs})
    with pytest.raises(fepy.ContinuationError, match=r"stage at t = 0.03125 \(from t = 0\) did not reach"):
        fepy.continuation(path, family, solver, key=KEY, tolerance=1e-10, stages=4, steps=10, halvings=3)


@pytest.mark.slow
def test_contact_theorem_at_packing_0_9():
    """ρ(0⁺) → βp at η = 0.9 as dx → 0, with 32 Gauss points per cell for Φ (with the midpoint
    rule it is 28 % high at dx = 0.01 and hardly moves with dx: `fepy.Grid`), each grid solved
    by `fepy.continuation` from η = 0.5, on L = 20 (the exact profile is 8 % off bulk there;
    at dx = 0.005 the contact density moves by 6e-6 βp from L = 20 to 30, by 1.1e-4 from 10).

    Measured ρ(0⁺)/βp - 1 at dx = 0.01, 0.005, 0.0025: -1.209e-2, -6.261e-3, -3.247e-3, observed
    order 0.951; Richardson with it -1.9e-5, with order 1 -2.3e-4, with orders 1 and 2
    -1.7e-4: the grid is still pre-asymptotic at the 1e-4 level, because the first layer is
    close packed to 1 - n1 ≈ e^{-βpσ} = 1.2e-4 and 1 - n1 grows by βp dx ~ 1e-2 per cell past
    x = R (on L = 10 the extrapolations move by up to 2.6e-4). The 1e-6 of η = 0.5 is out of
    reach at these dx; asserted is what the grid shows."""
    eta = 0.9
    beta_p = float(tonks_pressure(eta))
    contacts = []
    for dx in (0.01, 0.005, 0.0025):
        path, family = dense_wall_path(eta, dx, 20.0, quadrature=32)
        sol = fepy.continuation(path, family, fepy.Picard(mixing=0.01, anderson=20), key=KEY, tolerance=1e-10)
        assert sol.residual <= 1e-10
        contacts.append(float(contact_density(sol.family.rho)))
    errors = np.array(contacts) / beta_p - 1
    c1, c2, c3 = contacts
    order = np.log2((c1 - c2) / (c2 - c3))
    fitted = (2**order * c3 - c2) / (2**order - 1)
    first, two_terms = 2 * c3 - c2, (8 * c3 - 6 * c2 + c1) / 3
    print(f"eta 0.9: contact errors {errors}, order {order:.3f}, Richardson {fitted / beta_p - 1:.2e} "
          f"(order 1: {first / beta_p - 1:.2e}, orders 1 and 2: {two_terms / beta_p - 1:.2e})")
    np.testing.assert_allclose(errors, [-1.209e-2, -6.261e-3, -3.247e-3], rtol=0.02)
    assert order == pytest.approx(0.95, abs=0.03)
    for extrapolated in (fitted, first, two_terms):
        assert abs(extrapolated / beta_p - 1) < 3e-4 < abs(errors[-1])


# ---------------------------------------------------------------------------- the two geometries


def test_picard_and_dynamic_dft_end_at_the_same_profile():
    """Open system (wall + bulk): the Wasserstein relaxation ends at the Fisher-Rao fixed point;
    βΩ decreases monotonically along both (plain Picard; DDFT), up to round-off."""
    target, family = wall_problem(0.5, 0.05, 5.0)
    picard = solve(target, family, fepy.Picard(mixing=0.1), steps=400)
    ddft = solve(target, family, fepy.DynamicDFT(dt=0.2), steps=400)
    difference = float(jnp.max(jnp.abs(picard.family.rho - ddft.family.rho)))
    print(f"max |rho_Picard - rho_DDFT| = {difference:.2e}")
    assert difference < 1e-6
    for sol in (picard, ddft):
        omega = sol.trace["grand_potential"]
        assert np.all(np.diff(omega) <= 1e-12 * np.abs(omega[1:]))
        assert omega[0] - omega[-1] > 1e-2
    assert ddft.summary["time"] == pytest.approx(80.0)
    assert ddft.trace["number"][-1] > ddft.trace["number"][0]  # particles came in from the reservoir


@pytest.mark.parametrize("edges", [("periodic", "periodic"), ("empty", "empty")])
def test_dynamic_dft_conserves_particles_in_a_closed_box(edges):
    """No bulk edge: N is conserved to round-off, βΩ decreases, and the stationary state has a
    uniform local chemical potential (canonical equilibrium)."""
    n, dx = 60, 0.05
    grid = fepy.Grid(n, dx, *edges)
    potential = 2.0 * jnp.cos(2 * jnp.pi * grid.points / grid.length)
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), 0.4, potential)
    family = fepy.GridDensity(jnp.full(n, 0.4), grid)
    sol = solve(target, family, fepy.DynamicDFT(dt=0.1), steps=300)
    np.testing.assert_allclose(sol.trace["number"], 0.4 * grid.length, rtol=1e-12)
    assert np.all(np.diff(sol.trace["grand_potential"]) <= 1e-12)
    mu = np.asarray(target.local_chemical_potential(sol.family.rho))
    assert np.ptp(mu) < 1e-8


def test_batched_solve_equals_separate_solves():
    """Three problems (bulk densities and potentials) in one batch: with its own Anderson history,
    coefficients and trust radius per profile, each equals its own solve."""
    n, dx = 150, 0.04
    grid = fepy.Grid(n, dx, "empty", "bulk")
    etas = jnp.array([0.3, 0.5, 0.7])
    potentials = jnp.stack([a * jnp.exp(-((grid.points - 2.0) ** 2)) for a in (0.0, 1.0, -1.0)])
    batch_target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), etas, potentials)
    batch_family = fepy.GridDensity(jnp.broadcast_to(etas[:, None], (3, n)), grid)
    solver = fepy.Picard(mixing=0.5, anderson=5)  # mixing 0.5 makes the dense profile reject steps
    batch = solve(batch_target, batch_family, solver, 150)
    assert batch.residual < 1e-12 and 0 < batch.trace["accepted"].min() < 1
    for i in range(3):
        target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), etas[i], potentials[i])
        one = solve(target, fepy.GridDensity(jnp.full(n, etas[i]), grid), solver, 150)
        np.testing.assert_allclose(batch.family.rho[i], one.family.rho, rtol=0, atol=1e-12)
    omega = batch_target.omega(batch.family.rho)  # one per profile; the statistic is their mean
    assert batch.summary["grand_potential"] == pytest.approx(float(jnp.mean(omega)), rel=1e-12)


# ---------------------------------------------------------------------------- failures


def test_bad_input_is_refused():
    grid = fepy.Grid(50, 0.05, "empty", "bulk")
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), 0.5, jnp.zeros(50))
    for kwargs, message in (
        (dict(mixing=0.0), "mixing must be in"),
        (dict(mixing=1.5), "mixing must be in"),
        (dict(anderson=-1), "anderson"),
        (dict(anderson=2.5), "anderson"),
        (dict(max_step=0.0), "max_step"),
        (dict(restart=1.0), "restart"),
    ):
        with pytest.raises(ValueError, match=message):
            fepy.Picard(**kwargs)
    for kwargs in (dict(dt=0.0), dict(dt=-1.0), dict(mobility=float("nan")), dict(dt=float("inf"))):
        with pytest.raises(ValueError, match="DynamicDFT (dt|mobility) must be finite and > 0"):
            fepy.DynamicDFT(**kwargs)
    with pytest.raises(ValueError, match="HardRods sigma"):
        HardRods(sigma=0.0)
    for quadrature in (0, 1.5, True):
        with pytest.raises(ValueError, match="Grid quadrature"):
            fepy.Grid(50, 0.05, quadrature=quadrature)
    with pytest.raises(ValueError, match="grid"):
        fepy.Picard().init(target, fepy.GridDensity(jnp.full(50, 0.5), fepy.Grid(50, 0.04, "empty", "bulk")), KEY)
    batched = fepy.GrandPotential.from_bulk_density(grid, HardRods(), jnp.array([0.3, 0.5]), jnp.zeros(50))
    with pytest.raises(ValueError, match="batch shape"):
        fepy.DynamicDFT().init(batched, fepy.GridDensity(jnp.full(50, 0.5), grid), KEY)
    with pytest.raises(TypeError, match="needs a target of type GrandPotential"):
        fepy.Picard().init(object(), fepy.GridDensity(jnp.full(50, 0.5), grid), KEY)


def test_non_finite_steps_stop_minimize():
    """A NaN chemical potential, or a DDFT time step far beyond stability, stops the run at the step."""
    grid = fepy.Grid(100, 0.05, "empty", "bulk")
    family = fepy.GridDensity(jnp.full(100, 0.5), grid)
    target = fepy.GrandPotential.from_bulk_density(grid, HardRods(), 0.5, jnp.zeros(100))
    broken = fepy.GrandPotential(grid, HardRods(), target.beta_external, jnp.asarray(jnp.nan), target.rho_bulk)
    with pytest.raises(fepy.NonFiniteError, match="step 1: "):
        solve(broken, family, fepy.Picard(anderson=5), steps=5)
    with pytest.raises(fepy.NonFiniteError, match=r"step \d+: (change|residual|grand_potential) is nan"):
        solve(target, family, fepy.DynamicDFT(dt=5.0), steps=200)


def test_a_failed_step_is_discarded():
    """Plain Picard with mixing 1 at η = 0.8 overshoots into n1 > 1 (NaN); the step is discarded and
    the trust radius shrinks until the steps succeed, so the solve still converges."""
    target, family = wall_problem(0.8, 0.04, 6.0)
    sol = solve(target, family, fepy.Picard(mixing=1.0, anderson=10), steps=400)
    assert sol.residual < 1e-10
    assert sol.trace["trust"].min() < 1.0


def test_progress_bar_shows_the_grand_potential_and_the_residual(capsys):
    """`fepy.ProgressBar` shows the statistics a DFT solver reports (βΩ, residual) and no others."""
    target, family = wall_problem(0.5, 0.05, 3.0)
    solver = fepy.Picard(mixing=0.2, anderson=5)
    fepy.minimize(target, family, solver, steps=20, key=KEY, chunk_size=10, callbacks=[fepy.ProgressBar()])
    err = capsys.readouterr().err
    assert "20/20" in err and "grand_potential=" in err and "residual=" in err
    assert "log_z" not in err and "energy=" not in err


# ---------------------------------------------------------------------------- model file


def test_hard_rods_wall_model(tmp_path):
    model = load_model("models/hard_rods_wall.py")
    config = dict(model.DEFAULTS, dx=0.02, length=8.0)
    reference = model.reference(config)
    assert reference["beta_pressure"] == pytest.approx(1.0)  # eta = 0.5
    assert main(["run", "models/hard_rods_wall.py", "--out", str(tmp_path), "--no-progress",
                 "--set", "dx=0.02", "--set", "length=8.0", "--steps", "100"]) == 0
    for name in ("summary.json", "trace.csv", "density.png", "free_energy.png"):
        assert (tmp_path / name).is_file()
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["residual"] < 1e-12
    assert summary["contact_density"] == pytest.approx(summary["reference"]["beta_pressure"], rel=2e-4)
    assert summary["adsorption"] == pytest.approx(summary["reference"]["adsorption"], abs=1e-5)
    assert summary["profile_error"] < 2e-4
