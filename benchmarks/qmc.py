"""The ``qmc`` entry: VMC, VMC+SR, WQMC and WFR with one FermiNet on He, H2, Li, Be and LiH, and NetKet on He.

``python -m benchmarks qmc`` runs `run`; ``python -m benchmarks.qmc --tune`` runs
the short learning-rate scans whose results (``results/qmc_tuning.json``) the benchmark
embeds in its JSON. See benchmarks/README.md ("The qmc entry") for what is measured.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ._common import REPO, _jsonable, environment, load_model
from ._report import _f, environment_line

HERE = Path(__file__).resolve().parent
SOLVERS = ("vmc", "vmc_sr", "wqmc", "wfr")
CHEMICAL_ACCURACY_MHA = 1.6
RUNNING_WINDOW = 50  # trailing steps of the running energy
TRACE_BLOCK = 10  # the JSON traces are means over blocks of this many steps

# the full run; the learning rates come from `tune` (results/qmc_tuning.json)
CONFIG = dict(
    seed=0,
    walkers=512,
    hidden=32,
    determinants=4,
    mcmc_steps=10,
    step_size=0.3,
    window=200,
    # He: every solver over three seeds (the WQMC-vs-VMC claim needs more than one run);
    # the heavier systems: the three geometries (Adam VMC, SR VMC, WQMC), seed 0
    models=dict(
        helium=dict(steps=1500, solvers=SOLVERS, seeds=[0, 1, 2]),
        h2=dict(steps=1000, solvers=SOLVERS, seeds=[0]),
        lithium=dict(steps=2000, solvers=("vmc", "vmc_sr", "wqmc"), seeds=[0]),
        beryllium=dict(steps=2000, solvers=("vmc", "vmc_sr", "wqmc"), seeds=[0]),
        lih=dict(steps=2000, solvers=("vmc", "vmc_sr", "wqmc"), seeds=[0]),
    ),
    learning_rates=dict(vmc=1e-2, vmc_sr=0.03, wqmc=1e-2, wfr=1e-2),  # He scans; reused for the others
    warmup_steps=100,  # one chunk: the compiled step of the timed run
    netket=dict(models=["helium"], variants=["adam", "sr"]),
)
QUICK = dict(
    models=dict(helium=dict(steps=200, solvers=SOLVERS, seeds=[0]), h2=dict(steps=100, solvers=SOLVERS, seeds=[0])),
    walkers=128,
    window=50,
    netket=dict(models=["helium"], variants=["adam"]),
)
TUNE = dict(model="helium", seed=1, steps=300, grid=dict(
    vmc=[3e-4, 1e-3, 3e-3, 1e-2], vmc_sr=[0.01, 0.03, 0.1, 0.3],
    wqmc=[3e-4, 1e-3, 3e-3, 1e-2], wfr=[3e-4, 1e-3, 3e-3, 1e-2],
))


def _model_config(cfg: dict, model: str, solver: str, steps: int, seed: int) -> dict:
    return dict(
        seed=seed, walkers=cfg["walkers"], steps=steps, ansatz="ferminet", hidden=cfg["hidden"],
        determinants=cfg["determinants"], solver=solver, learning_rate=cfg["learning_rates"][solver],
        mcmc_steps=cfg["mcmc_steps"], step_size=cfg["step_size"], window=cfg["window"],
    )


def running_mean(energy, window: int = RUNNING_WINDOW):
    """Mean of the trailing ``window`` per-step energies (fewer at the start); NaN-aware."""
    e = np.asarray(energy, float)
    out = np.empty_like(e)
    for k in range(e.size):
        out[k] = np.nanmean(e[max(0, k - window + 1): k + 1]) if np.any(np.isfinite(e[max(0, k - window + 1): k + 1])) else np.nan
    return out


def convergence(energy, exact: float, per_step_s: float) -> dict:
    """First step (1-based) at which the trailing-window mean is within chemical accuracy,
    and the first step from which it stays within it to the end of the run."""
    run = running_mean(energy)
    err = 1000 * np.abs(run - exact)
    within = err <= CHEMICAL_ACCURACY_MHA
    # only full windows count: the first RUNNING_WINDOW - 1 steps average fewer energies
    within[: RUNNING_WINDOW - 1] = False
    first = int(np.argmax(within)) + 1 if within.any() else None
    stays = None
    if within[-1]:
        outside = np.flatnonzero(~within)
        stays = int(outside[-1]) + 2 if outside.size else RUNNING_WINDOW
    return dict(
        steps_to_chem_acc=first,
        wall_to_chem_acc_s=None if first is None else first * per_step_s,
        steps_to_stay_in_chem_acc=stays,
        final_running_err_mha=float(1000 * (run[-1] - exact)),
    )


def _blocks(x, block: int = TRACE_BLOCK):
    x = np.asarray(x, float)
    n = x.size // block
    return [None if not math.isfinite(v) else float(v) for v in x[: n * block].reshape(n, block).mean(axis=1)]


def run_fepy(model_name: str, solver: str, cfg: dict, steps: int, seed: int, log=print) -> dict:
    """One warm-up call (compilation + ``warmup_steps``) and one timed call of the same problem."""
    import fepy

    model = load_model(model_name)
    exact = float(model.REFERENCE["energy"])
    problem = model.build(_model_config(cfg, model_name, solver, steps, seed))
    key = jax.random.key(seed)
    record = dict(model=model_name, method=f"fepy_{solver}", solver=solver, steps=steps, seed=seed,
                  learning_rate=cfg["learning_rates"][solver], exact_energy=exact)
    try:
        t0 = time.perf_counter()
        jax.block_until_ready(fepy.minimize(problem.target, problem.family, problem.solver,
                                            steps=cfg["warmup_steps"], key=key).trace["energy"])
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=steps, key=key)
        jax.block_until_ready(sol.family.walkers)
        wall = time.perf_counter() - t0
    except fepy.NonFiniteError as err:  # reported, not hidden
        record.update(ok=False, error=str(err))
        log(f"  qmc {model_name} {solver} seed {seed}: FAILED {err}")
        return record
    per_step = wall / steps
    energy = np.asarray(sol.trace["energy"], float)
    s = sol.summary
    record.update(
        ok=True,
        energy=float(s["energy"]),
        energy_stderr=float(s["energy_stderr"]),
        err_mha=1000 * (float(s["energy"]) - exact),
        wall_s=wall,
        per_step_ms=1000 * per_step,
        compile_s=warm - cfg["warmup_steps"] * per_step,
        final_variance=float(np.mean(np.asarray(sol.trace["variance"])[-cfg["window"]:])),
        final_acceptance=float(np.asarray(sol.trace["acceptance"])[-1]),
        bad_walkers_total=int(np.sum(sol.trace["bad_walkers"])),
        trace_energy=_blocks(energy),
        trace_variance=_blocks(sol.trace["variance"]),
        **convergence(energy, exact, per_step),
    )
    log(f"  qmc {model_name} {solver} seed {seed}: E = {record['energy']:.6f} ± {record['energy_stderr']:.6f} "
        f"({record['err_mha']:+.2f} mHa), chem. acc. at step {record['steps_to_chem_acc']}, "
        f"{record['per_step_ms']:.1f} ms/step, compile {record['compile_s']:.1f} s")
    return record


# ----------------------------------------------------------------------------- NetKet


def netket_python() -> tuple[str | None, str]:
    """An interpreter that imports netket: ``$FEPY_NETKET_PYTHON``, this one, or /tmp/nkvenv."""
    candidates = [os.environ.get("FEPY_NETKET_PYTHON"), sys.executable, "/tmp/nkvenv/bin/python"]
    reasons = []
    for py in candidates:
        if not py or not Path(py).exists():
            continue
        out = subprocess.run([py, "-c", "import netket"], capture_output=True, text=True)
        if out.returncode == 0:
            return py, ""
        reasons.append(f"{py}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return None, "; ".join(reasons) or "no interpreter found"


def run_netket(model_name: str, variant: str, cfg: dict, steps: int, fepy_lr: dict, log=print) -> dict:
    exact = float(load_model(model_name).REFERENCE["energy"])
    record = dict(model=model_name, method=f"netket_{variant}", solver=variant, steps=steps, seed=cfg["seed"],
                  exact_energy=exact)
    if model_name != "helium":
        return dict(record, ok=False, error="NetKet side implemented for He only")
    py, why = netket_python()
    if py is None:
        return dict(record, ok=False, error=f"netket not importable ({why}); see README")
    lr = fepy_lr["vmc_sr" if variant == "sr" else "vmc"]
    nk_cfg = dict(seed=cfg["seed"], walkers=cfg["walkers"], steps=steps, hidden=cfg["hidden"],
                  mcmc_steps=cfg["mcmc_steps"], step_size=cfg["step_size"], init_scale=0.5,
                  learning_rate=lr, sr=variant == "sr", diag_shift=1e-3, warmup_steps=cfg["warmup_steps"])
    record["learning_rate"] = lr
    t0 = time.perf_counter()
    out = subprocess.run([py, "-m", "benchmarks.qmc_netket", json.dumps(nk_cfg)], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return dict(record, ok=False, error=out.stderr.strip()[-2000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    energy = np.asarray(res.pop("energy"), float)
    variance = np.asarray(res.pop("variance"), float)
    tail = energy[-cfg["window"]:]
    from fepy._estimators import blocking_mean_and_stderr

    mean, stderr = (float(v) for v in blocking_mean_and_stderr(jax.numpy.asarray(tail)))
    per_step = res["per_step_ms"] / 1000
    record.update(
        ok=True, energy=mean, energy_stderr=stderr, err_mha=1000 * (mean - exact),
        wall_s=res["wall_s"], per_step_ms=res["per_step_ms"], compile_s=res["compile_s"],
        final_variance=float(np.mean(variance[-cfg["window"]:])),
        trace_energy=_blocks(energy), trace_variance=_blocks(variance),
        subprocess_wall_s=time.perf_counter() - t0,
        netket=dict(res, sampler="MetropolisGaussian", driver="netket.driver.VMC",
                    optimizer="optax.sgd + nk.optimizer.SR(diag_shift=1e-3)" if variant == "sr" else "optax.adam"),
        **convergence(energy, exact, per_step),
    )
    log(f"  qmc {model_name} netket_{variant}: E = {mean:.6f} ± {stderr:.6f} ({record['err_mha']:+.2f} mHa), "
        f"{record['per_step_ms']:.1f} ms/step (jax {res['versions']['jax']}, netket {res['versions']['netket']})")
    return record


# ----------------------------------------------------------------------------- the entry


def run(*, quick: bool = False, log=print) -> dict:
    cfg = dict(CONFIG, **(QUICK if quick else {}))
    tuning_path = HERE / "results" / "qmc_tuning.json"
    tuning = json.loads(tuning_path.read_text()) if tuning_path.exists() else None
    rows = []
    for model_name, m in cfg["models"].items():
        for seed in m["seeds"]:
            for solver in m["solvers"]:
                rows.append(run_fepy(model_name, solver, cfg, m["steps"], seed, log))
        if model_name in cfg["netket"]["models"]:
            for variant in cfg["netket"]["variants"]:
                rows.append(run_netket(model_name, variant, cfg, m["steps"], cfg["learning_rates"], log))
    # NetKet / fepy per-step time ratios at the same optimiser
    for r in rows:
        if r["method"].startswith("netket") and r.get("ok"):
            fe = next((x for x in rows if x["model"] == r["model"] and x.get("ok") and x["seed"] == r["seed"]
                       and x["solver"] == ("vmc_sr" if r["solver"] == "sr" else "vmc")), None)
            if fe:
                r["per_step_ratio_vs_fepy"] = r["per_step_ms"] / fe["per_step_ms"]
                r["fepy_counterpart"] = fe["method"]
    config = {k: v for k, v in cfg.items()}
    config.update(
        running_window=RUNNING_WINDOW, trace_block=TRACE_BLOCK, chemical_accuracy_mha=CHEMICAL_ACCURACY_MHA,
        model_defaults=_jsonable(load_model("helium").DEFAULTS), ansatz="ferminet",
    )
    return dict(kind="qmc", config=config, qmc_rows=rows, seed_means=seed_means(rows), tuning=tuning)


def seed_means(rows: list[dict]) -> list[dict]:
    """Per (model, method) over its seeds: mean error and the mean / each of the step counts to 1.6 mHa."""
    out = []
    groups = {}
    for r in rows:
        if r["method"].startswith("fepy"):
            groups.setdefault((r["model"], r["method"]), []).append(r)
    for (model, method), runs in groups.items():
        if len(runs) < 2:
            continue
        ok = [r for r in runs if r.get("ok")]
        out.append(dict(
            model=model, method=method, seeds=[r["seed"] for r in runs], failed=len(runs) - len(ok),
            mean_err_mha=float(np.mean([r["err_mha"] for r in ok])) if ok else None,
            sd_err_mha=float(np.std([r["err_mha"] for r in ok], ddof=1)) if len(ok) > 1 else None,
            steps_to_chem_acc=[r["steps_to_chem_acc"] for r in ok],
            steps_to_stay_in_chem_acc=[r["steps_to_stay_in_chem_acc"] for r in ok],
        ))
    return out


def tune(log=print) -> dict:
    """Short learning-rate scans (TUNE): error of the last-50-step mean energy after ``steps``."""
    import fepy

    model = load_model(TUNE["model"])
    exact = float(model.REFERENCE["energy"])
    runs = []
    for solver, rates in TUNE["grid"].items():
        for lr in rates:
            cfg = dict(CONFIG, learning_rates={solver: lr})
            problem = model.build(_model_config(cfg, TUNE["model"], solver, TUNE["steps"], TUNE["seed"]))
            rec = dict(solver=solver, learning_rate=lr)
            try:
                sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=TUNE["steps"],
                                    key=jax.random.key(TUNE["seed"]))
                e = np.asarray(sol.trace["energy"], float)
                rec.update(err_last50_mha=float(1000 * (e[-50:].mean() - exact)),
                           err_steps_90_110_mha=float(1000 * (e[90:110].mean() - exact)))
            except fepy.NonFiniteError as err:
                rec.update(error=str(err))
            log(f"  tune {solver} lr={lr}: {rec}")
            runs.append(rec)
    return dict(TUNE, exact_energy=exact, runs=runs, environment=environment(),
                note="seed 1 (the benchmark uses seed 0); chosen: the rate with the lowest "
                     "last-50 error, preferring the faster one at step ~100 on near ties")


if __name__ == "__main__":
    if "--tune" in sys.argv:
        out = HERE / "results" / "qmc_tuning.json"
        out.write_text(json.dumps(tune(lambda m: print(m, flush=True)), indent=1) + "\n")
        print(f"wrote {out}")


def plot(result: dict, path: Path) -> None:
    """|E_running - E_exact| (mHa, log scale) versus step, per method, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = result["config"]["seed"]
    rows = [r for r in result["qmc_rows"] if r.get("ok") and r.get("seed", seed) == seed]
    models = list(dict.fromkeys(r["model"] for r in rows))
    columns = min(3, len(models))
    rows_of_panels = -(-len(models) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(6 * columns, 4.2 * rows_of_panels), squeeze=False)
    block = result["config"]["trace_block"]
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        for r in (x for x in rows if x["model"] == model):
            e = np.array([np.nan if v is None else v for v in r["trace_energy"]])
            err = 1000 * np.abs(running_mean(e, max(1, RUNNING_WINDOW // block)) - r["exact_energy"])
            steps = block * (np.arange(e.size) + 1)
            ax.plot(steps, np.maximum(err, 1e-2), label=f"{r['method']} (lr {r.get('learning_rate')})",
                    ls="--" if r["method"].startswith("netket") else "-")
        ax.axhline(CHEMICAL_ACCURACY_MHA, color="k", lw=0.8, ls=":", label="1.6 mHa")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"|E - E_exact| (mHa), trailing {RUNNING_WINDOW}-step mean")
        ax.set_title(f"{model}: {result['config']['walkers']} walkers, FermiNet "
                     f"{result['config']['hidden']}x2, {result['config']['determinants']} dets, seed {seed} (CPU)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """The README table of a qmc result."""
    cfg = result["config"]
    head = ["model", "method", "seed", "lr", "steps", "E (Ha) ± stderr", "err (mHa)", "steps to 1.6 mHa",
            "stays within from", "wall to 1.6 mHa (s)", "ms / step", "compile s", "NetKet / fepy step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["qmc_rows"]:
        if not r.get("ok"):
            lines.append(f"| {r['model']} | {r['method']} | {r.get('seed', cfg['seed'])} | {r.get('learning_rate', '–')} | "
                         f"{r['steps']} | failed: {r.get('error', '')[:120]} |" + " |" * (len(head) - 6))
            continue
        first = r["steps_to_chem_acc"]
        cells = [
            r["model"], r["method"], str(r.get("seed", cfg["seed"])), f"{r['learning_rate']:g}", str(r["steps"]),
            f"{r['energy']:.5f} ± {r['energy_stderr']:.5f}", f"{r['err_mha']:+.2f}",
            "not reached" if first is None else str(first),
            "–" if r["steps_to_stay_in_chem_acc"] is None else str(r["steps_to_stay_in_chem_acc"]),
            "–" if first is None else f"{r['wall_to_chem_acc_s']:.1f}",
            f"{r['per_step_ms']:.1f}", _f(r["compile_s"], "{:.1f}"),
            _f(r.get("per_step_ratio_vs_fepy"), "{:.2g}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    title = (
        f"### `{result['name']}`: {cfg['walkers']} walkers, FermiNet hidden {cfg['hidden']}x2, "
        f"{cfg['determinants']} determinants, {cfg['mcmc_steps']} random-walk moves/step, "
        f"energy = mean of the last {cfg['window']} steps (blocking stderr)"
    )
    means = result.get("seed_means") or []
    if means:
        lines += ["", "Over seeds (" + ", ".join(sorted({m["model"] for m in means})) + "):", "",
                  "| model | method | seeds | mean err ± sd (mHa) | steps to 1.6 mHa | stays within from |",
                  "|---|---|---|---|---|---|"]
        for m in means:
            err = "–" if m["mean_err_mha"] is None else f"{m['mean_err_mha']:+.2f} ± {_f(m['sd_err_mha'], '{:.2f}')}"
            fmt = lambda xs: ", ".join("–" if x is None else str(x) for x in xs)  # noqa: E731
            lines.append(f"| {m['model']} | {m['method']} | {len(m['seeds'])} ({m['failed']} failed) | {err} | "
                         f"{fmt(m['steps_to_chem_acc'])} | {fmt(m['steps_to_stay_in_chem_acc'])} |")
    env = result["environment"]
    nk = next((r["netket"] for r in result["qmc_rows"] if r.get("netket")), None)
    nk_line = (f" NetKet side: netket {nk['versions']['netket']}, jax {nk['versions']['jax']}, "
               f"{nk['dtype']}, {nk['n_params']} parameters ({nk['ansatz']})." if nk else "")
    return "\n".join([title, "", environment_line(env, result.get("load_average_1min_start")) + nk_line,
                      "", *lines, "", "![|E - E_exact| vs step](results/qmc_convergence.png)"])
