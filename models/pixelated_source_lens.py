"""The lens of ``sie_sersic_lens.py`` with a pixelated source, solved for exactly.

The same simulated observation (truth, grid, PSF and noise of ``sie_sersic_lens.py``; the
fit uses ``supersampling`` 1, the simulation 2) is modelled with a ``source_pix`` x
``source_pix`` pixelated source of width ``source_width`` arcsec under a curvature prior.
For given lens parameters (SIE + shear, 7 numbers) the source posterior is Gaussian and is
integrated out by `fepy.apps.lensing.linear_inversion`: the target is the negative log
evidence of the lens (`SourceMarginalPosterior`), minimised by `fepy.Descent` from the
``starts`` lens start(s). ``steps = 0`` (the default) keeps the lens at its start, the
truth, so the run is the source reconstruction for a known lens; ``--steps N`` refines the
lens by MAP (each step inverts a dense ``source_pix^2`` system; minutes on a CPU).

Then the prior strength is chosen by maximising the log evidence over ``strengths``
values log-spaced in [``strength_min``, ``strength_max``], and ``summary.json`` gets the
best ``log10_strength``, its ``log_evidence``, and ``reduced_chi2`` = chi^2 /
(pixels - lens parameters), reference 1 (the source's effective number of parameters,
a few per cent of the pixels, is not subtracted, so slightly below 1 is expected). Plots:
observed, model, residual and source PNG.
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import fepy
from fepy.apps import lensing
from fepy.cli import load_model

PARAMETRIC = load_model(Path(__file__).with_name("sie_sersic_lens.py"))

# the observation (grid, PSF, noise, seed) is the parametric model's; the fit's own settings follow
OBSERVATION = ("seed", "num_pix", "pixel_width", "fwhm", "background_rms", "exposure_time")
DEFAULTS = dict(
    **{name: PARAMETRIC.DEFAULTS[name] for name in OBSERVATION},
    supersampling=1,
    source_pix=30,
    source_width=0.9,
    starts=1,
    steps=0,
    learning_rate=0.002,
    strengths=13,
    strength_min=1e-6,
    strength_max=1e2,
)

LENS = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")
REFERENCE = dict(reduced_chi2=1.0, **{name: PARAMETRIC.TRUTH[name] for name in LENS})


def system(p) -> lensing.LensSystem:
    """The SIE + shear of ``sie_sersic_lens.py``; the source is solved for."""
    return lensing.LensSystem(PARAMETRIC.lens(p))


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    _, data = PARAMETRIC.simulate({**PARAMETRIC.DEFAULTS, **c, "supersampling": 2})
    model = PARAMETRIC.image_model(c)
    source_grid = lensing.PixelGrid.square(c["source_pix"], c["source_width"] / c["source_pix"])
    parameters = lensing.Parameters({name: PARAMETRIC.PRIORS[name] for name in LENS})
    target = lensing.SourceMarginalPosterior(
        model, data, parameters, system, source_grid, model.noise.variance(data),
        strength=np.sqrt(c["strength_min"] * c["strength_max"]),
    )
    z_truth = parameters.unconstrain(PARAMETRIC.TRUTH)
    # the first start at the truth, the others perturbed by 0.02 in the unconstrained coordinates
    jitter = 0.02 * jax.random.normal(jax.random.key(c["seed"]), (c["starts"], target.dim))
    z0 = z_truth + jitter.at[0].set(0.0)
    base = dist.Normal(jnp.zeros(target.dim), 1.0).to_event(1)  # nominal: the starts are given
    family = fepy.Particles(z0, jnp.zeros(c["starts"]), base)
    return fepy.Problem(target, family, fepy.Descent(optax.adam(c["learning_rate"])), c["steps"])


def analyze(target, particles, config) -> dict:
    """The best lens of the starts, the evidence-optimal regularization strength and its inversion
    (run once, for both hooks)."""
    c = {**DEFAULTS, **config}
    z = particles.positions[0]
    if particles.positions.shape[0] > 1:
        z = particles.positions[jnp.argmin(eqx.filter_jit(jax.vmap(target.energy))(particles.positions))]
    strengths = np.logspace(np.log10(c["strength_min"]), np.log10(c["strength_max"]), c["strengths"])
    log_evidence, inversion = lensing.evidence_scan(target, z, strengths)
    best = int(jnp.argmax(log_evidence))
    return dict(z=z, strengths=strengths, log_evidence=np.asarray(log_evidence), best=best, inversion=inversion)


def observables(target, family, config, analysis) -> dict:
    """The lens parameters, the evidence scan and the reduced chi^2 of the reconstruction (`analyze`)."""
    r = analysis
    lens = dict(zip(target.names, np.asarray(target.parameters.values(r["z"])).tolist()))
    return dict(
        **lens,
        log10_strength=float(np.log10(r["strengths"][r["best"]])),
        log_evidence=float(r["log_evidence"][r["best"]]),
        log_evidence_scan=dict(log10_strength=np.log10(r["strengths"]), log_evidence=r["log_evidence"]),
        strength_at_edge=r["best"] in (0, len(r["strengths"]) - 1),
        reduced_chi2=float(r["inversion"].chi2) / target.degrees_of_freedom(),
    )


def plots(target, family, out, config, analysis) -> list[str]:
    """Observed, model, residual and source images of the reconstruction (`analyze`)."""
    r = analysis
    s = lensing.LensSystem(target.lens_system(r["z"]).lens, r["inversion"].source)
    return lensing.plot_reconstruction(out, target.image_model, target.data, s)
