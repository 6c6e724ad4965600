"""The ``lensing_survey`` entry: many lenses fitted at once (`fepy.Independent`) against one by one.

``python -m benchmarks lensing_survey`` simulates ``lenses`` observations of the SIE + shear +
Sersic lens of ``models/sie_sersic_lens.py`` (the same truth, independent noise and independent
prior draws as starts: lens ``i`` is that model with ``seed = i``) and finds every MAP three ways,
with the same starts, optimizer and steps for fepy:

a. **fepy, batched**: one `fepy.minimize` of `fepy.Independent` (`fepy.Descent` vmapped over the
   lenses, the data the only batched leaf of the target);
b. **fepy, one by one**: `fepy.minimize` per lens in a Python loop (compiled once);
c. **lenstronomy**: its ``FittingSequence`` PSO per lens (``pso`` budget) on the first
   ``lenstronomy_lenses`` lenses, the per-lens wall time extrapolated to all.

Wall times exclude compilation (reported apart); the recovered theta_E (best start) is
recorded per lens, and the largest difference between a and b's best energies.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._common import load_model
from .lensing import fitting_sequence

CONFIG = dict(num_pix=60, pixel_width=0.066, supersampling=2, fwhm=0.1, background_rms=0.01, exposure_time=2000.0,
              lenses=16, starts=4, steps=600, learning_rate=0.02, lenstronomy_lenses=2,
              pso=dict(n_particles=60, n_iterations=150))
QUICK = dict(CONFIG, num_pix=20, pixel_width=0.2, supersampling=1, lenses=2, starts=2, steps=10, lenstronomy_lenses=1,
             pso=dict(n_particles=6, n_iterations=3))


def run(*, quick: bool = False, log=print) -> dict:
    jax.config.update("jax_enable_x64", True)
    import fepy

    c = QUICK if quick else CONFIG
    sie = load_model("sie_sersic_lens")
    cfg = {**sie.DEFAULTS, **{k: c[k] for k in ("num_pix", "pixel_width", "supersampling", "fwhm", "background_rms",
                                                 "exposure_time", "starts", "steps", "learning_rate")}}
    problems = [sie.build(dict(cfg, seed=i)) for i in range(c["lenses"])]
    template = problems[0].target
    target = eqx.tree_at(lambda t: t.data, template, jnp.stack([p.target.data for p in problems]))
    starts = jax.tree.map(lambda *a: jnp.stack(a), *[p.family for p in problems])
    solver = fepy.Independent(problems[0].solver, target_axes=fepy.batch_axes(template, lambda t: t.data))
    key = jax.random.key(0)
    log(f"[lensing_survey] {c['lenses']} lenses, {c['num_pix']}x{c['num_pix']}, {c['starts']} starts x "
        f"{c['steps']} steps, on {jax.devices()[0]}")

    def best_theta(target, positions, energies):
        return float(target.parameters.constrain(positions[int(np.argmin(energies))])["theta_E"])

    # a. batched: the first run compiles, the second is timed
    t0 = time.perf_counter()
    fepy.minimize(target, starts, solver, steps=c["steps"], key=key)
    compile_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = fepy.minimize(target, starts, solver, steps=c["steps"], key=key)
    jax.block_until_ready(batched.family.positions)
    wall_batched = time.perf_counter() - t0
    energies = np.stack([np.asarray(jax.vmap(p.target.energy)(batched.family.positions[i]))
                         for i, p in enumerate(problems)])
    theta_batched = [best_theta(template, batched.family.positions[i], energies[i]) for i in range(c["lenses"])]
    log(f"  fepy batched: {wall_batched:.1f} s ({c['lenses'] / wall_batched:.3g} lenses/s), compile "
        f"{compile_batched - wall_batched:.1f} s")

    # b. one by one
    p0 = problems[0]
    t0 = time.perf_counter()
    fepy.minimize(p0.target, p0.family, p0.solver, steps=c["steps"], key=key)
    compile_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = []
    for p in problems:  # one solver object for all: each build makes a new schedule, which would recompile
        sol = fepy.minimize(p.target, p.family, p0.solver, steps=c["steps"], key=key)
        jax.block_until_ready(sol.family.positions)
        alone.append(sol)
    wall_loop = time.perf_counter() - t0
    difference = max(abs(float(np.min(energies[i])) - s.summary["energy_min"]) / abs(s.summary["energy_min"])
                     for i, s in enumerate(alone))
    log(f"  fepy one by one: {wall_loop:.1f} s ({c['lenses'] / wall_loop:.3g} lenses/s); batched vs alone best "
        f"energies differ by {difference:.1e} (relative)")

    # c. lenstronomy PSO per lens
    lt_walls, lt_theta = [], []
    for i in range(c["lenstronomy_lenses"]):
        np.random.seed(i)
        fitting = fitting_sequence(c, problems[i].target.data)
        t0 = time.perf_counter()
        fitting.fit_sequence([["PSO", dict(sigma_scale=1.0, **c["pso"])]])
        lt_walls.append(time.perf_counter() - t0)
        lt_theta.append(fitting.best_fit()["kwargs_lens"][0]["theta_E"])
    per_lens_lt = float(np.mean(lt_walls))
    log(f"  lenstronomy PSO: {per_lens_lt:.1f} s per lens ({1 / per_lens_lt:.3g} lenses/s)")
    return dict(
        kind="lensing_survey", config=c, device=str(jax.devices()[0]), truth_theta_E=sie.TRUTH["theta_E"],
        fepy_batched=dict(wall_s=wall_batched, compile_s=compile_batched - wall_batched,
                          lenses_per_s=c["lenses"] / wall_batched, theta_E=theta_batched),
        fepy_loop=dict(wall_s=wall_loop, compile_s=compile_loop - wall_loop / c["lenses"],
                       lenses_per_s=c["lenses"] / wall_loop,
                       theta_E=[best_theta(p.target, s.family.positions, np.asarray(jax.vmap(p.target.energy)(
                           s.family.positions))) for p, s in zip(problems, alone)]),
        max_relative_energy_difference=difference,
        lenstronomy_pso=dict(wall_s=lt_walls, per_lens_s=per_lens_lt, lenses_per_s=1 / per_lens_lt,
                             theta_E=lt_theta, **c["pso"]),
    )


def table(result: dict) -> str:
    from ._report import environment_line

    c, a, b, lt = result["config"], result["fepy_batched"], result["fepy_loop"], result["lenstronomy_pso"]
    spread = lambda v: f"{np.mean(v):.4f} ± {np.std(v):.4f}"  # noqa: E731
    # compile = first call - second call: meaningless (negative) when the load changed in between
    compile_time = lambda s: f"{s:.0f}" if s > 0 else "– (load changed)"  # noqa: E731
    lines = [
        f"### `lensing_survey`: {c['lenses']} SIE + shear + Sersic lenses, {c['num_pix']}x{c['num_pix']} pixels, "
        f"supersampling {c['supersampling']} ({result['device']}, float64)",
        "",
        environment_line(result["environment"], result.get("load_average_1min_start")),
        "",
        "| method | budget per lens | lenses/s | vs fepy one by one | theta_E over lenses (truth "
        f"{result['truth_theta_E']}) | compile (s) |",
        "|---|---|---|---|---|---|",
        f"| fepy batched (`fepy.Independent`) | {c['starts']} starts x {c['steps']} Adam steps | "
        f"{a['lenses_per_s']:.3g} | {a['lenses_per_s'] / b['lenses_per_s']:.2f}x | {spread(a['theta_E'])} | "
        f"{compile_time(a['compile_s'])} |",
        f"| fepy one by one | {c['starts']} starts x {c['steps']} Adam steps | {b['lenses_per_s']:.3g} | 1 | "
        f"{spread(b['theta_E'])} | {compile_time(b['compile_s'])} |",
        f"| lenstronomy PSO ({len(lt['wall_s'])} lenses) | {lt['n_particles']} particles x {lt['n_iterations']} "
        f"iterations | {lt['lenses_per_s']:.3g} | {lt['lenses_per_s'] / b['lenses_per_s']:.2f}x | "
        f"{spread(lt['theta_E'])} | – |",
        "",
        f"Batched and one-by-one best energies agree to {result['max_relative_energy_difference']:.1e} (relative).",
    ]
    return "\n".join(lines)
