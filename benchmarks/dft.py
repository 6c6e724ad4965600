"""The ``dft`` entry: classical DFT, fepy against FeOs on hard spheres in a slit, and batched solves.

``python -m benchmarks dft`` runs `run` (float64) and writes ``results/dft.json`` and
``results/dft_convergence.png``; see benchmarks/README.md ("The dft entry") for what is
measured. Two parts:

1. **Slit pore, fepy vs FeOs.** Hard spheres (diameter σ) between two planar hard walls
   a distance H apart, in equilibrium with a bulk of packing fraction η, White Bear
   (mark I) FMT on both sides (FeOs's ``FMTVersion.WhiteBear``, fepy's
   `fepy.apps.dft.fmt.white_bear`), solved to an Euler-Lagrange residual of 1e-10 from
   the uniform bulk density. fepy: `fepy.Picard` with Anderson mixing in this process;
   FeOs: its default Anderson sequence in a subprocess (`benchmarks.dft_feos`).
2. **Batched solves.** Percus hard rods (`fepy.apps.dft.HardRods`) in B random external
   potentials and chemical potentials (`RandomExternalPotentials`), one batched
   `fepy.Picard` solve against a Python loop of B single solves.

Conventions aligned for part 1: the sphere centres are excluded within σ/2 of each wall
(FeOs ``HardWall(sigma_ss=0)``), so they move on a width H - σ; fepy's grid is exactly
that width with ``"empty"`` edges and cell-centred points, FeOs's half-pore grid has its
cell edges on the same contact planes, so both codes hold ρ at the same points, z
measured from the contact plane. The residual: fepy's ``max|ρ_EL - ρ|``; FeOs's RMS of
``ρ - ρ_EL`` over its n grid points, run once to 1e-10 (its own criterion) and once to
1e-10/√n (which bounds its max residual by 1e-10, fepy's criterion).
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import fepy
from fepy.apps.dft import FMT, HardRods, white_bear_ii
from fepy.apps.dft.fmt import white_bear
from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials

from ._common import REPO

CONFIG = dict(
    tolerance=1e-10,
    max_steps=5000,
    repeats=10,
    slit=dict(
        temperature=300.0,  # K, FeOs's units only (hard spheres are athermal)
        packing_fractions=[0.15, 0.3, 0.45],
        pore_sizes=[3.0, 6.0, 12.0],  # H, wall to wall (σ)
        dx=0.01,
        refinement=dict(packing_fraction=0.45, pore_size=6.0, dx=[0.02, 0.01, 0.005, 0.0025]),
        picard=dict(mixing=0.1, anderson=8),  # models/hard_spheres_wall.py
    ),
    batched=dict(
        length=20.0, dx=0.05, batches=[1, 16, 256, 1024], seed=0, repeats=3, min_total_s=1.0,
        picard=dict(mixing=0.1, anderson=10),  # models/hard_rods_wall.py
    ),
)
QUICK = dict(
    repeats=2,
    slit=dict(CONFIG["slit"], packing_fractions=[0.3], pore_sizes=[6.0],
              refinement=dict(packing_fraction=0.3, pore_size=6.0, dx=[0.02, 0.01])),
    batched=dict(CONFIG["batched"], batches=[1, 16]),
)


# ----------------------------------------------------------------------------- solving


@eqx.filter_jit
def solve_to_tolerance(target, family, solver, tolerance, max_steps: int):
    r"""Step ``solver`` from ``family`` until the Euler-Lagrange residual :math:`\max|\rho_{EL} - \rho|`
    (over the whole batch) is at most ``tolerance`` (σ⁻ᵈ), or ``max_steps`` steps.

    Each step reports the residual of the density it started from, so the loop stops one
    step after the converged iterate. Returns the final family, the number of iterates
    before the converged one (the iterations to the tolerance; ``max_steps`` if never
    reached) and that residual.
    """
    state = solver.init(target, family, jax.random.key(0))

    def cond(carry):
        _, _, residual, step = carry
        return (residual > tolerance) & (step < max_steps)

    def body(carry):
        family, state, _, step = carry
        family, state, stats = solver.step(target, family, state, jax.random.key(0))
        return family, state, stats["residual"], step + 1

    start = (family, state, jnp.asarray(jnp.inf, family.rho.dtype), jnp.asarray(0))
    family, _, residual, steps = jax.lax.while_loop(cond, body, start)
    return family, jnp.where(residual <= tolerance, steps - 1, max_steps), residual


def profile_residual(target, rho) -> np.ndarray:
    r""":math:`\max_x|\rho_{EL} - \rho|` of each profile of a batch (σ⁻ᵈ)."""
    return np.asarray(jnp.max(jnp.abs(target.euler_lagrange_density(rho) - rho), axis=-1))


def _timed(fn, repeats: int, min_total_s: float = 0.0, max_repeats: int = 100) -> tuple[object, float, list[float]]:
    """``fn()`` once (compilation + run), then at least ``repeats`` timed calls, more (up to
    ``max_repeats``) until they add up to ``min_total_s``, so that the median of a
    millisecond call is not one scheduler hiccup; returns the last output, the first
    call's wall time and the timed wall times (s)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    while len(times) < repeats or (sum(times) < min_total_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, first, times


