"""Neural excess functionals: the structure they guarantee and the losses they learn from."""

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


@pytest.mark.parametrize("rho_b", [0.05, 0.4, 0.8])
def test_bulk_free_energy_matches_the_functional_on_a_uniform_profile(functional, rho_b):
    # the kernels are integrated exactly, so a uniform periodic profile gives L * f(rho_b) to round-off
    grid = fepy.Grid(120, 0.05)
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
