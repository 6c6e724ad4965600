"""Neural excess functionals: the structure they guarantee and the losses they learn from."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fepy
from fepy.apps.dft.neural import NeuralFunctional, bulk_hessian_column, train


@pytest.fixture(scope="module")
def functional():
    return NeuralFunctional(radius=0.5, features=4, degree=3, width=16, depth=2, key=jax.random.key(0))


@pytest.mark.parametrize("rho_b, quadrature", [(0.05, 1), (0.4, 1), (0.8, 1), (0.4, 3)])
def test_bulk_free_energy_matches_the_functional_on_a_uniform_profile(functional, rho_b, quadrature):
    # the kernels are integrated exactly (also between the points: a 3-point quadrature of Phi in
    # each cell), so a uniform periodic profile gives L * f(rho_b) to round-off
    grid = fepy.Grid(120, 0.05, quadrature=quadrature)
    uniform = jnp.full(grid.n, rho_b)
    assert float(functional.free_energy(uniform, grid, rho_b)) == pytest.approx(
        grid.length * float(functional.bulk_free_energy_density(rho_b)), rel=1e-12
    )
    np.testing.assert_allclose(
        functional.derivative(uniform, grid, rho_b), float(functional.bulk_chemical_potential(rho_b)), rtol=1e-10
    )


def test_ideal_gas_limit_is_exact(functional):
    # Phi(n) = MLP(n) - MLP(0) - n . grad MLP(0): F = O(rho^2), so mu_exc -> 0 linearly
    small = np.array([1e-3, 2e-3])
    f = np.asarray(functional.bulk_free_energy_density(small))
    mu = np.asarray(functional.bulk_chemical_potential(small))
    assert f[1] / f[0] == pytest.approx(4.0, rel=1e-2)
    assert mu[1] / mu[0] == pytest.approx(2.0, rel=1e-2)


def test_same_functional_at_every_grid_spacing(functional):
    # a smooth periodic profile: the exact hat-function weights make F converge as dx^2
    def free_energy(n):
        grid = fepy.Grid(n, 6.0 / n)
        rho = 0.5 + 0.2 * jnp.sin(2 * jnp.pi * grid.points / 6.0)
        return float(functional.free_energy(rho, grid, 0.5))

    coarse, fine, finer = free_energy(60), free_energy(120), free_energy(240)
    assert abs(fine - finer) < 0.3 * abs(coarse - fine)  # second order: ratio ~ 1/4
    assert abs(fine - finer) < 1e-4 * abs(finer)


def test_functional_is_reflection_symmetric(functional):
    # F[rho(-x)] = F[rho] (the mirrored kernels' term), and the derivative mirrors, in a walled box
    grid = fepy.Grid(120, 0.05, "empty", "empty")
    rho = 0.5 + 0.2 * jnp.sin(2 * jnp.pi * grid.points / 6.0) + 0.1 * jnp.cos(4 * jnp.pi * grid.points / 6.0 + 0.3)
    assert float(functional.free_energy(rho[::-1], grid, 0.5)) == pytest.approx(
        float(functional.free_energy(rho, grid, 0.5)), rel=1e-12)
    np.testing.assert_allclose(functional.derivative(rho[::-1], grid, 0.5),
                               functional.derivative(rho, grid, 0.5)[::-1], atol=1e-12)


def test_hessian_column_is_symmetric_and_short_ranged(functional):
    grid = fepy.Grid(80, 0.05)
    column = np.asarray(bulk_hessian_column(functional, grid, 0.6))
    # translation invariance and parity of a symmetric functional are not assumed: check
    # the range only, 2R = 1 sigma = 20 points (+1 for the hat functions)
    reach = int(round(2 * functional.radius / grid.dx)) + 1
    assert np.all(column[reach + 1: grid.n - reach] == 0.0)
    assert np.any(column[:reach] != 0.0)


def test_train_lowers_a_loss_and_reports_nan_steps(functional):
    target = 0.3

    def loss(f):
        return (f.bulk_free_energy_density(0.5) - target) ** 2

    trained, losses = train(functional, loss, optax.adam(1e-2), 200)
    assert losses[-1] < 1e-3 * losses[0]
    with pytest.raises(FloatingPointError, match="training step 1"):
        train(functional, lambda f: loss(f) * jnp.nan, optax.adam(1e-2), 3)


def test_bad_input():
    with pytest.raises(ValueError, match="radius"):
        NeuralFunctional(radius=-1.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="features"):
        NeuralFunctional(features=0, key=jax.random.key(0))


def test_one_dimensional_ornstein_zernike_round_trip():
    # exact hard-rod c -> h by the inverse relation h^ = c^ / (1 - rho c^), and back
    from fepy.apps.dft import direct_correlation
    from fepy.apps.dft.ornstein_zernike import direct_correlation_1d

    dx, n, rho = 0.01, 2000, 0.6
    c = np.asarray(direct_correlation(np.arange(n) * dx, rho))
    c_hat = np.fft.fft(np.concatenate([c, [0.0], c[:0:-1]])).real * dx
    h = (np.fft.ifft(c_hat / (1 - rho * c_hat)).real / dx)[:n]
    np.testing.assert_allclose(direct_correlation_1d(h, dx, rho), c, atol=1e-10)  # round-off of two FFTs


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_pair_correlation_data_recovers_the_exact_hard_rod_direct_correlation(rho):
    """Exact (Salsburg-Zwanzig-Kirkwood) bin averages of g -> c on the periodic offsets of the grid.

    Binning and linear interpolation smear the jump of g at x = sigma, an O(dx) error that
    the transform spreads over the core: first order in dx, below 0.35 dx |c(0)| (measured
    0.29 at rho = 0.6), and the jump's own two cells are left out.
    """
    from scipy import stats

    from fepy.apps.dft import direct_correlation
    from fepy.apps.dft.neural import pair_correlation_data

    errors = []
    for dx in (0.05, 0.025):
        grid = fepy.Grid(int(round(20 / dx)), dx)
        edges = np.arange(int(round(10 / dx)) + 1) * dx
        free = 1 / rho - 1.0
        cdf = sum(np.diff(stats.gamma.cdf(np.clip(edges - k, 0, None), a=k, scale=free)) for k in range(1, 11))
        g = cdf / (rho * dx)
        c = np.asarray(pair_correlation_data(0.5 * (edges[1:] + edges[:-1]), g[None], np.array([rho]), grid))[0]
        x = np.minimum(np.arange(grid.n) * dx, grid.length - np.arange(grid.n) * dx)
        exact = np.asarray(direct_correlation(x, rho))
        far = np.abs(x - 1.0) > 2.5 * dx
        errors.append(np.abs(c - exact)[far].max())
        assert errors[-1] < 0.35 * dx * abs(exact[0])
    assert errors[1] < 0.6 * errors[0]  # first order


def test_neural_lj_model_trains_and_solves_at_a_held_out_potential():
    """The model file end to end at a tiny budget: bulk GCMC -> OZ -> PCM -> a converged Picard solve."""
    from fepy.cli import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "models" / "neural_lj_1d.py")
    config = dict(length=10.0, systems=4, blocks=4, sweeps_per_block=50, equilibration=50,
                  reference_sweeps_per_block=50, train_steps=50, steps=300)
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    assert sol.summary["residual"] < 1e-8
    found = model.observables(problem.target, sol.family, config)
    assert np.isfinite(found["mae_vs_gcmc"]) and found["gcmc_noise_floor"] > 0
    assert model.reference(config)["profile"]["rho"].shape == (problem.target.grid.n,)


@pytest.mark.slow
def test_pair_correlation_matching_reproduces_exact_percus_profiles_at_held_out_potentials():
    """Issue 4: a neural functional for hard rods trained only on GCMC data reproduces the exact
    (Percus) profiles at held-out potentials with a mean absolute error below 1% of the density.

    Training data: 16 bulk GCMC runs (box 20 σ, dx 0.05, 16 x 400 sweeps) at βμ in [-1, 6]
    (η up to 0.83: the wells of the test environments reach such local densities), 4000 Adam
    steps; test: 8 random potentials with walls and βμ in [-1, 2]. Measured 0.77 % (worst
    environment 1.8 %: one particle held in a 0.3 σ wide well at βμ = -1, weighted densities far
    from any bulk state); 1.40 % before the functional was made reflection symmetric and
    trained 4000 instead of 2000 steps (1.28 % with the symmetry alone).
    """
    from fepy.apps.dft import GrandCanonicalMC, HardRodPair, HardRods
    from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials, generate_bulk
    from fepy.apps.dft.neural import pair_correlation_data, pair_correlation_loss

    grid = fepy.Grid(400, 0.05)
    simulator = GrandCanonicalMC(grid, HardRodPair(), 22, pair_range=10.0)
    bulk = generate_bulk(simulator, np.linspace(-1.0, 6.0, 16), seed=1, blocks=16, sweeps_per_block=400,
                         equilibration=500)
    c = pair_correlation_data(bulk["r"], bulk["g"], bulk["density"], grid)
    mu_exc = jnp.asarray(bulk["beta_mu"] - np.log(bulk["density"]))
    start = NeuralFunctional(radius=0.5, features=8, degree=4, width=32, depth=2, key=jax.random.key(0))
    trained, _ = train(start, lambda f: pair_correlation_loss(f, grid, jnp.asarray(bulk["density"]), c, mu_exc),
                       optax.adam(optax.cosine_decay_schedule(3e-3, 4000, 0.01)), 4000)
    beta_external, beta_mu = RandomExternalPotentials(grid, beta_mu=(-1.0, 2.0)).sample(jax.random.key(7), 8)

    def solve(excess):
        target = fepy.GrandPotential.from_chemical_potential(grid, excess, beta_mu, beta_external)
        start = jnp.where(jnp.isfinite(beta_external), target.rho_bulk[:, None], 0.0)
        sol = fepy.minimize(target, fepy.GridDensity(start, grid), fepy.Picard(mixing=0.2, anderson=5),
                            steps=600, key=jax.random.key(0))
        assert sol.summary["residual"] < 1e-8
        return np.asarray(sol.family.rho)

    exact, learned = solve(HardRods()), solve(trained)
    error = np.abs(learned - exact).mean(axis=1) / exact.mean(axis=1)
    assert error.mean() < 0.01, error
