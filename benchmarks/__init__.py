"""fepy benchmarks: ``python -m benchmarks [names...] [--quick]``.

Each log-Z entry names a model file whose log Z error, wall time and energy evaluations are
measured versus the number of particles, for every fepy geometry and BlackJAX's tempered
SMC side by side (`benchmarks._common.log_z_benchmark`). The runner adds the environment,
writes ``benchmarks/results/<name>.json`` and regenerates the tables in
``benchmarks/README.md``. An entry with a ``module`` is its own benchmark: the module
``benchmarks.<module>`` has ``run(quick, log) -> dict`` (a result whose ``kind`` is the
module's name), ``table(result) -> str`` for the README and optionally ``plot(result, path)``.
"""

# entry -> particle counts (divisible by the models' islands) and seeds of a full run
# (5 seeds: the mean |log Z error| over 5 seeds is how FAB reports its Many-Well figure)
BENCHMARKS = {
    "gmm40": dict(particles=[1024, 3072, 10240], seeds=[0, 1, 2, 3, 4]),
    "many_well": dict(particles=[1024, 3072, 10240], seeds=[0, 1, 2, 3, 4]),
    # quantum VMC: He, H2, Li, Be, LiH energies per solver + NetKet on He; sizes in benchmarks/qmc.py
    "qmc": dict(module="qmc"),
    # neural DFT functionals: pair-correlation matching vs the naive profile loss
    "dft_neural": dict(module="dft_neural"),
    # classical DFT: hard spheres in a slit against FeOs, batched hard-rod solves; sizes in benchmarks/dft.py
    "dft": dict(module="dft"),
    # transition paths: alanine dipeptide C7eq -> C7ax, PIPS and log-variance objectives; sizes in benchmarks/tps.py
    "tps": dict(module="tps"),
    # strong lensing: fepy vs lenstronomy images/s, gradients/s, one reconstruction; sizes in benchmarks/lensing.py
    "lensing": dict(module="lensing"),
    # strong lensing at survey scale: many MAPs batched (fepy.Independent) vs one by one vs lenstronomy PSO
    "lensing_survey": dict(module="lensing_survey"),
    # strong lensing: a Recurrent Inference Machine against MAP at equal wall time; sizes in benchmarks/rim.py
    "rim": dict(module="rim"),
}
QUICK = dict(particles=[256], seeds=[0])
