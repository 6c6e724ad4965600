"""Boltzmann generators. Particle systems (exported here): the DW4 and LJ13 targets
(centre-of-mass-free densities, `particles`), their reference samples by fepy's own SMC + MCMC,
an E(n)-equivariant EGNN field for `fepy.CNF` (`egnn`), the orbit alignment of equivariant flow
matching (`coupling`), the papers' metrics (`evaluation`) and the model-file pipeline
(`recipes`). Molecules (exported here): the Z-matrix of a bond graph and the exact
internal-coordinate bijection to the reduced canonical frame with its target (`internal`),
coupling flows of bounded and circular splines (`splines`), replica-exchange Langevin reference
samples (`tempering`) and the dihedral-histogram and free-energy figures (`analysis`)."""

from .analysis import (
    dihedral_histogram as dihedral_histogram,
    free_energy_difference as free_energy_difference,
    histogram_kl as histogram_kl,
    histogram_kl_floor as histogram_kl_floor,
)
from .coupling import OrbitAlignment as OrbitAlignment
from .egnn import EGNNField as EGNNField
from .internal import (
    InternalCoordinates as InternalCoordinates,
    ReducedEnergy as ReducedEnergy,
    Standardise as Standardise,
    ZMatrix as ZMatrix,
    internal_coordinate_flow as internal_coordinate_flow,
    periodic_mask as periodic_mask,
    signed_volume as signed_volume,
)
from .particles import (
    CoMFreeGaussian as CoMFreeGaussian,
    EquilibriumSamples as EquilibriumSamples,
    LennardJonesCluster as LennardJonesCluster,
    MultiDoubleWell as MultiDoubleWell,
    dw4 as dw4,
    equilibrium_samples as equilibrium_samples,
    lj13 as lj13,
    pair_distances as pair_distances,
    remove_com as remove_com,
)
from .splines import MixedSplineCoupling as MixedSplineCoupling, NormalUniform as NormalUniform, coupling_flow as coupling_flow
from .tempering import (
    TemperingRun as TemperingRun,
    geometric_temperatures as geometric_temperatures,
    parallel_tempering as parallel_tempering,
)
