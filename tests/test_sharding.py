"""The particle axis sharded over 4 (forced host) devices gives the same run as one device.

JAX fixes its device count at start-up, so the check runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and reports JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as dist
    import fepy

    class Gauss(fepy.Energy):
        mean: jax.Array
        beta: float = 1.0
        dim: int = 2

        def energy(self, x):
            return 0.5 * jnp.sum((x - self.mean) ** 2 / jnp.array([1.0, 0.5]))

    assert jax.local_device_count() == 4, jax.devices()
    target = Gauss(jnp.array([1.0, -0.5]))
    base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
    fam = fepy.Particles.from_base(base, 512, key=jax.random.key(0))
    solver = fepy.WassersteinFisherRao(schedule=fepy.Power(20, 2.0), move=fepy.MALA(0.3), islands=8)
    out = {}
    for shard in (True, False):
        sol = fepy.minimize(target, fam, solver, steps=20, key=jax.random.key(1), shard=shard)
        out[shard] = sol
    s, u = out[True], out[False]
    xs, xu = np.asarray(s.family.positions), np.asarray(u.family.positions)
    print(json.dumps(dict(
        devices=jax.local_device_count(),
        sharded_devices=len(s.family.positions.sharding.device_set),
        sharded_weight_devices=len(s.family.log_weights.sharding.device_set),
        unsharded_devices=len(u.family.positions.sharding.device_set),
        log_z=[s.summary["log_z"], u.summary["log_z"]],
        log_z_stderr=s.summary["log_z_stderr"],
        max_position_diff=float(np.max(np.abs(xs - xu))),
        max_log_weight_diff=float(np.max(np.abs(
            np.asarray(s.family.log_weights) - np.asarray(u.family.log_weights)))),
        bitwise=bool(np.array_equal(xs, xu)),
        trace_log_z_diff=float(np.max(np.abs(s.trace["log_z"] - u.trace["log_z"]))),
    )))
    """
)


def run_on_four_devices(script: str) -> dict:
    """Run ``script`` in a subprocess with 4 forced CPU devices; return the JSON it prints last."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_run_equals_single_device():
    res = run_on_four_devices(SCRIPT)
    print(res)
    assert res["devices"] == 4
    assert res["sharded_devices"] == 4, res  # the particle axis really is split
    assert res["sharded_weight_devices"] == 4, res
    assert res["unsharded_devices"] == 1, res
    lz_s, lz_u = res["log_z"]
    assert abs(lz_s - lz_u) <= 1e-10, res
    assert res["max_position_diff"] <= 1e-10, res
    assert res["max_log_weight_diff"] <= 1e-10, res
    assert res["trace_log_z_diff"] <= 1e-10, res


WALKER_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import fepy
    from fepy.apps.qvmc import HydrogenicAnsatz, MolecularHamiltonian, qmc_solver

    assert jax.local_device_count() == 4, jax.devices()
    hydrogen = MolecularHamiltonian.atom(1)
    fam = fepy.Wavefunction.initialize(HydrogenicAnsatz(0.7), 64, key=jax.random.key(0), centers=jnp.zeros(3))
    out = {}
    for name in ("vmc_sr", "wqmc"):
        solver = qmc_solver(name, learning_rate=0.02, window=5)
        s = fepy.minimize(hydrogen, fam, solver, steps=10, key=jax.random.key(1), shard=True)
        u = fepy.minimize(hydrogen, fam, solver, steps=10, key=jax.random.key(1), shard=False)
        out[name] = dict(
            sharded_devices=len(s.family.walkers.sharding.device_set),
            walker_diff=float(np.max(np.abs(np.asarray(s.family.walkers) - np.asarray(u.family.walkers)))),
            energy_diff=float(np.max(np.abs(s.trace["energy"] - u.trace["energy"]))),
            alpha_diff=abs(float(s.family.ansatz.alpha) - float(u.family.ansatz.alpha)),
        )
    print(json.dumps(out))
    """
)


def test_sharded_walkers_equal_single_device():
    """VMC (with the walker-space SR solve) and WQMC give the same run with walkers on 4 devices."""
    res = run_on_four_devices(WALKER_SCRIPT)
    for name, r in res.items():
        assert r["sharded_devices"] == 4, (name, r)
        assert r["walker_diff"] <= 1e-10 and r["energy_diff"] <= 1e-10 and r["alpha_diff"] <= 1e-10, (name, r)


PATH_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    import optax
    import fepy

    class Well(eqx.Module):
        def __call__(self, x):
            return (x[0] ** 2 - 1) ** 2 + 0.5 * x[1] ** 2

    assert jax.local_device_count() == 4, jax.devices()
    target = fepy.PathMeasure(Well(), jnp.array([-1.0, 0.0]), fepy.EndPoint(jnp.array([1.0, 0.0]), 0.3, 0.2),
                              temperature=0.3, friction=1.0, dt=0.05, steps=20)
    control = fepy.Control.mlp(2, key=jax.random.key(0), width=8, depth=1)
    sharding = fepy.batch_sharding()
    placed = jax.jit(lambda k: target.simulate(None, k, 16, sharding).positions)(jax.random.key(2))
    out = dict(path_devices=len(placed.sharding.device_set))
    for name, objective in (("pips", fepy.RelativeEntropy()), ("log_variance", fepy.LogVariance(buffer_size=32))):
        runs = [fepy.minimize(target, control, fepy.PathKL(optax.adam(1e-2), 16, objective, shard=shard), steps=8,
                              key=jax.random.key(1)) for shard in (True, False)]
        leaves = [jax.tree.leaves(eqx.filter(r.family, eqx.is_array)) for r in runs]
        out[name] = dict(
            loss_diff=float(np.max(np.abs(runs[0].trace["loss"] - runs[1].trace["loss"]))),
            param_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(*leaves)),
        )
    print(json.dumps(out))
    """
)


def test_sharded_trajectories_equal_single_device():
    """`fepy.PathKL` with its trajectories split over 4 devices gives the same training run (both objectives)."""
    res = run_on_four_devices(PATH_SCRIPT)
    assert res["path_devices"] == 4, res
    for name in ("pips", "log_variance"):
        assert res[name]["loss_diff"] <= 1e-10 and res[name]["param_diff"] <= 1e-10, (name, res)
