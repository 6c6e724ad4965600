from .energy import Energy as Energy
from .hamiltonian import Hamiltonian as Hamiltonian
from .probabilistic import ProbabilisticModel as ProbabilisticModel
from .functional import (
    AbstractExcessFunctional as AbstractExcessFunctional,
    GrandPotential as GrandPotential,
    SumFunctional as SumFunctional,
)
from .path import (
    AbstractEndState as AbstractEndState,
    EndPoint as EndPoint,
    PathMeasure as PathMeasure,
    Paths as Paths,
)
