r"""A family of small molecules for transferable Boltzmann generators: capped peptides ACE-X-NME
in vacuum, their AMBER potentials as JAX functions and reference MD (nm, ps, kJ/mol, K).

`capped_peptide` builds ACE-X-NME from the packaged alanine dipeptide (``fepy/apps/tps/data/
c7eq.pdb``) by mutating its ALA to X with PDBFixer (``applyMutations``, then the missing heavy atoms
and hydrogens from PDBFixer's residue templates), parametrises it with an OpenMM force field
(amber99sb-ildn by default; ``NoCutoff``, no constraints, as `fepy.apps.tps.alanine_dipeptide`),
exports the potential with `fepy.apps.tps.from_openmm`. The Z-matrix is `ZMatrix.from_bonds`
of its bond graph.

`md_frames` relaxes the structure to a local minimum (OpenMM's ``LocalEnergyMinimizer``) and runs
OpenMM's ``LangevinMiddleIntegrator`` (BAOAB-type Langevin dynamics: friction ``friction``, step
``dt``; exact configurational sampling of harmonic modes at any stable step) from it, all atoms free, and saves the positions every
``every`` steps after ``equilibration`` steps: samples of :math:`e^{-\beta U}` up to the
integrator's :math:`O(\Delta t^2)` configurational error and the run's finite length (a 1 ns
vacuum run of a dipeptide at 300 K visits the :math:`C_5`/:math:`\beta`, :math:`C_{7eq}` and
:math:`\alpha_R` basins; :math:`\alpha_L`/:math:`C_{7ax}` rarely).

`atom_features` describes each atom by what the force field knows of it, so that a model
conditioned on them applies to any molecule the force field parametrises: the element, the
number of bonded atoms and of bonded hydrogens, the partial charge and the Lennard-Jones
:math:`\sigma`, :math:`\epsilon`.
"""

from importlib import resources
from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Float, Int

from ..tps.molecular import backbone_dihedral_atoms
from ..tps.openmm import MolecularPotential, from_openmm, masses
from .internal import ZMatrix
from .tempering import BOLTZMANN

ELEMENTS = ("H", "C", "N", "O", "S")
"""The elements `atom_features` one-hot encodes (those of the amino acids without rings)."""

RESIDUES = ("ALA", "GLY", "SER", "CYS", "THR", "VAL", "ASN", "GLN", "LEU", "ILE", "MET")
"""The residues X of ACE-X-NME that `capped_peptide` builds: the neutral amino acids without
rings (a ring closes by a bond that a Z-matrix, a tree, does not place)."""

N_FEATURES = len(ELEMENTS) + 4 + 4 + 3


class CappedPeptide(NamedTuple):
    """ACE-X-NME in vacuum, from `capped_peptide`.

    ``positions``: PDBFixer's structure (nm); ``phi``/``psi``: atom indices of the
    backbone dihedrals C(ACE)-N-CA-C and N-CA-C-N(NME); ``features``: `atom_features`;
    ``topology``/``system``: the OpenMM objects it was built from.
    """

    residue: str
    potential: MolecularPotential
    positions: Float[np.ndarray, "atoms 3"]
    masses: Float[np.ndarray, " atoms"]
    phi: Int[np.ndarray, " 4"]
    psi: Int[np.ndarray, " 4"]
    zmatrix: ZMatrix
    bonds: Int[np.ndarray, "bonds 2"]
    features: Float[np.ndarray, "atoms features"]
    atom_names: tuple[str, ...]
    topology: Any
    system: Any

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)


