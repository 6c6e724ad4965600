"""A Recurrent Inference Machine (RIM) for lens reconstruction, against MAP at equal wall time.

A small RIM (`fepy.apps.lensing.RIM`: ConvGRU source branch, GRU lens branch, exact
likelihood gradients through the fepy forward model) is trained for ``train_steps`` Adam
steps of ``batch`` lenses simulated on the fly (`LensSimulator`: SIE + shear from
`LensPrior`'s default prior, sources of 1-3 elliptical Sersic blobs on a ``source_pix`` x
``source_pix`` grid of width ``source_width`` arcsec, a ``num_pix`` x ``num_pix`` image of
``pixel_width`` arcsec, Gaussian PSF of FWHM ``fwhm``, background ``background_rms`` and
Poisson noise of ``exposure_time``; peak SNR about 10-20 per pixel). Then it reconstructs
``heldout`` lenses that training never saw, and the same lenses are reconstructed by two MAP
baselines started at the RIM's x_0 (`map_joint`: Adam on source pixels + lens with a
curvature prior; `map_inversion`: Adam on the lens with the source integrated out exactly
by `linear_inversion`), each stopped when it has used the RIM's wall time on that batch
(measured after compilation, same batch, same process). The regularisation strength is the
evidence-optimal one on ``calibration`` training-distribution lenses; each MAP's Adam
learning rate is the best of a small grid on those lenses at the equal-time step count.

``build`` returns the lens posterior of held-out lens ``lens_index`` with the source
integrated out (`SourceMarginalPosterior`) and the RIM's starting lens; ``steps`` (default 0)
Adam steps on it are the CLI's own MAP and do not enter the comparison. ``analyze`` trains
and compares (once, for both hooks). ``summary.json``: ``source_mse_rim``,
``source_mse_map_joint``, ``source_mse_map_inversion`` (equal time), ``source_mse_initial``
(blank source) and the longer-run MAP and true-lens inversion for context, as means over the
held-out lenses of the per-pixel MSE in units of ``source_scale`` squared, with standard
errors, the wall times and step counts, and ``reduced_chi2`` of the RIM's reconstruction of
lens ``lens_index`` (reference 1). Plots: observed, model, residual and source PNG of that
reconstruction (`plot_reconstruction`), ``sources.png`` (truth, RIM, MAPs), ``training.png``;
the trained weights go to ``rim.eqx`` (``eqx.tree_serialise_leaves``).
"""

import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import fepy
from fepy.apps import lensing

DEFAULTS = dict(
    seed=0,
    num_pix=32,
    pixel_width=0.1,
    supersampling=1,
    fwhm=0.15,
    background_rms=0.01,
    exposure_time=2000.0,
    source_pix=16,
    source_width=1.2,
    source_scale=30.0,  # flux per arcsec^2: the unit of the RIM's source state
    rim_steps=6,  # T
    hidden=8,  # ConvGRU channels
    lens_hidden=32,  # GRU units of the lens branch
    train_steps=600,
    batch=16,
    learning_rate=3e-3,  # Adam, cosine-decayed to a tenth
    lens_weight=0.1,
    heldout=16,  # held-out lenses of the comparison
    calibration=8,  # training-distribution lenses that set the MAP strength and learning rates
    joint_long_steps=1000,  # context: the MAPs run much longer than the RIM's time
    inversion_long_steps=10,
    lens_index=0,  # the held-out lens that is plotted and is the CLI's target
    steps=0,
    map_learning_rate=0.02,  # the CLI's own Descent on the target (steps > 0 only)
    progress=True,
)

REFERENCE = dict(reduced_chi2=1.0)

STRENGTHS = np.logspace(-6, 2, 17)
JOINT_RATES = (0.003, 0.01, 0.03, 0.1)
INVERSION_RATES = (0.01, 0.03, 0.1)


def likelihood(c) -> lensing.LensLikelihood:
    grid = lensing.PixelGrid.square(c["num_pix"], c["pixel_width"])
    noise = lensing.NoiseModel(c["background_rms"], c["exposure_time"])
    model = lensing.ImageModel(grid, lensing.GaussianPSF(c["fwhm"]), c["supersampling"], noise)
    source_grid = lensing.PixelGrid.square(c["source_pix"], c["source_width"] / c["source_pix"])
    return lensing.LensLikelihood(model, source_grid, lensing.LensPrior(), c["source_scale"])


