r"""Equivariant flow matching for particles: data aligned to the base sample along its orbit.

For a density invariant under a group :math:`G` (here permutations of identical particles
and orthogonal maps :math:`O(D)`, translations being removed by the zero centre of mass), any
point of the orbit :math:`\{g x_1\}` of a data sample is as good a partner for a base sample
:math:`x_0` as :math:`x_1` itself. Klein, Krämer & Noé (NeurIPS 2023) pair :math:`x_0` with
:math:`g^* x_1`, :math:`g^* = \arg\min_g |x_0 - g x_1|^2`, which shortens and straightens the
flow-matching paths. `OrbitAlignment` does this for each (randomly paired) row, by local
search: a first labelling matches the particles' distances from the centre of mass (a
rotation-invariant assignment), then it alternates the optimal orthogonal map for the current
labelling (`fepy.apps.tps.kabsch` with reflections allowed) and the optimal relabelling for the
current orientation (an assignment problem, `fepy.solvers.flow_matching.assignment`), each step
lowering :math:`|x_0 - g x_1|^2`, and ends with the orthogonal map: a local minimum over
:math:`G` (the global one when :math:`x_1` is an exact image of :math:`x_0` with distinct radii). Klein et al. in addition solve an
optimal-transport problem over the batch with this orbit cost (:math:`b^2` alignments per
step); here the pairs are random, which keeps the cost at :math:`b` alignments.

The marginal of the aligned data is still :math:`p`: for :math:`h \in G`,
:math:`g^*(hx_0, x_1) = h\,g^*(x_0, x_1)`, and :math:`hx_0 \sim q_0` for a :math:`G`-invariant
base, so the law of :math:`g^* x_1` is :math:`G`-invariant with the orbit law of :math:`p`:
it is :math:`p` (a :math:`G`-invariant law is fixed by its law on orbits, :math:`G` compact).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from ...solvers.flow_matching import AbstractCoupling, assignment
from ..tps.molecular import kabsch
from .particles import _check_shape


class OrbitAlignment(AbstractCoupling):
    r"""Each data row replaced by its orbit point (permutation and orthogonal map) nearest to the
    base row it is paired with (module docstring); ``iterations`` relabel-rotate rounds.
    Both batches must be centre-of-mass free."""

    n_particles: int = eqx.field(static=True)
    space_dim: int = eqx.field(static=True)
    iterations: int = eqx.field(static=True, default=3)

    def __check_init__(self):
        _check_shape("OrbitAlignment", self.n_particles, self.space_dim)
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"OrbitAlignment iterations must be a positive integer, got {self.iterations!r}")

    def __call__(self, x0, x1, key):
        shape = (x0.shape[0], self.n_particles, self.space_dim)
        a, y = x0.reshape(shape), x1.reshape(shape)

        def rotate(y):
            rotation = jax.vmap(lambda yi, ai: kabsch(yi, ai, proper=False)[0])(y, a)
            return jnp.einsum("bne,bde->bnd", y, rotation)

        def relabel(y, cost):  # cost (b, i of x0, j of x1)
            return jnp.take_along_axis(y, assignment(cost)[..., None], axis=1)

        radius = lambda p: jnp.sqrt(jnp.sum(p**2, axis=-1))  # noqa: E731
        y = relabel(y, (radius(a)[:, :, None] - radius(y)[:, None, :]) ** 2)
        for _ in range(self.iterations):
            y = rotate(y)
            y = relabel(y, jnp.sum((a[:, :, None, :] - y[:, None, :, :]) ** 2, axis=-1))
        return x0, rotate(y).reshape(x1.shape)
