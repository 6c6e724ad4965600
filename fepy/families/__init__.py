from .particles import Particles as Particles
from .wavefunction import Wavefunction as Wavefunction
