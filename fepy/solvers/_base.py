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


def check_target_and_family(solver, target, family, target_type, family_type, batch: str) -> None:
    """TypeError unless ``target``/``family`` have the types ``solver`` needs; ValueError on a dim mismatch."""
    name = type(solver).__name__
    if not isinstance(target, target_type):
        raise TypeError(f"{name} needs a target of type {target_type.__name__}, got {type(target).__name__}")
    if not isinstance(family, family_type):
        raise TypeError(f"{name} needs a family of type {family_type.__name__}, got {type(family).__name__}")
    if target.dim != family.dim:
        raise ValueError(f"target dim {target.dim} does not match {batch} dim {family.dim}")
