r"""Descent: maximum a posteriori by an optax optimizer, every particle an independent start.

At temperature :math:`T \to 0` the free energy :math:`F[q] = E_q[U] - T S[q]` of an
`Energy` is minimised by a point mass at the global minimum of :math:`U`, and the
Wasserstein gradient flow of :math:`F` loses its noise: each particle follows
:math:`\dot x = -\nabla U(x)`. `Descent` integrates that flow with an optax optimizer (gradient
descent with momentum, Adam, ...) instead of an Euler step, one independent descent per
particle, so a `Particles` family is a multi-start: the lowest end point is the MAP
estimate of a posterior whose negative log density is :math:`U` (``beta = 1``).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from ..families.particles import Particles
from ..targets.energy import Energy
from ._base import AbstractSolver, check_target_and_family


class DescentState(eqx.Module):
    """State of `Descent` between steps."""

    step: Int[Array, ""]
    opt_state: optax.OptState
    energy: Float[Array, " n"]  # U at the current positions (+inf where a start broke down)
    gradient: Float[Array, "n dim"]  # grad U there (0 where a start broke down)


def _energy_and_gradient(target: Energy, positions):
    """U and grad U of every particle; a particle with a non-finite value or gradient gets
    U = +inf and a zero gradient, so it stays where it is and cannot win."""
    u, g = jax.vmap(jax.value_and_grad(target.energy))(positions)
    ok = jnp.isfinite(u) & jnp.all(jnp.isfinite(g), axis=-1)
    return jnp.where(ok, u, jnp.inf), jnp.where(ok[:, None], g, 0.0)


class Descent(AbstractSolver):
    r"""Independent optax descents of :math:`U` from every particle (the :math:`T \to 0` limit).

    Each step applies ``optimizer`` to the positions as one array, with the gradients
    cached from the last step, and evaluates :math:`U` and :math:`\nabla U` at the new
    positions (one batched pass). Use an element-wise optimizer
    (``optax.adam``, ``optax.sgd``, with or without a learning-rate schedule) so that the
    starts stay independent; a transform with a global norm (``clip_by_global_norm``)
    would couple them. Weights are left unchanged. A start whose energy or gradient turns
    NaN/Inf is frozen with :math:`U = +\infty` and counted in ``failed``.

    Statistics per step: ``energy_min`` (the best start, in the energy unit of ``U``),
    ``energy_median``, ``grad_norm`` (:math:`|\nabla U|` of the best start) and ``failed``.
    The summary also has ``best`` (the index of the best particle) and ``steps``.
    """

    optimizer: optax.GradientTransformation

    def init(self, target: Energy, family: Particles, key) -> DescentState:
        check_target_and_family(self, target, family, Energy, Particles, "particles")
        energy, gradient = _energy_and_gradient(target, family.positions)
        opt_state = self.optimizer.init(family.positions)
        return DescentState(jnp.zeros((), jnp.int32), opt_state, energy, gradient)

    def step(self, target: Energy, family: Particles, state: DescentState, key):
        del key  # deterministic
        updates, opt_state = self.optimizer.update(state.gradient, state.opt_state, family.positions)
        positions = optax.apply_updates(family.positions, updates)
        energy, gradient = _energy_and_gradient(target, positions)
        new_family = eqx.tree_at(lambda f: f.positions, family, positions)
        new_state = DescentState(state.step + 1, opt_state, energy, gradient)
        return new_family, new_state, self._stats(energy, gradient)

    @staticmethod
    def _stats(energy, gradient) -> dict[str, Array]:
        best = jnp.argmin(energy)
        finite = jnp.isfinite(energy)
        return dict(
            energy_min=energy[best],
            energy_median=jnp.nanmedian(jnp.where(finite, energy, jnp.nan)),
            grad_norm=jnp.linalg.norm(gradient[best]),
            failed=jnp.sum(~finite),
        )

    def summary(self, target: Energy, family: Particles, state: DescentState):
        return dict(**self._stats(state.energy, state.gradient), best=jnp.argmin(state.energy), steps=state.step)
