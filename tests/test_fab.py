"""FAB (`fepy.FAB`, `fepy.ReplayBuffer`): AIS from q towards p~^2/q, the alpha = 2 surrogate
gradient and the replay buffer's reweighting, against Gaussian closed forms.

For p~(x) = exp(-(x-m)^T P (x-m) / 2) (the `gaussian_energy` of conftest at beta = 1) and
q = N(mu, S^-1), g = p~^2/q = exp(-x^T A x / 2 + b^T x + c) with A = 2P - S, b = 2Pm - S mu,
c = -m^T P m + mu^T S mu / 2 + log det(2 pi S^-1) / 2, so
log Z_g = c + b^T A^-1 b / 2 + log det(2 pi A^-1) / 2 and E_g[x] = A^-1 b (A positive definite).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import gaussian_energy

import fepy

M = np.array([1.0, -0.5])
C = np.array([[1.0, 0.3], [0.3, 0.5]])
TARGET = gaussian_energy(M, C)


def g_closed_form(mean, cov):
    """log Z_g and E_g[x] of g = p~^2/q for q = N(mean, cov) (jnp: differentiable in mean, cov)."""
    P = jnp.asarray(np.linalg.inv(C))
    S = jnp.linalg.inv(cov)
    A = 2 * P - S
    b = 2 * P @ M - S @ mean
    c = -M @ P @ M + 0.5 * mean @ S @ mean + 0.5 * jnp.linalg.slogdet(2 * jnp.pi * cov)[1]
    log_z = c + 0.5 * b @ jnp.linalg.solve(A, b) + 0.5 * jnp.linalg.slogdet(2 * jnp.pi * jnp.linalg.inv(A))[1]
    return log_z, jnp.linalg.solve(A, b)


def mismatched_q():
    """A Gaussian q far enough from p that the weights p~/q spread (KL ~ 0.5), close enough that
    g = p~^2/q is normalisable (2P - S positive definite)."""
    return fepy.Gaussian.from_covariance(jnp.array([0.3, 0.2]), jnp.array([[1.6, -0.2], [-0.2, 0.9]]))


def fab(n=2000, steps=10, islands=None, buffer=None, optimizer=optax.sgd(1.0)):
    """FAB with HMC moves: AIS (every particle its own island) or SMC with ``islands``."""
    move = fepy.HMC(step_size=0.3, num_steps=3, adapt=False)
    if islands is None:
        ais = fepy.Wasserstein(schedule=fepy.Linear(steps), move=move, islands=n)
    else:
        ais = fepy.WassersteinFisherRao(schedule=fepy.Linear(steps), move=move, islands=islands)
    return fepy.FAB(optimizer, ais, steps, samples=n, buffer=buffer)


def weighted_mean_and_stderr(log_w, values):
    """Self-normalised weighted mean with its delta-method standard error (fepy.reweighted_mean)."""
    return fepy.reweighted_mean(log_w, values)


@pytest.mark.parametrize("islands", [None, 16], ids=["ais", "smc"])
def test_annealing_to_p_squared_over_q_gives_its_normaliser_and_mean(islands):
    """One pass of AIS (every particle its own island) or SMC (16 islands, resampling) from q to
    g = p~^2/q: log Z_g-hat and the weighted mean of x within 4 standard errors of the closed
    forms (|z| < 4: probability 6e-5 each for a normal error), and the evaluation count."""
    q = mismatched_q()
    solver = fab(islands=islands)
    x, log_w, log_q, log_w0, _, _, evals = jax.jit(solver.anneal)(TARGET, q, jax.random.key(0))
    exact_log_z, exact_mean = g_closed_form(q.mean, q.covariance)
    if islands is None:
        log_z, stderr = fepy.log_z_and_stderr(log_w)
    else:  # the spread of the 16 island estimates (means of e^l over each island)
        log_z, stderr = fepy.log_z_and_stderr(jax.nn.logsumexp(log_w.reshape(16, -1), axis=1) - np.log(125))
    assert float(stderr) > 0 and abs(float(log_z - exact_log_z)) < 4 * float(stderr), (log_z, exact_log_z, stderr)
    mean, mean_se = weighted_mean_and_stderr(log_w, x)
    np.testing.assert_array_less(np.abs(mean - exact_mean), 4 * mean_se)
    # the annealing moved the particles: g's mean is not q's
    assert float(jnp.linalg.norm(exact_mean - q.mean)) > 20 * float(jnp.max(mean_se))
    # log q is that of the final positions; the start's weights are those of p~/q for q's samples
    np.testing.assert_allclose(log_q, q.log_prob(x), rtol=0, atol=1e-10)
    assert evals == 2000 * (1 + 10 * 3)
    flow_log_z, flow_se = fepy.log_z_and_stderr(log_w0)
    assert abs(float(flow_log_z) - TARGET.log_z()) < 4 * float(flow_se)


def test_fab_surrogate_gradient_is_the_alpha_two_gradient():
    """The gradient of -sum_i sg(w_i) log q(x_i) on AIS samples of g = p~^2/q estimates
    grad_theta log Z_g(theta), exact here, for every parameter of a Gaussian q (mean and the
    raw Cholesky entries): within 4 delta-method standard errors (the gradient of a
    self-normalised mean, sum_i w_i^2 (g_i - g)^2), and equal to the solver's `FAB.loss` gradient."""
    q = mismatched_q()
    solver = fab(n=4000)
    x, log_w, *_ = jax.jit(solver.anneal)(TARGET, q, jax.random.key(1))
    params, static = eqx.partition(q, eqx.is_inexact_array)

    def exact(p):
        qq = eqx.combine(p, static)
        return g_closed_form(qq.mean, qq.covariance)[0]

    exact_grad = jax.grad(exact)(params)
    surrogate = jax.grad(lambda p: solver.loss(eqx.combine(p, static), x, log_w))(params)
    per_sample = jax.vmap(lambda xi: jax.grad(lambda p: -eqx.combine(p, static).log_prob(xi))(params))(x)
    for name in ("mean", "raw_scale"):
        e, s, g = (np.asarray(getattr(t, name)) for t in (exact_grad, surrogate, per_sample))
        estimate, stderr = weighted_mean_and_stderr(log_w, g.reshape(g.shape[0], -1))
        np.testing.assert_allclose(np.asarray(estimate).reshape(e.shape), s, rtol=0, atol=1e-10)
        stderr = np.asarray(stderr).reshape(e.shape)
        live = stderr > 0  # the upper triangle of raw_scale is not a parameter: gradient 0 both ways
        np.testing.assert_array_equal(e[~live], 0.0)
        np.testing.assert_array_less(np.abs(s - e)[live], 4 * stderr[live])
        assert np.max(np.abs(e[live]) / stderr[live]) > 10  # the gradient is resolved, not noise


