"""Many-Well 32-D Boltzmann generator over seeds: python -m benchmarks.bg_many_well [SEEDS] [--set KEY=VALUE ...].

Each seed runs models/many_well_bg.py as ``fepy run`` would (build, then `fepy.minimize` with
the CLI's key), in float32, and records the flow's importance-sampling log Z error against
the exact value, its stderr, the ESS of the ``estimate_samples`` samples, and the wall time
(SMC data + training + estimate). Writes benchmarks/results/bg/many_well_bg[_TAG].json.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import fepy
from fepy.cli import load_model, minimize_key, parse_sets

ROOT = Path(__file__).resolve().parents[1]


def main(argv):
    seeds = [int(s) for s in (argv[0].split(",") if argv and not argv[0].startswith("--") else "0,1,2,3,4".split(","))]
    sets = [a for a in argv if "=" in a]
    model = load_model(ROOT / "models" / "many_well_bg.py")
    overrides = parse_sets(sets, model.DEFAULTS, "many_well_bg")
    rows = []
    for seed in seeds:
        config = {**model.DEFAULTS, **overrides, "seed": seed}
        t0 = time.perf_counter()
        problem = model.build(config)
        t1 = time.perf_counter()
        sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=minimize_key(seed))
        wall = time.perf_counter() - t0
        obs = model.observables(problem.target, sol.family, config)
        exact = model.reference(config)["log_z"]
        row = dict(seed=seed, log_z=sol.log_z, log_z_stderr=sol.log_z_stderr, error=sol.log_z - exact,
                   ess=sol.ess, ess_fraction=sol.ess_fraction, data_s=t1 - t0, wall_s=wall, **obs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    errors = np.array([r["error"] for r in rows])
    result = dict(config={**model.DEFAULTS, **overrides}, seeds=seeds, rows=rows,
                  mean_abs_error=float(np.mean(np.abs(errors))), mean_error=float(np.mean(errors)),
                  reference_log_z=model.reference(overrides)["log_z"],
                  device=str(jax.devices()[0]), cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
                  load_average=os.getloadavg(), jax=jax.__version__, float64=bool(jax.config.jax_enable_x64),
                  date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tag = "_".join(s.replace("=", "-") for s in sets)
    out = ROOT / "benchmarks" / "results" / "bg" / (f"many_well_bg_{tag}.json" if tag else "many_well_bg.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"mean |log Z error| over {len(seeds)} seeds: {result['mean_abs_error']:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
