"""Many-Well 32-D Boltzmann generator over seeds: python -m benchmarks.bg_many_well [SEEDS] [--set KEY=VALUE ...] [--batches=N].

Each seed runs models/many_well_bg.py as ``fepy run`` would (build, then `fepy.minimize` with
the CLI's key), in float32, then its ``observables`` (as the CLI merges them into the summary),
and records the log Z error of the model's ``estimator`` (default: SMC from the trained flow;
``--set estimator=flow``: the flow's importance sampling) against the exact value, its stderr,
the ESS of the ``estimate_samples`` samples, the target energy evaluations of each stage, and
the wall times (SMC data, training, estimate). With ``estimator=flow_ais`` the flow-only IS
estimate is recorded beside it (``flow_*``). Writes benchmarks/results/bg/many_well_bg[_TAG].json.
``--flows=DIR`` saves each trained flow there and reuses it for the same training config and
seed (another estimator on the same flows; rows say ``flow_reused`` and keep the training time).
``--batches=N`` adds FAB's README protocol: per seed, N more independent estimates
(`many_well_bg.estimate_errors`) and their mean absolute error (``batch_mae``); the result then
holds the mean of those over seeds with its standard error across seeds (``batch_mean_abs_error``,
``batch_mae_stderr``), as FAB reports 0.0316 +- 0.00417 (5 seeds, 10 batches of 2,000).
"""

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

import fepy
from fepy.cli import load_model, minimize_key, parse_sets

ROOT = Path(__file__).resolve().parents[1]


TRAINING_KEYS_EXCLUDED = ("estimator", "estimate_samples")  # and every ais_* key: they do not change the flow


def training_hash(config, model) -> str:
    """A short hash of the config keys that determine the trained flow (not the estimator's)."""
    keys = {k: v for k, v in config.items()
            if k not in TRAINING_KEYS_EXCLUDED and not k.startswith("ais_") and k != "seed"}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


def main(argv):
    seeds = [int(s) for s in (argv[0].split(",") if argv and not argv[0].startswith("--") else "0,1,2,3,4".split(","))]
    sets = [a for a in argv if "=" in a]
    flows = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("--flows=")), None)
    if flows is not None:
        flows.mkdir(parents=True, exist_ok=True)
    batches = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--batches=")), 0)
    sets = [a for a in sets if not a.startswith(("--flows=", "--batches="))]
    model = load_model(ROOT / "models" / "many_well_bg.py")
    overrides = parse_sets(sets, model.DEFAULTS, "many_well_bg")
    rows = []
    for seed in seeds:
        config = {**model.DEFAULTS, **overrides, "seed": seed}
        t0 = time.perf_counter()
        problem = model.build(config)
        t1 = time.perf_counter()
        cached = None if flows is None else flows / f"flow_seed{seed}_{training_hash(config, model)}.eqx"
        reused = cached is not None and cached.exists()
        if reused:  # the same training config and seed: reuse the flow (training_s: its training's)
            flow = eqx.tree_deserialise_leaves(cached, problem.family)
            training_s = json.loads(cached.with_suffix(".json").read_text())["training_s"]
            summary = {}
        else:
            sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                                key=minimize_key(seed))
            flow, summary, training_s = sol.family, dict(sol.summary), time.perf_counter() - t1
            if cached is not None:
                eqx.tree_serialise_leaves(cached, flow)
                cached.with_suffix(".json").write_text(json.dumps(dict(training_s=training_s, config=config)))
        t2 = time.perf_counter()
        summary.update(model.observables(problem.target, flow, config))  # as fepy run merges them
        t3 = time.perf_counter()
        batch_errors = model.estimate_errors(problem.target, flow, config, batches) if batches else None
        t4 = time.perf_counter()
        exact = model.reference(config)["log_z"]
        row = dict(seed=seed, estimator=config["estimator"], error=summary["log_z"] - exact, data_s=t1 - t0,
                   training_s=training_s, estimate_s=t3 - t2, wall_s=t1 - t0 + training_s + t3 - t2,
                   flow_reused=reused)
        if "flow_log_z" in summary:
            row["flow_error"] = summary["flow_log_z"] - exact
        if batches:
            row.update(batch_errors=batch_errors.tolist(), batch_mae=float(np.mean(np.abs(batch_errors))),
                       batches_s=t4 - t3)
        row.update({k: float(v) for k, v in summary.items() if np.ndim(v) == 0 and k != "steps"})
        rows.append(row)
        print(json.dumps(row), flush=True)
    errors = np.array([r["error"] for r in rows])
    stderr = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None  # noqa: E731
    result = dict(config={**model.DEFAULTS, **overrides}, seeds=seeds, rows=rows,
                  mean_abs_error=float(np.mean(np.abs(errors))), mean_abs_error_stderr=stderr(np.abs(errors)),
                  mean_error=float(np.mean(errors)),
                  flow_mean_abs_error=float(np.mean([abs(r["flow_error"]) for r in rows])) if "flow_error" in rows[0] else None,
                  reference_log_z=model.reference(overrides)["log_z"],
                  batches=batches, batch_mean_abs_error=float(np.mean([r["batch_mae"] for r in rows])) if batches else None,
                  batch_mae_stderr=stderr([r["batch_mae"] for r in rows]) if batches else None,
                  device=str(jax.devices()[0]), cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
                  load_average=os.getloadavg(), jax=jax.__version__, float64=bool(jax.config.jax_enable_x64),
                  date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tag = "_".join(s.replace("=", "-") for s in sets)
    out = ROOT / "benchmarks" / "results" / "bg" / (f"many_well_bg_{tag}.json" if tag else "many_well_bg.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"mean |log Z error| over {len(seeds)} seeds: {result['mean_abs_error']:.4f}"
          + (f"; FAB protocol ({batches} batches per seed): {result['batch_mean_abs_error']:.4f}" if batches else "")
          + f"; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
