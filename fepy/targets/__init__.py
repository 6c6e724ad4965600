from .energy import Energy as Energy
