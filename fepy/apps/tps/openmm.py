r"""A bridge from OpenMM to JAX: the potential energy of an OpenMM ``System`` as a JAX function.

Units are OpenMM's: positions in nm, energies in kJ/mol, charges in e, angles in rad,
masses in dalton. For a ``System`` made of a ``HarmonicBondForce``, a
``HarmonicAngleForce``, a ``PeriodicTorsionForce`` and a ``NonbondedForce`` with
``NoCutoff`` (a molecule in vacuum; a ``CMMotionRemover`` is ignored, it adds no energy)
the potential is

.. math::

    U(x) = \sum_{\rm bonds} \tfrac12 k_b (r - r_0)^2
         + \sum_{\rm angles} \tfrac12 k_\theta (\theta - \theta_0)^2
         + \sum_{\rm torsions} k_\phi \big(1 + \cos(n\phi - \gamma)\big)
         + \sum_{i<j}' \Big[\frac{q_i q_j}{4\pi\epsilon_0 r_{ij}}
           + 4\epsilon_{ij}\Big(\frac{\sigma_{ij}^{12}}{r_{ij}^{12}}
           - \frac{\sigma_{ij}^6}{r_{ij}^6}\Big)\Big]

with Lorentz-Berthelot rules :math:`\sigma_{ij} = (\sigma_i + \sigma_j)/2`,
:math:`\epsilon_{ij} = \sqrt{\epsilon_i\epsilon_j}`, :math:`1/4\pi\epsilon_0 =`
138.93545764438198 kJ nm/(mol e²) (OpenMM 8's constant), and the primed sum over the pairs
that are not exceptions; an exception pair (1-2 and 1-3 exclusions, scaled 1-4 pairs)
interacts instead with its own ``chargeProd``, ``sigma`` and ``epsilon``.

What comes from ``jax_md.mm_forcefields`` (jax-md 0.2.29), checked against OpenMM:

* the reader, ``io.openmm.convert_openmm_system``: it extracts every parameter above
  correctly (it works in kcal/mol and Å; :func:`from_openmm` converts back). It keeps
  only the last ``HarmonicAngleForce`` and the last ``PeriodicTorsionForce`` of a system
  that has several (bonds are concatenated), and ignores ``NonbondedForce`` parameter
  offsets, so :func:`from_openmm` refuses such systems rather than drop terms silently.
* the kernels ``amber.energy.harmonic_bond`` and ``lennard_jones`` and the mixing rules
  ``base.combine_lorentz`` and ``combine_berthelot``.

What is written here instead, and why:

* the bond angle: ``base.compute_angle`` adds 1e-7 to every Cartesian component of both
  bond vectors before taking their norms, which biases θ (measured on alanine
  dipeptide: HarmonicAngleForce energy off by 3.3e-7 relative); here
  :math:`\theta = \operatorname{atan2}(|a \times b|, a \cdot b)`, which is exact and has
  finite gradients at 0 and π.
* the torsion: ``amber.energy.periodic_torsion`` goes through ``base.compute_dihedral``,
  whose absolute regularisers (1e-10, tuned for Å) bias the PeriodicTorsionForce energy
  in nm by 2.7e-9 relative on alanine dipeptide; here φ is
  :func:`fepy.apps.tps.molecular.dihedral`, exact.
* the assembly, ``amber.energy.energy``: it returns a closure over the parameters that
  needs a neighbour list allocated outside ``jit`` (with an infinite cutoff for
  ``NoCutoff``), its default ``CoulombHandler()`` has no ``prepare_smap`` and raises
  ``AttributeError`` (``NoCutoff`` works only by passing ``CutoffCoulomb()``), and its
  Coulomb constant, 332.06371 kcal Å/(mol e²), differs from OpenMM's by 1.2e-8. Vacuum
  needs none of that machinery: :class:`MolecularPotential` keeps the parameters and the
  list of interacting pairs as arrays (a pytree, so it can be passed through ``jit`` and
  differentiated with respect to its parameters too) and sums a few vectorised terms.

OpenMM is needed only to build a potential (:func:`from_openmm`,
:func:`alanine_dipeptide`); evaluating one is pure JAX.
"""

from importlib import resources
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax_md.mm_forcefields.amber.energy import harmonic_bond, lennard_jones
from jax_md.mm_forcefields.base import combine_berthelot, combine_lorentz
from jaxtyping import Array, Float, Int

