r"""Path measures: reference Langevin dynamics of a potential, softly conditioned on an end state.

The reference process :math:`P_0` starts at :math:`x_A` and follows, for a time
:math:`T = n\,\Delta t`, either the overdamped Langevin equation

.. math::  dx = \frac{-\nabla U(x) + b}{m\gamma}\,dt + \sqrt{\frac{2 k_BT}{m\gamma}}\,dW

or the underdamped one

.. math::  dx = v\,dt, \qquad dv = \Big(\frac{-\nabla U(x) + b}{m} - \gamma v\Big)dt
           + \sqrt{\frac{2\gamma k_BT}{m}}\,dW,

with :math:`b = 0`. A control adds the force :math:`b(x, t)` (the family `fepy.Control`).
The target path measure is :math:`dP^*/dP_0 = e^{-\varphi(x_T)}/Z`, :math:`\varphi` the end
state's terminal cost (:math:`k_BT` units), :math:`Z = E_{P_0}[e^{-\varphi(x_T)}]` the soft
probability of a transition. By Girsanov, with the control's drift in noise units
:math:`a = b / (m\gamma\sigma)` (overdamped) or :math:`a = b / (m\sigma)` (underdamped),

.. math::  \log\frac{dQ}{dP_0}(\tau) = \int_0^T a\cdot dW + \tfrac12\int_0^T |a|^2 dt,
           \qquad \tfrac12|a|^2 = \frac{|b|^2}{4 m\gamma k_BT}\ \text{(both dynamics)},

:math:`W` being the controlled process's Brownian motion, and the path-space free energy

.. math::  F[Q] = E_Q\Big[\log\frac{dQ}{dP_0} + \varphi(x_T)\Big] = KL(Q\|P^*) - \log Z
           \ge -\log Z

is what the solver `fepy.PathKL` minimises over controls. Units are the potential's: energy
(``temperature`` is :math:`k_BT` in it), length, time and mass must be consistent (e.g. OpenMM's
kJ/mol, nm, ps, amu, for which 1 kJ/mol = 1 amu nm^2/ps^2).

Integration is by diffrax on the grid :math:`t_k = k\Delta t` (Euler-Maruyama for the overdamped
equation, the ALIGN splitting for the underdamped one), with the Brownian increments drawn up
front so that the same key gives the same noise under reverse-mode differentiation.
"""

import abc
from collections.abc import Callable
from typing import ClassVar, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._validate import as_float_array, concrete


