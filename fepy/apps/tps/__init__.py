"""Transition path sampling: the Müller-Brown surface, molecular potentials from OpenMM and their geometry (nm, kJ/mol)."""

from .aligned import AlignedEndState as AlignedEndState, AlignedForce as AlignedForce, FlatPotential as FlatPotential
from .molecular import (
    align as align,
    backbone_dihedral_atoms as backbone_dihedral_atoms,
    dihedral as dihedral,
    kabsch as kabsch,
    rmsd as rmsd,
)
from .openmm import (
    AlanineDipeptide as AlanineDipeptide,
    MolecularPotential as MolecularPotential,
    alanine_dipeptide as alanine_dipeptide,
    from_openmm as from_openmm,
)
from .muller_brown import MullerBrown as MullerBrown, stationary_point as stationary_point
