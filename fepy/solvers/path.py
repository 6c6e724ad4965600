r"""`fepy.PathKL`: train a control by stochastic optimal control, the path-space free energy.

Both objectives have the target path measure :math:`P^*` (see `fepy.PathMeasure`) as their
unique minimiser over controls:

* `RelativeEntropy` (PIPS, Holdijk et al., NeurIPS 2023): the free energy
  :math:`F = E_Q[\tfrac12\int|a|^2dt + \varphi(x_T)] = KL(Q\|P^*) - \log Z`, whose gradient is
  taken through the SDE solve by the reparametrisation trick (the martingale
  :math:`\int a\cdot dW` has zero mean and is left out of the loss).
* `LogVariance` (as in TPS-DPS, Seong et al., ICLR 2025): the mean square of
  :math:`\log dQ_\theta/dP^* = \log dQ_\theta/dP_0 + \varphi(x_T) + \log Z_\theta` over paths
  simulated without gradients and kept in a replay buffer, with :math:`\log Z_\theta` learned
  alongside. No derivative through the solver, and paths can be reused (off-policy).

Per step the solver reports the free energy ``free_energy`` (upper bound on :math:`-\log Z`),
its importance-sampling estimate ``log_z`` (:math:`\log \overline{e^{-\log dQ/dP_0 - \varphi}}`),
the Kish ESS fraction of those weights, the hit fraction and the cumulative energy (force)
evaluations spent on simulation.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from .._estimators import kish_ess, log_mean_exp
from .._sharding import batch_sharding
from ..families.control import Control
from ..targets.path import PathMeasure, Paths
from ._base import AbstractSolver


class RelativeEntropy(eqx.Module):
    """The PIPS objective: E_Q[control cost + terminal cost], differentiated through the SDE solve."""


class LogVariance(eqx.Module):
    r"""The log-variance objective :math:`E[(\log dQ_\theta/dP_0 + \varphi + \log Z_\theta)^2]` on replayed paths.

    Attributes:
        buffer_size: paths kept; each step adds the fresh ``trajectories`` and trains on as
            many drawn uniformly from the buffer (0: on the fresh paths only).
        replay: optimiser updates per step, each on a fresh draw from the buffer (TPS-DPS
            trains many times per rollout); they cost network evaluations, no energy ones.
        log_z_scale: the learning-rate multiplier of :math:`\log Z_\theta` relative to the control
            (with Adam, log Z moves by up to ``learning_rate * log_z_scale`` kT per step; path
            log-ratios of transitions are hundreds of kT, and a lagging log Z biases the
            off-policy gradient).

    :math:`\log Z_\theta` starts, at the first step, from the batch's Jensen bound
    :math:`-\overline{\log dQ/dP_0 + \varphi}`, since a cold start at 0 can be hundreds of
    :math:`k_BT` away and the squared residual then drives the control instead.
    """

    buffer_size: int = eqx.field(static=True, default=0)
    log_z_scale: float = 100.0
    replay: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not isinstance(self.buffer_size, int) or self.buffer_size < 0:
            raise ValueError(f"LogVariance buffer_size must be a non-negative integer, got {self.buffer_size!r}")
        if not isinstance(self.replay, int) or self.replay < 1:
            raise ValueError(f"LogVariance replay must be a positive integer, got {self.replay!r}")
        if self.replay > 1 and self.buffer_size == 0:
            raise ValueError("LogVariance replay > 1 needs a replay buffer (buffer_size > 0)")


class _Buffer(eqx.Module):
    positions: Float[Array, "size steps_plus_1 dim"]
    noise: Float[Array, "size steps dim"]
    terminal_cost: Float[Array, " size"]
    valid: Bool[Array, " size"]
    filled: Int[Array, ""]
    head: Int[Array, ""]


class PathKLState(eqx.Module):
    opt_state: optax.OptState
    log_z: Float[Array, ""]
    buffer: _Buffer | None
    energy_evals: Float[Array, ""]
    last: dict


def _finite_paths(paths: Paths) -> Array:
    return (jnp.isfinite(paths.log_ratio) & jnp.isfinite(paths.terminal_cost)
            & jnp.all(jnp.isfinite(paths.positions), axis=(1, 2)))


def _masked_mean(x, mask):
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.sum(mask)


class PathKL(AbstractSolver):
    r"""Parametric descent of the path-space free energy over a `fepy.Control` on a `fepy.PathMeasure`.

    Attributes:
        optimizer: the optax transformation of the control's network parameters.
        trajectories: paths simulated per step (the batch axis).
        objective: `RelativeEntropy()` (PIPS, default) or `LogVariance(buffer_size=...)`.
        shard: split the trajectories over all local devices when there are several (and
            they divide ``trajectories``); results equal the one-device run to round-off.

    A path that turns non-finite (a blow-up of the integrator) gets no weight in the loss or
    the statistics; ``nonfinite`` counts them per step, and a gradient entry that is not
    finite is set to zero (with PIPS one blown-up path can spoil the whole gradient through the
    solve: that step then leaves the control as it was). If all paths blow up, the statistics
    are NaN and `fepy.minimize` stops, naming the step.
    """

    optimizer: optax.GradientTransformation
    trajectories: int = eqx.field(static=True)
    objective: RelativeEntropy | LogVariance = RelativeEntropy()
    shard: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not isinstance(self.trajectories, int) or self.trajectories < 1:
            raise ValueError(f"PathKL trajectories must be a positive integer, got {self.trajectories!r}")
        if not isinstance(self.objective, RelativeEntropy | LogVariance):
            raise TypeError(f"PathKL objective must be RelativeEntropy or LogVariance, got {self.objective!r}")

    def _sharding(self):
        devices = jax.local_device_count()
        if self.shard and devices > 1 and self.trajectories % devices == 0:
            return batch_sharding()
        return None

    def _log_z_scale(self) -> float:
        return self.objective.log_z_scale if isinstance(self.objective, LogVariance) else 1.0

    def _parameters(self, control: Control, log_z):
        """The trained leaves: the network's arrays and log Z in optimiser units."""
        return eqx.filter(control.network, eqx.is_inexact_array), log_z / self._log_z_scale()

    def init(self, target, family, key):
        if not isinstance(target, PathMeasure):
            raise TypeError(f"PathKL needs a PathMeasure target, got {type(target).__name__}")
        if not isinstance(family, Control):
            raise TypeError(f"PathKL needs a Control family, got {type(family).__name__}")
        target.check_control(family)
        buffer = None
        if isinstance(self.objective, LogVariance) and self.objective.buffer_size:
            size, dtype = self.objective.buffer_size, target.start.dtype
            buffer = _Buffer(
                positions=jnp.zeros((size, target.steps + 1, target.dim), dtype),
                noise=jnp.zeros((size, target.steps, target.dim), dtype),
                terminal_cost=jnp.zeros((size,), dtype),
                valid=jnp.zeros((size,), bool),
                filled=jnp.zeros((), int), head=jnp.zeros((), int),
            )
        zero = jnp.zeros((), target.start.dtype)
        last = dict(log_ratio=jnp.zeros(self.trajectories, zero.dtype),
                    terminal_cost=jnp.zeros(self.trajectories, zero.dtype),
                    control_cost=jnp.zeros(self.trajectories, zero.dtype),
                    hit=jnp.zeros(self.trajectories, bool), finite=jnp.zeros(self.trajectories, bool))
        return PathKLState(self.optimizer.init(self._parameters(family, zero)), zero, buffer, zero, last)

    def step(self, target, family, state, key):
        params = self._parameters(family, state.log_z)
        sim_key, draw_key = jax.random.split(key)
        network_static = eqx.filter(family.network, eqx.is_inexact_array, inverse=True)

        def control_of(p):
            return eqx.tree_at(lambda c: c.network, family, eqx.combine(p[0], network_static))

        buffer = state.buffer
        if isinstance(self.objective, RelativeEntropy):
            def loss_fn(p):
                paths = target.simulate(control_of(p), sim_key, self.trajectories, self._sharding())
                finite = _finite_paths(paths)
                return _masked_mean(paths.control_cost + paths.terminal_cost, finite), (paths, finite)

            (loss, (paths, finite)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            params, opt_state = self._update(params, grads, state.opt_state)
        else:
            paths = jax.lax.stop_gradient(target.simulate(family, sim_key, self.trajectories, self._sharding()))
            finite = _finite_paths(paths)
            # warm start of the learned log Z at its Jensen bound -E_Q[log dQ/dP0 + phi] on the first batch
            first = -_masked_mean(paths.log_ratio + paths.terminal_cost, finite) / self._log_z_scale()
            params = (params[0], jnp.where(state.energy_evals == 0, first, params[1]))

            def loss_fn(p, train, train_finite):
                log_ratio = target.log_ratio(control_of(p), train)
                residual = log_ratio + train.terminal_cost + p[1] * self._log_z_scale()
                return _masked_mean(residual**2, train_finite)

            if buffer is None:
                loss, grads = jax.value_and_grad(loss_fn)(params, paths, finite)
                params, opt_state = self._update(params, grads, state.opt_state)
            else:
                buffer = self._push(buffer, paths, finite)

                def replayed(carry, k):
                    params, opt_state = carry
                    loss, grads = jax.value_and_grad(loss_fn)(params, *self._draw(buffer, paths, k))
                    return self._update(params, grads, opt_state), loss

                (params, opt_state), losses = jax.lax.scan(
                    replayed, (params, state.opt_state), jax.random.split(draw_key, self.objective.replay))
                loss = losses[-1]
        family = control_of(params)
        log_z = params[1] * self._log_z_scale()
        hits = target.hits(paths)
        last = dict(log_ratio=paths.log_ratio, terminal_cost=paths.terminal_cost,
                    control_cost=paths.control_cost, hit=hits, finite=finite)
        evals = state.energy_evals + self.trajectories * target.steps
        stats = dict(loss=loss, **self._estimates(last), energy_evals=evals,
                     nonfinite=jnp.sum(~finite).astype(loss.dtype))
        if isinstance(self.objective, LogVariance):
            stats["learned_log_z"] = log_z
        return family, PathKLState(opt_state, log_z, buffer, evals, last), stats

    def _update(self, params, grads, opt_state):
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @staticmethod
    def _estimates(last) -> dict:
        finite = last["finite"]
        log_w = jnp.where(finite, -last["log_ratio"] - last["terminal_cost"], -jnp.inf)
        n_finite = jnp.sum(finite)
        return dict(
            free_energy=_masked_mean(last["control_cost"] + last["terminal_cost"], finite),
            control_cost=_masked_mean(last["control_cost"], finite),
            terminal_cost=_masked_mean(last["terminal_cost"], finite),
            log_z=log_mean_exp(log_w) + jnp.log(log_w.shape[0] / n_finite),
            ess_fraction=kish_ess(log_w) / log_w.shape[0],
            hit_fraction=_masked_mean(last["hit"].astype(log_w.dtype), finite),
        )

    def _push(self, buffer: _Buffer, paths: Paths, finite) -> _Buffer:
        """Write the fresh paths over the oldest ones; a non-finite path is stored but marked invalid."""
        n, size = self.trajectories, buffer.terminal_cost.shape[0]
        index = (buffer.head + jnp.arange(n)) % size
        return _Buffer(
            positions=buffer.positions.at[index].set(paths.positions),
            noise=buffer.noise.at[index].set(paths.noise),
            terminal_cost=buffer.terminal_cost.at[index].set(paths.terminal_cost),
            valid=buffer.valid.at[index].set(finite),
            filled=jnp.minimum(buffer.filled + n, size),
            head=(buffer.head + n) % size,
        )

    def _draw(self, buffer: _Buffer, paths: Paths, key):
        """``trajectories`` paths drawn uniformly from the filled part of the buffer, with their validity."""
        index = jax.random.randint(key, (self.trajectories,), 0, jnp.maximum(buffer.filled, 1))
        zeros = jnp.zeros(self.trajectories, paths.log_ratio.dtype)
        drawn = Paths(times=paths.times, positions=buffer.positions[index], velocities=None,
                      noise=buffer.noise[index], control_cost=zeros, log_ratio=zeros,
                      terminal_cost=buffer.terminal_cost[index])
        return drawn, buffer.valid[index]

    def summary(self, target, family, state):
        est = self._estimates(state.last)
        return dict(est, energy_evals=state.energy_evals)
