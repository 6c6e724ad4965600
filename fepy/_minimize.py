"""`fepy.minimize`: the one loop that drives every solver."""

import math
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray, PyTree

from ._callbacks import Callback
from ._checkpoint import load_checkpoint
from ._sharding import batch_sharding
from .solvers._base import AbstractSolver


class NonFiniteError(FloatingPointError):
    """A run produced NaN or Inf in a quantity it cannot recover from."""


@dataclass(frozen=True)
class Solution:
    """Result of `fepy.minimize`.

    Attributes:
        family: the final family (e.g. the weighted particles).
        state: the final solver state.
        trace: per-step statistics by name, each a NumPy array of length ``steps``.
        summary: final estimates by name (``log_z``, ``log_z_stderr``, ``free_energy``,
            ``energy``, ``ess``, ...) as Python numbers (NumPy arrays over the problems for
            `fepy.Independent`); NaN where the solver cannot estimate them (e.g. log Z
            without an annealing schedule from 0 to 1).
        steps: number of steps taken.
    """

    family: Any
    state: PyTree
    trace: dict[str, np.ndarray]
    summary: dict[str, float]
    steps: int
    key: PRNGKeyArray = field(repr=False)

    def __getattr__(self, name):  # sol.log_z, sol.free_energy, ... read the summary
        summary = self.__dict__.get("summary", {})
        if name in summary:
            return summary[name]
        raise AttributeError(name)


@eqx.filter_jit
def _init(solver, target, family, key):
    return solver.init(target, family, key)


@eqx.filter_jit
def _summary(solver, target, family, state):
    return solver.summary(target, family, state)


@eqx.filter_jit
def _run_chunk(solver, target, family, state, loop_key, start, length: int):
    # the scan carries the arrays only: a family may hold functions (e.g. a network's activation)
    dynamic, static = eqx.partition((family, state), eqx.is_array)

    def body(carry, k):
        family, state = eqx.combine(carry, static)
        family, state, stats = solver.step(target, family, state, jax.random.fold_in(loop_key, k))
        return eqx.filter((family, state), eqx.is_array), stats

    dynamic, stats = jax.lax.scan(body, dynamic, start + jnp.arange(length))
    family, state = eqx.combine(dynamic, static)
    return family, state, stats


def _first_nonfinite(stats: dict[str, np.ndarray], start: int) -> str | None:
    """Where a statistic first turned NaN/Inf (a batch of problems, `fepy.Independent`: which one)."""
    for i in range(len(next(iter(stats.values())))):
        for name, values in stats.items():
            bad = np.flatnonzero(~np.isfinite(np.ravel(values[i])))
            if bad.size:
                where = f" of problem {bad[0]}" if np.ndim(values[i]) else ""
                return f"step {start + i + 1}: {name}{where} is {np.ravel(values[i])[bad[0]]}"
    return None


def _chunk_length(chunk_size: int, callbacks) -> int:
    """Steps per jitted chunk: divides ``chunk_size`` and every callback's ``every``.

    All chunks but a final partial one then have one length, so the scan compiles once
    (twice at most), while every callback still runs exactly at its multiples.
    """
    return math.gcd(chunk_size, *(cb.every for cb in callbacks if cb.every))


def minimize(
    target: Any,
    family: Any,
    solver: AbstractSolver,
    *,
    steps: int,
    key: PRNGKeyArray,
    callbacks: list[Callback] = (),
    chunk_size: int = 100,
    resume: str | None = None,
    shard: bool = True,
) -> Solution:
    r"""Minimise the free energy :math:`F[q] = E_q[H] - T S[q] \ge -T\log Z` of ``target``
    over ``family`` with ``solver``, for ``steps`` steps.

    Args:
        target: the physics, e.g. a `fepy.Energy`.
        family: the variational family at the start, e.g. `fepy.Particles`.
        solver: the geometry, e.g. `fepy.WassersteinFisherRao`.
        steps: total number of steps (a resumed run continues up to this number).
        key: a JAX PRNG key; step ``k`` uses ``fold_in(key, k)``, so results do not
            depend on chunking, checkpointing or resuming.
        callbacks: `fepy.ProgressBar`, `fepy.Checkpoint`, ... run between chunks.
        chunk_size: steps per jitted ``lax.scan`` call, reduced to divide each
            callback's ``every``; callbacks run in between.
        resume: a checkpoint directory to continue from (written by `fepy.Checkpoint`
            with the same target, family, solver and key).
        shard: place the batch axis of the family on all local devices when there is
            more than one.

    Raises:
        NonFiniteError: a per-step statistic became NaN or Inf; the message names the
            step and the quantity. Particle solvers drop non-finite particles
            themselves, so this means the whole estimate broke down.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if shard and jax.local_device_count() > 1 and hasattr(family, "shard"):
        family = family.shard(batch_sharding())
    init_key, loop_key = jax.random.split(key)
    state = _init(solver, target, family, init_key)
    step, trace = 0, {}
    if resume is not None:
        step, family, state, saved_key, trace = load_checkpoint(resume, family, state, loop_key)
        if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(loop_key)):
            raise ValueError(f"checkpoint in {resume} was written with a different key (seed)")
        if step > steps:
            raise ValueError(f"checkpoint in {resume} is at step {step}, beyond steps={steps}")
        trace = {name: values[:step] for name, values in trace.items()}
    length = _chunk_length(chunk_size, callbacks)
    for cb in callbacks:
        cb.start(step, steps)
    try:
        while step < steps:
            end = min(steps, (step // length + 1) * length)
            family, state, stats = _run_chunk(
                solver, target, family, state, loop_key, jnp.asarray(step), end - step
            )
            stats = {name: np.asarray(values) for name, values in stats.items()}
            problem = _first_nonfinite(stats, step)
            if problem is not None:
                raise NonFiniteError(problem)
            trace = {
                name: np.concatenate([trace[name], v]) if name in trace else v
                for name, v in stats.items()
            }
            step = end
            for cb in callbacks:
                cb(step, steps, family, state, loop_key, trace)
    finally:
        for cb in callbacks:
            cb.close()
    summary = {name: np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v)
               for name, v in _summary(solver, target, family, state).items()}
    return Solution(family=family, state=state, trace=trace, summary=summary, steps=step, key=key)
