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

``--set inference=``: ``map`` (default) as above; ``nuts`` then runs `fepy.nuts` (dense
mass, ``nuts_chains`` chains of ``nuts_warmup`` + ``nuts_samples`` steps) from the MAP, in
the unconstrained coordinates whitened by the Laplace covariance (as for ``vi`` below), and
adds ``<name>_nuts`` / ``<name>_nuts_std`` (posterior mean and standard deviation) and
``r_hat_<name>`` for theta_E, e1, e2 to the summary; ``vi`` fits a full-covariance
`fepy.Gaussian` by `fepy.ReverseKL` (``vi_steps`` Adam steps of ``vi_samples`` samples) in
the unconstrained coordinates, whitened by the Laplace covariance (z = z_MAP + L w, so one
learning rate fits every parameter; q starts at N(0, I) in w, i.e. at the Laplace
Gaussian), and adds ``<name>_vi`` / ``<name>_vi_std``, the ELBO and the importance-sampling
ESS fraction. ``corner.png`` shows the posterior samples of theta_E, e1, e2 and the shear
(Laplace draws for ``map``).
"""

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
    num_pix=80,
    pixel_width=0.05,
    supersampling=2,
    fwhm=0.1,
    background_rms=0.01,
    exposure_time=2000.0,
    starts=8,
    steps=1500,
    learning_rate=0.02,
    inference="map",  # map: MAP + Laplace; nuts: + fepy.nuts from the MAP; vi: + fepy.ReverseKL (Gaussian)
    nuts_warmup=300,
    nuts_samples=300,
    nuts_chains=2,
    vi_steps=600,
    vi_samples=64,
    vi_learning_rate=0.01,
    corner_samples=4000,  # draws of the Laplace Gaussian in the corner plot with inference=map
)

INFERENCES = ("map", "nuts", "vi")
SHOWN = ("theta_E", "e1", "e2", "gamma1", "gamma2")  # parameters in the corner plot

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


@eqx.filter_jit
def _energies(target, positions):
    """U at each start (compiled once per target kind, shared by fit and plots)."""
    return jax.vmap(target.energy)(positions)


@eqx.filter_jit
def _delta_method(target, z, covariance):
    """The parameter values at z, their Laplace standard deviations and the chi^2 at z."""
    jac = jax.jacfwd(target.parameters.values)(z)
    return target.parameters.values(z), jnp.sqrt(jnp.diag(jac @ covariance @ jac.T)), target.chi2(z)


def fit(target, particles) -> dict:
    """The MAP start, its Laplace errors in the parameters' units and the reduced chi^2.

    The starts are tried in order of energy: the lowest whose Newton-polished end point has a
    positive definite Hessian is the MAP (an unconverged best start, e.g. on a saddle after a
    short run, falls through to the next; ``laplace_start`` says which was taken)."""
    energy = np.asarray(_energies(target, particles.positions))
    error = None
    for rank, i in enumerate(np.argsort(energy)):
        try:
            approx = fepy.laplace(target, particles.positions[i], newton_steps=100)  # polish Adam's end point
            break
        except ValueError as e:
            error = e
    else:
        raise ValueError(f"no start is at a strict minimum: {error}")
    z = approx.mean
    values, std, chi2 = _delta_method(target, z, approx.covariance)
    best = energy.min()
    return dict(
        z=z, covariance=approx.covariance, values=dict(zip(target.names, np.asarray(values).tolist())),
        std=dict(zip(target.names, np.asarray(std).tolist())),
        reduced_chi2=float(chi2) / target.degrees_of_freedom(),
        converged_starts=int(np.sum(energy < best + 1.0)), laplace_start=rank,
        grad_norm=float(jnp.linalg.norm(approx.gradient)),
    )


class Whitened(fepy.Energy):
    """U(z0 + L w): the target in coordinates w whitened by a Cholesky factor L (log Z in w is
    log Z in z minus log det L)."""

    target: fepy.Energy
    shift: jax.Array
    matrix: jax.Array
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def energy(self, w):
        return self.target.energy(self.shift + self.matrix @ w)


def nuts_samples(target, result, c) -> tuple[np.ndarray, dict]:
    """NUTS from the MAP in the Laplace-whitened coordinates w (z = z_MAP + L w, where the
    posterior is about N(0, I), so warm-up starts well scaled; dense mass adapted on top):
    draws of the parameter values (chain * draw, dim) and a summary."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    L = jnp.linalg.cholesky(result["covariance"])
    white = Whitened(target, result["z"], L, dim=target.dim)
    t0 = time.perf_counter()
    run = fepy.nuts(white, jnp.zeros(target.dim), jax.random.key(c["seed"] + 1), warmup=c["nuts_warmup"],
                    samples=c["nuts_samples"], chains=c["nuts_chains"], dense_mass=True)
    z = result["z"] + run.positions @ L.T
    values = np.asarray(jax.vmap(jax.vmap(target.parameters.values))(z))
    wall = time.perf_counter() - t0
    out = dict(nuts_wall_s=wall, nuts_divergences=int(np.sum(np.asarray(run.diverging))),
               nuts_accept_prob=float(np.mean(np.asarray(run.accept_prob))))
    many = c["nuts_chains"] > 1 or c["nuts_samples"] >= 4
    r_hat = np.asarray(split_gelman_rubin(values)) if many else np.full(target.dim, np.nan)
    n_eff = np.asarray(effective_sample_size(values)) if many else np.full(target.dim, np.nan)
    for i, name in enumerate(target.names):
        out[f"{name}_nuts"] = float(values[..., i].mean())
        out[f"{name}_nuts_std"] = float(values[..., i].std())
        if name in ("theta_E", "e1", "e2"):
            out[f"r_hat_{name}"] = float(r_hat[i])
            out[f"n_eff_{name}"] = float(n_eff[i])
    return values.reshape(-1, target.dim), out


