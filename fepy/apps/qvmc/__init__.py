"""Quantum variational Monte Carlo in continuous space (atomic units: hartree, bohr).

Configurations are flat vectors of all particle coordinates, shape ``(dim,)``; electrons
are ``(n_electrons, 3)`` flattened, spin-up electrons first.
"""

from ._geometry import (
    ElectronGeometry as ElectronGeometry,
    electron_distances as electron_distances,
    safe_norm as safe_norm,
)
from .hamiltonians import HarmonicTrap as HarmonicTrap, MolecularHamiltonian as MolecularHamiltonian
from .recipes import (
    MOLECULE_DEFAULTS as MOLECULE_DEFAULTS,
    electron_centers as electron_centers,
    molecule_problem as molecule_problem,
    qmc_solver as qmc_solver,
)
from .ansatz import (
    AbstractAnsatz as AbstractAnsatz,
    CuspJastrow as CuspJastrow,
    FermiNet as FermiNet,
    GaussianAnsatz as GaussianAnsatz,
    HydrogenicAnsatz as HydrogenicAnsatz,
    SlaterJastrow as SlaterJastrow,
)
