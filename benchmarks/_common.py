"""Shared machinery of the benchmark entries: environment, model loading, timing, BlackJAX baseline."""

import datetime
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fepy.cli

REPO = Path(__file__).resolve().parent.parent
FEPY_GEOMETRIES = ("wfr", "wasserstein", "fisher_rao")
BLACKJAX_METHOD = "blackjax_tsmc"

_MODELS = {}


def load_model(name: str):
    """Import ``models/<name>.py`` (models/ is not a package), once per process."""
    if name not in _MODELS:
        _MODELS[name] = fepy.cli.load_model(REPO / "models" / f"{name}.py")
    return _MODELS[name]


# ----------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
        return getattr(module, "__version__", None)
    except ImportError:
        return None


def environment() -> dict:
    devices = jax.devices()
    status = _git("status", "--porcelain", "--", "fepy", "models")
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        platform=devices[0].platform,
        device=devices[0].device_kind,
        devices=[str(d) for d in devices],
        device_count=len(devices),
        cpu=_cpu_model(),
        cpu_count=os.cpu_count(),
        x64=bool(jax.config.jax_enable_x64),
        versions=dict(
            python=platform.python_version(),
            jax=jax.__version__,
            jaxlib=_version("jaxlib"),
            fepy=_version("fepy"),
            blackjax=_version("blackjax"),
            numpyro=_version("numpyro"),
            equinox=_version("equinox"),
            numpy=np.__version__,
        ),
        load_average_1min=os.getloadavg()[0],  # > cpu_count: other processes competed for the CPU
        git_commit=_git("rev-parse", "HEAD"),
        # uncommitted changes to fepy/ or models/ at run time (the figures may not match HEAD)
        git_dirty_core=bool(status),
        argv=sys.argv,
    )


# ----------------------------------------------------------------------------- fepy runs


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def run_fepy(model, config: dict, seed: int) -> dict:
    """One ``fepy.minimize`` of the problem built from the model file; the wall time
    covers minimize (init, all chunks, summary) up to ``block_until_ready``."""
    import fepy

    problem = model.build({**config, "seed": seed})
    sol, wall = _timed(
        lambda: fepy.minimize(
            problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(seed)
        )
    )
    s = sol.summary
    record = dict(
        seed=seed,
        log_z=s["log_z"],
        log_z_stderr=s["log_z_stderr"],
        ess_fraction=s.get("ess_fraction", float("nan")),
        energy_grad_evals=int(s["energy_evals"]),
        energy_value_evals=0,
        wall_s=wall,
    )
    trace = sol.trace
    if "resampled" in trace:
        record["resample_rate"] = float(np.mean(trace["resampled"]))
    if problem.solver.move is not None:
        record["move"] = type(problem.solver.move).__name__
    if "acceptance" in trace and problem.solver.moves_per_step > 0:
        record["final_acceptance"] = float(trace["acceptance"][-1])
        record["final_step_size"] = float(trace["step_size"][-1])
    if hasattr(model, "observables"):
        record.update(model.observables(problem.target, sol.family))
    return record


# ----------------------------------------------------------------------------- BlackJAX baseline


def lambda_grid(problem) -> np.ndarray:
    """lambda_1 .. lambda_steps of the problem's (fixed) annealing schedule."""
    import fepy

    schedule = problem.solver.schedule
    if not isinstance(schedule, fepy.AbstractFixedSchedule):
        raise NotImplementedError(
            f"the BlackJAX baseline needs a fixed schedule, got {type(schedule).__name__}"
        )
    k = jnp.arange(1, problem.steps + 1)
    return np.asarray(jax.vmap(schedule)(k))