def lenses(c, which: str, n: int) -> lensing.LensBatch:
    """Simulated lenses with keys disjoint from training's: ``which`` is 'heldout' or 'calibration'."""
    key = jax.random.fold_in(jax.random.key(c["seed"]), dict(heldout=1001, calibration=1002)[which])
    return lensing.simulate_batch(lensing.LensSimulator(likelihood(c)), key, n)


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    if not 0 <= c["lens_index"] < c["heldout"]:
        raise ValueError(f"lens_index must be in [0, heldout={c['heldout']}), got {c['lens_index']}")
    lik = likelihood(c)
    heldout = lenses(c, "heldout", c["heldout"])
    strength, _ = lensing.evidence_strength(lik, lenses(c, "calibration", c["calibration"]), STRENGTHS)
    prior = lik.prior
    target = lensing.SourceMarginalPosterior(
        lik.image_model, heldout.data[c["lens_index"]], prior.parameters,
        lambda p: lensing.LensSystem(prior.lens(prior.from_values(p))), lik.source_grid,
        heldout.variance[c["lens_index"]], strength,
    )
    z0 = prior.to_z(prior.initial())[None]
    base = dist.Normal(jnp.zeros(prior.dim), 1.0).to_event(1)  # nominal: the start is given
    family = fepy.Particles(z0, jnp.zeros(1), base)
    return fepy.Problem(target, family, fepy.Descent(optax.adam(c["map_learning_rate"])), c["steps"])


