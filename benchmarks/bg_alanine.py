"""Alanine dipeptide Boltzmann generator over seeds: python -m benchmarks.bg_alanine [SEEDS] [--set KEY=VALUE ...].

Each seed runs models/alanine_dipeptide_bg.py as ``fepy run`` would (build, `fepy.minimize` with the
CLI's key, then the model's ``analyze``/``observables``), in float32 unless ``--x64``, and records
the figures (ESS, log Z, held-out NLL, Ramachandran KLs, free-energy differences, chirality), the
wall times (MD reference, training, estimate), the time per training step, the flow's samples per
second (sampling with log q) and its log q evaluations per second on MD frames. The replica-exchange
MD reference is the model's cache (``md_cache``), made on the first run. The first seed's
Ramachandran plot is copied beside the JSON. Writes benchmarks/results/bg/alanine_dipeptide_bg[_TAG].json.
"""

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bg"


def _throughput(model, problem, flow, config):
    """Flow samples (with log q) per second and log q evaluations per second, batches of ``chunk``."""
    import jax.numpy as jnp

    target, n = problem.target, config["chunk"]
    model._flow_batch(target, flow, jax.random.key(0), n)[2].block_until_ready()  # compile
    t0 = time.perf_counter()
    for i in range(5):
        model._flow_batch(target, flow, jax.random.key(i + 1), n)[2].block_until_ready()
    sample_rate = 5 * n / (time.perf_counter() - t0)
    rows = jnp.asarray(problem.solver.data[:n])
    model._log_prob(flow, rows).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(5):
        model._log_prob(flow, rows).block_until_ready()
    return sample_rate, 5 * n / (time.perf_counter() - t0)


def main(argv):
    x64 = "--x64" in argv
    jax.config.update("jax_enable_x64", x64)
    import fepy
    from fepy.cli import load_model, minimize_key, parse_sets

    seeds = [int(s) for s in (argv[0].split(",") if argv and not argv[0].startswith("--") else ["0"])]
    sets = [a for a in argv if "=" in a]
    model = load_model(ROOT / "models" / "alanine_dipeptide_bg.py")
    overrides = parse_sets(sets, model.DEFAULTS, "alanine_dipeptide_bg")
    tag = "_".join(s.replace("=", "-") for s in sets) + ("_x64" if x64 else "")
    name = f"alanine_dipeptide_bg_{tag}" if tag else "alanine_dipeptide_bg"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        config = {**model.DEFAULTS, **overrides, "seed": seed}
        t0 = time.perf_counter()
        model.md_reference(config)  # the cached MD reference (made here on a first run)
        t1 = time.perf_counter()
        problem = model.build(config)
        t2 = time.perf_counter()
        sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=minimize_key(seed))
        jax.block_until_ready(sol.family)
        t3 = time.perf_counter()
        analysis = model.analyze(problem.target, sol.family, config)
        figures = model.observables(problem.target, sol.family, config, analysis)
        t4 = time.perf_counter()
        step_t0 = time.perf_counter()
        timing = fepy.minimize(problem.target, sol.family, problem.solver, steps=50, key=jax.random.key(seed + 99))
        jax.block_until_ready(timing.family)
        step_s = (time.perf_counter() - step_t0) / 50  # includes one summary: an upper bound
        samples_per_s, log_q_per_s = _throughput(model, problem, sol.family, config)
        training_evals = config["samples"] * config["steps"] if config["reverse"] > 0 else 0
        row = dict(seed=seed, md_s=t1 - t0, build_s=t2 - t1, training_s=t3 - t2, estimate_s=t4 - t3,
                   training_step_s=step_s, flow_samples_per_s=samples_per_s, flow_log_q_per_s=log_q_per_s,
                   training_energy_evals=training_evals, estimate_energy_evals=config["estimate_samples"],
                   train_nll=float(sol.summary["nll"]), **figures)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if seed == seeds[0]:
            with tempfile.TemporaryDirectory() as out:
                for png in model.plots(problem.target, sol.family, out, config, analysis):
                    shutil.copy(Path(out) / png, RESULTS / f"{name}_{png}")
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    result = dict(
        config={**model.DEFAULTS, **overrides}, seeds=seeds, rows=rows,
        mean={k: float(np.mean([r[k] for r in rows])) for k in keys},
        sd={k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else None for k in keys},
        device=str(jax.devices()[0]), cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
        load_average=os.getloadavg(), jax=jax.__version__, float64=x64, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
