"""`fepy.Independent`: a batch of independent problems in one run equals the problems run one by one."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_sharding import run_on_four_devices

import fepy
from fepy.cli import load_model

jax.config.update("jax_enable_x64", True)


class Quadratic(fepy.Energy):
    r""":math:`U(x) = |x - m|^2 / (2 s^2)`: :math:`\log Z = \frac d2 \log(2\pi s^2)` at beta = 1."""

    mean: jax.Array
    scale: jax.Array
    beta: float = 1.0

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def energy(self, x):
        return 0.5 * jnp.sum((x - self.mean) ** 2) / self.scale**2


def stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def test_batched_lens_maps_equal_the_lenses_fitted_one_by_one():
    """Three noisy images of the SIE + shear lens, batched over the data only (the image model is
    shared): Descent is deterministic, so each lens's end points equal its own run to round-off."""
    sie = load_model("models/sie_sersic_lens.py")
    config = dict(sie.DEFAULTS, num_pix=16, pixel_width=0.18, supersampling=1, starts=2)
    problems = [sie.build(dict(config, seed=s)) for s in range(3)]
    template = problems[0].target
    target = eqx.tree_at(lambda t: t.data, template, jnp.stack([p.target.data for p in problems]))
    solver = fepy.Independent(problems[0].solver, target_axes=fepy.batch_axes(template, lambda t: t.data))
    batched = fepy.minimize(target, stack([p.family for p in problems]), solver, steps=10, key=jax.random.key(0))
    assert batched.trace["energy_min"].shape == (10, 3)
    assert batched.summary["energy_min"].shape == (3,)
    for i, p in enumerate(problems):
        alone = fepy.minimize(p.target, p.family, p.solver, steps=10, key=jax.random.key(0))
        scale = np.max(np.abs(alone.family.positions))
        np.testing.assert_allclose(batched.family.positions[i], alone.family.positions, rtol=0, atol=1e-12 * scale)
        # the energy sums 256 pixel terms that cancel: summation order under vmap moves it by ~1e-12
        np.testing.assert_allclose(batched.summary["energy_min"][i], alone.summary["energy_min"], rtol=1e-10)


def test_batched_variational_fits_give_each_problems_log_z():
    """Gaussian families fitted by reverse KL to three Gaussians of different widths: each fit is
    exact at the optimum, so each summary log Z equals (d/2) log(2 pi s^2) to the optimizer's
    residual (the importance weights become constant: ESS = n)."""
    scales = jnp.array([0.5, 1.0, 3.0])
    target = Quadratic(jnp.zeros((3, 2)) + jnp.array([[1.0, -1.0]]), scales)
    family = stack([fepy.Gaussian(jnp.zeros(2), jnp.eye(2)) for _ in range(3)])
    adam = optax.adam(optax.cosine_decay_schedule(0.1, 600, 0.01))
    solver = fepy.Independent(fepy.ReverseKL(adam, samples=64, summary_samples=2000), target_axes=0)
    sol = fepy.minimize(target, family, solver, steps=600, key=jax.random.key(2))
    exact = np.log(2 * np.pi * np.asarray(scales) ** 2)  # d = 2
    np.testing.assert_allclose(sol.summary["log_z"], exact, atol=2e-3)
    assert np.all(sol.summary["ess_fraction"] > 0.99)


def test_a_problem_that_breaks_down_is_named():
    target = Quadratic(jnp.zeros((3, 2)), jnp.array([1.0, jnp.nan, 1.0]))
    family = stack([fepy.Gaussian(jnp.zeros(2), jnp.eye(2)) for _ in range(3)])
    solver = fepy.Independent(fepy.ReverseKL(optax.adam(0.05), samples=8), target_axes=0)
    with pytest.raises(fepy.NonFiniteError, match="step 1: .* of problem 1 is nan"):
        fepy.minimize(target, family, solver, steps=3, key=jax.random.key(0))


def test_mismatched_batch_lengths_are_an_error():
    target = Quadratic(jnp.zeros((2, 2)), jnp.ones(2))
    family = stack([fepy.Gaussian(jnp.zeros(2), jnp.eye(2)) for _ in range(3)])
    solver = fepy.Independent(fepy.ReverseKL(optax.adam(0.05), samples=8), target_axes=0)
    with pytest.raises(ValueError, match="one leading problem axis, got lengths \\[2, 3\\]"):
        fepy.minimize(target, family, solver, steps=1, key=jax.random.key(0))


SHARDED = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import fepy

class Quadratic(fepy.Energy):
    mean: jax.Array
    beta: float = 1.0
    dim: int = 2
    def energy(self, x):
        return 0.5 * jnp.sum((x - self.mean) ** 2 * jnp.array([1.0, 4.0]))

assert jax.local_device_count() == 4
means = jax.random.normal(jax.random.key(0), (8, 2))
base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
families = [fepy.Particles.from_base(base, 4, key=jax.random.key(i)) for i in range(8)]
family = jax.tree.map(lambda *a: jnp.stack(a), *families)
images = jax.device_put(means, fepy.batch_sharding())
solver = fepy.Independent(fepy.Descent(optax.sgd(0.2)), target_axes=0)  # contracts by 0.8 and 0.2 per step
runs = {shard: fepy.minimize(Quadratic(images if shard else means), family, solver, steps=100,
                             key=jax.random.key(1), shard=shard) for shard in (True, False)}
s, u = runs[True], runs[False]
print(json.dumps(dict(
    devices=len(s.family.positions.sharding.device_set),
    max_diff=float(np.max(np.abs(np.asarray(s.family.positions) - np.asarray(u.family.positions)))),
    energy_min=np.asarray(u.summary["energy_min"]).tolist(),
)))
"""


def test_problems_sharded_over_four_devices_equal_one_device():
    """Eight quadratic problems split 2 per device: the same end points as on one device, and
    each problem's descent reaches its minimum U = 0."""
    result = run_on_four_devices(SHARDED)
    assert result["devices"] == 4
    assert result["max_diff"] < 1e-12
    assert np.all(np.asarray(result["energy_min"]) < 1e-6)