def train(c, log=print):
    """The trained RIM of config ``c`` and its `TrainingHistory` and wall time (s)."""
    lik = likelihood(c)
    rim = lensing.RIM(lik, c["rim_steps"], c["hidden"], c["lens_hidden"], key=jax.random.key(c["seed"] + 1))
    schedule = optax.cosine_decay_schedule(c["learning_rate"], c["train_steps"], alpha=0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    t0 = time.perf_counter()
    rim, history = lensing.train_rim(
        rim, lensing.LensSimulator(lik), jax.random.key(c["seed"]), steps=c["train_steps"], batch=c["batch"],
        optimizer=optimizer, lens_weight=c["lens_weight"], evaluate_every=max(c["train_steps"] // 10, 1),
        progress=c["progress"],
    )
    wall = time.perf_counter() - t0
    log(f"  trained the RIM: {c['train_steps']} steps x {c['batch']} lenses in {wall:.0f} s, held-out loss "
        f"{history.heldout_loss[0]:.4g} -> {history.heldout_loss[-1]:.4g}")
    return rim, history, wall


def _best_of(times):
    return float(np.min(times))


def _timed(fn, repeats: int = 3):
    """The result of ``fn()`` and the least of ``repeats`` wall times (after one warm-up call)."""
    out = jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return out, _best_of(times)


def _stats(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")


def compare(rim, c, heldout, strength, log=print) -> dict:
    """RIM against the MAPs on ``heldout`` (a `LensBatch`): per-method source MSEs per lens,
    wall times (the least of 3 timed calls after a warm-up, the whole batch under ``jax.vmap``)
    and step counts. A MAP's equal-time step count is first estimated from its timed fixed
    cost and cost per step, then rescaled by the measured time of a run with that count
    until the two times agree within 10 % (at most 4 times)."""
    lik = rim.likelihood
    calibration = lenses(c, "calibration", c["calibration"])
    run_rim = eqx.filter_jit(lambda r, d, v: jax.vmap(r)(d, v))
    trajectory, rim_s = _timed(lambda: run_rim(rim, heldout.data, heldout.variance))
    out = dict(rim=dict(wall_s=rim_s, steps=c["rim_steps"], source=np.asarray(trajectory.source[:, -1]),
                        lens=np.asarray(trajectory.lens[:, -1]), trajectory=trajectory),
               strength=strength)
    # (baseline, its learning-rate grid, the two step counts that time it)
    methods = dict(joint=(lensing.map_joint, JOINT_RATES, (0, 50)),
                   inversion=(lensing.map_inversion, INVERSION_RATES, (0, 3)))
    for name, (fn, rates, (n1, n2)) in methods.items():
        run = jax.jit(jax.vmap(lambda d, v, n, lr, fn=fn: fn(lik, d, v, n, strength=strength, learning_rate=lr),
                               in_axes=(0, 0, None, None)))

        def best_rate(steps, rates=rates, run=run):
            """The learning rate of the grid with the least mean source MSE on the calibration lenses."""
            mse = [float(jnp.mean(lensing.source_mse(run(calibration.data, calibration.variance, steps, lr).source,
                                                     calibration.source))) for lr in rates]
            return rates[int(np.argmin(mse))], dict(zip(map(str, rates), mse))

        # the fixed cost (start, final inversion: n1 = 0 steps) and the cost of a step, from n2 steps
        _, t1 = _timed(lambda: run(heldout.data, heldout.variance, n1, rates[0]))
        _, t2 = _timed(lambda: run(heldout.data, heldout.variance, n2, rates[0]))
        per_step = max((t2 - t1) / (n2 - n1), 1e-9)
        fixed = max(t1 - n1 * per_step, 0.0)
        n_equal = max(int((rim_s - fixed) / per_step), 0)
        for _ in range(4):  # correct the count by the measured time of the run itself (timings are noisy)
            _, wall = _timed(lambda: run(heldout.data, heldout.variance, n_equal, rates[0]))
            if 0.9 < rim_s / wall < 1.1 or (n_equal == 0 and wall >= rim_s):
                break
            n_equal = max(int(n_equal * rim_s / wall) if n_equal > 0 else int((rim_s - wall) / per_step), 0)
        lr, calibration_mse = best_rate(n_equal)
        result, wall = _timed(lambda: run(heldout.data, heldout.variance, n_equal, lr))
        out[name] = dict(steps=n_equal, wall_s=wall, learning_rate=lr, per_step_s=per_step, fixed_s=fixed,
                         calibration_mse=calibration_mse, source=np.asarray(result.source),
                         lens=np.asarray(result.lens))
        long_steps = c[f"{name}_long_steps"]
        long_lr, long_calibration = best_rate(long_steps)
        long_result, long_wall = _timed(lambda: run(heldout.data, heldout.variance, long_steps, long_lr), repeats=1)
        out[f"{name}_long"] = dict(steps=long_steps, wall_s=long_wall, learning_rate=long_lr,
                                   calibration_mse=long_calibration, source=np.asarray(long_result.source),
                                   lens=np.asarray(long_result.lens))
        log(f"  MAP {name}: {per_step * 1e3:.2f} ms/step + {fixed * 1e3:.1f} ms for the batch; equal time "
            f"({rim_s * 1e3:.0f} ms): {n_equal} steps (lr {lr}) in {wall * 1e3:.0f} ms; {long_steps} steps "
            f"(lr {long_lr}) in {long_wall:.1f} s")
    # context: the inversion at the true lens (the regularised source the MAPs aim at) and the blank start
    true_inversion = jax.jit(jax.vmap(lambda d, v, u: lensing.linear_inversion(
        lik.image_model, lik.prior.lens(u), lik.source_grid, d, v, strength).source.values / lik.source_scale))
    out["true_lens_inversion"] = dict(source=np.asarray(true_inversion(heldout.data, heldout.variance, heldout.lens)))
    out["initial"] = dict(source=np.zeros_like(out["rim"]["source"]))
    truth = np.asarray(heldout.source)
    for name, row in out.items():
        if isinstance(row, dict) and "source" in row:
            row["mse"] = np.mean((row["source"] - truth) ** 2, axis=(1, 2))
            if "lens" in row:
                row["lens_rms"] = np.sqrt(np.mean((row["lens"] - np.asarray(heldout.lens)) ** 2, axis=1))
    return out


def analyze(target, family, config) -> dict:
    """Train the RIM, then compare it with the MAPs on the held-out lenses (once, for both hooks)."""
    c = {**DEFAULTS, **config}
    log = print if c["progress"] else (lambda *_: None)
    rim, history, train_s = train(c, log)
    heldout = lenses(c, "heldout", c["heldout"])
    comparison = compare(rim, c, heldout, float(target.strength), log)
    return dict(rim=rim, history=history, train_s=train_s, heldout=heldout, comparison=comparison)


def observables(target, family, config, analysis) -> dict:
    c = {**DEFAULTS, **config}
    r, k = analysis["comparison"], c["lens_index"]
    out = {}
    for name in ("rim", "joint", "inversion", "joint_long", "inversion_long", "true_lens_inversion", "initial"):
        key = "map_" + name if name.startswith(("joint", "inversion")) else name
        out[f"source_mse_{key}"], out[f"source_mse_{key}_stderr"] = _stats(r[name]["mse"])
        if "wall_s" in r[name]:
            out[f"wall_s_{key}"] = r[name]["wall_s"]
            out[f"steps_{key}"] = r[name]["steps"]
        if "lens_rms" in r[name]:
            out[f"lens_rms_{key}"] = _stats(r[name]["lens_rms"])[0]
    for name in ("joint", "inversion", "joint_long", "inversion_long"):
        out[f"learning_rate_map_{name}"] = r[name]["learning_rate"]
    history = analysis["history"]
    lik = analysis["rim"].likelihood
    heldout = analysis["heldout"]
    s, u = r["rim"]["source"][k], r["rim"]["lens"][k]
    model = lik.model_image(jnp.asarray(s), jnp.asarray(u))
    chi2 = float(jnp.sum((heldout.data[k] - model) ** 2 / heldout.variance[k]))
    out.update(
        strength=r["strength"],
        train_s=analysis["train_s"],
        heldout_loss_initial=float(history.heldout_loss[0]),
        heldout_loss_final=float(history.heldout_loss[-1]),
        training_curve=dict(steps=history.steps, train_loss=history.train_loss, heldout_loss=history.heldout_loss),
        reduced_chi2=chi2 / (math.prod(lik.image_model.grid.shape) - lik.prior.dim),
        peak_snr=float(jnp.max(heldout.data[k] / jnp.sqrt(heldout.variance[k]))),
        rim_mse_per_iteration=np.mean(
            (np.asarray(r["rim"]["trajectory"].source) - np.asarray(heldout.source)[:, None]) ** 2, axis=(0, 2, 3)),
    )
    return out


def plots(target, family, out, config, analysis) -> list[str]:
    c = {**DEFAULTS, **config}
    out = Path(out)
    r, k = analysis["comparison"], c["lens_index"]
    rim = analysis["rim"]
    lik = rim.likelihood
    s, u = jnp.asarray(r["rim"]["source"][k]), jnp.asarray(r["rim"]["lens"][k])
    system = lensing.LensSystem(lik.prior.lens(u), lik.source(s))
    written = lensing.plot_reconstruction(out, lik.image_model, target.data, system)
    eqx.tree_serialise_leaves(out / "rim.eqx", rim)
    written.append("rim.eqx")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("truth", np.asarray(analysis["heldout"].source[k])), ("RIM", r["rim"]["source"][k]),
              ("MAP joint (equal time)", r["joint"]["source"][k]),
              ("MAP inversion (equal time)", r["inversion"]["source"][k]),
              ("MAP joint (long)", r["joint_long"]["source"][k])]
    vmax = float(np.max(panels[0][1]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, values) in zip(axes, panels):
        ax.imshow(values, origin="lower", vmin=min(0.0, float(np.min(values))), vmax=vmax, cmap="viridis")
        mse = float(np.mean((values - panels[0][1]) ** 2))
        ax.set_title(f"{title}\nMSE {mse:.2e}" if title != "truth" else title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"held-out lens {k}: source (units of {c['source_scale']:g} flux/arcsec$^2$)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "sources.png", dpi=110)
    plt.close(fig)
    history = analysis["history"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(history.steps[1:], history.train_loss[1:], "o-", label="training batches")
    ax.plot(history.steps, history.heldout_loss, "s-", label="held-out")
    ax.set_xlabel("training step")
    ax.set_ylabel("RIM loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=110)
    plt.close(fig)
    return [*written, "sources.png", "training.png"]
