r"""Parametric densities :math:`q_\theta` for variational inference: the family of `fepy.ReverseKL`.

A density family can be sampled with its normalised log density, reparametrised
(:math:`x = T_\theta(\varepsilon)`, :math:`\varepsilon` from a fixed base), so that
:math:`\nabla_\theta E_{q_\theta}[f(x)] = E_\varepsilon[\nabla_\theta f(T_\theta(\varepsilon))]`.
Its parameters are its inexact-array leaves, trained by optax; anything else (sizes,
activations) is static. `Gaussian` is the simplest member; a normalizing flow is another.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import as_float_array, concrete


class AbstractDensity(eqx.Module):
    r"""A normalised density :math:`q_\theta(x)` on :math:`\mathbb{R}^d`, reparametrised in its
    parameters (the inexact-array leaves)."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Dimension d of x."""

    @abc.abstractmethod
    def sample_and_log_prob(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        r"""``n`` samples :math:`x_i \sim q_\theta` and :math:`\log q_\theta(x_i)`, both
        differentiable in the parameters (the pathwise / reparametrisation gradient)."""

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` samples of q."""
        return self.sample_and_log_prob(key, n)[0]

    def as_distribution(self) -> "DensityDistribution":
        r"""This density as a numpyro distribution with event shape ``(dim,)`` (see
        `DensityDistribution`): e.g. a trained `Flow` as the base :math:`q_0` of
        `fepy.Particles`, the start of the annealing path :math:`q_0^{1-\lambda} p^\lambda`
        (flow-annealed importance sampling, FAB-style)."""
        return DensityDistribution(self)


class DensityDistribution(dist.Distribution):
    r"""A numpyro view of an `AbstractDensity` :math:`q`: the same measure, numpyro's interface.

    ``log_prob(x)`` is :math:`\log q(x)` for points of shape ``(..., dim)`` (the density's own
    ``log_prob``, differentiable in :math:`x`, as the gradient-based moves need), and
    ``sample(key, shape)`` returns ``shape + (dim,)`` draws :math:`x \sim q` (the density's
    ``sample`` of :math:`\prod` shape points). Event shape ``(dim,)``, no batch shape, support
    :math:`\mathbb{R}^d`. Nothing is copied: the parameters are the density's and the view is a
    pytree whose leaves are the density's leaves, so it passes through ``jax.jit``.
    """

    arg_constraints = {}
    support = constraints.real_vector
    pytree_data_fields = ("density",)

    def __init__(self, density: AbstractDensity, *, validate_args=None):
        if not isinstance(density, AbstractDensity):
            raise TypeError(f"DensityDistribution wraps an fepy AbstractDensity, got {type(density).__name__}")
        if not callable(getattr(density, "log_prob", None)):
            raise TypeError(f"{type(density).__name__} has no log_prob: it cannot serve as a distribution")
        self.density = density
        super().__init__(batch_shape=(), event_shape=(density.dim,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        sample_shape = tuple(sample_shape)
        n = math.prod(sample_shape)
        return self.density.sample(key, n).reshape(sample_shape + self.event_shape)

    def log_prob(self, value):
        return self.density.log_prob(value)


def _pack_scale(scale_tril) -> Array:
    """Lower-triangular Cholesky factor -> raw parameters: log of the diagonal on the diagonal."""
    d = jnp.diagonal(scale_tril)
    return jnp.tril(scale_tril, -1) + jnp.diag(jnp.log(d))


class Gaussian(AbstractDensity):
    r"""A full-covariance Gaussian :math:`q = N(\mu, L L^\top)`, :math:`L` lower triangular.

    Sampled as :math:`x = \mu + L\varepsilon`, :math:`\varepsilon \sim N(0, I)`, with
    :math:`\log q(x) = -\frac12|\varepsilon|^2 - \sum_i \log L_{ii} - \frac d2 \log 2\pi`.
    The parameters are ``mean`` and ``raw_scale``, the strictly lower part of :math:`L`
    with :math:`\log L_{ii}` on the diagonal (so :math:`L_{ii} > 0` for any value; the
    upper triangle is ignored). Build it with ``Gaussian(mean, scale_tril)`` or
    `Gaussian.from_covariance`.
    """

    mean: Float[Array, " dim"]
    raw_scale: Float[Array, "dim dim"]

    def __init__(self, mean, scale_tril):
        """``mean`` (shape ``(d,)``) and the Cholesky factor ``scale_tril`` (lower triangular
        with a positive diagonal, shape ``(d, d)``; the upper triangle must be 0)."""
        mean = as_float_array(mean, "Gaussian mean", ndim=1)
        scale_tril = as_float_array(scale_tril, "Gaussian scale_tril", ndim=2).astype(mean.dtype)
        if scale_tril.shape != (mean.size, mean.size):
            raise ValueError(
                f"Gaussian scale_tril must have shape ({mean.size}, {mean.size}), got {scale_tril.shape}"
            )
        v = concrete(scale_tril)
        if v is not None:
            if not np.all(np.isfinite(v)) or np.any(np.triu(v, 1) != 0) or np.any(np.diagonal(v) <= 0):
                raise ValueError(
                    "Gaussian scale_tril must be finite and lower triangular with a positive diagonal"
                )
        m = concrete(mean)
        if m is not None and not np.all(np.isfinite(m)):
            raise ValueError("Gaussian mean contains NaN or Inf")
        self.mean = mean
        self.raw_scale = _pack_scale(scale_tril)

    @classmethod
    def from_covariance(cls, mean, covariance) -> "Gaussian":
        """:math:`N(\\mu, \\Sigma)`; ValueError when ``covariance`` is not symmetric positive definite."""
        c = np.asarray(covariance, dtype=float)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.allclose(c, c.T):
            raise ValueError(f"Gaussian covariance must be a symmetric square matrix, got shape {c.shape}")
        try:
            tril = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ValueError("Gaussian covariance is not positive definite") from None
        return cls(mean, tril)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def scale_tril(self) -> Float[Array, "dim dim"]:
        """The Cholesky factor L of the covariance."""
        return jnp.tril(self.raw_scale, -1) + jnp.diag(jnp.exp(jnp.diagonal(self.raw_scale)))

    @property
    def covariance(self) -> Float[Array, "dim dim"]:
        """:math:`\\Sigma = L L^\\top`."""
        L = self.scale_tril
        return L @ L.T

    def sample_and_log_prob(self, key, n):
        eps = jax.random.normal(key, (n, self.dim), self.mean.dtype)
        x = self.mean + eps @ self.scale_tril.T
        log_det = jnp.sum(jnp.diagonal(self.raw_scale))
        log_q = -0.5 * jnp.sum(eps**2, axis=-1) - log_det - 0.5 * self.dim * math.log(2 * math.pi)
        return x, log_q

    def log_prob(self, x: Float[Array, "... dim"]) -> Float[Array, "..."]:
        r""":math:`\log q(x)`."""
        L = self.scale_tril
        r = jnp.asarray(x) - self.mean
        eps = jax.scipy.linalg.solve_triangular(L, r.reshape(-1, self.dim).T, lower=True).T
        log_q = (
            -0.5 * jnp.sum(eps**2, axis=-1)
            - jnp.sum(jnp.diagonal(self.raw_scale))
            - 0.5 * self.dim * math.log(2 * math.pi)
        )
        return log_q.reshape(r.shape[:-1])
