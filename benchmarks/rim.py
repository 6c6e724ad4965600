"""The ``rim`` entry: a Recurrent Inference Machine against MAP at equal wall time on held-out lenses.

``python -m benchmarks rim`` trains the RIM of ``models/rim_lens.py`` (its functions
``train`` and ``compare``, with ``CONFIG`` below: a longer training and more held-out lenses
than the model file's defaults), then reconstructs ``heldout`` simulated lenses that training
never saw with the RIM and with the two MAP baselines, each MAP stopped at the RIM's wall
time on the same batch (all lenses under ``jax.vmap``, float64, the least of 3 timed calls
after compilation). Writes ``results/rim.json``; see benchmarks/README.md ("The rim entry").
"""

import math
import time

import jax
import numpy as np

CONFIG = dict(train_steps=2000, heldout=32, calibration=8, joint_long_steps=1000, inversion_long_steps=50,
              progress=False)
QUICK = dict(train_steps=20, heldout=4, calibration=2, joint_long_steps=20, inversion_long_steps=2, progress=False)

ROWS = (
    ("initial", "blank source (x_0)"),
    ("rim", "RIM"),
    ("joint", "MAP joint, equal time"),
    ("inversion", "MAP inversion, equal time"),
    ("joint_long", "MAP joint, long"),
    ("inversion_long", "MAP inversion, long"),
    ("true_lens_inversion", "inversion at the true lens"),
)


def _mean_se(values):
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")


def run(*, quick: bool = False, log=print) -> dict:
    jax.config.update("jax_enable_x64", True)
    from benchmarks._common import load_model
    from fepy.apps import lensing

    model = load_model("rim_lens")
    c = {**model.DEFAULTS, **(QUICK if quick else CONFIG)}
    log(f"[rim] {c['num_pix']}x{c['num_pix']} image, {c['source_pix']}x{c['source_pix']} source, T = "
        f"{c['rim_steps']}, {c['train_steps']} training steps x {c['batch']} lenses, {c['heldout']} held-out lenses, "
        f"on {jax.devices()[0]}")
    t0 = time.perf_counter()
    calibration = model.lenses(c, "calibration", c["calibration"])
    strength, per_lens = lensing.evidence_strength(model.likelihood(c), calibration, model.STRENGTHS)
    log(f"  regularisation strength {strength:.3g} (evidence-optimal on {c['calibration']} calibration lenses)")
    rim, history, train_s = model.train(c, log)
    heldout = model.lenses(c, "heldout", c["heldout"])
    r = model.compare(rim, c, heldout, strength, log)
    rows = []
    rim_mse = r["rim"]["mse"]
    for key, label in ROWS:
        row = r[key]
        mse, se = _mean_se(row["mse"])
        diff, diff_se = _mean_se(row["mse"] - rim_mse)
        rows.append(dict(
            method=key, label=label, steps=row.get("steps"), wall_s=row.get("wall_s"),
            learning_rate=row.get("learning_rate"), mse=mse, mse_se=se,
            mse_minus_rim=diff, mse_minus_rim_se=diff_se,
            rim_better_fraction=float(np.mean(rim_mse < row["mse"])),
            lens_rms=_mean_se(row["lens_rms"])[0] if "lens_rms" in row else None,
            per_lens_mse=row["mse"].tolist(),
        ))
        log(f"  {label}: source MSE {mse:.3g} +- {se:.2g}")
    trajectory = np.asarray(r["rim"]["trajectory"].source)
    per_iteration = np.mean((trajectory - np.asarray(heldout.source)[:, None]) ** 2, axis=(0, 2, 3))
    return dict(
        kind="rim", config=c, strength=strength, calibration_strengths=per_lens.tolist(), train_s=train_s,
        history=dict(steps=history.steps.tolist(), train_loss=history.train_loss.tolist(),
                     heldout_loss=history.heldout_loss.tolist()),
        rim_mse_per_iteration=per_iteration.tolist(), comparison=rows,
        map_timing={k: dict(per_step_s=r[k]["per_step_s"], fixed_s=r[k]["fixed_s"]) for k in ("joint", "inversion")},
        compare_s=time.perf_counter() - t0 - train_s,
    )


def _f(x, fmt):
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def table(result: dict) -> str:
    c, env = result["config"], result["environment"]
    h = result["history"]
    lines = [
        f"### `rim`: RIM vs MAP at equal wall time, {c['heldout']} held-out simulated lenses "
        f"({c['num_pix']}x{c['num_pix']} image, {c['source_pix']}x{c['source_pix']} source, T = {c['rim_steps']})",
        "",
        f"{env['device']} ({env['platform']}, {env['cpu']}, {env['cpu_count']} cores, load "
        f"{result.get('load_average_1min_start', float('nan')):.1f} at start, {env['load_average_1min']:.1f} at end), "
        f"float64, jax {env['versions']['jax']}, {result['total_wall_s']:.0f} s in all. RIM trained for "
        f"{c['train_steps']} steps x {c['batch']} lenses in {result['train_s']:.0f} s (held-out loss "
        f"{h['heldout_loss'][0]:.4g} -> {h['heldout_loss'][-1]:.4g}); MAP regularisation strength "
        f"{result['strength']:.3g}. Source MSE per pixel in units of source_scale² "
        f"({c['source_scale']:g} flux/arcsec²)², mean ± standard error over the held-out lenses; "
        "wall time for the whole batch.",
        "",
        "| method | steps | wall (ms) | source MSE | MSE − RIM's (paired) | RIM better on | lens rms (u) | Adam lr |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["comparison"]:
        wall = _f(row["wall_s"] * 1e3 if row["wall_s"] is not None else None, "{:.0f}")
        paired = "–" if row["method"] == "rim" else f"{row['mse_minus_rim']:+.2e} ± {row['mse_minus_rim_se']:.1e}"
        better = "–" if row["method"] == "rim" else f"{row['rim_better_fraction']:.0%}"
        lines.append(
            f"| {row['label']} | {_f(row['steps'], '{}')} | {wall} | {row['mse']:.2e} ± {row['mse_se']:.1e} | "
            f"{paired} | {better} | {_f(row['lens_rms'], '{:.3f}')} | {_f(row['learning_rate'], '{:g}')} |"
        )
    per_t = ", ".join(f"{v:.2e}" for v in result["rim_mse_per_iteration"])
    timing = result["map_timing"]
    lines += [
        "",
        f"RIM source MSE after each iteration t = 1..{c['rim_steps']}: {per_t}. MAP cost for the batch: joint "
        f"{timing['joint']['per_step_s'] * 1e3:.2f} ms/step + {timing['joint']['fixed_s'] * 1e3:.1f} ms, inversion "
        f"{timing['inversion']['per_step_s'] * 1e3:.0f} ms/step + {timing['inversion']['fixed_s'] * 1e3:.0f} ms.",
    ]
    return "\n".join(lines)