# ----------------------------------------------------------------------------- part 1: slit pore


def slit_problem(packing_fraction: float, pore_size: float, dx: float, phi=white_bear):
    """Hard spheres (σ = 1) between hard walls H = ``pore_size`` apart, centres on [σ/2, H - σ/2]:
    the grid covers the centres' width H - σ; uniform bulk density to start."""
    width = pore_size - 1.0
    n = int(round(width / dx))
    if not math.isclose(n * dx, width, rel_tol=1e-12) or n % 2:
        raise ValueError(f"H - 1 = {width} must be an even number of cells of {dx}")
    grid = fepy.Grid(n, dx, "empty", "empty")
    rho_bulk = 6.0 * packing_fraction / np.pi
    target = fepy.GrandPotential.from_bulk_density(grid, FMT(phi), rho_bulk, jnp.zeros(n))
    return target, fepy.GridDensity(jnp.full(n, rho_bulk), grid)


def run_fepy_slit(case: dict, cfg: dict, phi=white_bear) -> dict:
    """One slit solved to the tolerance: timings, iterations, the profile and βΩ, βγ, N."""
    slit = cfg["slit"]
    target, family = slit_problem(case["packing_fraction"], case["pore_size"], case["dx"], phi)
    solver = fepy.Picard(**slit["picard"])
    tol = jnp.asarray(cfg["tolerance"])
    (solved, iterations, _), first, times = _timed(
        lambda: solve_to_tolerance(target, family, solver, tol, cfg["max_steps"]), cfg["repeats"]
    )
    rho = solved.rho
    beta_p = float(target.excess.bulk_pressure(target.rho_bulk))
    omega = float(target.omega(rho))
    return dict(
        iterations=int(iterations),
        evaluations=int(iterations) + 1,  # one functional derivative per step, the extra step included
        residual_max=float(profile_residual(target, rho)),
        first_call_s=first,
        solve_s=times,
        solve_min_s=min(times),
        solve_median_s=statistics.median(times),
        compile_s=first - statistics.median(times),
        beta_omega=omega,
        beta_tension=0.5 * (omega + beta_p * case["pore_size"]),  # per wall: (Ω + pH)/2A
        number=float(family.grid.integrate(rho)),
        beta_pressure=beta_p,
        symmetry=float(jnp.max(jnp.abs(rho - rho[::-1]))),
        rho=np.asarray(rho),
    )


