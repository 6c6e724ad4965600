"""The ``fepy`` command: ``fepy run models/<name>.py`` and ``fepy bench``.

``fepy run`` loads a model file (``DEFAULTS``, ``build(config) -> fepy.Problem``, optional
``REFERENCE``, ``reference(config)``, ``analyze(target, family, config)``,
``observables(target, family[, config][, analysis])`` and
``plots(target, family, out, config[, analysis]) -> list of written file names``), runs
`fepy.minimize` with a progress bar and checkpoints, and writes ``config.json``,
``summary.json``, ``trace.csv`` and PNG plots to ``--out`` (default ``runs/<name>``).
``analyze`` is for work that both hooks need (fresh paths, a reconstruction): it runs once
on the trained family and its result reaches each hook that declares an ``analysis`` parameter.
Wrong input ends with one line ``fepy: error: ...`` on stderr and exit status 2; a run
that breaks down (`fepy.NonFiniteError`) exits with status 3.
"""

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path

USAGE_ERROR, RUN_ERROR = 2, 3
CONFIG_FILE, CHECKPOINT_DIR = "config.json", "checkpoint"


class UsageError(Exception):
    """Wrong input: reported as one line on stderr, exit status 2."""


def _one_line(message) -> str:
    return " ".join(str(message).split())


