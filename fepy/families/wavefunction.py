r"""A trial wavefunction and the walkers that sample :math:`|\psi|^2`."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._validate import as_float_array, is_concrete


class Wavefunction(eqx.Module):
    r"""The family :math:`q = |\psi_\theta|^2 / \int |\psi_\theta|^2` of a real ansatz, with MCMC walkers.

    Attributes:
        ansatz: an Equinox module mapping one configuration ``x`` (shape ``(dim,)``, bohr)
            to :math:`\log|\psi_\theta(x)|`; its floating-point array leaves are the
            parameters :math:`\theta`.
        walkers: the Markov chains' current configurations, shape ``(n, dim)``, the batch
            axis that is sharded over devices.
    """

    ansatz: Callable[[Float[Array, " dim"]], Float[Array, ""]]
    walkers: Float[Array, "n dim"]

    def __check_init__(self):
        if self.walkers.ndim != 2:
            raise ValueError(f"Wavefunction walkers must have shape (n, dim), got {self.walkers.shape}")
        if is_concrete(self.walkers) and not bool(jnp.all(jnp.isfinite(self.walkers))):
            raise ValueError("Wavefunction walkers contain NaN or Inf")

    @classmethod
    def initialize(
        cls,
        ansatz,
        walkers: int,
        *,
        key: PRNGKeyArray,
        centers: Float[Array, " dim"] | None = None,
        scale: float = 1.0,
    ) -> "Wavefunction":
        """``walkers`` chains started at ``centers + scale * N(0, 1)`` (``centers``: e.g. electrons on their nuclei)."""
        if not isinstance(walkers, int) or walkers < 1:
            raise ValueError(f"number of walkers must be a positive integer, got {walkers!r}")
        if centers is None:
            raise ValueError("Wavefunction.initialize needs centers (shape (dim,)) for the walkers")
        centers = as_float_array(centers, "centers", ndim=1)
        noise = jax.random.normal(key, (walkers, centers.shape[0]), centers.dtype)
        return cls(ansatz, centers + scale * noise)

    @property
    def n(self) -> int:
        return self.walkers.shape[0]

    @property
    def dim(self) -> int:
        return self.walkers.shape[1]

    def shard(self, sharding) -> "Wavefunction":
        """The same wavefunction with the walker axis placed on ``sharding``."""
        from .._sharding import shard_batch

        return eqx.tree_at(lambda w: w.walkers, self, shard_batch(self.walkers, sharding))
