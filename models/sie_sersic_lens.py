"""SIE + shear lens of a Sersic source: simulate an HST-like image, then reconstruct it.

The truth (``TRUTH``) is lensed onto ``num_pix`` x ``num_pix`` pixels of ``pixel_width``
arcsec (default 80 x 80 of 0.05", a 4" field), supersampled 2 x 2, convolved with a
Gaussian PSF of FWHM ``fwhm`` (0.1", WFC3/UVIS-like) and given background and Poisson noise
(``background_rms`` counts/s, ``exposure_time`` s): a peak signal-to-noise of about 27 per
pixel (``peak_snr``). The 14 parameters (SIE theta_E, e1, e2, centre; shear gamma1, gamma2;
Sersic amp, R_sersic, n_sersic, e1, e2, centre) are fitted by `fepy.Descent` (Adam with a
cosine-decayed learning rate) from ``starts`` independent draws of the prior; the best end
point is the MAP and `fepy.laplace` there gives the errors (delta method from the
unconstrained coordinates). ``summary.json`` has every parameter with its ``_std``, the
truth under ``reference`` and the reduced chi^2 (reference 1). Plots: observed, model,
residual ((d - m) / sigma) and the reconstructed source, as PNG.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import fepy
from fepy.apps import lensing

DEFAULTS = dict(
    seed=0,
    num_pix=80,
    pixel_width=0.05,
    supersampling=2,
    fwhm=0.1,
    background_rms=0.01,
    exposure_time=2000.0,
    starts=8,
    steps=1500,
    learning_rate=0.02,
)

TRUTH = dict(
    theta_E=1.2, e1=0.10, e2=-0.05, center_x=0.02, center_y=-0.01, gamma1=0.03, gamma2=-0.02,
    amp=20.0, R_sersic=0.12, n_sersic=1.5, source_e1=0.05, source_e2=0.10, source_x=0.08, source_y=0.05,
)

# Priors: broad compared with the posterior (widths ~1e-3 arcsec), narrow enough that
# independent starts from them find the arcs.
PRIORS = dict(
    theta_E=dist.Uniform(0.6, 2.0),
    e1=dist.Normal(0.0, 0.15),
    e2=dist.Normal(0.0, 0.15),
    center_x=dist.Normal(0.0, 0.05),
    center_y=dist.Normal(0.0, 0.05),
    gamma1=dist.Normal(0.0, 0.05),
    gamma2=dist.Normal(0.0, 0.05),
    amp=dist.LogNormal(jnp.log(10.0), 1.0),
    R_sersic=dist.LogNormal(jnp.log(0.15), 0.5),
    n_sersic=dist.Uniform(0.5, 4.0),
    source_e1=dist.Normal(0.0, 0.15),
    source_e2=dist.Normal(0.0, 0.15),
    source_x=dist.Normal(0.0, 0.1),
    source_y=dist.Normal(0.0, 0.1),
)

REFERENCE = dict(theta_E=TRUTH["theta_E"], e1=TRUTH["e1"], e2=TRUTH["e2"], reduced_chi2=1.0)


def lens(p) -> lensing.MassModel:
    """SIE + external shear (about the SIE centre)."""
    return lensing.MassModel((
        lensing.SIE(p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"]),
        lensing.Shear(p["gamma1"], p["gamma2"], p["center_x"], p["center_y"]),
    ))


def system(p) -> lensing.LensSystem:
    """The lens of :func:`lens` and an elliptical Sersic source."""
    source = lensing.SersicElliptic(
        p["amp"], p["R_sersic"], p["n_sersic"], p["source_e1"], p["source_e2"], p["source_x"], p["source_y"]
    )
    return lensing.LensSystem(lens(p), source)


def image_model(c) -> lensing.ImageModel:
    grid = lensing.PixelGrid.square(c["num_pix"], c["pixel_width"])
    noise = lensing.NoiseModel(c["background_rms"], c["exposure_time"])
    return lensing.ImageModel(grid, lensing.GaussianPSF(c["fwhm"]), c["supersampling"], noise)


def simulate(c) -> tuple[lensing.ImageModel, jax.Array]:
    """The image model and a noisy observation of the truth (noise from ``seed``)."""
    model = image_model(c)
    truth = system(TRUTH)
    key = jax.random.fold_in(jax.random.key(c["seed"]), 7)
    return model, model.simulate(key, truth.lens, truth.source)


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    model, data = simulate(c)
    parameters = lensing.Parameters(PRIORS)
    target = lensing.LensPosterior(model, data, parameters, system)
    # the starts: independent prior draws, in the unconstrained coordinates of the target
    draws = {name: prior.sample(jax.random.fold_in(jax.random.key(c["seed"]), i), (c["starts"],))
             for i, (name, prior) in enumerate(PRIORS.items())}
    z0 = jax.vmap(parameters.unconstrain)(draws)
    base = dist.Normal(jnp.zeros(target.dim), 1.0).to_event(1)  # nominal: the starts are given
    family = fepy.Particles(z0, jnp.zeros(c["starts"]), base)
    schedule = optax.cosine_decay_schedule(c["learning_rate"], c["steps"], alpha=0.01)
    return fepy.Problem(target, family, fepy.Descent(optax.adam(schedule)), c["steps"])


def fit(target, particles) -> dict:
    """The MAP start, its Laplace errors in the parameters' units and the reduced chi^2."""
    energy = jax.vmap(target.energy)(particles.positions)
    z = particles.positions[jnp.argmin(energy)]
    approx = fepy.laplace(target, z, newton_steps=20)  # polish Adam's end point first
    z = approx.mean
    jac = jax.jacfwd(target.parameters.values)(z)
    std = jnp.sqrt(jnp.diag(jac @ approx.covariance @ jac.T))
    values = target.parameters.values(z)
    best = jnp.min(energy)
    return dict(
        z=z, values=dict(zip(target.names, np.asarray(values).tolist())),
        std=dict(zip(target.names, np.asarray(std).tolist())),
        reduced_chi2=float(target.chi2(z)) / target.degrees_of_freedom(),
        converged_starts=int(jnp.sum(energy < best + 1.0)),
        grad_norm=float(jnp.linalg.norm(approx.gradient)),
    )


def observables(target, family, config) -> dict:
    result = fit(target, family)
    out = {}
    for name in target.names:
        out[name] = result["values"][name]
        out[f"{name}_std"] = result["std"][name]
    noise = target.image_model.noise
    truth = system(TRUTH)
    truth_image = target.image_model.image(truth.lens, truth.source)
    out.update(
        reduced_chi2=result["reduced_chi2"],
        converged_starts=result["converged_starts"],
        grad_norm=result["grad_norm"],
        peak_snr=float(jnp.max(truth_image / jnp.sqrt(noise.variance(truth_image)))),
        truth=dict(TRUTH),
    )
    return out


def plots(target, family, out, config) -> list[str]:
    best = jnp.argmin(jax.vmap(target.energy)(family.positions))
    s = target.lens_system(family.positions[best])
    return lensing.plot_reconstruction(out, target.image_model, target.data, s)
