"""Boltzmann generators: `fepy.Flow` (flowjax coupling flows), `fepy.ForwardKL` and the
importance-sampling estimators (log Z with its standard error, Kish ESS, reweighted means)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
import pytest
from conftest import C3, M3, gaussian_energy, perturbed
from flowjax.bijections import Coupling, RationalQuadraticSpline

import fepy


def make(kind, dim, permutation="random", layers=4):
    if kind == "rq_spline":
        return fepy.Flow.rq_spline(jax.random.key(dim), dim, layers=layers, knots=6, interval=3.0, width=16,
                                   permutation=permutation)
    return fepy.Flow.affine(jax.random.key(dim), dim, layers=layers, width=16, permutation=permutation)


# ----------------------------------------------------------------------------- the bijection


@eqx.filter_jit
def round_trip(flow, z):
    """f(z) with log|det J_f|, f^-1(f(z)) with log|det J_f^-1|, log|det jacfwd(f)(z)|, and log q of
    samples by the forward pass and by log_prob: one compiled program per flow."""
    x, log_det = flow.transform_and_log_det(z)
    back, inverse_log_det = flow.inverse_and_log_det(x)
    bijection = paramax.unwrap(flow.bijection)
    log_abs_det = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(bijection.transform))(z))[1]
    samples, log_q = flow.sample_and_log_prob(jax.random.key(3), 32)
    return x, log_det, back, inverse_log_det, log_abs_det, log_q, flow.log_prob(samples)


# 2: a flip; 3: odd split, reversed; 4: even split, random permutation (for the spline in the
# slow suite only: each case is a compilation of several seconds, and the permutation path is
# the affine flow's as well); 5, 6: more of the same splits, slow suite
CASES = [pytest.param(kind, dim, marks=[pytest.mark.slow] if (kind == "rq_spline" and dim > 3) or dim > 4 else [])
         for kind in ("rq_spline", "affine") for dim in (2, 3, 4, 5, 6)]


@pytest.mark.parametrize("kind, dim", CASES)
def test_flow_inverts_and_its_log_det_is_the_jacobian_determinant(kind, dim):
    permutation = "reverse" if dim % 2 else "random"
    flow = perturbed(make(kind, dim, permutation), 0.05 if kind == "rq_spline" else 0.1)
    z = jax.random.normal(jax.random.key(2), (64, dim))
    x, log_det, back, inverse_log_det, log_abs_det, log_q, log_prob = round_trip(flow, z)
    # a real test: far from the identity (the permutations alone keep |det J| = 1)
    assert float(jnp.std(log_det)) > 0.05 and float(jnp.mean(jnp.abs(jnp.sort(x, 1) - jnp.sort(z, 1)))) > 0.05
    np.testing.assert_allclose(back, z, rtol=0, atol=1e-10)
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=0, atol=1e-10)
    np.testing.assert_allclose(log_abs_det, log_det, rtol=0, atol=1e-10)
    # log q by the forward pass (sampling) equals log q by the inverse pass (log_prob)
    np.testing.assert_allclose(log_prob, log_q, rtol=0, atol=1e-10)


def test_flow_starts_as_its_base_and_is_normalised_after_perturbation():
    flow = make("rq_spline", 2)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    np.testing.assert_allclose(flow.log_prob(x), -0.5 * jnp.sum(x**2, 1) - math.log(2 * math.pi), atol=1e-14)
    # int q = 1 by the midpoint rule on [-9, 9]^2 (the RQ splines act on [-3, 3], identity
    # outside, so the tails are Gaussian tails of the moved base: negligible beyond 9); the
    # rule's error is O(h^2 max|q''|) ~ 1e-5 at h = 0.02 (q is only C^1 at the knots)
    flow = perturbed(flow, 0.05)
    h = 0.02
    axis = np.arange(-9.0, 9.0, h) + h / 2
    grid = jnp.asarray(np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2))
    mass = float(jnp.sum(jnp.exp(flow.log_prob(grid))) * h * h)
    assert mass == pytest.approx(1.0, abs=1e-4)
    assert flow.log_prob(grid[:40].reshape(4, 10, 2)).shape == (4, 10)


# ----------------------------------------------------------------------------- estimators


def test_ess_is_n_and_log_z_exact_when_q_is_p():
    # two reversed layers are the identity map, so q is the Gaussian base = p exactly
    target = gaussian_energy(M3, C3)
    base = fepy.Gaussian.from_covariance(M3, C3)
    flow = fepy.Flow.affine(jax.random.key(0), 3, layers=2, permutation="reverse", base=base)
    x, log_q = flow.sample_and_log_prob(jax.random.key(1), 500)
    log_w = -jax.vmap(target.energy)(x) - log_q
    assert float(fepy.kish_ess(log_w)) == pytest.approx(500, rel=1e-12)
    log_z, stderr = fepy.log_z_and_stderr(log_w)
    assert float(log_z) == pytest.approx(target.log_z(), abs=1e-12)
    assert float(stderr) < 1e-12
    sol = fepy.minimize(target, flow, fepy.ReverseKL(optax.adam(0.0), summary_samples=300), steps=1,
                        key=jax.random.key(2))
    assert sol.ess == pytest.approx(300, rel=1e-12) and sol.log_z == pytest.approx(target.log_z(), abs=1e-12)


@pytest.fixture(scope="module")
def trained_on_gaussian():
    """An affine flow trained 300 reverse-KL steps on N(M3, C3): close to p, not equal."""
    target = gaussian_energy(M3, C3)
    flow = fepy.Flow.affine(jax.random.key(0), 3, layers=4, width=16)
    solver = fepy.ReverseKL(optax.adam(1e-2), samples=128)
    sol = fepy.minimize(target, flow, solver, steps=300, key=jax.random.key(1))
    return target, sol


def test_trained_flow_log_z_within_its_standard_error(trained_on_gaussian):
    target, sol = trained_on_gaussian
    exact = target.log_z()
    assert 0.2 < sol.ess_fraction < 0.999  # a flow that is not p: the weights vary
    assert abs(sol.log_z - exact) < 4 * sol.log_z_stderr
    # the reported stderr is the actual spread: R independent estimates of n samples each
    n, r = 500, 60
    flow = sol.family
    keys = jax.random.split(jax.random.key(7), r)

    def estimate(key):
        x, log_q = flow.sample_and_log_prob(key, n)
        return fepy.log_z_and_stderr(-jax.vmap(target.energy)(x) - log_q)

    log_z, stderr = jax.vmap(estimate)(keys)
    spread = float(jnp.std(log_z, ddof=1))
    # the sample sd of R = 60 normal values is within +-30 % of sigma with prob. > 0.99
    assert spread == pytest.approx(float(jnp.mean(stderr)), rel=0.3)
    # Z-hat is unbiased: the mean of Z_r / Z - 1 is 0 within 4 standard errors of the mean
    ratio = np.exp(np.asarray(log_z) - exact)
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / math.sqrt(r)


def test_reweighted_moments_are_unbiased_within_their_standard_errors(trained_on_gaussian):
    target, sol = trained_on_gaussian
    flow = sol.family
    n, r = 1000, 40
    exact = np.concatenate([M3, np.diag(C3) + M3**2])  # E[x_i] and E[x_i^2] under p

    def estimate(key):
        x, log_q = flow.sample_and_log_prob(key, n)
        log_w = -jax.vmap(target.energy)(x) - log_q
        return fepy.reweighted_mean(log_w, jnp.concatenate([x, x**2], axis=1))

    means, stderrs = jax.vmap(estimate)(jax.random.split(jax.random.key(11), r))
    # without reweighting the flow's own moments are off by many standard errors: the
    # weights do the work (self-normalised bias is O(1/n), well below the stderr of the mean)
    plain = jnp.mean(flow.sample(jax.random.key(12), n * r), axis=0)
    plain = jnp.concatenate([plain, jnp.mean(flow.sample(jax.random.key(12), n * r) ** 2, axis=0)])
    combined = np.sqrt(np.sum(np.asarray(stderrs) ** 2, axis=0)) / r
    error = np.asarray(jnp.mean(means, axis=0)) - exact
    assert np.all(np.abs(error) < 4 * combined), (error, combined)
    assert np.max(np.abs(np.asarray(plain) - exact) / combined) > 8
    # each stderr is the actual spread of its estimate
    np.testing.assert_allclose(np.std(np.asarray(means), axis=0, ddof=1), np.mean(np.asarray(stderrs), axis=0),
                               rtol=0.35)


def test_reweighted_mean_with_equal_weights_is_the_sample_mean():
    values = jax.random.normal(jax.random.key(0), (50, 3))
    mean, stderr = fepy.reweighted_mean(jnp.full(50, -3.0), values)
    np.testing.assert_allclose(mean, values.mean(0), atol=1e-14)
    np.testing.assert_allclose(stderr, values.std(0) / math.sqrt(50), atol=1e-14)


# ----------------------------------------------------------------------------- forward KL


def test_forward_kl_learns_a_gaussian_from_weighted_samples():
    # data: a broad N(0, 9 I) proposal, weighted by p / proposal, so that the weighted data
    # represent p = N(M3, C3); maximum likelihood then makes q close to p: KL(p || q) small
    target = gaussian_energy(M3, C3)
    proposal_scale = 3.0
    data = proposal_scale * jax.random.normal(jax.random.key(0), (20_000, 3))
    log_proposal = -0.5 * jnp.sum((data / proposal_scale) ** 2, 1)
    log_weights = -jax.vmap(target.energy)(data) - log_proposal
    flow = fepy.Flow.affine(jax.random.key(1), 3, layers=4, width=16)
    solver = fepy.ForwardKL(optax.adam(1e-2), data, 256, log_weights=log_weights, summary_samples=2000)
    sol = fepy.minimize(target, flow, solver, steps=100, key=jax.random.key(2))
    # the entropy of p is the least possible expected NLL
    entropy = 0.5 * 3 * math.log(2 * math.pi * math.e) + 0.5 * np.linalg.slogdet(C3)[1]
    assert sol.nll == pytest.approx(entropy, abs=0.05)
    # KL(p || q) on exact samples of p
    x = M3 + jax.random.normal(jax.random.key(3), (4000, 3)) @ np.linalg.cholesky(C3).T
    kl = float(jnp.mean(-jax.vmap(target.energy)(x) - target.log_z() - sol.family.log_prob(x)))
    assert kl < 0.03
    assert abs(sol.log_z - target.log_z()) < 4 * sol.log_z_stderr
    assert sol.trace["nll"].shape == (100,) and "log_z" not in sol.trace


@pytest.mark.parametrize("kind", ["affine", pytest.param("rq_spline", marks=pytest.mark.slow)])
def test_forward_kl_mixed_with_reverse_kl_reports_both(kind):
    # the spline flow is in the slow suite (its compilation dominates); CI trains an RQ-spline
    # flow by ForwardKL + reverse KL in tests/test_models.py (the many_well_bg tiny run)
    target = gaussian_energy(M3, C3)
    x = M3 + jax.random.normal(jax.random.key(3), (1000, 3)) @ np.linalg.cholesky(C3).T
    if kind == "rq_spline":
        flow = fepy.Flow.rq_spline(jax.random.key(1), 3, layers=2, width=8, interval=6.0)
    else:
        flow = fepy.Flow.affine(jax.random.key(1), 3, layers=2, width=8)
    solver = fepy.ForwardKL(optax.adam(5e-3), x, 64, reverse=1.0, samples=64, summary_samples=500)
    sol = fepy.minimize(target, flow, solver, steps=80, key=jax.random.key(2))
    assert {"nll", "log_z", "log_z_stderr", "ess", "free_energy"} <= set(sol.trace)
    # F >= -T log Z for every q (the Gibbs inequality), here T = 1
    assert sol.free_energy > -target.log_z() - 4 * sol.free_energy_stderr
    assert abs(sol.log_z - target.log_z()) < 4 * sol.log_z_stderr


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        fepy.Flow.rq_spline(key, 1)
    with pytest.raises(ValueError, match="knots must be an integer >= 2"):
        fepy.Flow.rq_spline(key, 3, knots=1)
    with pytest.raises(ValueError, match="interval must be a positive finite number"):
        fepy.Flow.rq_spline(key, 3, interval=-1.0)
    with pytest.raises(ValueError, match="layers must be an integer >= 1"):
        fepy.Flow.affine(key, 3, layers=0)
    with pytest.raises(ValueError, match="permutation must be 'random' or 'reverse'"):
        fepy.Flow.affine(key, 3, permutation="sorted")
    with pytest.raises(ValueError, match="base has dim 2"):
        fepy.Flow.affine(key, 3, base=fepy.Gaussian(np.zeros(2), np.eye(2)))
    conditional = Coupling(key, transformer=RationalQuadraticSpline(knots=4, interval=3.0), untransformed_dim=1,
                           dim=3, cond_dim=2, nn_width=4, nn_depth=1)
    with pytest.raises(ValueError, match="unconditional"):
        fepy.Flow(conditional)
    with pytest.raises(TypeError, match="flowjax AbstractBijection"):
        fepy.Flow(lambda z: z)
    flow = fepy.Flow.affine(key, 3)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        flow.log_prob(jnp.zeros((5, 2)))
    target = gaussian_energy(M3, C3)
    with pytest.raises(ValueError, match="data have dim 2"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.zeros((10, 2))).init(target, flow, key)
    with pytest.raises(ValueError, match="log_weights must have shape"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.zeros((10, 3)), log_weights=jnp.zeros(9))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.full((10, 3), jnp.nan))
    with pytest.raises(ValueError, match="reverse must be a finite number >= 0"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.zeros((10, 3)), reverse=-1.0)
    with pytest.raises(ValueError, match="batch must be an integer >= 2"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.zeros((10, 3)), batch=1)
    with pytest.raises(ValueError, match=r"values of shape \(n, \.\.\.\)"):
        fepy.reweighted_mean(jnp.zeros(5), jnp.zeros((4, 2)))
    with pytest.raises(TypeError, match="needs a family of type AbstractDensity"):
        fepy.ForwardKL(optax.adam(1e-3), jnp.zeros((10, 3))).init(target, object(), key)
