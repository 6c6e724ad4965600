"""Shared fixtures of the physics tests: float64, Gaussian targets with closed forms."""

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402

import fepy  # noqa: E402


class GaussianEnergy(fepy.Energy):
    """U(x) = (x - mean)^T precision (x - mean) / 2; at beta = 1, p = N(mean, precision^-1)."""

    mean: jax.Array
    precision: jax.Array
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def energy(self, x):
        r = x - self.mean
        return 0.5 * r @ self.precision @ r

    def log_z(self) -> float:
        """log int e^{-beta U} dx = d/2 log(2 pi) - 1/2 log det(beta P)."""
        p = np.asarray(self.precision) * float(self.beta)
        return 0.5 * self.dim * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(p)[1]


def gaussian_energy(mean, cov, beta: float = 1.0) -> GaussianEnergy:
    mean = jnp.asarray(mean, jnp.float64)
    cov = np.asarray(cov, np.float64)
    return GaussianEnergy(mean, jnp.asarray(np.linalg.inv(cov)), dim=mean.shape[0], beta=beta)


def mvn(mean, cov) -> dist.MultivariateNormal:
    return dist.MultivariateNormal(jnp.asarray(mean, jnp.float64), jnp.asarray(cov, jnp.float64))


def gaussian_kl(m1, c1, m2, c2) -> float:
    """KL(N(m1, c1) || N(m2, c2))."""
    m1, c1, m2, c2 = map(np.asarray, (m1, c1, m2, c2))
    d = m1.shape[0]
    p2 = np.linalg.inv(c2)
    r = m2 - m1
    return 0.5 * (
        np.trace(p2 @ c1) + r @ p2 @ r - d + np.linalg.slogdet(c2)[1] - np.linalg.slogdet(c1)[1]
    )


def weighted_moments(positions, log_weights):
    """Self-normalised weighted mean and covariance with their delta-method standard errors.

    For w_i normalised, the asymptotic variance of sum_i w_i f(x_i) is estimated by
    sum_i w_i^2 (f(x_i) - fbar)^2 (self-normalised importance sampling; with equal
    weights this is the sample variance / n).
    """
    x = np.asarray(positions, np.float64)
    lw = np.asarray(log_weights, np.float64)
    w = np.exp(lw - lw.max())
    w = w / w.sum()
    mean = w @ x
    r = x - mean
    outer = r[:, :, None] * r[:, None, :]
    cov = np.einsum("i,ijk->jk", w, outer)
    mean_se = np.sqrt(np.einsum("i,ij->j", w**2, r**2))
    cov_se = np.sqrt(np.einsum("i,ijk->jk", w**2, (outer - cov) ** 2))
    return mean, cov, mean_se, cov_se


# A 2-D problem with a non-diagonal target covariance, used by several files.
# a correlated 3-D Gaussian N(M3, C3) (the flow tests' target)
M3 = np.array([0.5, -1.0, 2.0])
C3 = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 0.5]])


def perturbed(flow, scale, seed=1):
    """``flow`` with every parameter moved by ``scale`` x N(0, 1): no longer the identity."""
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


M_PI = np.array([1.0, -0.5])
C_PI = np.array([[1.0, 0.6], [0.6, 0.8]])
M_0 = np.array([-1.0, 1.0])
C_0 = np.array([[0.5, -0.15], [-0.15, 0.4]])


@pytest.fixture
def gauss2d():
    return gaussian_energy(M_PI, C_PI)


@pytest.fixture
def base2d():
    return mvn(M_0, C_0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test file.

    One pytest process compiles thousands of XLA programs. Kept to the end, the whole suite
    crashed XLA's CPU compiler with a segmentation fault in ``backend_compile`` (in
    test_qmc.py, every time, though that file and either half of the files before it pass on
    their own); with the caches dropped per file it passes. The likely cause is the
    accumulated code mappings (vm.max_map_count is 65530 here); not measured directly."""
    yield
    jax.clear_caches()