class BlackJAXTemperedSMC:
    r"""BlackJAX 1.7 tempered SMC on the problem's target and base, with the fepy move's kernel.

    ``blackjax.smc.tempered.build_kernel`` with ``logprior = base.log_prob`` and
    ``loglikelihood = target.log_density - base.log_prob``, so it anneals
    :math:`q_0^{1-\lambda} p^\lambda`, the path of the fepy solvers, on the same
    :math:`\lambda_k` grid, with the same number of MCMC steps per level, the same
    kernel (``blackjax.mala`` for `fepy.MALA`; ``blackjax.hmc`` with unit mass and the
    same number of leapfrog steps for `fepy.HMC`), the same initial step size and (if
    the fepy move adapts) the same step-size rule :math:`h \leftarrow h\,e^{(\bar a - a^*)/2}`,
    driven by the mean acceptance of the level. Systematic resampling at every level
    (BlackJAX's tempered SMC has no ESS trigger). log Z is the sum of
    ``info.log_likelihood_increment``.

    Per level BlackJAX evaluates, for every particle: the kernel's ``init`` (value +
    gradient at the resampled position), ``num_mcmc_steps`` moves (value + gradient,
    once per MALA step, ``num_steps`` times per HMC step) and the incremental weight
    (value only, no gradient).
    """

    def __init__(self, problem):
        import blackjax
        from blackjax.smc import resampling, tempered

        solver = problem.solver
        move = solver.move
        self.n = problem.family.n
        self.steps = problem.steps
        self.num_mcmc_steps = int(solver.moves_per_step)
        self.step_size = float(move.step_size)
        self.target_acceptance = move.target_acceptance
        self.lambdas = jnp.asarray(lambda_grid(problem), problem.family.positions.dtype)
        target, base = problem.target, problem.family.base
        self.target, self.base = target, base
        dim, dtype = problem.family.dim, problem.family.positions.dtype
        kind = type(move).__name__
        if kind == "MALA":
            step_fn, init_fn = blackjax.mala.build_kernel(), blackjax.mala.init
            self.kernel_name, self.evals_per_move = "mala", 1
        elif kind == "HMC":
            hmc_kernel = blackjax.hmc.build_kernel()
            leapfrog = int(move.num_steps)

            def step_fn(rng_key, state, logdensity_fn, step_size):
                return hmc_kernel(rng_key, state, logdensity_fn, step_size, jnp.ones(dim, dtype), leapfrog)

            init_fn = blackjax.hmc.init
            self.kernel_name, self.evals_per_move = f"hmc(L={leapfrog})", leapfrog
        else:
            raise NotImplementedError(f"no BlackJAX counterpart for the fepy move {kind}")

        def loglikelihood(x):
            return target.log_density(x) - base.log_prob(x)

        kernel = tempered.build_kernel(
            base.log_prob, loglikelihood, step_fn, init_fn, resampling.systematic
        )
        num_mcmc_steps, target_acc = self.num_mcmc_steps, self.target_acceptance

        def run(positions, key, lambdas, h0):
            state = tempered.init(positions)
            state = state._replace(tempering_param=jnp.zeros((), positions.dtype))

            def body(carry, inp):
                state, h = carry
                k, lam = inp
                state, info = kernel(k, state, num_mcmc_steps, lam, {"step_size": h[None]})
                acc = jnp.mean(info.update_info.acceptance_rate)
                if target_acc is not None:
                    h = h * jnp.exp(0.5 * (acc - target_acc))
                return (state, h), (info.log_likelihood_increment, acc, h)

            keys = jax.random.split(key, lambdas.shape[0])
            (state, h), (increments, acc, hs) = jax.lax.scan(body, (state, h0), (keys, lambdas))
            return state, jnp.sum(increments), acc, hs

        self._run = jax.jit(run)

    def __call__(self, model, positions, seed: int) -> dict:
        import fepy

        h0 = jnp.asarray(self.step_size, positions.dtype)
        (state, log_z, acc, hs), wall = _timed(
            lambda: self._run(positions, jax.random.key(seed), self.lambdas, h0)
        )
        log_w = jnp.log(state.weights)
        n, s, m = self.n, self.steps, self.num_mcmc_steps
        record = dict(
            seed=seed,
            log_z=float(log_z),
            log_z_stderr=float("nan"),
            ess_fraction=float(fepy.kish_ess(log_w)) / n,
            energy_grad_evals=n * s * (1 + m * self.evals_per_move),
            energy_value_evals=n * s,
            wall_s=wall,
            resample_rate=1.0,
            move=self.kernel_name,
            final_acceptance=float(acc[-1]),
            final_step_size=float(hs[-1]),
        )
        if hasattr(model, "observables"):
            particles = fepy.Particles(state.particles, log_w, self.base)
            record.update(model.observables(self.target, particles))
        return record


# ----------------------------------------------------------------------------- the log Z benchmark


def _stats(values):
    a = np.asarray(values, float)
    return float(np.mean(a)), float(np.std(a, ddof=1)) if a.size > 1 else float("nan")


def _aggregate(method, n, warmup, runs, log_z_ref) -> dict:
    errors = [r["log_z"] - log_z_ref for r in runs]
    abs_err_mean, abs_err_sd = _stats(np.abs(errors))
    wall_mean, wall_sd = _stats([r["wall_s"] for r in runs])
    row = dict(
        method=method,
        particles=n,
        seeds=len(runs),
        abs_err_mean=abs_err_mean,
        abs_err_sd=abs_err_sd,
        err_mean=float(np.mean(errors)),
        rmse=float(np.sqrt(np.mean(np.square(errors)))),
        reported_stderr_mean=float(np.mean([r["log_z_stderr"] for r in runs])),
        wall_mean_s=wall_mean,
        wall_sd_s=wall_sd,
        wall_min_s=float(min(r["wall_s"] for r in runs)),
        # first call (compile + one run) minus the mean of the timed runs
        compile_s=warmup["wall_s"] - wall_mean,
        energy_grad_evals=runs[0]["energy_grad_evals"],
        energy_value_evals=runs[0]["energy_value_evals"],
        ess_fraction_mean=float(np.mean([r["ess_fraction"] for r in runs])),
    )
    if "modes" in runs[0]:
        row["modes_mean"] = float(np.mean([r["modes"] for r in runs]))
        row["modes_min"] = int(min(r["modes"] for r in runs))
    return row


