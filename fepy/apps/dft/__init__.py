"""Classical density functional theory: functionals, simulation data and neural functionals (kT, σ units)."""

from .fmt import FMT as FMT, rosenfeld as rosenfeld, white_bear_ii as white_bear_ii
from .hard_rods import (
    HardRods as HardRods,
    direct_correlation as direct_correlation,
    tonks_density as tonks_density,
    tonks_excess_chemical_potential as tonks_excess_chemical_potential,
    tonks_pressure as tonks_pressure,
    wall_adsorption as wall_adsorption,
    wall_density as wall_density,
)
from .lj import (
    MeanFieldAttraction as MeanFieldAttraction,
    integrated_attraction as integrated_attraction,
    planar_kernel as planar_kernel,
)
from .gcmc import (
    AbstractPairPotential as AbstractPairPotential,
    GCMCResult as GCMCResult,
    GCMCState as GCMCState,
    GrandCanonicalMC as GrandCanonicalMC,
    HardRodPair as HardRodPair,
    LennardJonesPair as LennardJonesPair,
)
from .gcmc_planar import (
    PlanarGCMCResult as PlanarGCMCResult,
    PlanarGCMCState as PlanarGCMCState,
    PlanarGrandCanonicalMC as PlanarGrandCanonicalMC,
)
from .ornstein_zernike import (
    ContinuedCorrelation as ContinuedCorrelation,
    RadialGrid as RadialGrid,
    direct_correlation_continued as direct_correlation_continued,
    percus_yevick_hard_spheres as percus_yevick_hard_spheres,
    percus_yevick_inverse_compressibility as percus_yevick_inverse_compressibility,
    percus_yevick_planar as percus_yevick_planar,
    planar_direct_correlation as planar_direct_correlation,
)
from .bulk_lj import (
    BulkCorrelationData as BulkCorrelationData,
    BulkSample as BulkSample,
    CutShiftedLennardJones as CutShiftedLennardJones,
    JohnsonZollwegGubbins as JohnsonZollwegGubbins,
    LangevinMD as LangevinMD,
    bulk_correlation_data as bulk_correlation_data,
    ganguly_van_der_vegt as ganguly_van_der_vegt,
)