def vi_samples(target, result, c) -> tuple[np.ndarray, dict]:
    """Reverse-KL Gaussian in whitened unconstrained coordinates: draws of the values and a summary."""
    L = jnp.linalg.cholesky(result["covariance"])
    white = Whitened(target, result["z"], L, dim=target.dim)
    q0 = fepy.Gaussian(jnp.zeros(target.dim), jnp.eye(target.dim))
    solver = fepy.ReverseKL(optax.adam(c["vi_learning_rate"]), samples=c["vi_samples"], summary_samples=2048)
    t0 = time.perf_counter()
    sol = fepy.minimize(white, q0, solver, steps=c["vi_steps"], key=jax.random.key(c["seed"] + 2))
    q = sol.family
    w = q.sample(jax.random.key(c["seed"] + 3), 4000)
    values = np.asarray(jax.vmap(target.parameters.values)(result["z"] + w @ L.T))
    log_det = float(jnp.sum(jnp.log(jnp.diagonal(L))))
    s = sol.summary
    out = dict(vi_wall_s=time.perf_counter() - t0, vi_elbo=-float(s["free_energy"]) + log_det,
               vi_log_z=float(s["log_z"]) + log_det, vi_ess_fraction=float(s["ess_fraction"]))
    for i, name in enumerate(target.names):
        out[f"{name}_vi"] = float(values[:, i].mean())
        out[f"{name}_vi_std"] = float(values[:, i].std())
    return values, out


def laplace_samples(target, result, n: int, seed: int) -> np.ndarray:
    """Draws of the parameter values under the Laplace Gaussian (in z, mapped to the values)."""
    z = jax.random.multivariate_normal(jax.random.key(seed + 4), result["z"], result["covariance"], (n,))
    return np.asarray(jax.vmap(target.parameters.values)(z))


_SAMPLES = {}  # id(family) -> (label, draws of the values): from observables to plots


def observables(target, family, config) -> dict:
    c = {**DEFAULTS, **config}
    if c["inference"] not in INFERENCES:
        raise ValueError(f"inference must be one of {INFERENCES}, got {c['inference']!r}")
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
        laplace_start=result["laplace_start"],
        truth=dict(TRUTH),
    )
    if c["inference"] == "nuts":
        draws, extra = nuts_samples(target, result, c)
    elif c["inference"] == "vi":
        draws, extra = vi_samples(target, result, c)
    else:
        draws, extra = laplace_samples(target, result, c["corner_samples"], c["seed"]), {}
    out.update(extra)
    _SAMPLES.clear()
    _SAMPLES[id(family)] = (dict(map="Laplace", nuts="NUTS", vi="VI (reverse KL)")[c["inference"]], draws)
    return out


def plots(target, family, out, config) -> list[str]:
    best = jnp.argmin(_energies(target, family.positions))
    s = target.lens_system(family.positions[best])
    written = lensing.plot_reconstruction(out, target.image_model, target.data, s)
    if id(family) in _SAMPLES:
        label, draws = _SAMPLES[id(family)]
        index = [target.names.index(n) for n in SHOWN]
        lensing.plot_corner(Path(out) / "corner.png", draws[:, index], SHOWN, truths=[TRUTH[n] for n in SHOWN],
                            title=f"{label} posterior, {len(draws)} draws")
        written.append("corner.png")
    return written
