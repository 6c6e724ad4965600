"""fepy: differentiable physics as free-energy minimisation, F[q] = E_q[H] - T S[q] >= -T log Z."""

from ._callbacks import Callback as Callback, Checkpoint as Checkpoint, ProgressBar as ProgressBar
from ._continuation import ContinuationError as ContinuationError, continuation as continuation
from ._estimators import (
    kish_ess as kish_ess,
    log_mean_exp as log_mean_exp,
    log_z_and_stderr as log_z_and_stderr,
    reweighted_mean as reweighted_mean,
)
from ._laplace import Laplace as Laplace, laplace as laplace
from ._minimize import NonFiniteError as NonFiniteError, Solution as Solution, minimize as minimize
from ._nuts import NUTSResult as NUTSResult, nuts as nuts
from ._problem import Problem as Problem
from ._sharding import batch_sharding as batch_sharding
from .families import AbstractDensity as AbstractDensity, CNF as CNF, DensityDistribution as DensityDistribution, Flow as Flow, Gaussian as Gaussian
from .families import Control as Control, Steered as Steered, Grid as Grid, GridDensity as GridDensity, Particles as Particles, Wavefunction as Wavefunction
from .solvers import (
    HMC as HMC,
    Independent as Independent,
    batch_axes as batch_axes,
    MALA as MALA,
    RandomWalk as RandomWalk,
    SVGD as SVGD,
    ULA as ULA,
    AbstractCoupling as AbstractCoupling,
    AbstractMove as AbstractMove,
    AbstractFixedSchedule as AbstractFixedSchedule,
    AbstractSchedule as AbstractSchedule,
    AdaptiveCESS as AdaptiveCESS,
    AbstractSolver as AbstractSolver,
    Constant as Constant,
    Descent as Descent,
    DynamicDFT as DynamicDFT,
    Exponential as Exponential,
    FAB as FAB,
    FisherRao as FisherRao,
    FlowMatching as FlowMatching,
    ForwardKL as ForwardKL,
    IndependentCoupling as IndependentCoupling,
    Linear as Linear,
    LogVariance as LogVariance,
    OTCoupling as OTCoupling,
    PathKL as PathKL,
    RelativeEntropy as RelativeEntropy,
    ReplayBuffer as ReplayBuffer,
    ReverseKL as ReverseKL,
    Picard as Picard,
    Power as Power,
    Wasserstein as Wasserstein,
    WassersteinFisherRao as WassersteinFisherRao,
    VMC as VMC,
    WQMC as WQMC,
    particle_solver as particle_solver,
    StochasticReconfiguration as StochasticReconfiguration,
)
from .targets import (
    AbstractEndState as AbstractEndState,
    AbstractExcessFunctional as AbstractExcessFunctional,
    EndPoint as EndPoint,
    Energy as Energy,
    GrandPotential as GrandPotential,
    Hamiltonian as Hamiltonian,
    PathMeasure as PathMeasure,
    Paths as Paths,
    ProbabilisticModel as ProbabilisticModel,
    SumFunctional as SumFunctional,
)

__version__ = "0.1.0"
