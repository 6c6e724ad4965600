r"""Quantum Hamiltonians in continuous space, H = -1/2 sum_i nabla_i^2 + V(x)."""

import abc
from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

from ..physics.laplacian import local_kinetic_energy


class Hamiltonian(eqx.Module):
    r""":math:`H = -\frac12\sum_i \nabla_i^2 + V(x)` in atomic units (hartree, bohr, unit mass).

    A configuration ``x`` is the flat vector of all particle coordinates, shape
    ``(dim,)`` (for electrons: ``3 * n_electrons``, spin-up electrons first).
    Subclasses declare ``dim`` and implement :meth:`potential`.

    The variational free energy at T = 0 is the energy
    :math:`E[\psi] = E_{|\psi|^2}[E_{loc}] \ge E_0`, with the local energy
    :math:`E_{loc}(x) = (H\psi)(x)/\psi(x)`.
    """

    dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def potential(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        """Potential energy V(x) in hartree."""

    def local_energy(
        self,
        log_psi: Callable[[Float[Array, " dim"]], Float[Array, ""]],
        x: Float[Array, " dim"],
        key: PRNGKeyArray | None = None,
        hutchinson_samples: int = 0,
    ) -> Float[Array, ""]:
        r""":math:`E_{loc}(x) = -\frac12(\nabla^2\log|\psi| + |\nabla\log|\psi||^2) + V(x)` for a real ``psi``."""
        kinetic = local_kinetic_energy(log_psi, x, key, hutchinson_samples)
        return kinetic + self.potential(x)

    def __check_init__(self):
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"Hamiltonian dim must be a positive integer, got {self.dim!r}")
