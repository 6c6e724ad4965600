"""The ``tps`` entry: alanine dipeptide C7eq -> C7ax at 300 K, both `fepy.PathKL` objectives.

``python -m benchmarks tps`` trains `models/alanine_dipeptide_tps.py` once per objective
(``relative_entropy`` = PIPS, ``log_variance`` = TPS-DPS style) and seed with the model's
defaults except ``steps``, in float64, then samples ``eval_paths`` fresh paths from each trained
control and records the field's metrics (`fepy.apps.tps.metrics`): RMSD (Å), THP (%), ETS
(kJ/mol), EPD (nm²), the reference log-likelihood, the training energy evaluations and the
training wall time (including compilation) on the device the run had. One command and a seed
reproduce a row: ``fepy run models/alanine_dipeptide_tps.py --set objective=... --seed S --steps N``
(the CLI draws the same training key from the seed as `fepy.cli.minimize_key`).

The published rows are in ``PUBLISHED`` with their sources; a figure that could not be found
from here is None and printed "not found".
"""

import json
import time
from pathlib import Path

import jax
import numpy as np

from ._common import load_model

RUNS = Path(__file__).resolve().parent / "results" / "tps_runs"  # one finished (objective, seed) row per file

CONFIG = dict(seeds=[0, 1], objectives=["relative_entropy", "log_variance"], eval_paths=64)  # model's training defaults
QUICK = dict(steps=2, seeds=[0], objectives=["relative_entropy", "log_variance"], eval_paths=4, path_steps=50,
             trajectories=4, hidden=16)

# Published figures on this system: None where the number could not be found from here.
# The primary tables (PIPS, Holdijk et al., NeurIPS 2023, arXiv:2207.02149, Table 1; TPS-DPS, Seong et al.,
# ICLR 2025, arXiv:2405.19961, Table 1; Doob's Lagrangian, Du et al., NeurIPS 2024, arXiv:2410.07974,
# Table 2) could not be read from here. What could: Blessing et al., "Trust Region Constrained Measure
# Transport in Path Space" (arXiv:2508.12511), Table 1, alanine-dipeptide block, which reprints TPS-DPS's
# Table 1 rows for UMD, SMD and PIPS (marked "taken from [TPS-DPS]"; PIPS there is TPS-DPS's run of PIPS)
# and adds its own 3-seed re-run of TPS-DPS and its TR-LV. Setup there (and in the TPS-DPS code): C5 (the
# same structure as our C7eq) -> C7ax, both energy-minimised, amber99sb-ildn in vacuum, HBonds
# constraints, VVVR at 300 K, friction 1/ps, 1 fs, 1000 steps, 64 evaluation paths, hit within 0.75 rad.
_BLESSING = "Blessing et al. 2025, Table 1"
PUBLISHED = [
    dict(method=f"UMD 3600 K (TPS-DPS Table 1, via {_BLESSING})", rmsd=1.19, rmsd_std=0.32, thp=6.25, ets=812.47,
         ets_std=148.80, epd=None, log_likelihood=None, energy_evals=None),
    dict(method=f"SMD (TPS-DPS Table 1, via {_BLESSING})", rmsd=0.56, rmsd_std=0.27, thp=54.69, ets=78.40,
         ets_std=12.76, epd=None, log_likelihood=None, energy_evals=None),
    dict(method=f"PIPS, run by TPS-DPS (TPS-DPS Table 1, via {_BLESSING})", rmsd=0.66, rmsd_std=0.15, thp=43.75,
         ets=28.17, ets_std=10.86, epd=None, log_likelihood=None, energy_evals=None),
    dict(method=f"TPS-DPS, 3-seed re-run ({_BLESSING})", rmsd=0.47, rmsd_std=0.18, thp=39.58, ets=46.34,
         ets_std=10.16, epd=None, log_likelihood=None, energy_evals=None),
    dict(method=f"TR-LV ({_BLESSING})", rmsd=0.29, rmsd_std=0.03, thp=61.25, ets=49.11, ets_std=5.84, epd=None,
         log_likelihood=None, energy_evals=None),
    dict(method="PIPS (Holdijk et al. 2023, own Table 1)", rmsd=None, thp=None, ets=None, epd=None, log_likelihood=None,
         energy_evals=16 * 5000 * 10000),  # from the released script: 16 paths x 5000 steps x 10000 rollouts
    dict(method="TPS-DPS (Seong et al. 2025, own Table 1)", rmsd=None, thp=None, ets=None, epd=None, log_likelihood=None,
         energy_evals=16 * 1000 * 1000),  # from the released train.py: 16 paths x 1000 steps x 1000 rollouts
    dict(method="Doob's Lagrangian (Du et al. 2024, Table 2)", rmsd=None, thp=None, ets=None, epd=None,
         log_likelihood=None, energy_evals=None),
]


