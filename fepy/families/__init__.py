from .particles import Particles as Particles
from .density import AbstractDensity as AbstractDensity, DensityDistribution as DensityDistribution, Gaussian as Gaussian
from .wavefunction import Wavefunction as Wavefunction
from .grid import Grid as Grid, GridDensity as GridDensity
from .control import Control as Control, Steered as Steered
from .flow import Flow as Flow
from .cnf import CNF as CNF
