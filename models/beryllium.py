"""Beryllium atom: 4 electrons (2 up, 2 down) around Z = 4.

Reference: E = -14.66736 Ha (exact non-relativistic energy, Komasa / Pachucki). Trained by VMC with a small FermiNet by default;
`--set solver=wqmc` for the Wasserstein geometry, `--set ansatz=slater_jastrow` for the baseline.
"""

from fepy.apps.qvmc import MOLECULE_DEFAULTS, MolecularHamiltonian, molecule_problem

DEFAULTS = dict(MOLECULE_DEFAULTS)
REFERENCE = dict(energy=-14.66736)


def build(config):
    return molecule_problem(MolecularHamiltonian.atom(4), {**DEFAULTS, **config})
