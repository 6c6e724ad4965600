"""`fepy.continuation`: a hard problem solved along a path of easier ones (e.g. a dense fluid
at a wall reached from a dilute one)."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ._minimize import Solution, _first_nonfinite, _init, _run_chunk, _summary
from .solvers._base import AbstractSolver


class ContinuationError(RuntimeError):
    """A stage of `fepy.continuation` did not converge even after the allowed step halvings."""


def _stage(path, t, family, solver, key, tolerance, steps, chunk_size, statistic):
    """Solve ``path(t)`` from ``family`` in chunks until ``statistic`` <= ``tolerance``:
    (converged, family, state, target, stats of the steps taken)."""
    target = path(t)
    init_key, loop_key = jax.random.split(key)
    state = _init(solver, target, family, init_key)
    stats, done = [], 0
    while done < steps:
        length = min(chunk_size, steps - done)
        new_family, new_state, chunk = _run_chunk(solver, target, family, state, loop_key, jnp.asarray(done), length)
        chunk = {name: np.asarray(values) for name, values in chunk.items()}
        stats.append(chunk)
        if _first_nonfinite(chunk, done) is not None:
            return False, family, state, target, stats
        family, state, done = new_family, new_state, done + length
        if chunk[statistic][-1] <= tolerance:
            return True, family, state, target, stats
    return False, family, state, target, stats


def continuation(
    path: Callable[[float], Any],
    family: Any,
    solver: AbstractSolver,
    *,
    key: PRNGKeyArray,
    tolerance: float,
    stages: int = 8,
    steps: int = 5000,
    chunk_size: int = 100,
    halvings: int = 6,
    statistic: str = "residual",
) -> Solution:
    r"""Solve the target ``path(1)`` by continuation: ``path(t)`` for increasing t in (0, 1], each
    solve started from the result of the one before (``family`` for the first).

    ``path`` maps t to a target, e.g. a `fepy.GrandPotential` at a bulk density rising with
    t: where the solver cannot reach ``path(1)`` from a simple start (hard rods at a dense
    wall), each step of t moves the solution a little and the solver only has to follow it.
    t advances by 1/``stages``. A stage converges when the solver's per-step ``statistic``
    (the Euler-Lagrange residual of `fepy.Picard` by default) is at most ``tolerance``,
    checked after every ``chunk_size`` steps, within ``steps`` steps; one that does not
    (or meets a non-finite statistic) is discarded and retried from the last converged
    solution with half the increment of t, and the increment doubles again (up to
    1/``stages``) after each converged stage.

    Returns the `fepy.Solution` of ``path(1)`` whose trace holds every step taken, discarded
    attempts included, plus ``path`` (the t of each step); ``steps`` is their number.

    Raises:
        ContinuationError: a stage did not converge after ``halvings`` halvings in a row.
    """
    for name, value in (("stages", stages), ("steps", steps), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"continuation {name} must be a positive integer, got {value!r}")
    if isinstance(halvings, bool) or not isinstance(halvings, int) or halvings < 0:
        raise ValueError(f"continuation halvings must be a non-negative integer, got {halvings!r}")
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"continuation tolerance must be finite and > 0, got {tolerance!r}")
    t, increment, failures, attempt, trace = 0.0, 1.0 / stages, 0, 0, []
    while t < 1.0:
        t_next = min(1.0, t + increment)
        converged, new_family, state, target, stats = _stage(
            path, t_next, family, solver, jax.random.fold_in(key, attempt), tolerance, steps, chunk_size, statistic
        )
        attempt += 1
        trace += [dict(chunk, path=np.full(len(chunk[statistic]), t_next)) for chunk in stats]
        if converged:
            t, family, failures = t_next, new_family, 0
            increment = min(2.0 * increment, 1.0 / stages)
        else:
            failures += 1
            if failures > halvings:
                raise ContinuationError(
                    f"continuation: the stage at t = {t_next:.6g} (from t = {t:.6g}) did not reach "
                    f"{statistic} <= {tolerance:g} in {steps} steps after {halvings} halvings"
                )
            increment *= 0.5
    summary = {name: np.asarray(v).item() for name, v in _summary(solver, target, family, state).items()}
    merged = {name: np.concatenate([chunk[name] for chunk in trace]) for name in trace[0]}
    return Solution(family=family, state=state, trace=merged, summary=summary, steps=len(merged[statistic]), key=key)
