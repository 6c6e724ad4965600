"""Classical density functional theory: functionals, simulation data and neural functionals (kT, σ units)."""

from .fmt import FMT as FMT, rosenfeld as rosenfeld, white_bear_ii as white_bear_ii
from .lj import (
    MeanFieldAttraction as MeanFieldAttraction,
    integrated_attraction as integrated_attraction,
    planar_kernel as planar_kernel,
)
