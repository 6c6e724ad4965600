r"""Normalizing flows: a density :math:`q_\theta` pushed forward from a base by a learnt bijection.

A flow draws :math:`z \sim q_0` (by default :math:`N(0, I_d)`) and returns
:math:`x = f_\theta(z)` with an invertible, differentiable :math:`f_\theta`. By the change
of variables,

.. math::

    \log q_\theta(x) = \log q_0(z) - \log\left|\det \frac{\partial f_\theta}{\partial z}\right|,
    \qquad z = f_\theta^{-1}(x)
    = \log q_0(f_\theta^{-1}(x)) + \log\left|\det \frac{\partial f_\theta^{-1}}{\partial x}\right| ,

exact for every :math:`x`, so a flow is an `AbstractDensity` like `Gaussian`: `fepy.ReverseKL`
trains it by the pathwise gradient of :math:`F[q]`, and the importance weights
:math:`w = e^{-\beta U(x)}/q_\theta(x)` of its samples estimate :math:`Z` without bias.

The bijections are `flowjax <https://github.com/danielward27/flowjax>`_ coupling layers
(Dinh et al. 2017): each layer splits :math:`x = (x_a, x_b)` (after a fixed random
permutation), keeps :math:`x_a`, and maps each coordinate of :math:`x_b` by a monotone 1-D
transformer whose parameters are an MLP of :math:`x_a` -- an affine map
(`Flow.affine`, RealNVP) or a monotone rational-quadratic spline on
:math:`[-B, B]`, the identity outside (`Flow.rq_spline`; Durkan et al. 2019). The Jacobian
is triangular, so its log-determinant is the sum of the 1-D log-derivatives, and each
layer inverts in closed form.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import AbstractBijection, Affine, Chain, Coupling, Flip, Permute, RationalQuadraticSpline, Scan
from jaxtyping import Array, Float, PRNGKeyArray

from .density import AbstractDensity


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Flow {name} must be an integer >= {minimum}, got {value!r}")


def _zero_final_layers(bijection):
    """Each coupling's conditioner with a zero last layer: its transformer is the identity at
    the start (a zero output of a flowjax conditioner is the identity transformer), so the
    flow is a fixed permutation of z and, for a standard-normal base, q = q_0 exactly."""

    def zero(module):
        if not isinstance(module, Coupling):
            return module
        last = lambda c: c.conditioner.layers[-1]
        layer = last(module)
        return eqx.tree_at(lambda c: (last(c).weight, last(c).bias), module,
                           (jnp.zeros_like(layer.weight), jnp.zeros_like(layer.bias)))

    is_coupling = lambda m: isinstance(m, Coupling)
    return jax.tree.map(zero, bijection, is_leaf=is_coupling)


class Flow(AbstractDensity):
    r"""The density of :math:`x = f_\theta(z)`, :math:`z \sim q_0`, with exact :math:`\log q_\theta`.

    Attributes:
        bijection: :math:`f_\theta`, a flowjax bijection on shape ``(dim,)`` without a
            condition; its inexact-array leaves are the trainable parameters.
        base: :math:`q_0`, an `AbstractDensity` with a ``log_prob`` (e.g. a `Gaussian`,
            then trained as well), or None for the parameter-free :math:`N(0, I_d)`.

    Build one with `Flow.rq_spline` or `Flow.affine`, or wrap any flowjax bijection.
    """

    bijection: AbstractBijection
    base: AbstractDensity | None = None

    def __check_init__(self):
        if not isinstance(self.bijection, AbstractBijection):
            raise TypeError(f"Flow bijection must be a flowjax AbstractBijection, got {type(self.bijection).__name__}")
        if len(self.bijection.shape) != 1:
            raise ValueError(f"Flow bijection must act on vectors (shape (dim,)), got shape {self.bijection.shape}")
        if self.bijection.cond_shape is not None:
            raise ValueError("Flow bijection must be unconditional (cond_shape None)")
        if self.base is not None:
            if not isinstance(self.base, AbstractDensity) or not callable(getattr(self.base, "log_prob", None)):
                raise TypeError("Flow base must be None (standard normal) or an AbstractDensity with a log_prob")
            if self.base.dim != self.bijection.shape[0]:
                raise ValueError(f"Flow base has dim {self.base.dim}, the bijection acts on dim {self.bijection.shape[0]}")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def rq_spline(
        cls,
        key: PRNGKeyArray,
        dim: int,
        *,
        layers: int = 8,
        knots: int = 8,
        interval: float = 4.0,
        width: int = 64,
        depth: int = 1,
        permutation: str = "random",
        base: AbstractDensity | None = None,
    ) -> "Flow":
        r"""A coupling flow of ``layers`` rational-quadratic spline layers.

        Each layer maps the transformed half coordinatewise by a monotone spline with
        ``knots`` knots on :math:`[-B, B]`, ``B = interval`` (identity with unit slope
        outside), its widths, heights and slopes output by an MLP (``depth`` hidden layers of
        ``width`` units, ReLU) of the other half. Between layers a fixed ``permutation``:
        ``"random"`` (one drawn per layer) or ``"reverse"`` (the order flipped, RealNVP's
        alternating halves, so that two layers transform every coordinate); a flip for d = 2. At
        initialisation every coupling is the identity (zero last layer), so :math:`f` is a
        permutation and :math:`q = q_0` for the standard-normal base.
        """
        _check_int("dim", dim, 2)
        _check_int("knots", knots, 2)
        if not (isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0
                and math.isfinite(interval)):
            raise ValueError(f"Flow interval must be a positive finite number, got {interval!r}")
        return cls._coupling(key, dim, RationalQuadraticSpline(knots=knots, interval=float(interval)),
                             layers, width, depth, base, permutation)

    @classmethod
    def affine(
        cls,
        key: PRNGKeyArray,
        dim: int,
        *,
        layers: int = 8,
        width: int = 64,
        depth: int = 1,
        permutation: str = "random",
        base: AbstractDensity | None = None,
    ) -> "Flow":
        r"""A RealNVP-style coupling flow: each layer maps the transformed half by
        :math:`x_b \mapsto \mu(x_a) + \sigma(x_a) x_b`, :math:`\sigma > 0` (a softplus), with an
        MLP of the other half; ``permutation`` between layers as in `rq_spline`. Every coupling is the identity
        at initialisation (zero last layer)."""
        _check_int("dim", dim, 2)
        return cls._coupling(key, dim, Affine(), layers, width, depth, base, permutation)

    @classmethod
    def _coupling(cls, key, dim, transformer, layers, width, depth, base, permutation) -> "Flow":
        _check_int("layers", layers, 1)
        _check_int("width", width, 1)
        _check_int("depth", depth, 0)
        if permutation not in ("random", "reverse"):
            raise ValueError(f"Flow permutation must be 'random' or 'reverse', got {permutation!r}")

        def layer(k):  # a coupling layer, then the permutation that feeds the next one
            coupling_key, permutation_key = jax.random.split(k)
            coupling = Coupling(coupling_key, transformer=transformer, untransformed_dim=dim // 2, dim=dim,
                                nn_width=width, nn_depth=depth)
            if dim == 2 or permutation == "reverse":
                mixer = Flip((dim,))
            else:
                mixer = Permute(jax.random.permutation(permutation_key, dim))
            return Chain([coupling, mixer])

        stacked = eqx.filter_vmap(layer)(jax.random.split(key, layers))
        return cls(_zero_final_layers(Scan(stacked)), base)

    # ------------------------------------------------------------------ the density

    @property
    def dim(self) -> int:
        return self.bijection.shape[0]

    def _base_sample_and_log_prob(self, key, n):
        if self.base is not None:
            return self.base.sample_and_log_prob(key, n)
        dtype = jnp.result_type(float)
        z = jax.random.normal(key, (n, self.dim), dtype)
        return z, self._standard_normal_log_prob(z)

    def _standard_normal_log_prob(self, z):
        return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * self.dim * math.log(2 * math.pi)

    def _base_log_prob(self, z):
        if self.base is not None:
            return self.base.log_prob(z)
        return self._standard_normal_log_prob(z)

    def transform_and_log_det(
        self, z: Float[Array, "n dim"]
    ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        r""":math:`x = f_\theta(z)` and :math:`\log|\det \partial f_\theta/\partial z|`, row by row."""
        bijection = paramax.unwrap(self.bijection)
        return jax.vmap(bijection.transform_and_log_det)(z)

    def inverse_and_log_det(
        self, x: Float[Array, "n dim"]
    ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        r""":math:`z = f_\theta^{-1}(x)` and :math:`\log|\det \partial f_\theta^{-1}/\partial x|`, row by row."""
        bijection = paramax.unwrap(self.bijection)
        return jax.vmap(bijection.inverse_and_log_det)(x)

    def sample_and_log_prob(self, key, n):
        r""":math:`x_i = f_\theta(z_i)`, :math:`\log q(x_i) = \log q_0(z_i) - \log|\det J_f(z_i)|`
        (the forward pass only), differentiable in the parameters."""
        z, log_q0 = self._base_sample_and_log_prob(key, n)
        x, log_det = self.transform_and_log_det(z)
        return x, log_q0 - log_det

    def log_prob(self, x: Float[Array, "... dim"]) -> Float[Array, "..."]:
        r""":math:`\log q(x) = \log q_0(f^{-1}(x)) + \log|\det J_{f^{-1}}(x)|` (the inverse pass)."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"Flow log_prob expects points of shape (..., {self.dim}), got {x.shape}")
        flat = x.reshape(-1, self.dim)
        z, log_det = self.inverse_and_log_det(flat)
        return (self._base_log_prob(z) + log_det).reshape(x.shape[:-1])
