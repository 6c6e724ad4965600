"""The `fepy.minimize` loop: checkpoint/resume, chunking, keys, non-finite energies, callbacks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import C_PI, M_PI, gaussian_energy

import fepy


def _problem(n=256):
    target = gaussian_energy(M_PI, C_PI)
    base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
    fam = fepy.Particles.from_base(base, n, key=jax.random.key(0))
    # the schedule has its own length: it does not depend on minimize's `steps`, so a
    # 20-step run followed by a resume to 40 follows the same path as a 40-step run
    solver = fepy.WassersteinFisherRao(
        schedule=fepy.Power(30, 2.0), move=fepy.MALA(0.3), islands=8, resample_threshold=0.5
    )
    return target, fam, solver


def _assert_same(a, b, tol=0.0):
    """Final family, trace and state equal; tol=0 means bitwise (NaNs compare equal)."""
    for name in ("positions", "log_weights"):
        x, y = np.asarray(getattr(a.family, name)), np.asarray(getattr(b.family, name))
        if tol:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(x, y)
    assert a.trace.keys() == b.trace.keys()
    for name in a.trace:
        np.testing.assert_allclose(a.trace[name], b.trace[name], rtol=tol, atol=tol, err_msg=name)
    sa = np.asarray(jax.tree.leaves(a.state), dtype=object)
    sb = np.asarray(jax.tree.leaves(b.state), dtype=object)
    for x, y in zip(sa, sb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    target, fam, solver = _problem()
    key = jax.random.key(42)
    full = fepy.minimize(target, fam, solver, steps=40, key=key, chunk_size=20)

    ckpt = tmp_path / "ckpt"
    first = fepy.minimize(
        target, fam, solver, steps=20, key=key, callbacks=[fepy.Checkpoint(ckpt, every=20)]
    )
    assert (ckpt / "checkpoint.json").is_file()
    resumed = fepy.minimize(target, fam, solver, steps=40, key=key, resume=str(ckpt))
    assert resumed.steps == 40 and len(resumed.trace["log_z"]) == 40
    _assert_same(resumed, full)
    # the first half of the trace is the one written by the interrupted run
    np.testing.assert_array_equal(resumed.trace["log_z"][:20], first.trace["log_z"])
    assert np.isfinite(full.summary["log_z"])


def test_checkpoint_mid_run_and_resume(tmp_path):
    """A 40-step run checkpointing every 20; its step-20 checkpoint copied away resumes to the same end."""
    import shutil

    target, fam, solver = _problem()
    key = jax.random.key(3)

    class CopyAt20(fepy.Callback):
        every = 20

        def __call__(self, step, steps, family, state, key, trace):
            if step == 20:
                shutil.copytree(tmp_path / "run", tmp_path / "at20")

    full = fepy.minimize(
        target, fam, solver, steps=40, key=key,
        callbacks=[fepy.Checkpoint(tmp_path / "run", every=20), CopyAt20()],
    )
    resumed = fepy.minimize(target, fam, solver, steps=40, key=key, resume=str(tmp_path / "at20"))
    _assert_same(resumed, full)
    # resuming the finished run is a no-op that returns the same result
    again = fepy.minimize(target, fam, solver, steps=40, key=key, resume=str(tmp_path / "run"))
    _assert_same(again, full)


def test_resume_with_different_key_raises(tmp_path):
    target, fam, solver = _problem()
    fepy.minimize(
        target, fam, solver, steps=10, key=jax.random.key(1),
        callbacks=[fepy.Checkpoint(tmp_path, every=10)],
    )
    with pytest.raises(ValueError, match="different key"):
        fepy.minimize(target, fam, solver, steps=20, key=jax.random.key(2), resume=str(tmp_path))
    with pytest.raises(ValueError, match="beyond steps"):
        fepy.minimize(target, fam, solver, steps=5, key=jax.random.key(1), resume=str(tmp_path))
    with pytest.raises(FileNotFoundError):
        fepy.minimize(target, fam, solver, steps=5, key=jax.random.key(1),
                      resume=str(tmp_path / "nothing"))


def test_chunking_invariance():
    target, fam, solver = _problem()
    key = jax.random.key(5)
    a = fepy.minimize(target, fam, solver, steps=40, key=key, chunk_size=7)
    b = fepy.minimize(target, fam, solver, steps=40, key=key, chunk_size=100)
    _assert_same(a, b)


def test_reproducible_from_seed():
    target, fam, solver = _problem()
    a = fepy.minimize(target, fam, solver, steps=20, key=jax.random.key(7))
    b = fepy.minimize(target, fam, solver, steps=20, key=jax.random.key(7))
    c = fepy.minimize(target, fam, solver, steps=20, key=jax.random.key(8))
    _assert_same(a, b)  # bitwise
    assert not np.allclose(np.asarray(a.family.positions), np.asarray(c.family.positions))
    assert not np.allclose(a.trace["log_z"], c.trace["log_z"])
    assert a.summary.keys() == b.summary.keys()
    for name in a.summary:
        np.testing.assert_array_equal(a.summary[name], b.summary[name], err_msg=name)


class HoleyGaussian(fepy.Energy):
    """Standard normal energy with a NaN region x[0] > cut (log of a negative number there)."""

    cut: float
    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        # log(cut - x0) is NaN beyond the cut, with a NaN gradient too; 1e-3 keeps p ~ N(0, 1)
        return 0.5 * jnp.sum(x**2) - 1e-3 * jnp.log(self.cut - x[0])


@pytest.mark.parametrize("move", ["mala", "ula"])
def test_nan_region_particles_are_dropped(move):
    """Start particles in the NaN region are dropped at step 1 (weight 0). MALA then
    rejects every proposal into the region, so the run samples the truncated target and
    its log Z is checked; ULA moves particles into the region, which drops them (a
    loss of mass, so no log Z check: ULA-AIS is biased anyway)."""
    target = HoleyGaussian(cut=2.0)
    base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)  # P(x0 > 2) = 16% of the start
    fam = fepy.Particles.from_base(base, 1024, key=jax.random.key(0))
    n_bad = int(np.sum(np.asarray(fam.positions[:, 0]) > 2.0))
    assert n_bad > 50
    solver = fepy.WassersteinFisherRao(
        schedule=fepy.Linear(20),
        move=fepy.MALA(0.3) if move == "mala" else fepy.ULA(0.3),
        islands=8,
        resample_threshold=0.5,
    )
    sol = fepy.minimize(target, fam, solver, steps=30, key=jax.random.key(1))
    dropped = sol.trace["dropped"]
    assert dropped[0] >= n_bad  # all start particles in the hole are dropped at step 1
    w = np.asarray(sol.family.weights)
    x = np.asarray(sol.family.positions)
    assert np.all(np.isfinite(x)) and np.isclose(w.sum(), 1.0)
    assert np.all(x[w > 0, 0] <= 2.0)  # no live particle in the NaN region
    for name in ("log_z", "energy", "ess", "free_energy"):
        assert np.isfinite(sol.summary[name]), name
    if move == "ula":
        # after resampling has removed the start casualties, moves keep dropping particles
        assert np.any(np.diff(dropped) > 0)
        return
    assert np.all(np.diff(dropped[dropped > 0]) <= 0)  # MALA never drops by moving
    # the target is N(0, I) truncated to x0 < 2 (up to the 1e-3 log term): log Z ~ log(2 pi Phi(2))
    from scipy.stats import norm

    exact = np.log(2 * np.pi * norm.cdf(2.0))
    assert abs(sol.summary["log_z"] - exact) < 5 * sol.summary["log_z_stderr"] + 0.01


class NaNEverywhere(fepy.Energy):
    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        return jnp.sum(x**2) * jnp.nan


class NaNAfterDrift(fepy.Energy):
    """Drives all particles towards x0 = 10 but is NaN for x0 > 1: every particle dies."""

    beta: float = 1.0
    dim: int = 2

    def energy(self, x):
        return 0.5 * jnp.sum((x - 10.0) ** 2) + 0.0 * jnp.log(1.0 - x[0])


def test_all_nan_raises_nonfinite_error():
    base = dist.Normal(jnp.zeros(2), 0.1).to_event(1)
    fam = fepy.Particles.from_base(base, 64, key=jax.random.key(0))
    solver = fepy.WassersteinFisherRao(schedule=fepy.Linear(10), move=fepy.ULA(0.1), islands=4)
    with pytest.raises(fepy.NonFiniteError, match=r"^step 1: \w+ is (nan|-?inf)"):
        fepy.minimize(NaNEverywhere(), fam, solver, steps=10, key=jax.random.key(1))

    # particles start fine, drift into the NaN region and all die some steps later
    solver = fepy.Wasserstein(move=fepy.ULA(0.1), islands=4)
    with pytest.raises(fepy.NonFiniteError) as info:
        fepy.minimize(NaNAfterDrift(), fam, solver, steps=50, key=jax.random.key(1))
    m = re.match(r"step (\d+): (\w+) is (nan|-?inf)", str(info.value))
    assert m is not None, str(info.value)
    assert int(m.group(1)) > 1
    assert m.group(2) in {"log_z", "ess", "ess_fraction", "energy", "free_energy", "log_z_stderr"}


def test_progress_bar_runs(capsys):
    target, fam, solver = _problem()
    fepy.minimize(
        target, fam, solver, steps=40, key=jax.random.key(0), chunk_size=20,
        callbacks=[fepy.ProgressBar()],
    )
    err = capsys.readouterr().err
    assert "40/40" in err


def test_zero_steps_returns_start():
    target, fam, solver = _problem()
    sol = fepy.minimize(target, fam, solver, steps=0, key=jax.random.key(0))
    assert sol.steps == 0 and sol.trace == {}
    np.testing.assert_array_equal(sol.family.positions, fam.positions)
    assert np.isnan(sol.summary["log_z"])  # lambda = 0 never reached 1


def test_one_dead_island_does_not_poison_the_run():
    """Every particle of island 0 starts in the NaN region: that island's Z estimate is 0
    (a valid unbiased estimate), the other islands carry on, and all summaries stay finite."""
    import equinox as eqx

    base = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    fam = fepy.Particles.from_base(base, 1024, key=jax.random.key(0))
    fam = eqx.tree_at(lambda f: f.positions, fam, fam.positions.at[:64, 0].set(5.0))
    solver = fepy.WassersteinFisherRao(
        schedule=fepy.Linear(20), move=fepy.MALA(0.3), islands=16, resample_threshold=0.5
    )
    sol = fepy.minimize(HoleyGaussian(cut=2.0), fam, solver, steps=20, key=jax.random.key(1))
    assert sol.trace["dropped"][0] >= 64
    assert np.all(np.asarray(sol.family.weights[:64]) == 0.0)
    for name in ("log_z", "log_z_stderr", "energy", "ess", "free_energy"):
        assert np.isfinite(sol.summary[name]), name
    assert np.all(np.isfinite(sol.trace["ess_fraction"]))


_RESUME_SCRIPT = """
import hashlib, json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, numpyro.distributions as dist
import fepy

