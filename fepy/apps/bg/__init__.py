"""Boltzmann generators. Particle systems (exported here): the DW4 and LJ13 targets
(centre-of-mass-free densities, `particles`), their reference samples by fepy's own SMC + MCMC,
an E(n)-equivariant EGNN field for `fepy.CNF` (`egnn`), the orbit alignment of equivariant flow
matching (`coupling`), the papers' metrics (`evaluation`) and the model-file pipeline
(`recipes`)."""

from .coupling import OrbitAlignment as OrbitAlignment
from .egnn import EGNNField as EGNNField
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
