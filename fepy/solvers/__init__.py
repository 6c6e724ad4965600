from ._base import AbstractSolver as AbstractSolver
from .descent import Descent as Descent, DescentState as DescentState
from .fab import FAB as FAB, FABState as FABState, BufferState as BufferState, ReplayBuffer as ReplayBuffer
from .independent import Independent as Independent, batch_axes as batch_axes
from .density import DynamicDFT as DynamicDFT, DynamicDFTState as DynamicDFTState, Picard as Picard, PicardState as PicardState
from .moves import HMC as HMC, MALA as MALA, RandomWalk as RandomWalk, SVGD as SVGD, ULA as ULA, AbstractMove as AbstractMove
from .particle_flows import (
    FisherRao as FisherRao,
    ParticleState as ParticleState,
    Wasserstein as Wasserstein,
    WassersteinFisherRao as WassersteinFisherRao,
    particle_solver as particle_solver,
)
from .flow_matching import (
    AbstractCoupling as AbstractCoupling,
    FlowMatching as FlowMatching,
    FlowMatchingState as FlowMatchingState,
    IndependentCoupling as IndependentCoupling,
    OTCoupling as OTCoupling,
)
from .variational import ForwardKL as ForwardKL, ForwardKLState as ForwardKLState, ReverseKL as ReverseKL, ReverseKLState as ReverseKLState
from .qmc import VMC as VMC, WQMC as WQMC, StochasticReconfiguration as StochasticReconfiguration
from .schedules import (
    AbstractFixedSchedule as AbstractFixedSchedule,
    AbstractSchedule as AbstractSchedule,
    AdaptiveCESS as AdaptiveCESS,
    Constant as Constant,
    Exponential as Exponential,
    Linear as Linear,
    Power as Power,
)
from .path import LogVariance as LogVariance, PathKL as PathKL, PathKLState as PathKLState, RelativeEntropy as RelativeEntropy
