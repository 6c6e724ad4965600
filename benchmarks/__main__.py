"""``python -m benchmarks [names...] [--quick]``: run entries, write results JSON, regenerate README tables."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import BENCHMARKS, QUICK

HERE = Path(__file__).resolve().parent


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"entries to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one seed (smoke test); results go to results/quick/, not the README")
    parser.add_argument("--particles", type=_ints, help="comma-separated particle counts (override)")
    parser.add_argument("--seeds", type=_ints, help="comma-separated seeds (override)")
    parser.add_argument("--x64", action="store_true", help="run in float64 (default float32)")
    parser.add_argument("--readme-only", action="store_true",
                        help="only regenerate the README tables from results/*.json")
    parser.add_argument("--out", type=Path, help="results directory (default results/, quick: results/quick/)")
    args = parser.parse_args(argv)

    from ._report import update_readme

    if args.readme_only:
        update_readme()
        return 0
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from ._common import environment, log_z_benchmark

    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        sizes = QUICK if args.quick else BENCHMARKS[name]
        if "module" in BENCHMARKS[name]:
            import importlib

            module = importlib.import_module(f"benchmarks.{BENCHMARKS[name]['module']}")
            print(f"[benchmarks] {name}{' (quick)' if args.quick else ''} on {jax.devices()[0]}", flush=True)
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            result = module.run(quick=args.quick, log=lambda msg: print(msg, flush=True))
            result = dict(name=name, quick=args.quick, total_wall_s=time.perf_counter() - t0,
                          load_average_1min_start=load0, environment=environment(), **result)
            path = out / f"{name}.json"
            path.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
            if not args.quick and hasattr(module, "plot"):
                module.plot(result, out / f"{name}_convergence.png")
            print(f"[benchmarks] {name}: {result['total_wall_s']:.0f} s, wrote {path}", flush=True)
            continue
        print(f"[benchmarks] {name}{' (quick)' if args.quick else ''} on {jax.devices()[0]}", flush=True)
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        result = log_z_benchmark(
            name,
            particles=args.particles or sizes["particles"],
            seeds=args.seeds or sizes["seeds"],
            log=lambda msg: print(msg, flush=True),
        )
        result = dict(name=name, quick=args.quick, total_wall_s=time.perf_counter() - t0,
                      load_average_1min_start=load0, environment=environment(), **result)
        path = out / f"{name}.json"
        path.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
        print(f"[benchmarks] {name}: {result['total_wall_s']:.0f} s, wrote {path}", flush=True)
    update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
