from .energy import Energy as Energy
from .hamiltonian import Hamiltonian as Hamiltonian
