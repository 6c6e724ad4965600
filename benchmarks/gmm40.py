"""GMM40 (2-D, 40 modes, log Z = 0): log Z error, wall time and recovered modes versus particles."""

from ._common import log_z_benchmark

MODEL = "gmm40"
PARTICLES = [1024, 3072, 10240]
SEEDS = [0, 1, 2]
QUICK_PARTICLES = [256]
QUICK_SEEDS = [0]


def run(*, quick: bool = False, particles=None, seeds=None, log=print) -> dict:
    return log_z_benchmark(
        MODEL,
        particles=particles or (QUICK_PARTICLES if quick else PARTICLES),
        seeds=seeds or (QUICK_SEEDS if quick else SEEDS),
        log=log,
    )
