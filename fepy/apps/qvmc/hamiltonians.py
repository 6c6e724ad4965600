r"""Continuous-space Hamiltonians for variational Monte Carlo (atomic units: hartree, bohr).

Both are :class:`fepy.Hamiltonian` subclasses, :math:`H = -\frac12\sum_i\nabla_i^2 + V(x)`,
so :meth:`~fepy.Hamiltonian.local_energy` gives
:math:`E_{loc}(x) = -\frac12(\nabla^2\log|\psi| + |\nabla\log|\psi||^2) + V(x)`.

- :class:`MolecularHamiltonian`: electrons in the Coulomb field of fixed (Born-Oppenheimer)
  point nuclei, cusp-safe at coincidences.
- :class:`HarmonicTrap`: particles in an isotropic harmonic well, with a closed-form ground
  state for exact zero-variance checks.
"""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._validate import concrete, to_float_array
from ...targets.hamiltonian import Hamiltonian
from ._geometry import check_molecule, electron_distances, pair_sum, safe_norm

# Ground-state (Hund's rule) spin occupations (n_up, n_down) of the neutral atoms H..Ar,
# used by MolecularHamiltonian.atom when the occupations are not given.
_HUND = {
    1: (1, 0), 2: (1, 1), 3: (2, 1), 4: (2, 2), 5: (3, 2), 6: (4, 2), 7: (5, 2), 8: (5, 3),
    9: (5, 4), 10: (5, 5), 11: (6, 5), 12: (6, 6), 13: (7, 6), 14: (8, 6), 15: (9, 6),
    16: (9, 7), 17: (9, 8), 18: (9, 9),
}


def _count(value):
    """NumPy integers as Python ints (static fields); anything else is left for the checks."""
    return int(value) if isinstance(value, np.integer) else value


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")


