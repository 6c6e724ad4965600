r"""Continuous normalizing flows: a density transported by an ODE, with the exact log-density.

A vector field :math:`v_\theta(t, x)` carries base samples :math:`x_0 \sim q_0` along
:math:`\dot x = v_\theta(t, x)` from :math:`t = 0` to :math:`x_1` at :math:`t = 1`
(Chen et al. 2018). The log-density follows the instantaneous change of variables

.. math::

    \frac{d}{dt}\log q_t(x(t)) = -\nabla\cdot v_\theta(t, x(t)),
    \qquad \log q_1(x_1) = \log q_0(x_0) - \int_0^1 \nabla\cdot v_\theta(t, x(t))\,dt ,

integrated together with :math:`x(t)` by diffrax: forwards from base samples
(`CNF.sample_and_log_prob`) or backwards from given points (`CNF.log_prob`). The divergence is
the exact trace of the Jacobian :math:`\partial v/\partial x` (``jax.jacfwd``, one JVP per
dimension), not a stochastic estimate, so the importance weights
:math:`e^{-\beta U(x)}/q_1(x)` carry no estimator noise: affordable for the few tens of
dimensions of the particle benchmarks.

A CNF is an `AbstractDensity` like `Flow`: its log Z, ESS, reweighted observables and its use
as an SMC base (`Particles.from_base`) work unchanged. On a subspace: if the base lives on a
linear subspace :math:`V` (e.g. zero centre of mass) and the field maps into :math:`V`
(:math:`P v = v`) and is constant along :math:`V^\perp` (:math:`v(x + u) = v(x)`,
:math:`u \perp V`), then the trace of the full Jacobian equals the divergence on :math:`V`
(:math:`\mathrm{tr}\,J = \mathrm{tr}\,PJP` because :math:`J(I - P) = 0` and :math:`PJ = J`), so
the same code gives the density on :math:`V`.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .density import AbstractDensity

Field = Callable[[Float[Array, ""], Float[Array, " dim"]], Float[Array, " dim"]]


def divergence(field: Field, t: Float[Array, ""], x: Float[Array, " dim"]) -> Float[Array, ""]:
    r"""The exact divergence :math:`\nabla\cdot v(t, x) = \mathrm{tr}\,\partial v/\partial x`
    (forward mode, one JVP per dimension)."""
    return jnp.trace(jax.jacfwd(lambda y: field(t, y))(x))


class CNF(AbstractDensity):
    r"""The density of :math:`x_1`, the time-1 image of :math:`x_0 \sim q_0` under
    :math:`\dot x = v_\theta(t, x)`, with the exact :math:`\log q_1` (module docstring).

    Attributes:
        field: :math:`v_\theta`, a callable pytree ``field(t, x)`` on one point ``x`` of shape
            ``(dim,)`` returning ``dx/dt`` (an Equinox module; its inexact-array leaves are
            the trainable parameters).
        base: :math:`q_0`, an `AbstractDensity` with ``log_prob`` (not trained by
            `fepy.FlowMatching`).
        steps: ``None`` for an adaptive Dormand-Prince 5(4) solve with tolerances ``rtol``,
            ``atol`` on :math:`(x, \log q)`; an integer for that many equal Dormand-Prince 5
            steps (cheaper, with a discretisation error in both; samples and their
            :math:`\log q` stay consistent to that error, the forward and backward solves
            being different discretisations).
        rtol, atol: the adaptive solver's tolerances.
        max_steps: the adaptive solver's step budget (an error beyond it).
    """

    field: eqx.Module
    base: AbstractDensity
    steps: int | None = eqx.field(static=True, default=None)
    rtol: float = eqx.field(static=True, default=1e-5)
    atol: float = eqx.field(static=True, default=1e-5)
    max_steps: int = eqx.field(static=True, default=4096)

    def __check_init__(self):
        if not callable(self.field):
            raise TypeError(f"CNF field must be callable as field(t, x), got {type(self.field).__name__}")
        if not isinstance(self.base, AbstractDensity) or not callable(getattr(self.base, "log_prob", None)):
            raise TypeError("CNF base must be an AbstractDensity with a log_prob")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"CNF steps must be None (adaptive) or a positive integer, got {self.steps!r}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"CNF {name} must be a positive number, got {value!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"CNF max_steps must be a positive integer, got {self.max_steps!r}")

    @property
    def dim(self) -> int:
        return self.base.dim

    def _solve(self, x: Float[Array, " dim"], t0: float, t1: float):
        r"""Integrate :math:`(x, \ell)` with :math:`\dot\ell = \nabla\cdot v` from ``t0`` to ``t1``,
        :math:`\ell(t_0) = 0`; returns :math:`x(t_1)` and :math:`\ell(t_1) = \int_{t_0}^{t_1}
        \nabla\cdot v\,dt`, the log-Jacobian-determinant of the map :math:`x(t_0) \mapsto x(t_1)`
        (Liouville's formula)."""

        def rhs(t, state, args):
            y, _ = state
            return self.field(t, y), divergence(self.field, t, y)

        term = diffrax.ODETerm(rhs)
        if self.steps is None:
            dt0, controller = None, diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        else:
            dt0, controller = (t1 - t0) / self.steps, diffrax.ConstantStepSize()
        solution = diffrax.diffeqsolve(
            term, diffrax.Dopri5(), t0, t1, dt0, (x, jnp.zeros((), x.dtype)), stepsize_controller=controller,
            max_steps=self.max_steps if self.steps is None else self.steps,
        )
        y, ell = solution.ys
        return y[-1], ell[-1]

    def transform_and_log_det(
        self, z: Float[Array, "n dim"]
    ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        r""":math:`x = x(1)` from :math:`x(0) = z` and :math:`\log|\det \partial x/\partial z|
        = \int_0^1 \nabla\cdot v\,dt`, row by row."""
        return jax.vmap(lambda row: self._solve(row, 0.0, 1.0))(z)

    def inverse_and_log_det(
        self, x: Float[Array, "n dim"]
    ) -> tuple[Float[Array, "n dim"], Float[Array, " n"]]:
        r""":math:`z = x(0)` from :math:`x(1) = x` and :math:`\log|\det \partial z/\partial x|
        = -\int_0^1 \nabla\cdot v\,dt`, row by row."""
        return jax.vmap(lambda row: self._solve(row, 1.0, 0.0))(x)

    def sample_and_log_prob(self, key: PRNGKeyArray, n: int):
        r""":math:`x_i = x(1)` from base samples, :math:`\log q_1(x_i) = \log q_0(z_i) - \int_0^1
        \nabla\cdot v\,dt` (the forward solve only)."""
        z, log_q0 = self.base.sample_and_log_prob(key, n)
        x, log_det = self.transform_and_log_det(z)
        return x, log_q0 - log_det

    def log_prob(self, x: Float[Array, "... dim"]) -> Float[Array, "..."]:
        r""":math:`\log q_1(x) = \log q_0(z) + \log|\det \partial z/\partial x|` (the backward solve)."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"CNF log_prob expects points of shape (..., {self.dim}), got {x.shape}")
        flat = x.reshape(-1, self.dim)
        z, log_det = self.inverse_and_log_det(flat)
        return (self.base.log_prob(z) + log_det).reshape(x.shape[:-1])