def atom_features(topology, potential: MolecularPotential) -> Float[np.ndarray, "atoms features"]:
    """Per atom: one-hot element (`ELEMENTS`), one-hot number of bonded atoms (1..4), one-hot
    number of bonded hydrogens (0..3), partial charge (e), sigma / 0.3 nm and epsilon (kJ/mol)."""
    n = topology.getNumAtoms()
    elements = [a.element.symbol for a in topology.atoms()]
    unknown = sorted(set(elements) - set(ELEMENTS))
    if unknown:
        raise ValueError(f"atom_features knows the elements {ELEMENTS}, the molecule has {unknown}")
    neighbours = [[] for _ in range(n)]
    for a, b in topology.bonds():
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    features = np.zeros((n, N_FEATURES))
    for i in range(n):
        degree = len(neighbours[i])
        hydrogens = sum(elements[j] == "H" for j in neighbours[i])
        if not 1 <= degree <= 4 or hydrogens > 3:
            raise ValueError(f"atom {i} has {degree} bonds and {hydrogens} hydrogens: not an organic valence")
        features[i, ELEMENTS.index(elements[i])] = 1
        features[i, len(ELEMENTS) + degree - 1] = 1
        features[i, len(ELEMENTS) + 4 + hydrogens] = 1
    features[:, -3] = np.asarray(potential.charges)
    features[:, -2] = np.asarray(potential.sigma) / 0.3
    features[:, -1] = np.asarray(potential.epsilon)
    return features


def capped_peptide(residue: str, forcefield: str = "amber99sbildn.xml") -> CappedPeptide:
    """ACE-``residue``-NME (module docstring); ``residue`` is one of `RESIDUES`."""
    import openmm.app as app
    from pdbfixer import PDBFixer

    if residue not in RESIDUES:
        raise ValueError(f"capped_peptide builds ACE-X-NME for X in {RESIDUES}, got {residue!r}")
    data = resources.files("fepy.apps.tps") / "data"
    with resources.as_file(data / "c7eq.pdb") as path:
        fixer = PDBFixer(filename=str(path))
    if residue != "ALA":
        fixer.applyMutations([f"ALA-2-{residue}"], "A")
    fixer.findMissingResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(7.0)
    topology = fixer.topology
    system = app.ForceField(forcefield).createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None,
                                                     rigidWater=False)
    potential = from_openmm(system)
    positions = np.array([[v.x, v.y, v.z] for v in fixer.positions])  # nm
    phi, psi = backbone_dihedral_atoms(topology)
    if len(phi) != 1:
        raise ValueError(f"expected one residue with phi and psi, found {len(phi)}")
    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()])
    return CappedPeptide(residue=residue, potential=potential, positions=positions, masses=masses(system),
                         phi=phi[0], psi=psi[0], zmatrix=ZMatrix.from_bonds(topology.getNumAtoms(), bonds),
                         bonds=bonds, features=atom_features(topology, potential),
                         atom_names=tuple(a.name for a in topology.atoms()), topology=topology, system=system)


def md_frames(peptide: CappedPeptide, *, frames: int, every: int = 500, equilibration: int = 20_000,
              temperature: float = 300.0, dt: float = 0.002, friction: float = 1.0, seed: int = 0,
              threads: int = 1) -> Float[np.ndarray, "frames atoms 3"]:
    r"""``frames`` positions (nm) of a Langevin run of ``peptide`` (module docstring), one every
    ``every`` steps of ``dt`` ps after ``equilibration`` steps, from a local minimum with velocities
    drawn at ``temperature`` K; ``seed`` seeds the velocities and the thermostat. OpenMM's CPU
    platform with ``threads`` threads."""
    import openmm
    import openmm.unit as unit

    for name, value in (("frames", frames), ("every", every), ("equilibration", equilibration), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "equilibration" else 1):
            raise ValueError(f"md_frames {name} must be a positive integer, got {value!r}")
    if not (temperature > 0 and dt > 0 and friction > 0):
        raise ValueError("md_frames temperature, dt and friction must be positive")
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 dt * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)  # 0 would mean a random seed
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(peptide.system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(np.asarray(peptide.positions, np.float64) * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    integrator.step(equilibration)
    out = np.empty((frames, peptide.n_atoms, 3), np.float32)
    for f in range(frames):
        integrator.step(every)
        out[f] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return out


def beta(temperature: float) -> float:
    """1 / (k_B T) in mol/kJ."""
    return 1.0 / (BOLTZMANN * temperature)