class MolecularHamiltonian(Hamiltonian):
    r"""Electrons around fixed point nuclei (Born-Oppenheimer), in hartree and bohr.

    .. math::

        V(x) = -\sum_{i,A}\frac{Z_A}{|r_i - R_A|} + \sum_{i<j}\frac{1}{|r_i - r_j|}
               + \sum_{A<B}\frac{Z_A Z_B}{|R_A - R_B|}

    with electron positions :math:`r_i` (``x.reshape(n_electrons, 3)``, the ``n_up``
    spin-up electrons first), nuclear charges :math:`Z_A` (``charges``, in units of the
    elementary charge) and nuclear positions :math:`R_A` (``nuclei``, bohr). The last term
    is the constant nuclear repulsion, so the energy is the total Born-Oppenheimer energy
    (e.g. -1.174475 Ha for H2 at R = 1.4 bohr). ``dim = 3 * (n_up + n_down)``.

    **Cusps.** Distances use the floored norm of :mod:`fepy.apps.qvmc._geometry`,
    :math:`r = \max(|d|, r_{min})` with :math:`r_{min}` the dtype's machine epsilon in bohr
    (2.2e-16 in float64). With an electron exactly on a nucleus, or two electrons
    coinciding, :meth:`potential` returns the large finite value with :math:`1/r_{min}`
    (about :math:`-Z\cdot4.5\times10^{15}` Ha per electron-nucleus coincidence in float64)
    and a finite gradient; never NaN or inf. The local energy of an ansatz with the right
    cusps is finite as :math:`r\to0` only because the kinetic :math:`+Z/r` and potential
    :math:`-Z/r` singularities cancel *analytically*; numerically each is evaluated
    separately, so close to a nucleus :math:`E_{loc}` carries a round-off error of order
    :math:`\varepsilon/r` and, exactly at the coincidence (below the floor), the ansatz's own
    floored distances lose their kinetic term and :math:`E_{loc}` is the large finite
    potential. Walkers land there with probability of order :math:`r_{min}^3`; the clipping
    of local-energy outliers handles any that do.

    ``charges`` and ``nuclei`` are arrays (leaves: differentiable, e.g. for forces);
    ``n_up`` and ``n_down`` are static. Use :meth:`atom` and :meth:`diatomic` for the
    common cases.
    """

    charges: Float[Array, " n_atoms"] = eqx.field(converter=to_float_array)
    nuclei: Float[Array, "n_atoms 3"] = eqx.field(converter=to_float_array)
    n_up: int = eqx.field(static=True, converter=_count)
    n_down: int = eqx.field(static=True, converter=_count)

    @property
    def dim(self) -> int:
        """Number of coordinates, ``3 * (n_up + n_down)``."""
        return 3 * (self.n_up + self.n_down)

    @property
    def n_electrons(self) -> int:
        return self.n_up + self.n_down

    @property
    def n_atoms(self) -> int:
        return self.charges.shape[0]

    @classmethod
    def atom(cls, Z: float, n_up: int | None = None, n_down: int | None = None) -> "MolecularHamiltonian":
        """One nucleus of charge ``Z`` at the origin with ``n_up`` + ``n_down`` electrons.

        Without occupations, the neutral atom in its Hund's-rule ground-state spin
        configuration (integer ``Z`` from 1 to 18), e.g. Li: (2, 1), C: (4, 2).
        """
        if n_up is None and n_down is None:
            if Z not in _HUND or int(Z) != Z:
                raise ValueError(
                    f"default spin occupations are known for neutral atoms with integer Z in 1..18, "
                    f"got Z={Z!r}; pass n_up and n_down"
                )
            n_up, n_down = _HUND[int(Z)]
        elif n_up is None or n_down is None:
            raise ValueError("pass both n_up and n_down, or neither (neutral Hund's-rule atom)")
        return cls(charges=[Z], nuclei=[[0.0, 0.0, 0.0]], n_up=n_up, n_down=n_down)

    @classmethod
    def diatomic(cls, Z1: float, Z2: float, R: float, n_up: int, n_down: int) -> "MolecularHamiltonian":
        """Nuclei ``Z1`` at (0, 0, -R/2) and ``Z2`` at (0, 0, +R/2), bond length ``R`` > 0 in bohr."""
        R_value = concrete(R)
        if R_value is not None and not (np.ndim(R_value) == 0 and np.isfinite(R_value) and R_value > 0):
            raise ValueError(f"diatomic bond length R must be a finite scalar > 0 bohr, got {R!r}")
        half = 0.5 * to_float_array(R)
        zero = jnp.zeros_like(half)
        nuclei = jnp.stack([jnp.stack([zero, zero, -half]), jnp.stack([zero, zero, half])])
        return cls(charges=[Z1, Z2], nuclei=nuclei, n_up=n_up, n_down=n_down)

    def nuclear_repulsion(self) -> Float[Array, ""]:
        r"""Constant :math:`\sum_{A<B} Z_A Z_B / |R_A - R_B|` in hartree (0 for one atom)."""
        r_nn = safe_norm(self.nuclei[:, None, :] - self.nuclei[None, :, :])
        return pair_sum(self.charges[:, None] * self.charges[None, :] / r_nn)

    def potential(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        """Coulomb energy V(x) in hartree: electron-nucleus + electron-electron + nuclear repulsion."""
        if x.shape != (self.dim,):
            raise ValueError(f"configuration must have shape ({self.dim},), got {x.shape}")
        r_ae, r_ee, _, _ = electron_distances(x, self.nuclei)
        v_en = -jnp.sum(self.charges[None, :] / r_ae)
        v_ee = pair_sum(1.0 / r_ee)
        return v_en + v_ee + self.nuclear_repulsion()

    def __check_init__(self):
        _check_count("MolecularHamiltonian n_up", self.n_up)
        _check_count("MolecularHamiltonian n_down", self.n_down)
        if not self.n_up >= self.n_down >= 0:
            raise ValueError(
                f"MolecularHamiltonian needs n_up >= n_down >= 0 (spin-up electrons first), "
                f"got n_up={self.n_up}, n_down={self.n_down}"
            )
        check_molecule("MolecularHamiltonian", self.nuclei, self.charges, self.n_up, self.n_down)


class HarmonicTrap(Hamiltonian):
    r"""``n_particles`` unit-mass particles in an isotropic harmonic well, in ``space_dim`` dimensions.

    .. math:: V(x) = \frac{\omega^2}{2}|x|^2, \qquad \dim = n_{particles}\cdot space\_dim

    in atomic-like units (:math:`\hbar = m = 1`; energies in units of the chosen
    :math:`\omega` scale). The particles do not interact. For distinguishable particles or
    bosons the ground state is :math:`\psi_0(x) = e^{-\omega|x|^2/2}`
    (``log_psi = -omega/2 |x|^2``) with energy :math:`E_0 = \omega\,\dim/2`, and its local
    energy is :math:`\omega\dim/2` at every ``x`` (zero variance). Fermions would fill
    shells instead and are not described by this ground state.
    """

    omega: Float[Array, ""] = eqx.field(converter=to_float_array)
    n_particles: int = eqx.field(static=True, default=1, converter=_count)
    space_dim: int = eqx.field(static=True, default=3, converter=_count)

    @property
    def dim(self) -> int:
        """Number of coordinates, ``n_particles * space_dim``."""
        return self.n_particles * self.space_dim

    def ground_state_energy(self) -> Float[Array, ""]:
        r"""Exact :math:`E_0 = \omega\,\dim/2` (distinguishable particles or bosons)."""
        return 0.5 * self.omega * self.dim

    def log_psi_exact(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        r"""Exact ground state :math:`\log\psi_0 = -\frac{\omega}{2}|x|^2` (unnormalised)."""
        return -0.5 * self.omega * jnp.sum(x * x)

    def potential(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        r""":math:`V(x) = \frac{\omega^2}{2}|x|^2`."""
        if x.shape != (self.dim,):
            raise ValueError(f"configuration must have shape ({self.dim},), got {x.shape}")
        return 0.5 * self.omega**2 * jnp.sum(x * x)

    def __check_init__(self):
        _check_count("HarmonicTrap n_particles", self.n_particles)
        _check_count("HarmonicTrap space_dim", self.space_dim)
        if self.n_particles < 1 or self.space_dim < 1:
            raise ValueError(
                f"HarmonicTrap needs n_particles >= 1 and space_dim >= 1, "
                f"got {self.n_particles} and {self.space_dim}"
            )
        if self.omega.ndim != 0:
            raise ValueError(f"HarmonicTrap omega must be a scalar, got shape {self.omega.shape}")
        omega = concrete(self.omega)
        if omega is not None and not (math.isfinite(float(omega)) and float(omega) > 0):
            raise ValueError(f"HarmonicTrap omega must be finite and > 0, got {float(omega)}")
