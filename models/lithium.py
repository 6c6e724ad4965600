"""Lithium atom: 3 electrons (2 up, 1 down) around Z = 3.

Reference: E = -7.47806 Ha (exact non-relativistic energy, Puchalski & Pachucki). Trained by VMC with a small FermiNet by default;
`--set solver=wqmc` for the Wasserstein geometry, `--set ansatz=slater_jastrow` for the baseline.
"""

from fepy.apps.qvmc import MOLECULE_DEFAULTS, MolecularHamiltonian, molecule_problem

DEFAULTS = dict(MOLECULE_DEFAULTS)
REFERENCE = dict(energy=-7.47806)


def build(config):
    return molecule_problem(MolecularHamiltonian.atom(3), {**DEFAULTS, **config})