def feos_python() -> tuple[str | None, str]:
    """An interpreter that imports feos: ``$FEPY_FEOS_PYTHON``, this one, or /tmp/feosvenv."""
    candidates = [os.environ.get("FEPY_FEOS_PYTHON"), sys.executable, "/tmp/feosvenv/bin/python"]
    reasons = []
    for py in candidates:
        if not py or not Path(py).exists():
            continue
        out = subprocess.run([py, "-c", "import feos, si_units"], capture_output=True, text=True)
        if out.returncode == 0:
            return py, ""
        reasons.append(f"{py}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return None, "; ".join(reasons) or "no interpreter found"


def run_feos(cases: list[dict], cfg: dict) -> dict:
    """All FeOs cases in one subprocess; ``ok=False`` with the reason if it cannot run."""
    py, why = feos_python()
    if py is None:
        return dict(ok=False, error=f"feos not importable ({why}); see benchmarks/README.md")
    request = []
    for c in cases:
        n_grid = int(round((0.5 * c["pore_size"] + 2.0) / c["dx"]))
        tolerances = {"rms": cfg["tolerance"], "max": cfg["tolerance"] / math.sqrt(n_grid)}
        request.append(dict(c, fmt_version="WhiteBear", tolerances=tolerances))
    config = dict(temperature=cfg["slit"]["temperature"], repeats=cfg["repeats"], cases=request)
    t0 = time.perf_counter()
    out = subprocess.run([py, "-m", "benchmarks.dft_feos", json.dumps(config)], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return dict(ok=False, python=py, error=out.stderr.strip()[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(result, ok=True, python=py, subprocess_wall_s=time.perf_counter() - t0)


def compare(fe: dict, fp: dict, case: dict) -> dict:
    """Profile, βΩ, βγ and N differences, fepy - FeOs, on the points both codes hold."""
    m = fp["rho"].size // 2
    rho_feos = np.asarray(fe["rho"])
    half = rho_feos[:m][::-1]  # FeOs: z from the pore centre; reversed, from the contact plane
    diff = fp["rho"][:m] - half
    run = fe["runs"]["max"]
    dx = case["dx"]
    return dict(
        profile_max_abs_diff=float(np.max(np.abs(diff))),
        profile_mean_abs_diff=float(np.mean(np.abs(diff))),
        profile_max_at=float((np.argmax(np.abs(diff)) + 0.5) * dx),  # σ from the contact plane
        contact_cell=[float(fp["rho"][0]), float(half[0])],
        feos_beyond_contact_max=float(np.max(rho_feos[m:])),  # behind the capped 50 kT potential
        beta_omega_feos=2.0 * run["beta_omega_half"],
        beta_omega_diff=fp["beta_omega"] - 2.0 * run["beta_omega_half"],
        beta_tension_feos=run["beta_tension"],
        beta_tension_diff=fp["beta_tension"] - run["beta_tension"],
        number_feos=2.0 * run["number_half"],
        number_rel_diff=fp["number"] / (2.0 * run["number_half"]) - 1.0,
        beta_pressure_rel_diff=fp["beta_pressure"] / run["beta_pressure"] - 1.0,
    )


def slit_benchmark(cfg: dict, log=print) -> dict:
    slit = cfg["slit"]
    ref = slit["refinement"]
    main = [dict(packing_fraction=eta, pore_size=h, dx=slit["dx"])
            for eta in slit["packing_fractions"] for h in slit["pore_sizes"]]
    refinement = [dict(packing_fraction=ref["packing_fraction"], pore_size=ref["pore_size"], dx=dx)
                  for dx in ref["dx"]]
    cases = main + [c for c in refinement if c not in main]
    feos = run_feos(cases, cfg)
    log(f"  dft slit: FeOs {'ok' if feos['ok'] else 'FAILED: ' + feos['error'][-300:]}")
    feos_cases = {json.dumps([c["packing_fraction"], c["pore_size"], c["dx"]]): c for c in feos.get("cases", [])}
    rows, profiles = [], {}
    for case in cases:
        fp = run_fepy_slit(case, cfg)
        row = dict(case, fepy={k: v for k, v in fp.items() if k != "rho"}, refinement=case in refinement,
                   main=case in main)
        fe = feos_cases.get(json.dumps([case["packing_fraction"], case["pore_size"], case["dx"]]))
        if fe is not None:
            row["feos"] = dict(n_grid=fe["n_grid"], runs=fe["runs"])
            for label, run in fe["runs"].items():
                if run["ok"]:
                    row[f"time_ratio_{label}"] = fp["solve_median_s"] / run["solve_median_s"]
        if fe is not None and fe["runs"]["max"]["ok"]:
            row["comparison"] = compare(fe, fp, case)
            if case["dx"] == slit["dx"] and case["pore_size"] == ref["pore_size"]:  # the half profiles, for the plot
                m = fp["rho"].size // 2
                profiles[f"η = {case['packing_fraction']}, H = {case['pore_size']}σ"] = dict(
                    z=((np.arange(m) + 0.5) * case["dx"]).tolist(), fepy=fp["rho"][:m].tolist(),
                    feos=np.asarray(fe["rho"])[:m][::-1].tolist())
            c = row["comparison"]
            log(f"  dft slit eta={case['packing_fraction']} H={case['pore_size']} dx={case['dx']}: "
                f"max|drho| {c['profile_max_abs_diff']:.2e} (at z={c['profile_max_at']:.3f}), "
                f"mean {c['profile_mean_abs_diff']:.2e}, dOmega {c['beta_omega_diff']:+.2e}, "
                f"fepy {fp['solve_median_s'] * 1e3:.1f} ms ({fp['iterations']} it), "
                f"FeOs {fe['runs']['max']['solve_median_s'] * 1e3:.1f} ms ({fe['runs']['max']['evaluations']} ev, "
                f"{fe['runs']['max']['solver']})")
        else:
            log(f"  dft slit eta={case['packing_fraction']} H={case['pore_size']} dx={case['dx']}: "
                f"fepy {fp['solve_median_s'] * 1e3:.1f} ms ({fp['iterations']} it), no FeOs solution")
        rows.append(row)
    # refinement: observed order of the fepy - FeOs difference
    ref_rows = sorted((r for r in rows if r["refinement"] and "comparison" in r), key=lambda r: -r["dx"])
    for coarse, fine in zip(ref_rows[:-1], ref_rows[1:]):
        ratio = coarse["comparison"]["profile_max_abs_diff"] / fine["comparison"]["profile_max_abs_diff"]
        fine["comparison"]["observed_order"] = math.log(ratio) / math.log(coarse["dx"] / fine["dx"])
    # control: fepy with White Bear II against FeOs's White Bear, the middle refinement case
    control = None
    base = next((r for r in rows if r["refinement"] and r["dx"] == slit["dx"] and "comparison" in r), None)
    if base is not None:
        case = {k: base[k] for k in ("packing_fraction", "pore_size", "dx")}
        fp = run_fepy_slit(case, cfg, phi=white_bear_ii)
        c = compare(feos_cases[json.dumps([case["packing_fraction"], case["pore_size"], case["dx"]])], fp, case)
        control = dict(case, functional="white_bear_ii (fepy) vs WhiteBear (FeOs)", comparison=c,
                       fepy={k: v for k, v in fp.items() if k != "rho"})
        log(f"  dft slit control (fepy White Bear II): max|drho| {c['profile_max_abs_diff']:.2e}, "
            f"dOmega {c['beta_omega_diff']:+.2e}")
    feos_meta = {k: v for k, v in feos.items() if k != "cases"}
    return dict(feos=feos_meta, slit_rows=rows, slit_control=control, profiles=profiles)


# ----------------------------------------------------------------------------- part 2: batched solves


@eqx.filter_jit
def _steps(target, family, solver, count: int):
    """``count`` solver steps (no stopping rule): the cost of a step, apart from how many are needed."""
    state = solver.init(target, family, jax.random.key(0))

    def body(carry, _):
        family, state = carry
        family, state, _ = solver.step(target, family, state, jax.random.key(0))
        return (family, state), None

    return jax.lax.scan(body, (family, state), None, length=count)[0][0]


def step_cost_us(target, family, solver, repeats: int, min_total_s: float, count: int = 20) -> float:
    """Wall time of one step per profile (µs): the median over scans of ``count`` steps (`_timed`)."""
    _, _, times = _timed(lambda: _steps(target, family, solver, count), repeats, min_total_s)
    return 1e6 * statistics.median(times) / count / max(1, math.prod(family.rho.shape[:-1]))


def batched_benchmark(cfg: dict, log=print) -> dict:
    """One batched Picard solve of B hard-rod problems against a Python loop of B single solves
    (the loop over the first B problems; each timed as the median of at least ``repeats``
    calls adding up to ``min_total_s``, after a compiling one; the single solve compiles once
    for all B)."""
    b = cfg["batched"]
    n = int(round(b["length"] / b["dx"]))
    grid = fepy.Grid(n, b["dx"])
    potentials = RandomExternalPotentials(grid)
    count = max(b["batches"])
    beta_v, beta_mu = potentials.sample(jax.random.key(b["seed"]), count)
    solver = fepy.Picard(**b["picard"])
    tol = jnp.asarray(cfg["tolerance"])

    def problem(v, mu):
        target = fepy.GrandPotential.from_chemical_potential(grid, HardRods(), mu, v)
        rho = jnp.where(target.allowed, jnp.asarray(target.rho_bulk)[..., None], 0.0)
        return target, fepy.GridDensity(rho, grid)

    singles = [problem(beta_v[i], beta_mu[i]) for i in range(count)]

    def loop(size):
        return [solve_to_tolerance(target, family, solver, tol, cfg["max_steps"]) for target, family in singles[:size]]

    t0 = time.perf_counter()
    jax.block_until_ready(loop(1))
    single_compile = time.perf_counter() - t0
    first_loop = jax.block_until_ready(loop(count))
    single_it = [int(it) for _, it, _ in first_loop]
    single_rho = np.stack([np.asarray(solved.rho) for solved, _, _ in first_loop])
    single_res = profile_residual(problem(beta_v, beta_mu)[0], jnp.asarray(single_rho))
    log(f"  dft batched: {count} single solves, compile {single_compile:.1f} s, "
        f"iterations median {np.median(single_it):.0f}, max {max(single_it)}")

    rows = []
    for size in b["batches"]:
        target, family = problem(beta_v[:size], beta_mu[:size])
        (solved, iterations, _), first, times = _timed(
            lambda: solve_to_tolerance(target, family, solver, tol, cfg["max_steps"]), b["repeats"], b["min_total_s"]
        )
        _, _, loop_times = _timed(lambda: loop(size), b["repeats"], b["min_total_s"])
        batch_time, loop_time = statistics.median(times), statistics.median(loop_times)
        residuals = profile_residual(target, solved.rho)
        plain = fepy.Picard(mixing=b["picard"]["mixing"], anderson=0)
        rows.append(dict(
            batch=size,
            step_us_per_problem=step_cost_us(target, family, solver, b["repeats"], b["min_total_s"]),
            plain_picard_step_us_per_problem=step_cost_us(target, family, plain, b["repeats"], b["min_total_s"]),
            batched_s=batch_time,
            batched_times_s=times,
            batched_compile_s=first - batch_time,
            batched_iterations=int(iterations),
            batched_residual_max=float(residuals.max()),
            batched_unconverged=int(np.sum(residuals > cfg["tolerance"])),
            loop_s=loop_time,
            loop_times_s=loop_times,
            loop_iterations_median=float(np.median(single_it[:size])),
            loop_iterations_max=int(max(single_it[:size])),
            loop_unconverged=int(np.sum(single_res[:size] > cfg["tolerance"])),
            batched_solves_per_s=size / batch_time,
            loop_solves_per_s=size / loop_time,
            per_solve_ratio=batch_time / loop_time,  # < 1: the batch is faster per solve
            max_abs_diff_vs_loop=float(np.max(np.abs(np.asarray(solved.rho) - single_rho[:size]))),
        ))
        r = rows[-1]
        log(f"  dft batched B={size}: {r['batched_solves_per_s']:.3g} solves/s batched "
            f"({r['batched_iterations']} it), {r['loop_solves_per_s']:.3g} loop, "
            f"ratio {r['per_solve_ratio']:.3g}; step {r['step_us_per_problem']:.1f} us/problem "
            f"(plain Picard {r['plain_picard_step_us_per_problem']:.1f})")
    return dict(
        batched_rows=rows,
        single=dict(compile_s=single_compile, count=count, iterations=single_it),
        potentials=repr(potentials),
        walled_fraction=float(np.mean(np.any(np.isinf(np.asarray(beta_v)), axis=-1))),
    )


# ----------------------------------------------------------------------------- the entry


def dft_benchmark(*, quick: bool = False, log=print) -> dict:
    """Both parts; needs float64 (`run` sets ``jax_enable_x64``)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the dft entry needs float64: jax.config.update('jax_enable_x64', True)")
    cfg = dict(CONFIG, **(QUICK if quick else {}))
    t0 = time.perf_counter()
    slit = slit_benchmark(cfg, log)
    slit_s = time.perf_counter() - t0
    batched = batched_benchmark(cfg, log)
    return dict(kind="dft", config=cfg, slit_wall_s=slit_s, **slit, **batched,
                gpu="no device lent to this session: batched GPU throughput is left for a session with one")


def run(*, quick: bool = False, log=print) -> dict:
    """The entry for ``python -m benchmarks dft``: runs in float64 (residuals of 1e-10)."""
    jax.config.update("jax_enable_x64", True)
    return dict(dft_benchmark(quick=quick, log=log), dtype="float64")


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g}"


def table(result: dict) -> str:
    """The README tables: the slit against FeOs (per case, per grid spacing) and the batched solves."""
    from ._report import environment_line

    cfg = result["config"]
    slit = cfg["slit"]
    feos = result["feos"]
    env = environment_line(result["environment"], result.get("load_average_1min_start"))
    feos_line = (f" FeOs side: feos {feos['versions']['feos']} ({feos['threads']} threads), "
                 f"python {feos['versions']['python']}, its own subprocess." if feos.get("ok")
                 else f" FeOs side failed: {feos.get('error', '')[:300]}")
    out = [f"### `{result['name']}`: hard spheres in a hard slit, fepy vs FeOs (White Bear FMT, "
           f"residual {cfg['tolerance']:g}), and batched Picard solves of hard rods", "", env + feos_line, ""]

    head = ["η", "H (σ)", "points (fepy / FeOs)", "FeOs solver", "fepy it", "FeOs ev (RMS / max tol)", "fepy ms",
            "FeOs ms (RMS / max tol)", "fepy / FeOs time", "max abs Δρ (at z)", "mean abs Δρ", "ΔβΩ (kT/σ²)",
            "Δβγ (kT/σ²)", "ΔN / N"]
    out += ["Slit pores, dx = " + f"{slit['dx']} σ (ρ in σ⁻³; Δ = fepy − FeOs; times: median of "
            f"{cfg['repeats']} solves after a first one; fepy / FeOs at the same criterion, max residual "
            f"≤ {cfg['tolerance']:g}; FeOs solver: its default, or the fallback where the default fails):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def feos_cell(run, key, fmt):
        return fmt(run[key]) if run["ok"] else "failed"

    notes = set()

    for r in (r for r in result["slit_rows"] if r["main"]):
        fp = r["fepy"]
        points = f"{int(round((r['pore_size'] - 1) / r['dx']))} / {r['feos']['n_grid'] if 'feos' in r else '–'}"
        runs = r.get("feos", {}).get("runs")
        if runs is None:
            out.append(f"| {r['packing_fraction']} | {r['pore_size']} | {points} | – | {fp['iterations']} | – | "
                       f"{_ms(fp['solve_median_s'])} |" + " – |" * 7)
            continue
        rms, mx = runs["rms"], runs["max"]
        if mx["failures"]:
            notes.update(mx["failures"].values())
        solver = {"default": "default", "picard_log+anderson": "fallback*"}.get(mx.get("solver"), "none")
        cells = [str(r["packing_fraction"]), str(r["pore_size"]), points, solver, str(fp["iterations"]),
                 f"{feos_cell(rms, 'evaluations', str)} / {feos_cell(mx, 'evaluations', str)}",
                 _ms(fp["solve_median_s"]),
                 f"{feos_cell(rms, 'solve_median_s', _ms)} / {feos_cell(mx, 'solve_median_s', _ms)}",
                 f"{r['time_ratio_max']:.2g}" if "time_ratio_max" in r else "–"]
        c = r.get("comparison")
        cells += ([f"{c['profile_max_abs_diff']:.2e} ({c['profile_max_at']:.3f})", f"{c['profile_mean_abs_diff']:.2e}",
                   f"{c['beta_omega_diff']:+.2e}", f"{c['beta_tension_diff']:+.2e}", f"{c['number_rel_diff']:+.1e}"]
                  if c else ["–"] * 5)
        out.append("| " + " | ".join(cells) + " |")
    if notes:
        out += ["", "\\* FeOs's default solver stopped (" + "; ".join(sorted(notes)) + "); the fallback, Picard "
                "iteration in ln ρ with FeOs's line search to 1e-5 and then its Anderson mixing, converged."]

    ref = sorted((r for r in result["slit_rows"] if r["refinement"] and "comparison" in r), key=lambda r: -r["dx"])
    if ref:
        head = ["dx (σ)", "points (fepy)", "max abs Δρ", "observed order", "mean abs Δρ",
                "contact cell ρ (fepy / FeOs)", "ΔβΩ (kT/σ²)", "Δβγ (kT/σ²)", "fepy ms", "FeOs ms (max tol)"]
        out += ["", f"Grid refinement at η = {ref[0]['packing_fraction']}, H = {ref[0]['pore_size']} σ:", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in ref:
            c = r["comparison"]
            order = c.get("observed_order")
            out.append(f"| {r['dx']} | {int(round((r['pore_size'] - 1) / r['dx']))} | "
                       f"{c['profile_max_abs_diff']:.2e} | {'–' if order is None else f'{order:.2f}'} | "
                       f"{c['profile_mean_abs_diff']:.2e} | "
                       f"{c['contact_cell'][0]:.5f} / {c['contact_cell'][1]:.5f} | {c['beta_omega_diff']:+.2e} | "
                       f"{c['beta_tension_diff']:+.2e} | {_ms(r['fepy']['solve_median_s'])} | "
                       f"{_ms(r['feos']['runs']['max']['solve_median_s'])} |")
        control = result.get("slit_control")
        if control:
            c = control["comparison"]
            out += ["", f"Control, a different functional: fepy with White Bear II against FeOs's White Bear at "
                        f"η = {control['packing_fraction']}, H = {control['pore_size']} σ, dx = {control['dx']}: "
                        f"max abs Δρ = {c['profile_max_abs_diff']:.2e}, mean {c['profile_mean_abs_diff']:.2e}, "
                        f"ΔβΩ = {c['beta_omega_diff']:+.2e}, Δβγ = {c['beta_tension_diff']:+.2e} kT/σ²."]

    b = cfg["batched"]
    head = ["B", "batched it", "loop it (median / max)", "batched s", "loop s", "batched solves/s",
            "loop solves/s", "batched / loop time", "step µs per problem (Anderson / plain)",
            "unconverged (batch / loop)", "max abs ρ batch − loop"]
    gpu = result["gpu"][0].upper() + result["gpu"][1:]
    out += ["", f"Batched solves: Percus hard rods, periodic box {b['length']} σ, dx {b['dx']} "
                f"({int(round(b['length'] / b['dx']))} points), `RandomExternalPotentials` defaults "
                f"(seed {b['seed']}, {100 * result['walled_fraction']:.0f}% with hard walls), "
                f"`Picard(mixing={b['picard']['mixing']}, anderson={b['picard']['anderson']})`, uniform bulk "
                f"start; times: median of at least {b['repeats']} calls adding up to {b['min_total_s']:g} s, after a "
                f"compiling call. **{gpu}.**", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["batched_rows"]:
        out.append(
            f"| {r['batch']} | {r['batched_iterations']} | "
            f"{r['loop_iterations_median']:.0f} / {r['loop_iterations_max']} | {r['batched_s']:.3g} | "
            f"{r['loop_s']:.3g} | {r['batched_solves_per_s']:.3g} | {r['loop_solves_per_s']:.3g} | "
            f"{r['per_solve_ratio']:.2f} | "
            f"{r['step_us_per_problem']:.3g} / {r['plain_picard_step_us_per_problem']:.3g} | "
            f"{r['batched_unconverged']} / {r['loop_unconverged']} | {r['max_abs_diff_vs_loop']:.1e} |")
    out += ["", "![profiles, refinement, throughput](results/dft_convergence.png)"]
    return "\n".join(out)


def plot(result: dict, path: Path) -> None:
    """Left: ρ(z) of fepy and FeOs and |Δρ| per grid spacing; right: batched vs loop throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for label, p in result["profiles"].items():
        axes[0].plot(p["z"], p["fepy"], label=f"fepy ({label})")
        axes[0].plot(p["z"], p["feos"], ls="--", label=f"FeOs ({label})")
    axes[0].set_xlabel("z from the contact plane (σ)")
    axes[0].set_ylabel("ρσ³")
    axes[0].set_title("hard spheres in a slit, White Bear FMT (half pore)")
    axes[0].legend(fontsize=7)
    ref = sorted((r for r in result["slit_rows"] if r["refinement"] and "comparison" in r), key=lambda r: -r["dx"])
    if ref:
        dx = [r["dx"] for r in ref]
        axes[1].loglog(dx, [r["comparison"]["profile_max_abs_diff"] for r in ref], "o-", label="max |Δρ|")
        axes[1].loglog(dx, [r["comparison"]["profile_mean_abs_diff"] for r in ref], "s-", label="mean |Δρ|")
        axes[1].loglog(dx, [abs(r["comparison"]["beta_omega_diff"]) for r in ref], "^-", label="|ΔβΩ| (kT/σ²)")
        scale = ref[0]["comparison"]["profile_max_abs_diff"] / dx[0] ** 2
        axes[1].loglog(dx, [scale * d**2 for d in dx], "k:", label="∝ dx²")
        axes[1].set_xlabel("grid spacing dx (σ)")
        axes[1].set_title(f"fepy - FeOs, η = {ref[0]['packing_fraction']}, H = {ref[0]['pore_size']}σ")
        axes[1].legend(fontsize=7)
    rows = result["batched_rows"]
    sizes = [r["batch"] for r in rows]
    axes[2].loglog(sizes, [r["batched_solves_per_s"] for r in rows], "o-", label="one batched solve")
    axes[2].loglog(sizes, [r["loop_solves_per_s"] for r in rows], "s--", label="loop of single solves")
    axes[2].set_xlabel("B (problems)")
    axes[2].set_ylabel("solves / s")
    axes[2].set_title(f"Percus hard rods, residual 1e-10, {result['environment']['device']}")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