def run(*, quick: bool = False, log=print) -> dict:
    jax.config.update("jax_enable_x64", True)
    import fepy
    from fepy.apps.tps.metrics import transition_metrics
    from fepy.apps.tps.molecular import dihedral
    from fepy.cli import minimize_key

    cfg = QUICK if quick else CONFIG
    model = load_model("alanine_dipeptide_tps")
    overrides = {k: v for k, v in cfg.items() if k not in ("seeds", "objectives")}
    runs = []
    for seed in cfg["seeds"]:
        for objective in cfg["objectives"]:
            config = dict(overrides, objective=objective, seed=seed)
            done = RUNS / f"{objective}_seed{seed}.json"
            if not quick and done.exists():
                row = json.loads(done.read_text())
                if row.get("config") == dict(model.DEFAULTS, **config):
                    log(f"  {objective} seed {seed}: reusing the finished run in {done}")
                    runs.append(row)
                    continue
            problem = model.build(config)
            t0 = time.perf_counter()
            sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                                key=minimize_key(seed))
            jax.block_until_ready(sol.family)
            wall = time.perf_counter() - t0
            t1 = time.perf_counter()
            paths = model.evaluation_paths(problem.target, sol.family, config)
            ad, heavy = model.system(dict(model.DEFAULTS, **config)["minimize_ends"])
            metrics = transition_metrics(problem.target, paths, ad.c7ax, ad.phi, ad.psi, heavy)
            eval_wall = time.perf_counter() - t1
            atoms = np.stack([np.asarray(ad.phi), np.asarray(ad.psi)])
            every = max(paths.positions.shape[1] // 100, 1)
            angles = jax.vmap(jax.vmap(lambda x: dihedral(x.reshape(-1, 3), atoms)))(paths.positions[:, ::every])
            trace = {k: np.asarray(v).tolist() for k, v in sol.trace.items()
                     if k in ("free_energy", "control_cost", "terminal_cost", "hit_fraction", "loss")}
            row = dict(objective=objective, seed=seed, config=dict(model.DEFAULTS, **config),
                       train_wall_s=wall, eval_wall_s=eval_wall,
                       energy_evals=int(sol.summary["energy_evals"]), **metrics,
                       final_free_energy=float(sol.summary["free_energy"]),
                       angles_deg=np.round(np.degrees(np.asarray(angles)), 1).tolist(),
                       hit=np.asarray(problem.target.hits(paths)).tolist(), trace=trace)
            log(f"  {objective} seed {seed}: THP {row['thp']:.0f}% ETS {row['ets']:.1f} kJ/mol "
                f"RMSD {row['rmsd']:.2f} Å, {row['energy_evals']:.3g} evals, {wall:.0f} s")
            runs.append(row)
            if not quick:
                RUNS.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(row) + "\n")
    model_defaults = {k: v for k, v in model.DEFAULTS.items()}
    return dict(kind="tps", config=dict(cfg, model=dict(model_defaults, **overrides)), runs=runs,
                published=PUBLISHED, device=str(jax.devices()[0]), dtype="float64")


def _num(x, fmt):
    return "not found" if x is None else ("–" if isinstance(x, float) and np.isnan(x) else fmt.format(x))


def table(result: dict) -> str:
    from ._report import environment_line

    cfg = result["config"]
    m = cfg["model"]
    head = ["method", "THP (%) ↑", "ETS (kJ/mol) ↓", "RMSD (Å) ↓", "EPD (nm²) ↓", "log-likelihood",
            "energy evals (training)", "train wall (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["runs"]:
        lines.append(
            f"| fepy {r['objective']} (seed {r['seed']}) | {r['thp']:.1f} ({r['hits']}/{r['paths']}) | "
            f"{_num(r['ets'], '{:.1f}')} ± {_num(r['ets_std'], '{:.1f}')} | {r['rmsd']:.2f} ± {r['rmsd_std']:.2f} | "
            f"{r['epd']:.2e} | {r['log_likelihood']:.4g} | {r['energy_evals']:.3g} | {r['train_wall_s']:.0f} |")
    for p in result["published"]:
        pm = lambda key, fmt: _num(p[key], fmt) + (f" ± {p[key + '_std']:{fmt[2:-1]}}" if key + "_std" in p else "")
        lines.append(f"| {p['method']} | {_num(p['thp'], '{:.1f}')} | {pm('ets', '{:.1f}')} | "
                     f"{pm('rmsd', '{:.2f}')} | {_num(p['epd'], '{:.2e}')} | {_num(p['log_likelihood'], '{:.4g}')} | "
                     f"{_num(p['energy_evals'], '{:.3g}')} | – |")
    title = (f"### `{result['name']}`: alanine dipeptide C7eq → C7ax, 300 K, {m['path_steps']} × {m['dt'] * 1000:g} fs, "
             f"{m['trajectories']} paths/step, {m['steps']} training steps, {m['eval_paths']} evaluation paths, "
             f"{'energy-minimised' if m.get('minimize_ends', True) else 'packaged (unminimised)'} end structures "
             f"({result['device']}, {result['dtype']})")
    return "\n".join([title, "", environment_line(result["environment"], result.get("load_average_1min_start")),
                      "", *lines])


def plot(result: dict, path: Path) -> None:
    """The evaluation paths of each objective over the adiabatic (phi, psi) map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model("alanine_dipeptide_tps")
    grid, energy = model.ramachandran_map()
    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.6), squeeze=False)
    for ax, r in zip(axes[0], runs):
        mesh = ax.contourf(grid, grid, energy.T, levels=np.linspace(0, 100, 21), cmap="viridis", extend="max")
        for a, hit in zip(np.asarray(r["angles_deg"]), r["hit"]):
            a = a.copy()
            a[1:][np.any(np.abs(np.diff(a, axis=0)) > 180, axis=1)] = np.nan
            ax.plot(a[:, 0], a[:, 1], color="white" if hit else "red", lw=0.6, alpha=0.7)
        ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="phi (deg)", ylabel="psi (deg)",
               title=f"{r['objective']}: THP {r['thp']:.0f}%, ETS {r['ets']:.1f} kJ/mol")
    fig.colorbar(mesh, ax=axes[0].tolist(), label="adiabatic U(phi, psi) - min (kJ/mol)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
