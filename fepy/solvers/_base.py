"""The solver interface that `fepy.minimize` drives."""

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array, PRNGKeyArray, PyTree


class AbstractSolver(eqx.Module):
    """A gradient flow (or parametric descent) of the free energy F[q] in one geometry.

    ``minimize`` owns the loop; a solver only says how to start and how to take one step.
    All three methods are pure and jittable.
    """

    @abc.abstractmethod
    def init(self, target: Any, family: Any, key: PRNGKeyArray) -> PyTree:
        """Solver state for ``family`` on ``target``; raises ValueError on incompatible inputs."""

    @abc.abstractmethod
    def step(
        self, target: Any, family: Any, state: PyTree, key: PRNGKeyArray
    ) -> tuple[Any, PyTree, dict[str, Array]]:
        """One step: the new family, the new state and scalar per-step statistics."""

    @abc.abstractmethod
    def summary(self, target: Any, family: Any, state: PyTree) -> dict[str, Array]:
        """Final scalar estimates (log_z, free_energy, ...) by name; NaN where undefined."""