from .molecular import backbone_dihedral_atoms, dihedral

COULOMB = 138.93545764438198
"""1 / (4 pi eps0) in kJ nm / (mol e^2), the value OpenMM 8 uses."""

_KCAL = 4.184  # kJ per kcal
_ANGSTROM = 0.1  # nm per Å


def _over_r(r, qq):
    return qq / r


def _pair_energy(x, pairs, fn, *params):
    r = jnp.linalg.norm(x[pairs[:, 1]] - x[pairs[:, 0]], axis=-1)
    return jnp.sum(fn(r, *params))


class MolecularPotential(eqx.Module):
    r"""The potential energy U(x) of one molecule in vacuum (module docstring), kJ/mol.

    ``x`` has shape ``(atoms, 3)`` in nm. Index arrays name atoms by their position in
    ``x``; ``pairs`` lists the pairs i < j that interact by the combining rules (all but
    the exceptions), ``exceptions`` the pairs with their own parameters (exclusions, whose
    parameters are all zero, can be left out). Build one with :func:`from_openmm`.
    """

    bonds: Int[Array, "bonds 2"]
    bond_length: Float[Array, " bonds"]  # r_0, nm
    bond_k: Float[Array, " bonds"]  # kJ/(mol nm^2)
    angles: Int[Array, "angles 3"]  # the vertex in the middle
    angle_theta0: Float[Array, " angles"]  # rad
    angle_k: Float[Array, " angles"]  # kJ/(mol rad^2)
    torsions: Int[Array, "torsions 4"]
    torsion_periodicity: Int[Array, " torsions"]  # n
    torsion_phase: Float[Array, " torsions"]  # gamma, rad
    torsion_k: Float[Array, " torsions"]  # kJ/mol
    charges: Float[Array, " atoms"]  # e
    sigma: Float[Array, " atoms"]  # nm
    epsilon: Float[Array, " atoms"]  # kJ/mol
    pairs: Int[Array, "pairs 2"]
    exceptions: Int[Array, "exceptions 2"]
    exception_charge_prod: Float[Array, " exceptions"]  # e^2
    exception_sigma: Float[Array, " exceptions"]  # nm
    exception_epsilon: Float[Array, " exceptions"]  # kJ/mol

    @property
    def n_atoms(self) -> int:
        return self.charges.shape[0]

    def energies(self, x: Float[Array, "atoms 3"]) -> dict[str, Float[Array, ""]]:
        """The terms of U(x) in kJ/mol: ``bond``, ``angle``, ``torsion``, ``coulomb``,
        ``lennard_jones`` (the last two include the exceptions)."""
        a = x[self.angles[:, 0]] - x[self.angles[:, 1]]
        b = x[self.angles[:, 2]] - x[self.angles[:, 1]]
        theta = jnp.arctan2(jnp.linalg.norm(jnp.cross(a, b), axis=-1), jnp.sum(a * b, axis=-1))
        phi = dihedral(x, self.torsions)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        sigma = combine_lorentz(self.sigma[i], self.sigma[j])
        epsilon = combine_berthelot(self.epsilon[i], self.epsilon[j])
        return {
            "bond": _pair_energy(x, self.bonds, harmonic_bond, self.bond_k, self.bond_length),
            "angle": jnp.sum(0.5 * self.angle_k * (theta - self.angle_theta0) ** 2),
            "torsion": jnp.sum(
                self.torsion_k
                * (1 + jnp.cos(self.torsion_periodicity * phi - self.torsion_phase))
            ),
            "coulomb": COULOMB
            * (
                _pair_energy(x, self.pairs, _over_r, self.charges[i] * self.charges[j])
                + _pair_energy(x, self.exceptions, _over_r, self.exception_charge_prod)
            ),
            "lennard_jones": _pair_energy(x, self.pairs, lennard_jones, sigma, epsilon)
            + _pair_energy(
                x, self.exceptions, lennard_jones, self.exception_sigma, self.exception_epsilon
            ),
        }

    def energy(self, x: Float[Array, "atoms 3"]) -> Float[Array, ""]:
        """U(x) in kJ/mol for positions x in nm; ``-jax.grad(energy)`` is the force, kJ/(mol nm)."""
        return sum(self.energies(x).values())

    def __check_init__(self):
        n = self.charges.shape[0]
        shapes = {
            "bonds": (self.bonds, 2, (self.bond_length, self.bond_k)),
            "angles": (self.angles, 3, (self.angle_theta0, self.angle_k)),
            "torsions": (
                self.torsions,
                4,
                (self.torsion_periodicity, self.torsion_phase, self.torsion_k),
            ),
            "pairs": (self.pairs, 2, ()),
            "exceptions": (
                self.exceptions,
                2,
                (self.exception_charge_prod, self.exception_sigma, self.exception_epsilon),
            ),
        }
        if self.sigma.shape != (n,) or self.epsilon.shape != (n,):
            raise ValueError(
                f"charges, sigma and epsilon must all have shape (atoms,), got "
                f"{self.charges.shape}, {self.sigma.shape}, {self.epsilon.shape}"
            )
        for name, (index, width, params) in shapes.items():
            if index.ndim != 2 or index.shape[1] != width:
                raise ValueError(f"{name} must have shape (m, {width}), got {index.shape}")
            if any(p.shape != index.shape[:1] for p in params):
                raise ValueError(
                    f"the parameters of {name} must have shape ({index.shape[0]},), got "
                    f"{[p.shape for p in params]}"
                )
            if isinstance(index, jax.core.Tracer) or index.size == 0:
                continue
            lo, hi = int(np.min(index)), int(np.max(index))
            if lo < 0 or hi >= n:
                raise ValueError(f"{name} index atoms outside 0..{n - 1}: range {lo}..{hi}")


