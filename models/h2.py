"""H2 molecule at the equilibrium bond length R = 1.4 bohr (nuclei on the z-axis), singlet.

Reference: E = -1.174475 Ha (exact Born-Oppenheimer energy, Kolos & Wolniewicz). Trained by VMC with a small FermiNet by default;
`--set solver=wqmc` for the Wasserstein geometry, `--set ansatz=slater_jastrow` for the baseline.
"""

from fepy.apps.qvmc import MOLECULE_DEFAULTS, MolecularHamiltonian, molecule_problem

DEFAULTS = dict(MOLECULE_DEFAULTS)
REFERENCE = dict(energy=-1.174475)


def build(config):
    return molecule_problem(MolecularHamiltonian.diatomic(1.0, 1.0, 1.4, 1, 1), {**DEFAULTS, **config})
