"""Weighted particles: the empirical family q = sum_i w_i delta(x - x_i)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import as_float_array, is_concrete
from .density import AbstractDensity


class Particles(eqx.Module):
    r"""A weighted empirical measure :math:`q = \sum_i w_i \delta_{x_i}`, :math:`w_i \propto e^{\ell_i}`.

    Attributes:
        positions: particle positions :math:`x_i`, shape ``(n, dim)``, in the target's length unit.
        log_weights: unnormalised log-weights :math:`\ell_i`, shape ``(n,)``.
        base: the normalised reference density :math:`q_0` the particles were drawn
            from (a numpyro distribution with event shape ``(dim,)``; an fepy
            `AbstractDensity` such as a trained `Flow` enters through its
            ``as_distribution()`` view, which `from_base` applies). It is the
            start of the annealing path :math:`\gamma_\lambda \propto q_0^{1-\lambda}
            p^\lambda` along which the solvers estimate :math:`\log Z`; the moves use
            :math:`\nabla_x \log q_0`, so ``log_prob`` must be differentiable in x.

    Solvers move the positions (Wasserstein geometry) and change the weights
    (Fisher-Rao geometry); the particle axis is the batch axis that is sharded over
    devices.
    """

    positions: Float[Array, "n dim"]
    log_weights: Float[Array, " n"]
    base: dist.Distribution

    def __check_init__(self):
        if not isinstance(self.base, dist.Distribution):
            raise TypeError(
                f"Particles base must be a numpyro distribution, got {type(self.base).__name__}; "
                "pass an fepy AbstractDensity (e.g. a Flow) as density.as_distribution(), or use Particles.from_base"
            )
        if self.positions.ndim != 2:
            raise ValueError(
                f"Particles positions must have shape (n, dim), got {self.positions.shape}"
            )
        if self.log_weights.shape != self.positions.shape[:1]:
            raise ValueError(
                f"Particles log_weights must have shape {self.positions.shape[:1]}, "
                f"got {self.log_weights.shape}"
            )
        if self.base.event_shape != self.positions.shape[1:]:
            raise ValueError(
                f"Particles base has event shape {self.base.event_shape}, "
                f"positions have dim {self.positions.shape[1:]}"
            )
        if is_concrete(self.positions) and not bool(jnp.all(jnp.isfinite(self.positions))):
            raise ValueError("Particles positions contain NaN or Inf")

    @classmethod
    def from_base(cls, base: "dist.Distribution | AbstractDensity", n: int, *, key: PRNGKeyArray) -> "Particles":
        """``n`` equally weighted particles drawn from ``base``: a numpyro distribution with
        event shape ``(dim,)``, or an fepy `AbstractDensity` (a `Gaussian`, a trained `Flow`),
        used through its `DensityDistribution` view."""
        if isinstance(base, AbstractDensity):
            base = base.as_distribution()
        elif not isinstance(base, dist.Distribution):
            raise TypeError(
                f"Particles base must be a numpyro distribution or an fepy AbstractDensity, got {type(base).__name__}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"number of particles must be a positive integer, got {n!r}")
        if len(base.event_shape) != 1 or base.batch_shape != ():
            raise ValueError(
                "Particles base must be a numpyro distribution with event shape (dim,) and "
                f"no batch shape, got event {base.event_shape}, batch {base.batch_shape}"
            )
        positions = as_float_array(base.sample(key, (n,)), "positions", ndim=2)
        return cls(positions, jnp.zeros(n, positions.dtype), base)

    @property
    def n(self) -> int:
        return self.positions.shape[0]

    @property
    def dim(self) -> int:
        return self.positions.shape[1]

    @property
    def weights(self) -> Float[Array, " n"]:
        """Normalised weights w_i."""
        return jax.nn.softmax(self.log_weights)

    def expectation(self, fn) -> Array:
        r""":math:`E_q[f] = \sum_i w_i f(x_i)` for a function ``fn`` of one position."""
        values = jax.vmap(fn)(self.positions)
        return jnp.tensordot(self.weights, values, axes=1)

    def shard(self, sharding) -> "Particles":
        """The same particles with the particle axis placed on ``sharding`` (see `fepy.batch_sharding`)."""
        from .._sharding import shard_batch

        placed = shard_batch((self.positions, self.log_weights), sharding)
        return eqx.tree_at(lambda p: (p.positions, p.log_weights), self, placed)
