"""Classical energies: the target p(x) = exp(-beta U(x)) / Z of a particle family."""

import abc
import math

import equinox as eqx
from jaxtyping import Array, Float


class Energy(eqx.Module):
    r"""A potential energy :math:`U(x)` at inverse temperature :math:`\beta`.

    The target density is :math:`p(x) = e^{-\beta U(x)} / Z` on :math:`\mathbb{R}^d`
    with partition function :math:`Z = \int e^{-\beta U(x)} dx` and free energy
    :math:`F = -\beta^{-1} \log Z`. ``U`` and ``1/beta`` share one energy unit
    (kT units when ``beta = 1``); a negative log posterior is an ``Energy`` with
    ``beta = 1``.

    Subclasses declare the fields ``beta`` and ``dim`` and implement
    :meth:`energy` for a single configuration ``x`` of shape ``(dim,)``; batching is
    done by the solvers with ``jax.vmap``.
    """

    beta: eqx.AbstractVar[float]
    dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def energy(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        """Potential energy U(x) of one configuration."""

    def log_density(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        r"""Unnormalised log density :math:`-\beta U(x)`."""
        return -self.beta * self.energy(x)

    @property
    def temperature(self) -> float:
        """Temperature 1/beta in the energy unit."""
        return 1.0 / self.beta

    def __check_init__(self):
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"Energy dim must be a positive integer, got {self.dim!r}")
        try:
            beta = float(self.beta)
        except (TypeError, ValueError):  # traced inside jit: checked at the call site
            return
        if not math.isfinite(beta) or beta <= 0:
            raise ValueError(
                f"Energy beta (inverse temperature) must be finite and > 0, got {beta}"
            )

