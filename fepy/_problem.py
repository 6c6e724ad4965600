"""`fepy.Problem`: what a model file's ``build(config)`` returns."""

from typing import Any

import equinox as eqx

from .solvers._base import AbstractSolver


class Problem(eqx.Module):
    """A complete run: the physics (target), the start of the family and the geometry.

    ``fepy run`` calls ``fepy.minimize(problem.target, problem.family, problem.solver,
    steps=problem.steps, key=...)``; research code can do the same.
    """

    target: Any
    family: Any
    solver: AbstractSolver
    steps: int

    def __check_init__(self):
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"Problem steps must be a non-negative integer, got {self.steps!r}")