_SUPPORTED = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce")


def _check_system(system: Any) -> None:
    """Refuse what the potential does not describe, naming it."""
    import openmm

    counts = dict.fromkeys(_SUPPORTED, 0)
    for force in system.getForces():
        name = type(force).__name__
        if isinstance(force, openmm.CMMotionRemover):
            continue
        if name not in counts:
            raise ValueError(
                f"unsupported force {name} (force group {force.getForceGroup()}): "
                f"from_openmm handles {', '.join(_SUPPORTED)} and CMMotionRemover"
            )
        counts[name] += 1
        if force.usesPeriodicBoundaryConditions():
            raise ValueError(f"{name} uses periodic boundary conditions; only vacuum is supported")
        if isinstance(force, openmm.NonbondedForce):
            if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
                raise ValueError(
                    f"NonbondedForce method {force.getNonbondedMethod()} is not NoCutoff "
                    f"({openmm.NonbondedForce.NoCutoff}); only vacuum without cutoff is supported "
                    "(createSystem(..., nonbondedMethod=openmm.app.NoCutoff))"
                )
            if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
                raise ValueError("NonbondedForce parameter offsets are not supported")
    for name in ("HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce"):
        if counts[name] > 1:
            raise ValueError(
                f"the system has {counts[name]} {name}s; merge them into one "
                "(jax_md's reader keeps only the last)"
            )
    if any(system.isVirtualSite(i) for i in range(system.getNumParticles())):
        raise ValueError("virtual sites are not supported")


