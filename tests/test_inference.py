"""Inference on the spine: Descent (multi-start MAP), laplace, Gaussian + ReverseKL (VI), nuts."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from conftest import C_PI, M_PI, gaussian_energy

import fepy

M3 = np.array([0.5, -1.0, 2.0])
C3 = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 0.5]])


class Rosenbrock(fepy.Energy):
    """U = (1 - x)^2 + 10 (y - x^2)^2, one minimum U = 0 at (1, 1)."""

    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        return (1 - x[0]) ** 2 + 10 * (x[1] - x[0] ** 2) ** 2


def test_descent_every_start_reaches_the_minimum_of_a_quadratic():
    target = gaussian_energy(M3, C3)
    base = dist.Normal(jnp.zeros(3), 3.0).to_event(1)
    particles = fepy.Particles.from_base(base, 8, key=jax.random.key(0))
    sol = fepy.minimize(target, particles, fepy.Descent(optax.sgd(0.2)), steps=600, key=jax.random.key(1))
    np.testing.assert_allclose(sol.family.positions, np.broadcast_to(M3, (8, 3)), atol=1e-5)
    assert sol.energy_min < 1e-20 and sol.energy_median < 1e-20 and sol.failed == 0
    assert sol.trace["energy_min"].shape == (600,)
    assert sol.trace["energy_min"][-1] <= sol.trace["energy_min"][0]


def test_descent_multistart_picks_the_lower_well_and_freezes_broken_starts():
    class Tilted(fepy.Energy):  # wells at x = -1 (U = -0.5) and x = +1 (U = +0.5); NaN beyond 3
        beta: float = 1.0
        dim: int = 1

        def energy(self, x):
            u = (x[0] ** 2 - 1) ** 2 + 0.5 * x[0]
            return jnp.where(jnp.abs(x[0]) < 3, u, jnp.nan)

    positions = jnp.array([[0.9], [1.2], [-0.8], [5.0]])
    particles = fepy.Particles(positions, jnp.zeros(4), dist.Normal(jnp.zeros(1), 1.0).to_event(1))
    sol = fepy.minimize(Tilted(), particles, fepy.Descent(optax.sgd(0.02)), steps=500, key=jax.random.key(0))
    assert sol.best == 2 and sol.failed == 1
    assert float(sol.family.positions[3, 0]) == 5.0  # frozen where it broke down
    exact = np.roots([4, 0, -4, 0.5])  # U' = 4x^3 - 4x + 0.5
    np.testing.assert_allclose(sol.family.positions[2, 0], exact.real.min(), atol=1e-6)


def test_laplace_of_a_gaussian_energy_is_exact():
    target = gaussian_energy(M3, C3, beta=2.0)
    result = fepy.laplace(target, jnp.asarray(M3))
    np.testing.assert_allclose(result.covariance, C3 / 2.0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.std, np.sqrt(np.diag(C3) / 2.0), rtol=1e-12)
    assert float(result.log_z) == pytest.approx(target.log_z(), abs=1e-12)
    assert float(jnp.max(jnp.abs(result.gradient))) < 1e-12


def test_laplace_refuses_a_saddle_and_a_wrong_shape():
    class Saddle(fepy.Energy):
        beta: float = 1.0
        dim: int = 2

        def energy(self, x):
            return x[0] ** 2 - x[1] ** 2

    with pytest.raises(ValueError, match="not positive definite.*-2"):
        fepy.laplace(Saddle(), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        fepy.laplace(Saddle(), jnp.zeros(3))


def test_gaussian_family_samples_and_log_prob():
    q = fepy.Gaussian.from_covariance(M3, C3)
    np.testing.assert_allclose(q.covariance, C3, rtol=1e-12)
    x, log_q = q.sample_and_log_prob(jax.random.key(0), 20_000)
    exact = dist.MultivariateNormal(jnp.asarray(M3), jnp.asarray(C3))
    np.testing.assert_allclose(log_q, exact.log_prob(x), rtol=1e-10)
    np.testing.assert_allclose(q.log_prob(x[:5]), exact.log_prob(x[:5]), rtol=1e-10)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), C3, atol=0.06)
    with pytest.raises(ValueError, match="positive definite"):
        fepy.Gaussian.from_covariance(M3, -C3)
    with pytest.raises(ValueError, match="lower triangular"):
        fepy.Gaussian(M3, np.ones((3, 3)))


def test_reverse_kl_fits_a_gaussian_target_and_its_log_z():
    target = gaussian_energy(M_PI, C_PI)
    q0 = fepy.Gaussian(jnp.array([2.0, 2.0]), 0.5 * jnp.eye(2))
    schedule = optax.exponential_decay(0.05, transition_steps=1500, decay_rate=0.01)
    solver = fepy.ReverseKL(optax.adam(schedule), samples=64)
    sol = fepy.minimize(target, q0, solver, steps=1500, key=jax.random.key(0))
    np.testing.assert_allclose(sol.family.mean, M_PI, atol=0.02)
    np.testing.assert_allclose(sol.family.covariance, C_PI, atol=0.03)
    # at q = p: F = -log Z exactly and every importance weight is Z
    assert sol.log_z == pytest.approx(target.log_z(), abs=5e-3)
    assert sol.free_energy == pytest.approx(-target.log_z(), abs=5 * sol.free_energy_stderr + 5e-3)
    assert sol.ess_fraction > 0.97
    assert sol.trace["free_energy"][0] > sol.trace["free_energy"][-1]


def test_reverse_kl_refuses_particles_and_a_dim_mismatch(gauss2d):
    solver = fepy.ReverseKL(optax.adam(0.01))
    with pytest.raises(TypeError, match="AbstractDensity"):
        solver.init(gauss2d, fepy.Particles.from_base(dist.Normal(jnp.zeros(2), 1.0).to_event(1), 4,
                                                      key=jax.random.key(0)), jax.random.key(0))
    with pytest.raises(ValueError, match="dim"):
        solver.init(gauss2d, fepy.Gaussian(jnp.zeros(3), jnp.eye(3)), jax.random.key(0))


def test_nuts_gaussian_moments_within_monte_carlo_error():
    target = gaussian_energy(M3, C3)
    result = fepy.nuts(target, jnp.zeros(3), jax.random.key(0), warmup=300, samples=1000, chains=2)
    x = np.asarray(result.positions)
    assert x.shape == (2, 1000, 3)
    assert np.all(np.asarray(result.r_hat) < 1.02)
    flat = x.reshape(-1, 3)
    n_eff = np.asarray(result.n_eff)
    z = (flat.mean(axis=0) - M3) / np.sqrt(np.diag(C3) / n_eff)
    assert np.all(np.abs(z) < 4), z
    np.testing.assert_allclose(np.cov(flat.T), C3, atol=4 * np.sqrt(2 / n_eff.min()) * np.diag(C3).max())
    posterior = result.posterior(["a", "b", "c"])
    assert set(posterior) == {"a", "b", "c"} and posterior["a"].shape == (2, 1000)
    assert result.sample_stats()["lp"].shape == (2, 1000)
    np.testing.assert_allclose(result.log_density, -jax.vmap(jax.vmap(target.energy))(result.positions))