class AbstractEndState(eqx.Module):
    r"""Where transition paths should end: a terminal cost :math:`\varphi(x)` (in :math:`k_BT`)
    whose weight :math:`e^{-\varphi}` conditions the reference paths, and a hit test."""

    @abc.abstractmethod
    def cost(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        r"""Terminal cost :math:`\varphi(x) \ge 0` in units of :math:`k_BT`."""

    @abc.abstractmethod
    def hit(self, x: Float[Array, " dim"]) -> Bool[Array, ""]:
        """True when ``x`` lies in the end state."""


class EndPoint(AbstractEndState):
    r"""A point state: :math:`\varphi(x) = |x - c|^2 / (2 w^2)`, hit when :math:`|x - c| < r`.

    Attributes:
        center: the end point :math:`c` (length units).
        width: :math:`w`, the spread of the soft conditioning (length units).
        radius: :math:`r`, the radius of the ball counted as reached.
    """

    center: Float[Array, " dim"] = eqx.field(converter=lambda c: as_float_array(c, "EndPoint center", 1))
    width: float
    radius: float

    def __check_init__(self):
        for name in ("width", "radius"):
            value = concrete(getattr(self, name))
            if value is not None and not float(value) > 0:
                raise ValueError(f"EndPoint {name} must be > 0, got {float(value)}")

    def cost(self, x):
        return 0.5 * jnp.sum((x - self.center) ** 2) / self.width**2

    def hit(self, x):
        return jnp.sum((x - self.center) ** 2) < self.radius**2


class Paths(eqx.Module):
    r"""A batch of simulated paths and what the path-space estimators need.

    Attributes:
        times: :math:`t_k = k\Delta t`, shape ``(steps + 1,)``.
        positions: :math:`x_k`, shape ``(n, steps + 1, dim)``.
        velocities: :math:`v_k` (underdamped dynamics), else None.
        noise: :math:`\xi_k = a_k\Delta t + \Delta W_k`, the part of each step's increment
            (in noise units, :math:`\sqrt{\text{time}}`) that the reference drift does not
            explain, shape ``(n, steps, dim)``; a path's log-likelihood ratio under
            another control :math:`a'` is :math:`\sum_k a'_k\cdot\xi_k - \tfrac12|a'_k|^2\Delta t`.
        control_cost: :math:`\sum_k \tfrac12|a_k|^2\Delta t`, shape ``(n,)``.
        log_ratio: :math:`\log dQ/dP_0 = \sum_k a_k\cdot\Delta W_k + \tfrac12|a_k|^2\Delta t`, ``(n,)``.
        terminal_cost: :math:`\varphi(x_T)`, shape ``(n,)``.
    """

    times: Float[Array, " steps_plus_1"]
    positions: Float[Array, "n steps_plus_1 dim"]
    velocities: Float[Array, "n steps_plus_1 dim"] | None
    noise: Float[Array, "n steps dim"]
    control_cost: Float[Array, " n"]
    log_ratio: Float[Array, " n"]
    terminal_cost: Float[Array, " n"]

    @property
    def final(self) -> Float[Array, "n dim"]:
        return self.positions[:, -1]


class _GridBrownianPath(diffrax.AbstractBrownianPath):
    """Brownian motion given by its increments (and space-time Lévy areas) on the grid t0 + k dt.

    Exact for solvers that step on that grid; deterministic, so reverse-mode recomputation
    sees the same noise."""

    increments: Float[Array, "steps dim"]
    areas: Float[Array, "steps dim"] | None
    dt: float
    levy_area: type = eqx.field(static=True)

    @property
    def t0(self):
        return 0.0

    @property
    def t1(self):
        return self.dt * self.increments.shape[0]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        if t1 is None:  # the path's value w(t0) on the grid
            k = jnp.round(t0 / self.dt).astype(int)
            w = jnp.sum(jnp.where(jnp.arange(self.increments.shape[0])[:, None] < k, self.increments, 0.0), 0)
            return w
        k = jnp.clip(jnp.round(t0 / self.dt).astype(int), 0, self.increments.shape[0] - 1)
        w = self.increments[k]
        if not use_levy:
            return w
        dt = jnp.asarray(t1 - t0, w.dtype)
        if self.levy_area is diffrax.SpaceTimeLevyArea:
            return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=self.areas[k])
        return diffrax.BrownianIncrement(dt=dt, W=w)


