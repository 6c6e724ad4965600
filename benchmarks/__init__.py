"""fepy benchmarks: ``python -m benchmarks [names...] [--quick]``.

Each entry is a module ``benchmarks/<name>.py`` with ``run(quick=..., particles=..., seeds=...)``
returning a JSON-able dict; the runner adds the environment, writes
``benchmarks/results/<name>.json`` and regenerates the tables in ``benchmarks/README.md``.
"""

BENCHMARKS = ("gmm40", "many_well")
