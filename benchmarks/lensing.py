"""The ``lensing`` entry: fepy.apps.lensing against lenstronomy on one SIE + shear + Sersic lens.

``python -m benchmarks lensing`` runs `run` (float64, both codes in this process) and writes
``results/lensing.json``; see benchmarks/README.md ("The lensing entry"). Same grid
(``num_pix`` x ``num_pix`` pixels of ``pixel_width`` arcsec, supersampling 2), same Gaussian
PSF, same truth as ``models/sie_sersic_lens.py`` (plus a Sersic lens light in parts a and b):

a. **Images per second**: fepy's jitted ``ImageModel.image`` (one parameter set, and a
   ``jax.vmap`` batch of ``batch`` sets) against lenstronomy's ``ImageModel.image`` in a loop.
b. **Log-likelihood gradients per second**: fepy's ``jax.grad`` of the Gaussian
   log-likelihood with respect to all the parameters; lenstronomy has no gradients, so its
   likelihood evaluations per second are reported with the cost of a forward finite
   difference gradient, (n_params + 1) likelihood evaluations.
c. **Reconstructing one lens** (SIE + shear + Sersic source, no lens light, the data
   simulated by fepy): fepy MAP (`fepy.Descent` from ``starts`` prior draws, then
   `fepy.laplace` with Newton polishing) and fepy NUTS from the MAP, against lenstronomy's
   ``FittingSequence`` (PSO, then emcee), each with the recovered theta_E +- its std.

herculens (needs objax, which imports tensorboard) and caustics (needs torch) are not
installed; see the README.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

CONFIG = dict(
    num_pix=100, pixel_width=0.04, supersampling=2, fwhm=0.1, background_rms=0.01, exposure_time=2000.0,
    batch=256, min_time_s=2.0, seed=0,
    starts=8, steps=800, learning_rate=0.03,
    nuts=dict(warmup=200, samples=300, chains=1),
    # lenstronomy's budget: about the wall time of fepy's MAP + NUTS on this CPU
    pso=dict(n_particles=100, n_iterations=200),
    mcmc=dict(n_burn=100, n_run=200, walkerRatio=4),
)
QUICK = dict(CONFIG, num_pix=40, pixel_width=0.1, batch=16, min_time_s=0.3, starts=2, steps=100,
             nuts=dict(warmup=20, samples=20, chains=1), pso=dict(n_particles=10, n_iterations=5),
             mcmc=dict(n_burn=2, n_run=4, walkerRatio=2))

LENS_LIGHT = dict(amp=8.0, R_sersic=0.6, n_sersic=3.5, e1=0.05, e2=-0.025)


def _rate(fn, min_time_s: float) -> tuple[float, int]:
    """Calls of ``fn`` (already warm) per second over at least ``min_time_s``."""
    n, t0 = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn())
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time_s and n >= 3:
            return n / elapsed, n


def _lenstronomy(c, model_light: bool):
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from fepy.apps import lensing

    grid = lensing.PixelGrid.square(c["num_pix"], c["pixel_width"])
    data = ImageData(image_data=np.zeros((c["num_pix"],) * 2), background_rms=c["background_rms"],
                     exposure_time=c["exposure_time"], ra_at_xy_0=grid.ra_at_xy_0, dec_at_xy_0=grid.dec_at_xy_0,
                     transform_pix2angle=np.array(grid.transform_pix2angle))
    psf = PSF(psf_type="GAUSSIAN", fwhm=c["fwhm"], pixel_size=c["pixel_width"], truncation=5)
    return ImageModel(data, psf, LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"]),
                      LightModel(["SERSIC_ELLIPSE"]) if model_light else None,
                      kwargs_numerics={"supersampling_factor": c["supersampling"]})


def _kwargs(p, light=True):
    lens = [dict(theta_E=p["theta_E"], e1=p["e1"], e2=p["e2"], center_x=p["center_x"], center_y=p["center_y"]),
            dict(gamma1=p["gamma1"], gamma2=p["gamma2"], ra_0=p["center_x"], dec_0=p["center_y"])]
    source = [dict(amp=p["amp"], R_sersic=p["R_sersic"], n_sersic=p["n_sersic"], e1=p["source_e1"],
                   e2=p["source_e2"], center_x=p["source_x"], center_y=p["source_y"])]
    ll = [dict(LENS_LIGHT, center_x=p["center_x"], center_y=p["center_y"])] if light else None
    return lens, source, ll


def throughput(c, log=print) -> dict:
    """Parts a and b."""
    from benchmarks._common import load_model
    from fepy.apps import lensing

    sie = load_model("sie_sersic_lens")
    model = sie.image_model(c)
    names = list(sie.TRUTH) + [f"ll_{k}" for k in LENS_LIGHT]
    truth = np.array([*sie.TRUTH.values(), *LENS_LIGHT.values()])

    def image_of(v):
        p = dict(zip(names, v))
        s = sie.system(p)
        ll = lensing.SersicElliptic(p["ll_amp"], p["ll_R_sersic"], p["ll_n_sersic"], p["ll_e1"], p["ll_e2"],
                                    p["center_x"], p["center_y"])
        return model.image(s.lens, s.source, ll)

    x = jnp.asarray(truth)
    data = model.simulate(jax.random.key(c["seed"]), *(lambda s: (s.lens, s.source))(sie.system(sie.TRUTH)),
                          lensing.SersicElliptic(*LENS_LIGHT.values(), sie.TRUTH["center_x"], sie.TRUTH["center_y"]))

    def log_like(v):
        return model.noise.log_likelihood(data, image_of(v))

    rng = np.random.default_rng(c["seed"])
    batch = jnp.asarray(truth * (1 + 0.02 * rng.standard_normal((c["batch"], truth.size))))
    single, vmapped, grad = jax.jit(image_of), jax.jit(jax.vmap(image_of)), jax.jit(jax.grad(log_like))
    out = {}
    for key, fn, arg, per_call in (("fepy_image", single, x, 1), ("fepy_image_batch", vmapped, batch, c["batch"]),
                                   ("fepy_grad", grad, x, 1)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg))
        compile_s = time.perf_counter() - t0
        rate, n = _rate(lambda: fn(arg), c["min_time_s"])
        out[key] = dict(per_s=rate * per_call, calls=n, compile_s=compile_s)
        log(f"  {key}: {rate * per_call:.1f}/s (compile {compile_s:.1f} s)")
    # lenstronomy: the same image and the same Gaussian log-likelihood in NumPy
    lt = _lenstronomy(c, model_light=True)
    kw = _kwargs(dict(zip(names, truth)))
    lt_image = lt.image(*kw)
    out["max_rel_image_difference"] = float(np.max(np.abs(lt_image - np.asarray(single(x)))) / np.max(lt_image))
    rate, n = _rate(lambda: lt.image(*kw), c["min_time_s"])
    out["lenstronomy_image"] = dict(per_s=rate, calls=n)
    d = np.asarray(data)

    def lt_log_like():
        m = lt.image(*kw)
        var = np.maximum(m, 0) / c["exposure_time"] + c["background_rms"] ** 2
        return -0.5 * np.sum((d - m) ** 2 / var + np.log(2 * np.pi * var))

    rate, n = _rate(lt_log_like, c["min_time_s"])
    out["lenstronomy_likelihood"] = dict(per_s=rate, calls=n)
    out["n_params"] = len(names)
    out["lenstronomy_fd_gradient_per_s"] = rate / (len(names) + 1)
    log(f"  lenstronomy image {out['lenstronomy_image']['per_s']:.1f}/s, likelihood {rate:.1f}/s, "
        f"max |image difference| / max {out['max_rel_image_difference']:.1e}")
    return out


def fitting_sequence(c, data):
    """lenstronomy's ``FittingSequence`` for the SIE + shear + Sersic lens of ``data`` (amplitudes
    solved linearly, its default), with starts, widths and bounds like fepy's priors."""
    from lenstronomy.Workflow.fitting_sequence import FittingSequence

    from fepy.apps import lensing

    grid = lensing.PixelGrid.square(c["num_pix"], c["pixel_width"])
    kwargs_data = dict(image_data=np.asarray(data), background_rms=c["background_rms"],
                       exposure_time=c["exposure_time"], ra_at_xy_0=grid.ra_at_xy_0, dec_at_xy_0=grid.dec_at_xy_0,
                       transform_pix2angle=np.array(grid.transform_pix2angle))
    kwargs_psf = dict(psf_type="GAUSSIAN", fwhm=c["fwhm"], pixel_size=c["pixel_width"], truncation=5)
    multi_band = [[kwargs_data, kwargs_psf, {"supersampling_factor": c["supersampling"]}]]
    kwargs_model = dict(lens_model_list=["SIE", "SHEAR"], source_light_model_list=["SERSIC_ELLIPSE"])
    lens_init = [dict(theta_E=1.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0), dict(gamma1=0.0, gamma2=0.0)]
    lens_sigma = [dict(theta_E=0.3, e1=0.15, e2=0.15, center_x=0.05, center_y=0.05), dict(gamma1=0.05, gamma2=0.05)]
    lens_fixed = [{}, dict(ra_0=0.0, dec_0=0.0)]
    lens_lower = [dict(theta_E=0.6, e1=-0.5, e2=-0.5, center_x=-0.5, center_y=-0.5), dict(gamma1=-0.3, gamma2=-0.3)]
    lens_upper = [dict(theta_E=2.0, e1=0.5, e2=0.5, center_x=0.5, center_y=0.5), dict(gamma1=0.3, gamma2=0.3)]
    src_init = [dict(amp=10.0, R_sersic=0.15, n_sersic=2.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0)]
    src_sigma = [dict(amp=5.0, R_sersic=0.07, n_sersic=1.0, e1=0.15, e2=0.15, center_x=0.1, center_y=0.1)]
    src_lower = [dict(amp=0.0, R_sersic=0.01, n_sersic=0.5, e1=-0.5, e2=-0.5, center_x=-1.0, center_y=-1.0)]
    src_upper = [dict(amp=100.0, R_sersic=1.0, n_sersic=4.0, e1=0.5, e2=0.5, center_x=1.0, center_y=1.0)]
    kwargs_params = dict(lens_model=[lens_init, lens_sigma, lens_fixed, lens_lower, lens_upper],
                         source_model=[src_init, src_sigma, [{}], src_lower, src_upper])
    return FittingSequence(dict(multi_band_list=multi_band, multi_band_type="single-band"), kwargs_model, {},
                           dict(check_bounds=True), kwargs_params, verbose=False)