def _fail(message, code: int = USAGE_ERROR) -> int:
    print(f"fepy: error: {_one_line(message)}", file=sys.stderr)
    return code


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fepy", description="Minimise the variational free energy of a model file."
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,bench}")
    run = sub.add_parser(
        "run",
        help="run a model file and write summary.json, trace.csv and plots",
        description="Run models/<name>.py and write config.json, summary.json, trace.csv, "
        "PNG plots and checkpoints to --out.",
    )
    run.add_argument("model", help="path of the model file, e.g. models/gmm40.py")
    run.add_argument("--steps", type=_positive_int, help="number of steps (config 'steps')")
    run.add_argument("--seed", type=_int, help="random seed (config 'seed')")
    run.add_argument("--out", help="output directory (default runs/<model name>)")
    run.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override a DEFAULTS entry of the model; the value is parsed by the entry's type",
    )
    run.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR from its checkpoint, with its saved config",
    )
    run.add_argument(
        "--checkpoint-every", type=_positive_int, metavar="N",
        help="steps between checkpoints (default steps // 10)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("bench", help="run the benchmarks (python -m benchmarks ARGS)", add_help=False)
    return parser


# ---------------------------------------------------------------------------- model files


def load_model(path):
    """Import a model file by path; it must define ``DEFAULTS`` (a dict) and ``build``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} not found")
    name = f"fepy_model_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import model file {path} (not a .py file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a model file that does not import: say why, without a traceback
        raise UsageError(f"cannot import model file {path}: {type(e).__name__}: {e}") from e
    if not isinstance(getattr(module, "DEFAULTS", None), dict):
        raise UsageError(f"model file {path} has no DEFAULTS dict")
    if not callable(getattr(module, "build", None)):
        raise UsageError(f"model file {path} has no build(config) function")
    return module


def parse_value(key: str, text: str, default):
    """``text`` parsed as the type of the DEFAULTS entry ``default`` (bool, int, float or str)."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"--set {key}={text}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"--set {key}={text}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"--set {key}={text}: expected a number") from None
    if default is None or isinstance(default, str):
        return text
    raise UsageError(f"--set {key}: cannot parse a value for a {type(default).__name__} entry")


def parse_sets(sets: list[str], defaults: dict, model: str) -> dict:
    values = {}
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise UsageError(f"unknown --set key {key!r} for model {model} (known: {known})")
        values[key] = parse_value(key, text, defaults[key])
    return values


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


def minimize_key(seed: int):
    """The key ``fepy run`` passes to `fepy.minimize` for ``seed``.

    ``fold_in(key(seed), 1)``, so that it differs from ``key(seed)``, which model files use
    to draw the initial particles.
    """
    import jax

    return jax.random.fold_in(jax.random.key(seed), 1)


def _reference(model, config: dict) -> dict:
    if callable(getattr(model, "reference", None)):
        return dict(model.reference(config))
    return dict(getattr(model, "REFERENCE", {}) or {})


def _device() -> dict:
    import jax

    d = jax.devices()[0]
    return dict(platform=d.platform, kind=d.device_kind, count=jax.device_count())


def _versions() -> dict:
    import equinox
    import jax

    import fepy

    return dict(jax=jax.__version__, equinox=equinox.__version__, fepy=fepy.__version__)


# ---------------------------------------------------------------------------- fepy run


def _resolve(args, model, name: str):
    """The config, seed, steps and output directory of a fresh or resumed run."""
    defaults = model.DEFAULTS
    sets = parse_sets(args.sets, defaults, name)
    for key, flag in (("steps", args.steps), ("seed", args.seed)):
        if key in sets and flag is not None and not _same(sets[key], flag):
            raise UsageError(f"--{key} {flag} conflicts with --set {key}={sets[key]}")
    if args.resume is not None:
        out = Path(args.resume)
        if args.out is not None and Path(args.out).resolve() != out.resolve():
            raise UsageError("--out and --resume name different directories")
        config_file = out / CONFIG_FILE
        if not config_file.is_file():
            raise UsageError(f"cannot resume: no {CONFIG_FILE} in {out} (not a fepy run directory)")
        try:
            saved = json.loads(config_file.read_text())
            config, seed, steps = dict(saved["config"]), saved["seed"], saved["steps"]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"cannot resume: {config_file} is damaged ({e})") from e
        if saved.get("model") != name:
            raise UsageError(f"cannot resume: {out} is a run of model {saved.get('model')!r}, not {name!r}")
        for key, value in sets.items():
            if not _same(config.get(key), value):
                raise UsageError(
                    f"--set {key}={value} conflicts with the resumed run's {key}={config.get(key)}"
                )
        if args.seed is not None and args.seed != seed:
            raise UsageError(f"--seed {args.seed} conflicts with the resumed run's seed {seed}")
        if args.steps is not None and args.steps != steps:
            if "steps" in defaults:  # the schedule depends on steps: another run, not a continuation
                raise UsageError(
                    f"--steps {args.steps} conflicts with the resumed run's steps={steps} "
                    f"(model {name} builds its schedule from steps)"
                )
            steps = args.steps
        from ._checkpoint import has_checkpoint

        if not has_checkpoint(out / CHECKPOINT_DIR):
            raise UsageError(f"cannot resume: no checkpoint in {out / CHECKPOINT_DIR}")
        return config, seed, steps, out, True
    config = {**defaults, **sets}
    if args.steps is not None and "steps" in defaults:
        config["steps"] = args.steps
    if args.seed is not None and "seed" in defaults:
        config["seed"] = args.seed
    seed = config.get("seed", 0) if args.seed is None else args.seed
    steps = args.steps  # None: the Problem's
    out = Path(args.out) if args.out is not None else Path("runs") / name
    return config, seed, steps, out, False


def _build(model, config: dict, path):
    try:
        problem = model.build(dict(config))
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise UsageError(f"model {path}: {e}") from e
    for attr in ("target", "family", "solver", "steps"):
        if not hasattr(problem, attr):
            raise UsageError(f"model {path}: build(config) must return a fepy.Problem")
    import jax

    try:  # the solver's own checks (dims, islands, ...), traced only: nothing is computed
        jax.eval_shape(lambda: problem.solver.init(problem.target, problem.family, jax.random.key(0)))
    except (ValueError, TypeError) as e:
        raise UsageError(f"model {path}: {e}") from e
    return problem


def _hook_extras(hook, config, analysis) -> dict:
    """The optional keywords a model hook declares: ``config`` (when given) and ``analysis``."""
    parameters = inspect.signature(hook).parameters
    extra = {}
    if config is not None and "config" in parameters:
        extra["config"] = config
    if "analysis" in parameters:
        extra["analysis"] = analysis
    return extra