def test_replay_buffer_reweighting_is_exact():
    """For a fixed q the buffer's draws (probability ~ w) are samples of g: their mean within 4
    standard errors of E_g[x], and reweighting to the same q changes nothing. After q changes to
    q', the reweighted entries carry log w + log q - log q' exactly, and they are importance
    samples of g' = p~^2/q': log Z_g' and E_g'[x] within 4 standard errors of the closed forms."""
    q = mismatched_q()
    buffer = fepy.ReplayBuffer(capacity=6000, min_size=4000, updates=1)
    solver = fab(n=2000, buffer=buffer)
    anneal = jax.jit(solver.anneal)
    state = buffer.empty(2, jnp.float64)
    for k in range(3):
        x, log_w, log_q, *_ = anneal(TARGET, q, jax.random.key(10 + k))
        state = buffer.add(state, x, log_w, log_q)
    assert int(state.size) == 6000 and int(state.next) == 0
    log_z_g, mean_g = g_closed_form(q.mean, q.covariance)
    index = buffer.sample(state, jax.random.key(20), 200_000)
    drawn = np.asarray(state.x[index])
    _, se = weighted_mean_and_stderr(state.log_w, state.x)  # the buffer's own precision
    np.testing.assert_array_less(np.abs(drawn.mean(0) - mean_g), 4 * np.sqrt(np.asarray(se) ** 2 + drawn.var(0) / 200_000))
    same = buffer.reweight(state, jnp.arange(6000), q.log_prob(state.x))
    np.testing.assert_allclose(same.log_w, state.log_w, rtol=0, atol=1e-12)
    # a new q: exact reweighting of every entry (with repeated indices, as drawn)
    q_new = fepy.Gaussian.from_covariance(jnp.array([0.8, -0.3]), jnp.array([[1.2, 0.2], [0.2, 0.7]]))
    moved = buffer.reweight(state, jnp.concatenate([jnp.arange(6000), jnp.arange(100)]), q_new.log_prob(
        jnp.concatenate([state.x, state.x[:100]])))
    np.testing.assert_allclose(moved.log_w, state.log_w + state.log_q - q_new.log_prob(state.x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved.log_q, q_new.log_prob(state.x), rtol=0, atol=0)
    log_z_new, mean_new = g_closed_form(q_new.mean, q_new.covariance)
    log_z, log_z_se = fepy.log_z_and_stderr(moved.log_w)
    assert abs(float(log_z - log_z_new)) < 4 * float(log_z_se), (log_z, log_z_new, log_z_se)
    assert abs(float(log_z_new - log_z_g)) > 20 * float(log_z_se)  # q' is not q: a real change
    mean, mean_se = weighted_mean_and_stderr(moved.log_w, moved.x)
    np.testing.assert_array_less(np.abs(mean - mean_new), 4 * mean_se)
    # the buffer loss: weight ratio q_old/q = 1 for an unchanged q, and log q returned
    value, log_q_now = buffer.loss(q, state.x[:5], state.log_q[:5])
    np.testing.assert_allclose(log_q_now, state.log_q[:5], rtol=0, atol=1e-12)
    assert float(value) == pytest.approx(-float(jnp.mean(state.log_q[:5])), abs=1e-12)


def test_buffer_drops_non_finite_samples_and_overwrites_the_oldest():
    buffer = fepy.ReplayBuffer(capacity=4, min_size=2)
    state = buffer.empty(1, jnp.float64)
    state = buffer.add(state, jnp.array([[1.0], [2.0], [jnp.nan]]), jnp.array([0.0, jnp.inf, 0.0]), jnp.zeros(3))
    np.testing.assert_array_equal(state.log_w, [0.0, -np.inf, -np.inf, -np.inf])
    state = buffer.add(state, jnp.array([[5.0], [6.0]]), jnp.array([1.0, 2.0]), jnp.zeros(2))
    np.testing.assert_array_equal(state.x[:, 0], [6.0, 0.0, 0.0, 5.0])
    assert int(state.size) == 4 and int(state.next) == 1
    assert set(np.asarray(buffer.sample(state, jax.random.key(0), 100)).tolist()) <= {0, 3}


@pytest.mark.parametrize("with_buffer", [False, True], ids=["no_buffer", "buffer"])
def test_fab_trains_a_gaussian_to_the_target(with_buffer):
    """q = N(mu, Sigma) can equal p, where D_2 = 0: FAB (adam) from a wrong Gaussian reaches an
    importance-sampling ESS above 99 % and the exact log Z within 4 standard errors; the
    energy evaluations are the AIS passes' (buffer: plus the ones that fill it)."""
    buffer = fepy.ReplayBuffer(capacity=256 * 20, min_size=256 * 4, updates=4) if with_buffer else None
    steps = 100 if with_buffer else 300
    solver = fab(n=256, buffer=buffer, optimizer=optax.adam(1e-2))
    solver = eqx.tree_at(lambda s: s.summary_samples, solver, 4000)
    q = fepy.Gaussian.from_covariance(jnp.zeros(2), 2.0 * jnp.eye(2))
    sol = fepy.minimize(TARGET, q, solver, steps=steps, key=jax.random.key(3))
    assert sol.ess_fraction > 0.99, sol.summary
    assert abs(sol.log_z - TARGET.log_z()) < 4 * sol.log_z_stderr
    per_pass = 256 * (1 + 10 * 3)
    assert sol.energy_evals == per_pass * (steps + (4 if with_buffer else 0))
    assert sol.trace["ais_ess_fraction"][-1] > 0.9 and np.all(np.isfinite(sol.trace["loss"]))


def test_bad_fab_configurations_raise_clear_errors():
    move = fepy.HMC(step_size=0.3, num_steps=3)
    with pytest.raises(ValueError, match="from 0 to 1 in ais_steps=5"):
        fepy.FAB(optax.sgd(1.0), fepy.Wasserstein(schedule=fepy.Linear(10), move=move, islands=4), 5, samples=8)
    with pytest.raises(TypeError, match="fixed AIS schedule"):
        fepy.FAB(optax.sgd(1.0), fepy.Wasserstein(schedule=fepy.AdaptiveCESS(), move=move, islands=4), 5, samples=8)
    with pytest.raises(TypeError, match="particle solver with a move"):
        fepy.FAB(optax.sgd(1.0), fepy.FisherRao(schedule=fepy.Linear(5)), 5, samples=8)
    with pytest.raises(ValueError, match="not divisible"):
        fepy.FAB(optax.sgd(1.0), fepy.Wasserstein(schedule=fepy.Linear(5), move=move, islands=3), 5, samples=8)
    with pytest.raises(ValueError, match="min_size 10 exceeds its capacity 5"):
        fepy.ReplayBuffer(capacity=5, min_size=10)
    with pytest.raises(ValueError, match="below one AIS pass"):
        fepy.FAB(optax.sgd(1.0), fepy.Wasserstein(schedule=fepy.Linear(5), move=move, islands=8), 5, samples=8,
                 buffer=fepy.ReplayBuffer(capacity=4, min_size=4))
    particles = fepy.Particles.from_base(mismatched_q(), 8, key=jax.random.key(0))
    with pytest.raises(TypeError, match="family of type AbstractDensity"):
        fepy.minimize(TARGET, particles, fab(n=8), steps=1, key=jax.random.key(0))