def reconstruction(c, log=print) -> dict:
    """Part c: the same simulated data fitted by fepy (MAP, NUTS) and lenstronomy (PSO, emcee)."""
    import fepy
    from benchmarks._common import load_model

    sie = load_model("sie_sersic_lens")
    cfg = {**sie.DEFAULTS, **{k: c[k] for k in ("num_pix", "pixel_width", "supersampling", "fwhm",
                                                 "background_rms", "exposure_time", "seed", "starts", "steps",
                                                 "learning_rate")}}
    out = {}
    t0 = time.perf_counter()
    problem = sie.build(cfg)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                        key=jax.random.key(c["seed"]))
    jax.block_until_ready(sol.family.positions)
    descent_s = time.perf_counter() - t0
    result = sie.fit(problem.target, sol.family)
    map_s = time.perf_counter() - t0
    out["fepy_map"] = dict(wall_s=map_s, descent_s=descent_s, theta_E=result["values"]["theta_E"],
                           theta_E_std=result["std"]["theta_E"], reduced_chi2=result["reduced_chi2"],
                           converged_starts=result["converged_starts"], starts=c["starts"], steps=c["steps"])
    log(f"  fepy MAP: {map_s:.0f} s, theta_E {result['values']['theta_E']:.5f} +- {result['std']['theta_E']:.5f}")
    t0 = time.perf_counter()
    nuts_cfg = dict(cfg, nuts_warmup=c["nuts"]["warmup"], nuts_samples=c["nuts"]["samples"],
                    nuts_chains=c["nuts"]["chains"])
    _, summary = sie.nuts_samples(problem.target, result, nuts_cfg)
    out["fepy_nuts"] = dict(wall_s=time.perf_counter() - t0, theta_E=summary["theta_E_nuts"],
                            theta_E_std=summary["theta_E_nuts_std"], n_eff=summary["n_eff_theta_E"],
                            divergences=summary["nuts_divergences"], **c["nuts"])
    log(f"  fepy NUTS: {out['fepy_nuts']['wall_s']:.0f} s, theta_E {summary['theta_E_nuts']:.5f} "
        f"+- {summary['theta_E_nuts_std']:.5f}")

    # lenstronomy on the same data: PSO then emcee
    _, data = sie.simulate(cfg)
    np.random.seed(c["seed"])
    fitting = fitting_sequence(c, data)
    t0 = time.perf_counter()
    fitting.fit_sequence([["PSO", dict(sigma_scale=1.0, **c["pso"])]])
    pso_s = time.perf_counter() - t0
    best = fitting.best_fit()
    out["lenstronomy_pso"] = dict(wall_s=pso_s, theta_E=best["kwargs_lens"][0]["theta_E"], **c["pso"])
    log(f"  lenstronomy PSO: {pso_s:.0f} s, theta_E {best['kwargs_lens'][0]['theta_E']:.5f}")
    try:
        import emcee  # noqa: F401

        t0 = time.perf_counter()
        chain = fitting.fit_sequence([["MCMC", dict(sigma_scale=0.1, progress=False, **c["mcmc"])]])
        mcmc_s = time.perf_counter() - t0
        _, samples, param_list, _ = chain[-1]
        theta = np.asarray(samples)[:, param_list.index("theta_E_lens0")]
        out["lenstronomy_mcmc"] = dict(wall_s=mcmc_s, theta_E=float(theta.mean()), theta_E_std=float(theta.std()),
                                       samples=int(theta.size), walkers=c["mcmc"]["walkerRatio"] * len(param_list),
                                       **c["mcmc"])
        log(f"  lenstronomy emcee: {mcmc_s:.0f} s, theta_E {theta.mean():.5f} +- {theta.std():.5f}")
    except ImportError:
        out["lenstronomy_mcmc"] = dict(skipped="emcee not installed")
    out["truth_theta_E"] = sie.TRUTH["theta_E"]
    return out


