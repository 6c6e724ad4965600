r"""Independent: one solver run on a batch of independent problems at once (survey scale).

Many problems that differ only in their data (the lenses of a survey, the walls of a DFT
scan, the molecules of a screen) have free energies that add:
:math:`F[q_1, \dots, q_n] = \sum_i F_i[q_i]`, so minimising the sum is minimising each term.
`Independent` wraps any solver and runs it on all problems at once under `equinox.filter_vmap`:
the batched leaves of the target and of the family carry a leading problem axis, each problem
gets its own key, and every per-step statistic and summary figure becomes an array over the
problems. `fepy.minimize` drives it like any solver (progress bar, checkpoints, NaN checks
naming the problem), and places the family's leading axis, hence the problems, on all local
devices when there are several; place a batched target leaf the same way with
`fepy.batch_sharding` (``jax.device_put(images, fepy.batch_sharding())``) so that each device
holds only its problems' data.
"""

from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._base import AbstractSolver


def batch_axes(tree: PyTree, where) -> PyTree:
    """The ``in_axes`` of ``tree`` for `Independent`: 0 at the leaves selected by ``where``
    (a function of ``tree`` returning a node or a tuple of nodes, as in `equinox.tree_at`),
    None (shared by every problem) elsewhere.

    ``batch_axes(posterior, lambda p: p.data)`` batches a lens posterior over its images.
    """
    axes = jax.tree.map(lambda _: None, tree)
    selected = where(tree)
    count = len(selected) if isinstance(selected, tuple) else 1
    return eqx.tree_at(where, axes, replace=(0,) * count if isinstance(selected, tuple) else 0,
                       is_leaf=lambda x: x is None)


def _problems(tree: PyTree, axes: PyTree) -> set[int]:
    """The lengths of the batched axes of ``tree``'s array leaves under ``axes``."""
    sizes = set()

    def visit(axis, subtree):
        if axis is not None:
            sizes.update(a.shape[axis] for a in jax.tree.leaves(subtree) if eqx.is_array(a))

    jax.tree.map(visit, axes, tree, is_leaf=lambda x: x is None)
    return sizes


class Independent(AbstractSolver):
    r"""Run ``solver`` on a batch of independent problems: :math:`\min \sum_i F_i[q_i]`.

    Args:
        solver: the solver of one problem (e.g. `fepy.Descent`, `fepy.ReverseKL`).
        target_axes: the ``in_axes`` of the target, a pytree prefix as in `jax.vmap`: None
            (default) shares one target between all problems, 0 batches every array leaf,
            `batch_axes` batches chosen leaves (e.g. only the data).
        family_axes: the ``in_axes`` of the family (default 0: every array leaf batched).

    The state is the inner solver's state with a leading problem axis; the step's key is split
    into one key per problem. Statistics and summary figures have shape ``(problems,)``.
    """

    solver: AbstractSolver
    target_axes: Any = eqx.field(default=None, static=True)
    family_axes: Any = eqx.field(default=0, static=True)

    def _count(self, target, family) -> int:
        sizes = _problems(family, self._full(self.family_axes, family)) | _problems(
            target, self._full(self.target_axes, target))
        if len(sizes) != 1:
            raise ValueError(f"Independent: the batched leaves of target and family must share one "
                             f"leading problem axis, got lengths {sorted(sizes) or 'none'}")
        return sizes.pop()

    @staticmethod
    def _full(axes, tree):
        """``axes`` broadcast to the structure of ``tree`` (an int or None prefix allowed)."""
        if axes is None or isinstance(axes, int):
            return jax.tree.map(lambda _: axes, tree)
        return axes

    def _vmap(self, method: str, *more_axes):
        # a closure, not the bound method: eqx.filter_vmap would map the solver's own leaves too
        # an integer axis applies to array leaves only (a float field such as beta stays shared)
        solver = self.solver
        axes = jax.tree.map(lambda a: eqx.if_array(a) if isinstance(a, int) else a,
                            (self.target_axes, self.family_axes))
        return eqx.filter_vmap(lambda *args: getattr(solver, method)(*args), in_axes=(*axes, *more_axes))

    def init(self, target, family, key: PRNGKeyArray) -> PyTree:
        keys = jax.random.split(key, self._count(target, family))
        return self._vmap("init", 0)(target, family, keys)

    def step(self, target, family, state: PyTree, key: PRNGKeyArray) -> tuple[Any, PyTree, dict[str, Array]]:
        keys = jax.random.split(key, self._count(target, family))
        return self._vmap("step", 0, 0)(target, family, state, keys)

    def summary(self, target, family, state: PyTree) -> dict[str, Array]:
        return self._vmap("summary", 0)(target, family, state)
