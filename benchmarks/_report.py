"""Markdown tables of ``benchmarks/results/*.json``, spliced into ``benchmarks/README.md``."""

import importlib
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN = "<!-- BEGIN GENERATED RESULTS (python -m benchmarks --readme-only) -->"
END = "<!-- END GENERATED RESULTS -->"


def _f(x, fmt="{:.3g}"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return fmt.format(x)


def _evals(x):
    if not x:
        return "0"
    return f"{x / 1e6:.3g} M" if x >= 1e6 else f"{x / 1e3:.3g} k"


def environment_line(env: dict, load_start=None) -> str:
    v = env["versions"]
    dirty = " (fepy/models had uncommitted changes)" if env.get("git_dirty_core") else ""
    commit = (env.get("git_commit") or "unknown")[:10]
    return (
        f"Device: **{env['platform']} / {env['device']}** ({env['device_count']} device(s)); "
        f"CPU: {env['cpu']}, {env['cpu_count']} cores; "
        f"{'float64' if env['x64'] else 'float32'}; "
        f"jax {v['jax']}, fepy {v['fepy']}, blackjax {v['blackjax']}, python {v['python']}; "
        f"{env['date']}; commit {commit}{dirty}{_load(env, load_start)}."
    )


def _move(cfg: dict) -> str:
    move = cfg.get("move", "MALA")
    return f"{move} (L={cfg['leapfrog_steps']})" if cfg.get("leapfrog_steps") else move


def _load(env: dict, start=None) -> str:
    loads = [x for x in (start, env.get("load_average_1min")) if x is not None]
    if not loads or max(loads) <= env["cpu_count"]:
        return ""
    return (f"; **1-min CPU load average up to {max(loads):.1f} on {env['cpu_count']} cores "
            f"(other processes running): timings are contended**")


def table(result: dict) -> str:
    rows = result["rows"]
    has_modes = any("modes_mean" in r for r in rows)
    cfg = result["config"]
    head = [
        "particles", "method", "mean abs log Z err ± sd", "mean err", "fepy stderr",
        "wall s ± sd", "compile s", "energy+grad evals", "value-only evals",
        "abs err / BJ", "wall / BJ",
    ]
    if has_modes:
        head.append("modes (mean / min)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            str(r["particles"]),
            r["method"],
            f"{_f(r['abs_err_mean'])} ± {_f(r['abs_err_sd'], '{:.2g}')}",
            _f(r["err_mean"], "{:+.3g}"),
            _f(r["reported_stderr_mean"]),
            f"{_f(r['wall_mean_s'], '{:.2f}')} ± {_f(r['wall_sd_s'], '{:.2f}')}",
            _f(r["compile_s"], "{:.1f}"),
            _evals(r["energy_grad_evals"]),
            _evals(r["energy_value_evals"]),
            _f(r["err_ratio_vs_blackjax"], "{:.2g}"),
            _f(r["wall_ratio_vs_blackjax"], "{:.2g}"),
        ]
        if has_modes:
            cells.append(
                f"{_f(r.get('modes_mean'), '{:.3g}')} / {r.get('modes_min', '–')}" if "modes_mean" in r else "–"
            )
        lines.append("| " + " | ".join(cells) + " |")
    title = (
        f"### `{result['name']}`: {cfg.get('steps')} steps, {cfg.get('moves_per_step')} {_move(cfg)} "
        f"move(s) per level, {cfg.get('islands')} islands, reference log Z = {result['reference_log_z']:.6g}, "
        f"seeds {cfg.get('seeds')}"
    )
    return "\n".join([title, "", environment_line(result["environment"], result.get("load_average_1min_start")), "", *lines])


def generated_section(results_dir: Path = RESULTS) -> str:
    parts = []
    for path in sorted(results_dir.glob("*.json")):
        result = json.loads(path.read_text())
        if "rows" in result:
            parts.append(table(result))
        elif "kind" in result:
            parts.append(importlib.import_module(f"benchmarks.{result['kind']}").table(result))
    if not parts:
        return "_No results yet: run `python -m benchmarks`._"
    return "\n\n".join(parts)


def update_readme(readme: Path = README, results_dir: Path = RESULTS) -> None:
    text = readme.read_text() if readme.exists() else f"# fepy benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{generated_section(results_dir)}\n{END}{tail}")