def run(*, quick: bool = False, log=print) -> dict:
    jax.config.update("jax_enable_x64", True)
    c = QUICK if quick else CONFIG
    log(f"[lensing] {c['num_pix']}x{c['num_pix']}, supersampling {c['supersampling']}, on {jax.devices()[0]}")
    return dict(kind="lensing", config=c, throughput=throughput(c, log), reconstruction=reconstruction(c, log))


def _r(a, b):
    return f"{a / b:.3g}x" if a and b else "–"


def table(result: dict) -> str:
    c, t, r = result["config"], result["throughput"], result["reconstruction"]
    env = result["environment"]
    lines = [
        f"### `lensing`: fepy vs lenstronomy, {c['num_pix']}x{c['num_pix']} pixels, supersampling "
        f"{c['supersampling']}, Gaussian PSF {c['fwhm']}\"",
        "",
        f"{env['device']} ({env['platform']}, {env['cpu']}, {env['cpu_count']} cores, load "
        f"{result.get('load_average_1min_start', float('nan')):.1f} at start), float64, "
        f"jax {env['versions']['jax']}, {result['total_wall_s']:.0f} s in all. Images agree to "
        f"{t['max_rel_image_difference']:.1e} of the peak.",
        "",
        "| per second | fepy | lenstronomy | fepy / lenstronomy |",
        "| --- | --- | --- | --- |",
        f"| images, one parameter set | {t['fepy_image']['per_s']:.1f} | {t['lenstronomy_image']['per_s']:.1f} | "
        f"{_r(t['fepy_image']['per_s'], t['lenstronomy_image']['per_s'])} |",
        f"| images, vmapped batch of {c['batch']} | {t['fepy_image_batch']['per_s']:.1f} | "
        f"{t['lenstronomy_image']['per_s']:.1f} (loop) | "
        f"{_r(t['fepy_image_batch']['per_s'], t['lenstronomy_image']['per_s'])} |",
        f"| log-likelihood evaluations | – | {t['lenstronomy_likelihood']['per_s']:.1f} | – |",
        f"| gradients of the log-likelihood ({t['n_params']} parameters) | {t['fepy_grad']['per_s']:.1f} (jax.grad) | "
        f"{t['lenstronomy_fd_gradient_per_s']:.2f} (finite differences, {t['n_params'] + 1} evaluations) | "
        f"{_r(t['fepy_grad']['per_s'], t['lenstronomy_fd_gradient_per_s'])} |",
        "",
        f"Compilation (once per shape): image {t['fepy_image']['compile_s']:.1f} s, batch "
        f"{t['fepy_image_batch']['compile_s']:.1f} s, gradient {t['fepy_grad']['compile_s']:.1f} s.",
        "",
        f"Reconstruction of one lens (theta_E truth {r['truth_theta_E']}):",
        "",
        "| method | budget | wall (s) | theta_E | std |",
        "| --- | --- | --- | --- | --- |",
    ]
    m, n = r["fepy_map"], r["fepy_nuts"]
    lines.append(f"| fepy MAP (Descent + Laplace) | {m['starts']} starts x {m['steps']} Adam steps, "
                 f"{m['converged_starts']} in the best basin | {m['wall_s']:.0f} | {m['theta_E']:.5f} | "
                 f"{m['theta_E_std']:.5f} |")
    lines.append(f"| fepy NUTS from the MAP | {n['chains']} chain, {n['warmup']} + {n['samples']} draws, "
                 f"n_eff {n['n_eff']:.0f} | {n['wall_s']:.0f} | {n['theta_E']:.5f} | {n['theta_E_std']:.5f} |")
    p = r["lenstronomy_pso"]
    lines.append(f"| lenstronomy PSO | {p['n_particles']} particles x {p['n_iterations']} iterations | "
                 f"{p['wall_s']:.0f} | {p['theta_E']:.5f} | – |")
    e = r["lenstronomy_mcmc"]
    if "skipped" in e:
        lines.append(f"| lenstronomy emcee | skipped: {e['skipped']} | – | – | – |")
    else:
        lines.append(f"| lenstronomy emcee after PSO | {e['walkers']} walkers x ({e['n_burn']} + {e['n_run']}) | "
                     f"{e['wall_s']:.0f} | {e['theta_E']:.5f} | {e['theta_E_std']:.5f} |")
    return "\n".join(lines)