def from_openmm(system: Any) -> MolecularPotential:
    """The potential energy of an OpenMM ``System`` (module docstring) as a JAX module.

    Raises ``ValueError`` for a force other than the four supported ones (or a
    ``CMMotionRemover``), a ``NonbondedForce`` whose method is not ``NoCutoff``,
    periodic boundary conditions, parameter offsets, virtual sites, or more than one
    angle, torsion or nonbonded force.
    """
    import openmm.unit as unit
    from jax_md.mm_forcefields.io.openmm import convert_openmm_system

    _check_system(system)
    n = system.getNumParticles()
    converted = convert_openmm_system(
        system, None, unit.Quantity(np.zeros((n, 3)), unit.nanometer), None
    )
    top, bonded, nb = converted.topology, converted.params.bonded, converted.params.nonbonded

    def f64(a, scale=1.0):
        return jnp.asarray(np.asarray(a, np.float64) * scale)

    def idx(a, width):
        return jnp.asarray(np.asarray(a, np.int32).reshape(-1, width))

    charges = f64(nb.charges) if nb.charges.shape[0] else jnp.zeros(n)
    sigma = f64(nb.sigma, _ANGSTROM) if nb.sigma.shape[0] else jnp.zeros(n)
    epsilon = f64(nb.epsilon, _KCAL) if nb.epsilon.shape[0] else jnp.zeros(n)
    exceptions = np.asarray(top.exc_pairs, np.int32).reshape(-1, 2)
    exc_q = np.asarray(nb.exc_charge_prod, np.float64)
    exc_eps = np.asarray(nb.exc_epsilon, np.float64) * _KCAL
    excluded = np.zeros((n, n), bool)
    excluded[exceptions[:, 0], exceptions[:, 1]] = True
    excluded[exceptions[:, 1], exceptions[:, 0]] = True
    i, j = np.triu_indices(n, k=1)
    keep = ~excluded[i, j]
    live = (exc_q != 0) | (exc_eps != 0)  # exclusions contribute nothing
    return MolecularPotential(
        bonds=idx(top.bonds, 2),
        bond_length=f64(bonded.bond_r0, _ANGSTROM),
        bond_k=f64(bonded.bond_k, _KCAL / _ANGSTROM**2),
        angles=idx(top.angles, 3),
        angle_theta0=f64(bonded.angle_theta0),
        angle_k=f64(bonded.angle_k, _KCAL),
        torsions=idx(top.torsions, 4),
        torsion_periodicity=jnp.asarray(np.asarray(bonded.torsion_n, np.int32)),
        torsion_phase=f64(bonded.torsion_gamma),
        torsion_k=f64(bonded.torsion_k, _KCAL),
        charges=charges,
        sigma=sigma,
        epsilon=epsilon,
        pairs=jnp.asarray(np.stack([i[keep], j[keep]], axis=1).astype(np.int32)),
        exceptions=jnp.asarray(exceptions[live]),
        exception_charge_prod=jnp.asarray(exc_q[live]),
        exception_sigma=f64(np.asarray(nb.exc_sigma)[live], _ANGSTROM),
        exception_epsilon=jnp.asarray(exc_eps[live]),
    )


def masses(system: Any) -> Float[np.ndarray, " atoms"]:
    """The particle masses of an OpenMM ``System`` in dalton (g/mol)."""
    import openmm.unit as unit

    n = system.getNumParticles()
    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])


class AlanineDipeptide(NamedTuple):
    """Alanine dipeptide (ACE-ALA-NME, 22 atoms) in vacuum, from :func:`alanine_dipeptide`.

    ``c7eq`` and ``c7ax`` are the two metastable states (nm); ``phi`` (C(ACE)-N-CA-C) and
    ``psi`` (N-CA-C-N(NME)) are the atom indices of the backbone dihedrals, found by atom
    name; ``topology`` and ``system`` are the OpenMM objects it was built from.
    """

    potential: MolecularPotential
    c7eq: Float[Array, "22 3"]
    c7ax: Float[Array, "22 3"]
    masses: Float[Array, " 22"]  # dalton
    phi: Int[Array, " 4"]
    psi: Int[Array, " 4"]
    atom_names: tuple[str, ...]
    topology: Any
    system: Any


def alanine_dipeptide(forcefield: str = "amber99sbildn.xml") -> AlanineDipeptide:
    """Alanine dipeptide in vacuum with an OpenMM force field (``NoCutoff``, no constraints).

    Reads the packaged ``data/c7eq.pdb`` and ``data/c7ax.pdb`` (same atoms, same order),
    builds the ``System`` with ``openmm.app.ForceField(forcefield)`` and returns it as a
    :class:`MolecularPotential` with both end states (see :class:`AlanineDipeptide`).
    """
    import openmm.app as app
    import openmm.unit as unit

    data = resources.files(__package__) / "data"
    pdbs = {}
    for state in ("c7eq", "c7ax"):
        with resources.as_file(data / f"{state}.pdb") as path:
            pdbs[state] = app.PDBFile(str(path))
    topology = pdbs["c7eq"].topology
    names = tuple(a.name for a in topology.atoms())
    if tuple(a.name for a in pdbs["c7ax"].topology.atoms()) != names:
        raise ValueError("c7eq.pdb and c7ax.pdb list different atoms")
    system = app.ForceField(forcefield).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    phi, psi = backbone_dihedral_atoms(topology)
    if len(phi) != 1:
        raise ValueError(f"expected one residue with phi and psi, found {len(phi)}")
    return AlanineDipeptide(
        potential=from_openmm(system),
        c7eq=jnp.asarray(pdbs["c7eq"].getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
        c7ax=jnp.asarray(pdbs["c7ax"].getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
        masses=jnp.asarray(masses(system)),
        phi=jnp.asarray(phi[0]),
        psi=jnp.asarray(psi[0]),
        atom_names=names,
        topology=topology,
        system=system,
    )
