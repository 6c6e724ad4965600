"""NetKet side of the ``qmc`` benchmark: continuous-space VMC of the helium atom.

Run as a subprocess by `benchmarks.qmc` (importing NetKet switches JAX to float64 by
default and registers its own global state, so it never shares a process with the fepy
runs)::

    python -m benchmarks.qmc_netket '{"steps": 1000, "walkers": 512, ...}'

prints one JSON line with the energy trace, the timings and NetKet's versions.

The problem is the one of ``models/helium.py``: two electrons (singlet) around a fixed
Z = 2 nucleus at the origin, H = -1/2 (lap_1 + lap_2) - 2/r_1 - 2/r_2 + 1/r_12, built
from ``netket.experimental.hilbert.Particle`` (free space, d = 3),
``netket.operator.KineticEnergy(mass=1)`` and ``netket.operator.PotentialEnergy``.
The singlet ground state is nodeless and symmetric under the exchange of the two
electrons, so no determinant is needed: the ansatz (`HeliumJastrowMLP`, flax) is

    log psi = -Z (r_1 + r_2) + r_12 / (2 (1 + b r_12))              (exact e-n / e-e cusps)
              + sum_i f(r_i^2) + g(r_1^2 + r_2^2, (r_1^2 - r_2^2)^2, r_1^2 r_2^2, x_1.x_2, r_12^2)

with f, g two-hidden-layer tanh MLPs of width ``hidden`` (all inputs symmetric under
the exchange, so psi is; all smooth at coalescence, so the cusps stay exact), the same
width as the fepy FermiNet. Sampler:
``MetropolisGaussian`` (sigma = the fepy random-walk width), ``walkers`` chains, one
sample per chain per step, ``sweep_size = mcmc_steps`` moves between samples (the fepy
``mcmc_steps``), no discarded sweeps (``n_discard_per_chain = 0``: the chains persist
between steps like the fepy walkers, which start at the nucleus + N(0, init_scale)); driver ``netket.driver.VMC``
with optax Adam, or SGD + ``netket.optimizer.SR`` (``sr=true``).
"""

import json
import os
import sys
import time


def main(config: dict) -> dict:
    if not config.get("x64", False):
        os.environ.setdefault("NETKET_ENABLE_X64", "0")
    import flax
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import netket as nk
    import numpy as np
    import optax

    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    Z = 2.0
    hidden = int(config.get("hidden", 32))

    class HeliumJastrowMLP(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x):
            x = x.reshape(x.shape[:-1] + (2, 3))
            r = jnp.linalg.norm(x, axis=-1)  # (..., 2)
            r12 = jnp.linalg.norm(x[..., 0, :] - x[..., 1, :], axis=-1)
            b = nn.softplus(self.param("b", lambda k: jnp.ones((), dtype)))
            cusp = -Z * jnp.sum(r, axis=-1) + r12 / (2 * (1 + b * r12))
            # smooth (even) features only, so that the MLPs leave the exact cusps of `cusp` intact
            r2 = jnp.sum(x**2, axis=-1)  # (..., 2)
            one = jnp.stack([r2, jnp.log1p(r2)], axis=-1)  # (..., 2, 2)
            h = one
            for _ in range(2):
                h = jnp.tanh(nn.Dense(self.width, param_dtype=dtype)(h))
            f = jnp.sum(nn.Dense(1, param_dtype=dtype)(h)[..., 0], axis=-1)
            dot = jnp.sum(x[..., 0, :] * x[..., 1, :], axis=-1)
            r12sq = jnp.sum((x[..., 0, :] - x[..., 1, :]) ** 2, axis=-1)
            pair = jnp.stack(
                [r2[..., 0] + r2[..., 1], (r2[..., 0] - r2[..., 1]) ** 2, r2[..., 0] * r2[..., 1], dot, r12sq,
                 jnp.log1p(r12sq)],
                axis=-1,
            )
            g = pair
            for _ in range(2):
                g = jnp.tanh(nn.Dense(self.width, param_dtype=dtype)(g))
            g = nn.Dense(1, param_dtype=dtype, kernel_init=nn.initializers.zeros)(g)[..., 0]
            return cusp + f + g

    geometry = nk.experimental.geometry.FreeSpace(d=3)
    hilbert = nk.experimental.hilbert.Particle(N=2, geometry=geometry)

    def potential(x):
        x = x.reshape(2, 3)
        r = jnp.linalg.norm(x, axis=-1)
        return -Z * jnp.sum(1 / r) + 1 / jnp.linalg.norm(x[0] - x[1])

    hamiltonian = nk.operator.KineticEnergy(hilbert, mass=1.0) + nk.operator.PotentialEnergy(hilbert, potential)

    walkers, steps = int(config["walkers"]), int(config["steps"])
    sampler = nk.sampler.MetropolisGaussian(
        hilbert, sigma=float(config["step_size"]), n_chains=walkers, sweep_size=int(config["mcmc_steps"]),
        dtype=dtype,
    )
    seed = int(config["seed"])
    model = HeliumJastrowMLP(hidden)
    vstate = nk.vqs.MCState(
        sampler, model, n_samples=walkers, n_discard_per_chain=int(config.get("discard", 0)),
        seed=seed, sampler_seed=seed + 1,
    )
    # start the chains like the fepy walkers: near the nucleus, Gaussian of scale init_scale
    key = jax.random.key(seed + 2)
    vstate.sampler_state = vstate.sampler_state.replace(
        σ=(float(config["init_scale"]) * jax.random.normal(key, (walkers, 6))).astype(dtype)
    ) if hasattr(vstate.sampler_state, "σ") else vstate.sampler_state
    n_params = int(sum(np.size(p) for p in jax.tree.leaves(vstate.parameters)))

    if config.get("sr"):
        optimizer = optax.sgd(float(config["learning_rate"]))
        preconditioner = nk.optimizer.SR(diag_shift=float(config.get("diag_shift", 1e-3)))
        driver = nk.driver.VMC(hamiltonian, optimizer, variational_state=vstate, preconditioner=preconditioner)
    else:
        optimizer = optax.adam(float(config["learning_rate"]))
        driver = nk.driver.VMC(hamiltonian, optimizer, variational_state=vstate)

    energies, variances = [], []

    def callback(step, log_data, drv):
        e = log_data["Energy"]
        energies.append(float(np.real(e.mean)))
        variances.append(float(np.real(e.variance)))
        return True

    warm = int(config.get("warmup_steps", 5))
    t0 = time.perf_counter()
    driver.run(n_iter=warm, callback=callback, out=None, show_progress=False)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver.run(n_iter=steps - warm, callback=callback, out=None, show_progress=False)
    jax.block_until_ready(vstate.parameters)
    wall = time.perf_counter() - t0
    per_step = wall / max(steps - warm, 1)
    return dict(
        ok=True,
        energy=energies,
        variance=variances,
        first_steps=warm,
        first_steps_wall_s=first_s,
        wall_s=wall + first_s,
        per_step_ms=1000 * per_step,
        compile_s=first_s - warm * per_step,
        n_params=n_params,
        dtype=str(np.dtype(dtype)),
        ansatz="HeliumJastrowMLP (flax): exact cusps + symmetric one-electron and pair tanh MLPs",
        versions=dict(netket=nk.__version__, jax=jax.__version__, flax=flax.__version__, optax=optax.__version__),
        python=sys.executable,
    )


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