def _run(args) -> int:
    import fepy

    from ._output import write_json, write_run

    model_path = Path(args.model)
    model = load_model(model_path)
    name = model_path.stem
    config, seed, steps, out, resuming = _resolve(args, model, name)
    problem = _build(model, config, model_path)
    if steps is None:
        steps = problem.steps
    if not isinstance(steps, int) or steps < 0:
        raise UsageError(f"model {model_path}: steps must be a non-negative integer, got {steps!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    every = args.checkpoint_every or max(steps // 10, 1)

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, dict(model=name, model_path=str(model_path), config=config,
                                       seed=seed, steps=steps))

    callbacks = [] if args.no_progress else [fepy.ProgressBar()]
    callbacks.append(fepy.Checkpoint(str(out / CHECKPOINT_DIR), every=every))
    started_at, t0 = time.time(), time.perf_counter()
    try:
        solution = fepy.minimize(
            problem.target, problem.family, problem.solver, steps=steps, key=minimize_key(seed),
            callbacks=callbacks, resume=str(out / CHECKPOINT_DIR) if resuming else None,
        )
    except fepy.NonFiniteError as e:
        meta = out / CHECKPOINT_DIR / "checkpoint.json"
        saved = meta.is_file() and meta.stat().st_mtime >= started_at
        where = f"; the last checkpoint is in {out / CHECKPOINT_DIR}" if saved else ""
        return _fail(f"the run broke down at {e}{where}", RUN_ERROR)
    except KeyboardInterrupt:
        return _fail(f"interrupted; continue with: fepy run {model_path} --resume {out}", 130)
    wall = time.perf_counter() - t0

    analysis = None
    if callable(getattr(model, "analyze", None)):
        analysis = model.analyze(problem.target, solution.family, config)
    observables = {}
    if callable(getattr(model, "observables", None)):
        observables = dict(model.observables(problem.target, solution.family,
                                             **_hook_extras(model.observables, config, analysis)))
    summary = {**solution.summary, **observables}
    summary.update(
        reference=_reference(model, config), config=config, model=name, seed=seed,
        steps=solution.steps, device=_device(), versions=_versions(), wall_time_s=wall,
    )
    written = write_run(out, solution, problem, summary=summary, name=name)
    if callable(getattr(model, "plots", None)):
        extra = _hook_extras(model.plots, None, analysis)
        written += list(model.plots(problem.target, solution.family, out, config, **extra))
    _report(summary, out, written)
    return 0


def _report(summary: dict, out: Path, written: list[str]) -> None:
    reference = summary.get("reference", {})
    lines = []
    for key in ("log_z", "free_energy", "energy", "ess_fraction"):
        value = summary.get(key)
        if not isinstance(value, (int, float)):
            continue
        text = f"{key} = {value:.6g}"
        stderr = summary.get(f"{key}_stderr")
        if isinstance(stderr, float) and math.isfinite(stderr):
            text += f" +- {stderr:.2g}"
        if isinstance(reference.get(key), (int, float)):
            text += f"   (reference {reference[key]:.6g})"
        lines.append(text)
    lines.append(f"{summary['steps']} steps in {summary['wall_time_s']:.1f} s; wrote {out}/: "
                 + ", ".join(written))
    print("\n".join(lines))


# ---------------------------------------------------------------------------- fepy bench


def _bench(argv: list[str]) -> int:
    """``python -m benchmarks ARGS``, from the current directory (the repository root)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec("benchmarks.__main__") is not None
    except ImportError:
        found = False
    if not found:
        return _fail(f"no benchmarks package (benchmarks/__main__.py) in {cwd}; "
                     "run fepy bench from the fepy repository root")
    module = importlib.import_module("benchmarks.__main__")
    if not callable(getattr(module, "main", None)):
        return _fail("benchmarks/__main__.py has no main(argv) function")
    rc = module.main(argv)
    return rc if isinstance(rc, int) else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)  # argparse reports its own errors, with exit status 2
    if args.command != "run":
        parser.print_help(sys.stderr)
        return USAGE_ERROR

    import jax

    jax.config.update("jax_enable_x64", True)  # before the model file makes any array
    try:
        return _run(args)
    except UsageError as e:
        return _fail(e)


if __name__ == "__main__":
    sys.exit(main())