class Quadratic(fepy.Energy):
    beta: float = 1.0
    dim: int = 2
    def energy(self, x):
        return 0.5 * jnp.sum((x - jnp.array([1.0, -0.5])) ** 2 / jnp.array([1.0, 0.5]))

mode, directory = sys.argv[1], sys.argv[2]
# loc != scale, and a MultivariateNormal too: a swapped or misordered leaf would show
base = dist.MultivariateNormal(jnp.array([0.5, -0.2]), jnp.array([[4.0, 0.3], [0.3, 2.0]]))
fam = fepy.Particles.from_base(base, 128, key=jax.random.key(0))
solver = fepy.WassersteinFisherRao(schedule=fepy.Power(30, 2.0), move=fepy.MALA(0.3), islands=4)
key = jax.random.key(9)
if mode == "write":
    fepy.minimize(Quadratic(), fam, solver, steps=20, key=key,
                  callbacks=[fepy.Checkpoint(directory, every=20)])
    sol = fepy.minimize(Quadratic(), fam, solver, steps=40, key=key)
else:
    sol = fepy.minimize(Quadratic(), fam, solver, steps=40, key=key, resume=directory)
digest = hashlib.sha256(np.asarray(sol.family.positions).tobytes()
                        + np.asarray(sol.family.log_weights).tobytes()
                        + np.asarray(sol.trace["log_z"]).tobytes()).hexdigest()
print(json.dumps({"digest": digest, "log_z": sol.summary["log_z"]}))
"""


def test_resume_in_another_process_with_another_hash_seed(tmp_path):
    """A checkpoint written by one process resumes bitwise in another whose PYTHONHASHSEED
    differs (pytree leaf orders that depend on set/dict hashing would break this)."""
    import json
    import os
    import subprocess
    import sys

    out = {}
    for mode, seed in (("write", "1"), ("resume", "2")):
        env = dict(os.environ, PYTHONHASHSEED=seed, JAX_PLATFORMS="cpu")
        proc = subprocess.run(
            [sys.executable, "-c", _RESUME_SCRIPT, mode, str(tmp_path / "ckpt")],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert np.isfinite(out["write"]["log_z"])
    assert out["resume"] == out["write"]
