"""Bad inputs fail early with errors that name the offending quantity."""

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest
from conftest import C_PI, M_PI, GaussianEnergy, gaussian_energy

import fepy


def _base(d=2):
    return dist.Normal(jnp.zeros(d), 1.0).to_event(1)


def _particles(n=32, d=2):
    return fepy.Particles.from_base(_base(d), n, key=jax.random.key(0))


@pytest.mark.parametrize("beta", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        gaussian_energy(M_PI, C_PI, beta=beta)


def test_bad_energy_dim():
    with pytest.raises(ValueError, match="dim"):
        GaussianEnergy(jnp.zeros(2), jnp.eye(2), dim=0)


def test_particles_shapes():
    x = jnp.zeros((8, 2))
    base = _base(2)
    with pytest.raises(ValueError, match="log_weights"):
        fepy.Particles(x, jnp.zeros(7), base)
    with pytest.raises(ValueError, match="log_weights"):
        fepy.Particles(x, jnp.zeros((8, 1)), base)
    with pytest.raises(ValueError, match=r"\(n, dim\)"):
        fepy.Particles(jnp.zeros(8), jnp.zeros(8), base)
    with pytest.raises(ValueError, match="event shape"):
        fepy.Particles(x, jnp.zeros(8), _base(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fepy.Particles(x.at[3, 1].set(jnp.nan), jnp.zeros(8), base)
    with pytest.raises(ValueError, match="positive integer"):
        fepy.Particles.from_base(base, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch shape"):
        fepy.Particles.from_base(dist.Normal(jnp.zeros((3, 2)), 1.0).to_event(1), 4,
                                 key=jax.random.key(0))


def test_target_dim_mismatch_names_both():
    target = gaussian_energy([0.0, 0.0, 0.0], jnp.eye(3))
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(ValueError, match=r"target dim 3.*particles dim 2"):
        fepy.minimize(target, _particles(), solver, steps=1, key=jax.random.key(0))


def test_target_and_family_types():
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(TypeError, match="Energy"):
        fepy.minimize(lambda x: x, _particles(), solver, steps=1, key=jax.random.key(0))
    with pytest.raises(TypeError, match="Particles"):
        fepy.minimize(gaussian_energy(M_PI, C_PI), jnp.zeros((4, 2)), solver, steps=1,
                      key=jax.random.key(0), shard=False)


def test_particles_not_divisible_by_islands():
    solver = fepy.FisherRao(schedule=fepy.Linear(5), islands=5)
    with pytest.raises(ValueError, match=r"32.*islands=5"):
        fepy.minimize(gaussian_energy(M_PI, C_PI), _particles(32), solver, steps=1,
                      key=jax.random.key(0))


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: fepy.Constant(1.5), "Constant"),
        (lambda: fepy.Constant(-0.1), "Constant"),
        (lambda: fepy.Constant(math.nan), "Constant"),
        (lambda: fepy.Linear(0), "steps"),
        (lambda: fepy.Linear(-3), "steps"),
        (lambda: fepy.Linear(2.5), "steps"),
        (lambda: fepy.Power(0), "steps"),
        (lambda: fepy.Power(10, exponent=0.0), "exponent"),
        (lambda: fepy.Power(10, exponent=-1.0), "exponent"),
        (lambda: fepy.Power(10, exponent=math.nan), "exponent"),
        (lambda: fepy.Exponential(0.0), "rate"),
        (lambda: fepy.Exponential(-0.1), "rate"),
        (lambda: fepy.Exponential(math.nan), "rate"),
    ],
)
def test_schedule_parameters(make, word):
    with pytest.raises(ValueError, match=word):
        make()


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: fepy.ULA(0.0), "step_size"),
        (lambda: fepy.MALA(-0.1), "step_size"),
        (lambda: fepy.SVGD(math.nan), "step_size"),
        (lambda: fepy.Wasserstein(move=fepy.ULA(0.1), islands=0), "islands"),
        (lambda: fepy.Wasserstein(move=fepy.ULA(0.1), islands=2.0), "islands"),
        (lambda: fepy.Wasserstein(move=fepy.ULA(0.1), moves_per_step=-1), "moves_per_step"),
        (lambda: fepy.FisherRao(schedule=fepy.Linear(5), resample_threshold=1.5), "resample_threshold"),
        (lambda: fepy.FisherRao(schedule=fepy.Linear(5), resample_threshold=-0.1), "resample_threshold"),
        (lambda: fepy.WassersteinFisherRao(schedule=fepy.Linear(5), islands=-2), "islands"),
    ],
)
def test_solver_parameters(make, word):
    with pytest.raises(ValueError, match=word):
        make()


@pytest.mark.parametrize("steps", [-1, 2.5, "10"])
def test_bad_steps(steps):
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(ValueError, match="steps"):
        fepy.minimize(gaussian_energy(M_PI, C_PI), _particles(), solver, steps=steps,
                      key=jax.random.key(0))


@pytest.mark.parametrize("chunk_size", [0, -5, 1.5])
def test_bad_chunk_size(chunk_size):
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(ValueError, match="chunk_size"):
        fepy.minimize(gaussian_energy(M_PI, C_PI), _particles(), solver, steps=1,
                      key=jax.random.key(0), chunk_size=chunk_size)


@pytest.mark.parametrize("every", [0, -1, 2.0])
def test_checkpoint_every(tmp_path, every):
    with pytest.raises(ValueError, match="every"):
        fepy.Checkpoint(tmp_path, every=every)


def test_problem_steps():
    target = gaussian_energy(M_PI, C_PI)
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(ValueError, match="steps"):
        fepy.Problem(target, _particles(), solver, steps=-1)
