"""A trained density as the base of the particle solvers: `fepy.DensityDistribution` (the
numpyro view of an `AbstractDensity`) and flow-annealed importance sampling / SMC from it."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import C3, M3, gaussian_energy, perturbed

import fepy


def spline_flow_2d():
    return perturbed(fepy.Flow.rq_spline(jax.random.key(0), 2, layers=2, knots=6, interval=3.0, width=8), 0.1)


H = 0.02  # midpoint rule on [-9, 9]^2
AXIS = np.arange(-9.0, 9.0, H) + H / 2
GRID = jnp.asarray(np.stack(np.meshgrid(AXIS, AXIS), -1).reshape(-1, 2))


@eqx.filter_jit
def view_against_flow(flow):
    """Everything the first test compares, in one compiled program."""
    view = flow.as_distribution()
    x, log_q = flow.sample_and_log_prob(jax.random.key(1), 4000)
    drawn = view.sample(jax.random.key(2), (50, 80))
    q = jnp.exp(view.log_prob(GRID)) * H * H
    moments = jnp.concatenate([jnp.sum(q[:, None] * GRID, 0), jnp.sum(q[:, None] * GRID**2, 0)])
    return (view.log_prob(x), flow.log_prob(x), log_q, view.log_prob(x[:6].reshape(2, 3, 2)),
            view.sample(jax.random.key(2)), drawn, flow.sample(jax.random.key(2), 4000), jnp.sum(q), moments)


def test_view_log_prob_is_the_flows_and_its_samples_follow_it():
    flow = spline_flow_2d()
    view = flow.as_distribution()
    assert isinstance(view, dist.Distribution) and view.event_shape == (2,) and view.batch_shape == ()
    view_log_q, flow_log_q, forward_log_q, batched, one, drawn, flow_drawn, mass, moments = view_against_flow(flow)
    # the view's log_prob is the flow's log q (inverse pass) = the forward pass's log q of samples
    np.testing.assert_allclose(view_log_q, flow_log_q, rtol=0, atol=0)
    np.testing.assert_allclose(view_log_q, forward_log_q, rtol=0, atol=1e-10)
    assert batched.shape == (2, 3)
    # sampling: numpyro's sample_shape convention, the flow's draws
    assert one.shape == (2,) and drawn.shape == (50, 80, 2)
    np.testing.assert_allclose(drawn.reshape(-1, 2), flow_drawn, rtol=0, atol=0)
    # the draws follow exp(log_prob): E[x] and E[x^2] of 4000 draws against the midpoint rule
    # with exp(view.log_prob) (the rule's error ~1e-5, q being C^1, << the sampling stderr ~0.02;
    # the tails beyond 9 are those of the moved N(0, I) base: negligible)
    assert float(mass) == pytest.approx(1.0, abs=1e-4)
    values = np.concatenate([np.asarray(drawn).reshape(-1, 2), np.asarray(drawn).reshape(-1, 2) ** 2], axis=1)
    stderr = values.std(0, ddof=1) / math.sqrt(values.shape[0])
    assert np.all(np.abs(values.mean(0) - np.asarray(moments)) < 4 * stderr), (values.mean(0), moments, stderr)


def test_view_is_a_pytree_through_jit_and_particles_take_a_density():
    flow = spline_flow_2d()
    particles = fepy.Particles.from_base(flow, 64, key=jax.random.key(3))
    assert isinstance(particles.base, fepy.DensityDistribution) and particles.base.density is flow

    @eqx.filter_jit
    def through_jit(p):  # the moves need grad_x log q_0: the view's gradient is the flow's
        x0 = p.positions[0]
        return (p.base.log_prob(p.positions), flow.log_prob(p.positions), flow.sample(jax.random.key(3), 64),
                jax.grad(p.base.log_prob)(x0), jax.grad(flow.log_prob)(x0))

    log_q, flow_log_q, flow_drawn, grad, flow_grad = through_jit(particles)
    np.testing.assert_allclose(particles.positions, flow_drawn, rtol=0, atol=0)
    np.testing.assert_allclose(log_q, flow_log_q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad, flow_grad, rtol=0, atol=1e-12)
    assert float(jnp.linalg.norm(grad)) > 0


def test_bad_bases_raise_clear_errors():
    flow = spline_flow_2d()
    with pytest.raises(TypeError, match="numpyro distribution or an fepy AbstractDensity"):
        fepy.Particles.from_base(lambda x: x, 10, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"as_distribution\(\)"):
        fepy.Particles(jnp.zeros((4, 2)), jnp.zeros(4), flow)
    with pytest.raises(TypeError, match="wraps an fepy AbstractDensity"):
        fepy.DensityDistribution(dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="positive integer"):
        fepy.Particles.from_base(flow, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="base has event shape"):
        fepy.Particles(jnp.zeros((4, 3)), jnp.zeros(4), flow.as_distribution())


@pytest.fixture(scope="module")
def mismatched_flow():
    """A 3-D affine flow that is not N(M3, C3): moved parameters on a N(0, I) base, so the
    flow's own importance weights for the target vary a lot (KL of order 1 and more)."""
    return perturbed(fepy.Flow.affine(jax.random.key(0), 3, layers=2, width=8), 0.2, seed=4)


@pytest.mark.parametrize("resample", [False, True])
def test_annealing_from_a_flow_base_gives_the_gaussian_log_z(mismatched_flow, resample):
    """q_0 = the flow, p = N(M3, C3) with exact log Z: AIS (every particle its own island, the
    stderr that of the mean of independent unbiased Z-hat) and SMC (16 islands) from the flow
    land within 4 of their standard errors (|z| < 4: probability 6e-5 for a normal error)."""
    target = gaussian_energy(M3, C3)
    flow = mismatched_flow
    n = 512
    x, log_q = flow.sample_and_log_prob(jax.random.key(5), n)
    flow_ess = float(fepy.kish_ess(-jax.vmap(target.energy)(x) - log_q))
    move = fepy.HMC(step_size=0.3, num_steps=3, adapt=False)
    schedule = fepy.Linear(20)
    if resample:
        solver = fepy.WassersteinFisherRao(schedule=schedule, move=move, islands=16)
    else:
        solver = fepy.Wasserstein(schedule=schedule, move=move, islands=n)
    family = fepy.Particles.from_base(flow, n, key=jax.random.key(6))
    sol = fepy.minimize(target, family, solver, steps=20, key=jax.random.key(7))
    assert sol.summary["lam"] == 1.0 and sol.log_z_stderr > 0
    assert abs(sol.log_z - target.log_z()) < 4 * sol.log_z_stderr, (sol.log_z, target.log_z(), sol.log_z_stderr)
    assert sol.energy_evals == n * (1 + 20 * 3)
    if not resample:
        # the annealing does what the flow alone cannot: the AIS weights are far more even
        assert flow_ess < 0.5 * n and sol.ess > 1.5 * flow_ess, (flow_ess, sol.ess)