def log_z_benchmark(
    model_name: str,
    *,
    particles: list[int],
    seeds: list[int],
    config: dict | None = None,
    geometries=FEPY_GEOMETRIES,
    log=print,
) -> dict:
    """|log Z error| and wall time versus particles for the fepy geometries and BlackJAX.

    For every particle count: each method gets one warm-up call (compilation; seed
    ``seeds[0]``) and then one timed call per seed. fepy and BlackJAX start from the
    same initial particles (drawn by the model file from the seed).
    """
    model = load_model(model_name)
    config = dict(config or {})
    log_z_ref = float(model.REFERENCE["log_z"])
    runs, rows = [], []
    for n in particles:
        base_config = {**config, "particles": n}
        per_method = {}
        for geometry in geometries:
            cfg = {**base_config, "solver": geometry}
            method = f"fepy_{geometry}"
            warm = run_fepy(model, cfg, seeds[0])
            timed = [run_fepy(model, cfg, s) for s in seeds]
            per_method[method] = (warm, timed)
            log(f"  {model_name} n={n} {method}: first {warm['wall_s']:.2f}s, "
                f"|err| {np.mean([abs(r['log_z'] - log_z_ref) for r in timed]):.4g}, "
                f"wall {np.mean([r['wall_s'] for r in timed]):.2f}s")
        wfr_problem = model.build({**base_config, "solver": "wfr", "seed": seeds[0]})
        bj = BlackJAXTemperedSMC(wfr_problem)

        def bj_run(seed):
            positions = model.build({**base_config, "solver": "wfr", "seed": seed}).family.positions
            return bj(model, positions, seed)

        warm = bj_run(seeds[0])
        timed = [bj_run(s) for s in seeds]
        per_method[BLACKJAX_METHOD] = (warm, timed)
        log(f"  {model_name} n={n} {BLACKJAX_METHOD}: first {warm['wall_s']:.2f}s, "
            f"|err| {np.mean([abs(r['log_z'] - log_z_ref) for r in timed]):.4g}, "
            f"wall {np.mean([r['wall_s'] for r in timed]):.2f}s")

        n_rows = {}
        for method, (warm, timed) in per_method.items():
            n_rows[method] = _aggregate(method, n, warm, timed, log_z_ref)
            for r in timed:
                runs.append(dict(method=method, particles=n, error=r["log_z"] - log_z_ref, **r))
            runs.append(dict(method=method, particles=n, warmup=True, **warm))
        ref = n_rows[BLACKJAX_METHOD]
        for row in n_rows.values():
            row["err_ratio_vs_blackjax"] = _ratio(row["abs_err_mean"], ref["abs_err_mean"])
            row["wall_ratio_vs_blackjax"] = _ratio(row["wall_mean_s"], ref["wall_mean_s"])
            rows.append(row)

    solver = model.build({**config, "particles": particles[0], "solver": "wfr"})
    return dict(
        model=model_name,
        reference_log_z=log_z_ref,
        config=dict(
            particles=particles,
            seeds=seeds,
            overrides=config,
            model_defaults=_jsonable(getattr(model, "DEFAULTS", {})),
            steps=solver.steps,
            move=type(solver.solver.move).__name__,
            leapfrog_steps=getattr(solver.solver.move, "num_steps", None),
            moves_per_step=int(solver.solver.moves_per_step),
            step_size=float(solver.solver.move.step_size),
            target_acceptance=solver.solver.move.target_acceptance,
            islands=int(solver.solver.islands),
            fepy_resample_threshold=float(solver.solver.resample_threshold),
            schedule=repr(solver.solver.schedule),
            blackjax=dict(
                algorithm="blackjax.smc.tempered (tempered_smc), systematic resampling every level",
                kernel=BlackJAXTemperedSMC(solver).kernel_name,
            lambdas="same fixed grid as fepy",
                step_size_adaptation="same rule as the fepy move (mean acceptance -> target)",
            ),
        ),
        rows=rows,
        runs=runs,
    )


def _ratio(a, b):
    return a / b if b and math.isfinite(b) and b != 0 else float("nan")


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None), list)) else repr(v)
    return out
