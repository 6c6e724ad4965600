from .particles import Particles as Particles
