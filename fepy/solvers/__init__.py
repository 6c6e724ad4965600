from ._base import AbstractSolver as AbstractSolver
from .moves import MALA as MALA, SVGD as SVGD, ULA as ULA, AbstractMove as AbstractMove
from .particle_flows import (
    FisherRao as FisherRao,
    ParticleState as ParticleState,
    Wasserstein as Wasserstein,
    WassersteinFisherRao as WassersteinFisherRao,
)
from .schedules import (
    AbstractSchedule as AbstractSchedule,
    Constant as Constant,
    Exponential as Exponential,
    Linear as Linear,
    Power as Power,
)