class PathMeasure(eqx.Module):
    r"""Reference Langevin dynamics of ``potential`` from ``start``, softly conditioned on ``end``.

    Attributes:
        potential: :math:`U(x)` of one configuration ``x`` of shape ``(dim,)`` (energy units).
        start: :math:`x_A`, shape ``(dim,)``.
        end: the end state (`EndPoint` or another `AbstractEndState`).
        temperature: :math:`k_BT` (energy units), > 0.
        friction: :math:`\gamma` (1/time), > 0.
        dt: the time step :math:`\Delta t` (time units), > 0.
        steps: the number of steps :math:`n`; the path lasts :math:`T = n\Delta t`.
        mass: :math:`m` per coordinate, shape ``(dim,)`` (mass units; default 1).
        dynamics: ``"overdamped"`` or ``"underdamped"``; underdamped paths start with
            Maxwell-Boltzmann velocities and take a time-independent control.
    """

    potential: Callable[[Float[Array, " dim"]], Float[Array, ""]]
    start: Float[Array, " dim"] = eqx.field(converter=lambda x: as_float_array(x, "PathMeasure start", 1))
    end: AbstractEndState
    temperature: float
    friction: float
    dt: float
    steps: int = eqx.field(static=True)
    mass: Float[Array, " dim"] | None = None
    dynamics: Literal["overdamped", "underdamped"] = eqx.field(static=True, default="overdamped")

    DYNAMICS: ClassVar[tuple[str, ...]] = ("overdamped", "underdamped")

    def __check_init__(self):
        if self.dynamics not in self.DYNAMICS:
            raise ValueError(f"PathMeasure dynamics must be one of {self.DYNAMICS}, got {self.dynamics!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"PathMeasure steps must be a positive integer, got {self.steps!r}")
        for name in ("temperature", "friction", "dt"):
            value = concrete(getattr(self, name))
            if value is not None and not (float(value) > 0 and jnp.isfinite(value)):
                raise ValueError(f"PathMeasure {name} must be finite and > 0, got {float(value)}")
        if not isinstance(self.end, AbstractEndState):
            raise TypeError(f"PathMeasure end must be an AbstractEndState, got {type(self.end).__name__}")
        if self.mass is not None:
            mass = concrete(self.mass)
            if mass is not None and (mass.shape != self.start.shape or not (mass > 0).all()):
                raise ValueError(f"PathMeasure mass must be positive with shape {self.start.shape}")
        start = concrete(self.start)
        if start is not None and not jnp.all(jnp.isfinite(start)):
            raise ValueError("PathMeasure start contains NaN or Inf")

    @property
    def dim(self) -> int:
        return self.start.shape[0]

    @property
    def duration(self) -> float:
        return self.steps * self.dt

    @property
    def times(self) -> Float[Array, " steps_plus_1"]:
        return jnp.arange(self.steps + 1) * self.dt

    def _mass(self) -> Float[Array, " dim"]:
        return jnp.ones_like(self.start) if self.mass is None else jnp.asarray(self.mass, self.start.dtype)

    def noise_scale(self) -> Float[Array, " dim"]:
        r""":math:`\sigma`: :math:`\sqrt{2k_BT/(m\gamma)}` (overdamped), :math:`\sqrt{2\gamma k_BT/m}` (underdamped)."""
        m = self._mass()
        if self.dynamics == "overdamped":
            return jnp.sqrt(2 * self.temperature / (m * self.friction))
        return jnp.sqrt(2 * self.friction * self.temperature / m)

    def control_drift(self, force: Float[Array, " dim"]) -> Float[Array, " dim"]:
        r"""The control force :math:`b` as a drift in noise units, :math:`a = b/(m\gamma\sigma)` or :math:`b/(m\sigma)`."""
        m = self._mass()
        inertia = m * self.friction if self.dynamics == "overdamped" else m
        return force / (inertia * self.noise_scale())

    def simulate(self, control, key: PRNGKeyArray, n: int, sharding=None) -> Paths:
        """``n`` independent paths of the process controlled by ``control`` (None: the reference).

        Differentiable in the control's parameters through the diffrax solve
        (discretise-then-optimise; diffrax's `RecursiveCheckpointAdjoint` keeps log(steps)
        checkpoints of the solver state and recomputes in O(steps log steps); the saved path
        itself, steps x dim per path, is the output). ``sharding``: a
        `jax.sharding.Sharding` of the trajectory axis (e.g. `fepy.batch_sharding()`)."""
        self.check_control(control)
        keys = jax.random.split(key, n)
        if sharding is not None:
            keys = jax.lax.with_sharding_constraint(keys, sharding)
        return jax.vmap(lambda k: self._one_path(control, k), out_axes=Paths(
            None, 0, None if self.dynamics == "overdamped" else 0, 0, 0, 0, 0))(keys)

    def check_control(self, control) -> None:
        """ValueError unless ``control`` (None: the reference) suits the dynamics."""
        if self.dynamics == "underdamped" and control is not None and control.time_dependent:
            raise ValueError("underdamped PathMeasure needs a time-independent Control (time_dependent=False)")

    def _force(self, control, x, t):
        if control is None:
            return jnp.zeros_like(x)
        return control.force(x, t / self.duration)

    def _one_path(self, control, key) -> Paths:
        d, dt = self.dim, self.dt
        key_w, key_h, key_v = jax.random.split(key, 3)
        increments = jnp.sqrt(dt) * jax.random.normal(key_w, (self.steps, d), self.start.dtype)
        ts = self.times.astype(self.start.dtype)
        controller = diffrax.StepTo(ts=ts)
        saveat = diffrax.SaveAt(t0=True, steps=True)
        grad_u = jax.grad(self.potential)
        sigma = self.noise_scale()
        if self.dynamics == "overdamped":
            brownian = _GridBrownianPath(increments, None, dt, diffrax.BrownianIncrement)
            inertia = self._mass() * self.friction

            def drift(t, x, args):
                return (-grad_u(x) + self._force(control, x, t)) / inertia

            terms = diffrax.MultiTerm(
                diffrax.ODETerm(drift),
                diffrax.ControlTerm(lambda t, x, args: lineax.DiagonalLinearOperator(sigma), brownian),
            )
            sol = diffrax.diffeqsolve(terms, diffrax.Euler(), ts[0], ts[-1], None, self.start,
                                      saveat=saveat, stepsize_controller=controller, max_steps=self.steps)
            xs, vs = sol.ys, None
        else:
            areas = jnp.sqrt(dt / 12) * jax.random.normal(key_h, (self.steps, d), self.start.dtype)
            brownian = _GridBrownianPath(increments, areas, dt, diffrax.SpaceTimeLevyArea)
            kt_over_m = self.temperature / self._mass()

            def grad_f(x, args):  # f = (U - potential of b) / kT, so that -u grad f = (-grad U + b) / m
                return (grad_u(x) - self._force(control, x, 0.0)) / self.temperature

            terms = diffrax.MultiTerm(
                diffrax.UnderdampedLangevinDriftTerm(self.friction, kt_over_m, grad_f),
                diffrax.UnderdampedLangevinDiffusionTerm(self.friction, kt_over_m, brownian),
            )
            v0 = jnp.sqrt(kt_over_m) * jax.random.normal(key_v, (d,), self.start.dtype)
            sol = diffrax.diffeqsolve(terms, diffrax.ALIGN(0.1), ts[0], ts[-1], None, (self.start, v0),
                                      saveat=saveat, stepsize_controller=controller, max_steps=self.steps)
            xs, vs = sol.ys
        a = self._drifts(control, xs, ts)
        half_a2 = 0.5 * jnp.sum(a**2) * dt
        return Paths(
            times=ts,
            positions=xs,
            velocities=vs,
            noise=jax.lax.stop_gradient(a * dt + increments),
            control_cost=half_a2,
            log_ratio=jnp.sum(a * increments) + half_a2,
            terminal_cost=self.end.cost(xs[-1]),
        )

    def _drifts(self, control, xs, ts) -> Float[Array, "steps dim"]:
        """The control drift :math:`a_k` (noise units) at the left end of every step of one path."""
        forces = jax.vmap(lambda x, t: self._force(control, x, t))(xs[:-1], ts[:-1])
        return jax.vmap(self.control_drift)(forces)

    def log_ratio(self, control, paths: Paths) -> Float[Array, " n"]:
        r""":math:`\log dQ_{b}/dP_0` of given ``paths`` under ``control``: :math:`\sum_k a_k\cdot\xi_k - \tfrac12|a_k|^2\Delta t`.

        Differentiable in the control (the paths are data); on the control that
        simulated them it equals ``paths.log_ratio``."""

        def one(xs, xi):
            a = self._drifts(control, xs, paths.times)
            return jnp.sum(a * xi) - 0.5 * jnp.sum(a**2) * self.dt

        return jax.vmap(one)(paths.positions, paths.noise)

    def log_likelihood(self, paths: Paths) -> Float[Array, " n"]:
        r"""Log density of each path's noise increments under the reference dynamics (Euler-Maruyama):
        :math:`\sum_k -|\sigma\xi_k|^2/(2\sigma^2\Delta t) - \tfrac{d}{2}\log(2\pi\Delta t) - \sum_i \log\sigma_i`,
        i.e. of the increments of x (overdamped) or v (underdamped) beyond the reference drift."""
        steps, d = paths.noise.shape[1:]
        const = steps * (0.5 * d * jnp.log(2 * jnp.pi * self.dt) + jnp.sum(jnp.log(self.noise_scale())))
        return -0.5 * jnp.sum(paths.noise**2, axis=(1, 2)) / self.dt - const

    def energies(self, paths: Paths) -> Float[Array, "n steps_plus_1"]:
        """:math:`U(x_k)` along each path (energy units); costs n (steps + 1) energy evaluations."""
        return jax.vmap(jax.vmap(self.potential))(paths.positions)

    def hits(self, paths: Paths) -> Bool[Array, " n"]:
        """Whether each path's final state lies in the end state."""
        return jax.vmap(self.end.hit)(paths.final)
