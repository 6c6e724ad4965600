"""`fepy.ProbabilisticModel`: a numpyro model as the energy of every solver."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import fepy
from fepy.apps import lensing
from fepy.cli import load_model

jax.config.update("jax_enable_x64", True)

DATA = jnp.array([0.3, 1.1, 0.8, 1.9, 0.4])
PRIOR_SCALE, NOISE = 2.0, 0.7


def normal_mean(data):
    """mu ~ N(0, 2^2); x_i ~ N(mu, 0.7^2): conjugate, posterior and evidence in closed form."""
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    numpyro.sample("x", dist.Normal(mu, NOISE).expand(data.shape).to_event(1), obs=data)


def exact_log_evidence(data) -> float:
    """log N(data; 0, s^2 I + s0^2 11^T)."""
    n = data.size
    cov = NOISE**2 * np.eye(n) + PRIOR_SCALE**2 * np.ones((n, n))
    _, logdet = np.linalg.slogdet(cov)
    d = np.asarray(data)
    return float(-0.5 * (d @ np.linalg.solve(cov, d) + logdet + n * math.log(2 * math.pi)))


def scale_model(data):
    """sigma ~ LogNormal(0, 1) (positive: z = log sigma), x_i ~ N(0, sigma^2)."""
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(0.0, sigma).expand(data.shape).to_event(1), obs=data)


def test_energy_is_the_negative_log_joint_with_the_jacobian():
    target = fepy.ProbabilisticModel(normal_mean, DATA)
    assert target.names == ("mu",) and target.dim == 1
    for mu in (-1.0, 0.5, 2.0):
        joint = (dist.Normal(0.0, PRIOR_SCALE).log_prob(mu) + dist.Normal(mu, NOISE).log_prob(DATA).sum())
        np.testing.assert_allclose(target.energy(jnp.array([mu])), -joint, rtol=1e-13)
    positive = fepy.ProbabilisticModel(scale_model, DATA)
    for z in (-0.5, 0.2, 1.0):
        sigma = math.exp(z)  # theta = exp(z): log|d theta / d z| = z
        joint = dist.LogNormal(0.0, 1.0).log_prob(sigma) + dist.Normal(0.0, sigma).log_prob(DATA).sum()
        np.testing.assert_allclose(positive.energy(jnp.array([z])), -(joint + z), rtol=1e-13)
        np.testing.assert_allclose(positive.constrain(jnp.array([z]))["sigma"], sigma, rtol=1e-15)
        np.testing.assert_allclose(positive.unconstrain({"sigma": sigma}), [z], rtol=1e-13)


def test_variational_free_energy_gives_the_exact_evidence():
    """The posterior of the conjugate model is Gaussian, inside the family: reverse KL makes the
    importance weights constant and its log Z the exact log evidence."""
    target = fepy.ProbabilisticModel(normal_mean, DATA)
    family = fepy.Gaussian(jnp.zeros(1), jnp.eye(1))
    solver = fepy.ReverseKL(optax.adam(optax.cosine_decay_schedule(0.05, 800, 0.01)), samples=64)
    sol = fepy.minimize(target, family, solver, steps=800, key=jax.random.key(0))
    exact = exact_log_evidence(DATA)
    precision = 1 / PRIOR_SCALE**2 + DATA.size / NOISE**2
    np.testing.assert_allclose(sol.family.mean, [DATA.sum() / NOISE**2 / precision], atol=2e-3)
    np.testing.assert_allclose(sol.summary["log_z"], exact, atol=1e-3)
    np.testing.assert_allclose(-sol.summary["free_energy"], exact, atol=1e-3)  # ELBO = log evidence


def test_a_lens_written_as_a_numpyro_model_equals_the_lens_posterior():
    """The SIE + shear + Sersic lens of models/sie_sersic_lens.py written as a numpyro program
    (the same priors, a Normal likelihood with the NoiseModel variance): the same energy as
    `lensing.LensPosterior` at the same parameter values, to round-off."""
    sie = load_model("models/sie_sersic_lens.py")
    config = dict(sie.DEFAULTS, num_pix=16, pixel_width=0.18, supersampling=1)
    image_model, data = sie.simulate(config)

    def lens_program(image_model, data):
        p = {name: numpyro.sample(name, prior) for name, prior in sie.PRIORS.items()}
        s = sie.system(p)
        mean = image_model.image(s.lens, s.source)
        scale = jnp.sqrt(image_model.noise.variance(mean))
        numpyro.sample("image", dist.Normal(mean, scale).to_event(2), obs=data)

    program = fepy.ProbabilisticModel(lens_program, image_model, data)
    posterior = lensing.LensPosterior(image_model, data, lensing.Parameters(sie.PRIORS), sie.system)
    assert program.dim == posterior.dim == len(sie.PRIORS)
    draws = jax.vmap(posterior.parameters.values)(
        jax.random.normal(jax.random.key(1), (3, posterior.dim)) * 0.3 + posterior.parameters.unconstrain(sie.TRUTH))
    for values in draws:
        named = dict(zip(posterior.names, values))
        u_program = program.energy(program.unconstrain(named))
        u_posterior = posterior.energy(posterior.parameters.unconstrain(named))
        np.testing.assert_allclose(u_program, u_posterior, rtol=1e-11)


def test_prior_draws_and_bad_input():
    target = fepy.ProbabilisticModel(scale_model, DATA)
    z = target.sample_prior(jax.random.key(0), 2000)
    assert z.shape == (2000, 1)
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=4 / math.sqrt(2000) * 1.5)  # log sigma ~ N(0, 1)
    with pytest.raises(TypeError, match="needs a numpyro model"):
        fepy.ProbabilisticModel("not a model")
    with pytest.raises(ValueError, match="no latent sample sites"):
        fepy.ProbabilisticModel(lambda d: numpyro.sample("x", dist.Normal(0, 1), obs=d), 1.0)
    with pytest.raises(ValueError, match="no value for the latent sites \\['sigma'\\]"):
        target.unconstrain({})
