"""LiH at R = 3.015 bohr (Li at z = -R/2, H at +R/2), 4 electrons, singlet.

Reference: E = -8.07055 Ha (exact non-relativistic energy, Cencek & Rychlewski / FermiNet paper). Trained by VMC with a small FermiNet by default;
`--set solver=wqmc` for the Wasserstein geometry, `--set ansatz=slater_jastrow` for the baseline.
"""

from fepy.apps.qvmc import MOLECULE_DEFAULTS, MolecularHamiltonian, molecule_problem

DEFAULTS = dict(MOLECULE_DEFAULTS)
REFERENCE = dict(energy=-8.07055)


def build(config):
    return molecule_problem(MolecularHamiltonian.diatomic(3.0, 1.0, 3.015, 2, 2), {**DEFAULTS, **config})
