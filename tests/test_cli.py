"""``fepy run`` end to end, in subprocesses: the files a run writes, resuming, and wrong input."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
TINY = ["--set", "particles=256", "--steps", "20", "--checkpoint-every", "10", "--no-progress"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
FEPY = [sys.executable, "-c", "import sys; from fepy.cli import main; sys.exit(main())"]


def fepy(*args, cwd=REPO, hash_seed: int = 1, timeout=180) -> subprocess.CompletedProcess:
    """Run ``fepy ARGS``. ``hash_seed`` fixes PYTHONHASHSEED: a resumed run gets another one
    than the run it resumes (numpyro's pytree leaf order depends on it)."""
    env = {**ENV, "PYTHONHASHSEED": str(hash_seed)}
    return subprocess.run(
        [*FEPY, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


def trace_rows(directory: Path) -> list[dict]:
    with open(directory / "trace.csv", newline="") as f:
        return list(csv.DictReader(f))


# A 3-D Gaussian whose DEFAULTS have no 'steps': its schedule (lambda = 1 at step 15) does not
# depend on the number of steps run, so `--steps` only says where the run stops, and a run
# stopped at step 10 is exactly the first 10 steps of a 20-step run.
GAUSS3 = '''
import jax, jax.numpy as jnp, numpyro.distributions as dist
import fepy

DEFAULTS = dict(seed=0, particles=256)
REFERENCE = dict(log_z=1.5 * float(jnp.log(2 * jnp.pi)))

class Gauss(fepy.Energy):
    beta: float = 1.0
    dim: int = 3
    def energy(self, x):
        return 0.5 * jnp.sum((x - 1.0) ** 2)

def build(config):
    c = {**DEFAULTS, **config}
    base = dist.Normal(jnp.zeros(DIM), 2.0).to_event(1)
    family = fepy.Particles.from_base(base, c["particles"], key=jax.random.key(c["seed"]))
    solver = fepy.WassersteinFisherRao(schedule=fepy.Power(15), move=fepy.MALA(0.3), islands=8)
    return fepy.Problem(Gauss(), family, solver, 20)

ANALYZED = []

def analyze(target, family, config):
    ANALYZED.append(1)
    return dict(mean=float(jnp.mean(family.positions)), calls=len(ANALYZED))

def observables(target, family, analysis):
    return dict(analysis_mean=analysis["mean"], analysis_calls=analysis["calls"])

def plots(target, family, out, config, analysis):
    import json
    (out / "analysis.json").write_text(json.dumps(dict(analysis, calls_at_plots=len(ANALYZED))))
    return ["analysis.json"]
'''


def write_model(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


INTERRUPT = """
import json, sys, jax
jax.config.update("jax_enable_x64", True)
import fepy
from fepy.cli import load_model, minimize_key
run = sys.argv[1]
saved = json.load(open(run + "/config.json"))
problem = load_model(sys.argv[2]).build(saved["config"])
assert problem.steps == 20
fepy.minimize(problem.target, problem.family, problem.solver, steps=10,
              key=minimize_key(saved["seed"]), callbacks=[fepy.Checkpoint(run + "/checkpoint", every=10)])
"""


def interrupted_run(run: Path, like: Path, model: Path) -> subprocess.CompletedProcess:
    """The state a `fepy run` launched like ``like`` leaves when killed after its step-10 checkpoint."""
    run.mkdir()
    (run / "config.json").write_text((like / "config.json").read_text())
    env = {**ENV, "PYTHONHASHSEED": "1"}
    return subprocess.run(
        [sys.executable, "-c", INTERRUPT, str(run), str(model)], env=env, capture_output=True,
        text=True, timeout=180,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every successful CLI run of this file, done once, as many at a time as there are cores
    (jit compilation dominates these tiny runs). Maps name -> (directory, [results])."""
    tmp = tmp_path_factory.mktemp("runs")
    gauss3 = write_model(tmp, "gauss3", GAUSS3.replace("DIM", "3"))
    dw, gmm = MODELS / "double_well.py", MODELS / "gmm40.py"
    quiet = "--no-progress"

    def double_well_then_interrupted():
        out, run = tmp / "double_well", tmp / "interrupted"
        first = fepy("run", dw, *TINY, "--out", out)
        if first.returncode:
            return {"double_well": (out, [first])}
        interrupt = interrupted_run(run, out, dw)
        resumed = [interrupt] + ([fepy("run", dw, "--resume", run, quiet, hash_seed=6)]
                                 if interrupt.returncode == 0 else [])
        return {"double_well": (out, [first]), "interrupted": (run, resumed)}

    def gmm40():
        out = tmp / "gmm40"
        return {"gmm40": (out, [fepy("run", gmm, *TINY, "--out", out)])}

    def stopped_then_resumed():
        out = tmp / "stopped"
        first = fepy("run", gauss3, "--steps", "10", quiet, "--out", out)
        step = json.loads((out / "checkpoint" / "checkpoint.json").read_text())["step"]
        assert first.returncode or step == 10
        if first.returncode:
            return {"stopped": (out, [first])}
        second = fepy("run", gauss3, "--resume", out, "--steps", "20", quiet, hash_seed=6)
        return {"stopped": (out, [first, second])}

    def fresh():
        out = tmp / "fresh"
        return {"fresh": (out, [fepy("run", gauss3, "--steps", "20", quiet, "--out", out)])}

    jobs = [double_well_then_interrupted, stopped_then_resumed, gmm40, fresh]
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        results = {}
        for done in pool.map(lambda job: job(), jobs):
            results.update(done)
    return results


def finished(runs, name: str) -> Path:
    directory, results = runs[name]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return directory


def test_analyze_runs_once_and_reaches_both_hooks(runs):
    """A model's ``analyze`` result is computed once and handed to ``observables`` and ``plots``."""
    out = finished(runs, "fresh")
    s = summary(out)
    written = json.loads((out / "analysis.json").read_text())
    assert s["analysis_calls"] == 1 and written["calls_at_plots"] == 1
    assert written["mean"] == s["analysis_mean"]


@pytest.mark.parametrize("model", ["double_well", "gmm40"])
def test_run_writes_summary_trace_and_plots(model, runs):
    out = finished(runs, model)
    s = summary(out)
    assert s["model"] == model and s["steps"] == 20 and s["seed"] == 0
    assert s["config"]["particles"] == 256 and s["config"]["steps"] == 20
    assert isinstance(s["log_z"], float) and isinstance(s["log_z_stderr"], float)
    assert "log_z" in s["reference"] and s["device"]["platform"] == "cpu"
    assert set(s["versions"]) == {"jax", "equinox", "fepy"} and s["wall_time_s"] > 0
    if model == "gmm40":
        assert isinstance(s["modes"], int) and s["reference"]["modes"] == 40
    rows = trace_rows(out)
    assert len(rows) == 20 and list(rows[0])[0] == "step" and "log_z" in rows[0]
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    for png in ("free_energy.png", "samples.png"):
        assert (out / png).stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["config"] == s["config"]
    assert (out / "checkpoint" / "checkpoint.json").is_file()


def test_resume_extends_a_stopped_run_exactly(runs):
    """A run stopped at step 10 and resumed to step 20 equals an uninterrupted 20-step run.

    Honest interruption, all through the CLI: the model's DEFAULTS have no 'steps' and its
    schedule does not depend on the number of steps, so ``--steps 10`` stops the run
    mid-anneal (checkpoint at step 10) without changing the problem, and ``--resume DIR
    --steps 20`` continues it (in a process with another PYTHONHASHSEED). Every figure and
    every trace row must match the fresh run.
    """
    stopped, fresh = finished(runs, "stopped"), finished(runs, "fresh")
    a, b = summary(stopped), summary(fresh)
    assert a["steps"] == b["steps"] == 20
    assert abs(a["log_z"] - b["log_z"]) <= 1e-12 and abs(a["log_z"] - a["reference"]["log_z"]) < 0.5
    for name in ("log_z_stderr", "free_energy", "energy", "ess", "energy_evals"):
        assert a[name] == pytest.approx(b[name], rel=1e-12, abs=1e-12), name
    assert trace_rows(stopped) == trace_rows(fresh)
    assert (stopped / "marginals.png").stat().st_size > 1000  # 3-D: histograms, no samples.png
    assert not (stopped / "samples.png").exists()


def test_resume_of_an_interrupted_run_reproduces_the_uninterrupted_one(runs):
    """An interrupted 20-step double_well run, resumed, ends where the uninterrupted run ended.

    double_well builds its schedule from config 'steps', so the interrupted run must have been
    launched with --steps 20. Killing a process at the right moment is racy, so the state
    it would leave is made directly: the same config.json as the CLI writes, and
    `fepy.minimize` of the same problem with the same key (`fepy.cli.minimize_key`) stopped
    after 10 of its 20 steps, checkpointed where the CLI checkpoints. Then `fepy run --resume`
    (without --steps: it comes from config.json) must finish it.
    """
    run, reference = finished(runs, "interrupted"), finished(runs, "double_well")
    a, b = summary(run), summary(reference)
    assert a["steps"] == 20 and a["config"] == b["config"]
    assert abs(a["log_z"] - b["log_z"]) <= 1e-12
    assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
    assert trace_rows(run) == trace_rows(reference)


NO_BUILD = "DEFAULTS = dict(seed=0)\n"
MISMATCH = GAUSS3.replace("DIM", "2")  # particles in 2-D, target in 3-D


BAD_INPUTS = [
    "missing file", "no build", "unknown key", "bad value", "bad float value", "nan temperature",
    "negative temperature", "zero temperature", "shape mismatch", "resume without run",
    "resume with other --set", "resume with other --steps", "resume with other --seed",
    "nan energy",
]
NAN_ENERGY = GAUSS3.replace("DIM", "3").replace(
    "return 0.5 * jnp.sum((x - 1.0) ** 2)", "return jnp.where(x[0] > -1e9, jnp.nan, 0.0)"
)
assert "jnp.nan" in NAN_ENERGY


def _bad_inputs(tmp: Path, run: Path) -> dict:
    """name: (arguments, text the error line must contain); ``run`` is a finished run."""
    dw = MODELS / "double_well.py"
    return {
        "missing file": (["run", tmp / "no_such_model.py"], "not found"),
        "no build": (["run", write_model(tmp, "no_build", NO_BUILD)], "build"),
        "unknown key": (["run", dw, "--set", "nope=1"], "unknown --set key 'nope'"),
        "bad value": (["run", dw, "--set", "particles=many"], "particles=many"),
        "bad float value": (["run", dw, "--set", "barrier=high"], "barrier=high"),
        "nan temperature": (["run", dw, "--set", "temperature=nan"], "temperature"),
        "negative temperature": (["run", dw, "--set", "temperature=-1"], "temperature"),
        "zero temperature": (["run", dw, "--set", "temperature=0"], "temperature"),
        "shape mismatch": (
            ["run", write_model(tmp, "mismatch", MISMATCH)], "target dim 3 does not match particles dim 2"
        ),
        "resume without run": (["run", dw, "--resume", tmp / "nothing_here"], "cannot resume"),
        "resume with other --set": (
            ["run", dw, "--resume", run, "--set", "particles=512"], "conflicts with the resumed run"
        ),
        "resume with other --steps": (["run", dw, "--resume", run, "--steps", "40"], "conflicts"),
        "resume with other --seed": (["run", dw, "--resume", run, "--seed", "1"], "conflicts"),
        # not wrong input but a run that breaks down: exit status 3, the step named
        "nan energy": (
            ["run", write_model(tmp, "nan_energy", NAN_ENERGY), "--no-progress"],
            "the run broke down at step 1: energy is nan",
        ),
    }


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory, runs):
    """All the bad-input runs, started at once (each fails before any step)."""
    tmp = tmp_path_factory.mktemp("bad")
    cases = _bad_inputs(tmp, finished(runs, "double_well"))
    assert list(cases) == BAD_INPUTS
    out = lambda name: [] if "--resume" in cases[name][0] else ["--out", tmp / "out" / name]  # noqa: E731
    procs = {
        name: subprocess.Popen(
            [*FEPY, *map(str, cases[name][0] + out(name))],
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in cases
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[name] = (proc.returncode, stdout, stderr, cases[name][1])
    return results


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case, bad_input_results):
    code, stdout, stderr, expected = bad_input_results[case]
    assert code == (3 if case == "nan energy" else 2), stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fepy: error: "), stderr
    assert expected in lines[0]


def test_bench_without_benchmarks_package_is_a_clear_error(tmp_path):
    result = fepy("bench", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("fepy: error: no benchmarks package")
