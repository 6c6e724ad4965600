r"""Replica-exchange (parallel-tempering) Langevin dynamics of a molecule: reference samples.

``ladders`` independent ladders, each of K replicas at temperatures :math:`T_1 < \dots < T_K`,
run underdamped Langevin dynamics (`jax_md.simulate.nvt_langevin`: BAOAB, time step ``dt``,
friction ``friction``; units nm, ps, dalton, kJ/mol, so that 1 kJ/mol = 1 dalton nm²/ps²), all
replicas of all ladders at once (``jax.vmap``). Every ``exchange_every`` steps the neighbouring
pairs :math:`(k, k+1)` of each ladder, even :math:`k` and odd :math:`k` in turn, exchange their
configurations with the Metropolis probability

.. math:: \min\big(1, e^{(\beta_k - \beta_{k+1})(U(x_k) - U(x_{k+1}))}\big),

which leaves the product of the Boltzmann densities :math:`\prod_k e^{-\beta_k U(x_k)}/Z_k`
invariant; the momenta are rescaled by :math:`\sqrt{T_{\rm new}/T_{\rm old}}` so that they stay
Maxwell-Boltzmann. The replicas at :math:`T_1` then sample :math:`e^{-\beta_1 U}` and cross
the barriers that the hot replicas cross (Swendsen & Wang 1986; Sugita & Okamoto 1999 for MD).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax_md import simulate, space
from jaxtyping import Array, Float, PRNGKeyArray

BOLTZMANN = 0.00831446261815324
"""k_B in kJ/(mol K)."""


class TemperingRun(eqx.Module):
    """What `parallel_tempering` returns.

    ``frames``: the configurations of the coldest replica of each ladder, every
    ``exchange_every`` steps after the burn-in, shape ``(ladders, frames, atoms, 3)`` (nm);
    ``acceptance``: the fraction of accepted exchanges of each neighbouring pair, shape (K - 1,);
    ``potential``: U of the frames (kJ/mol), shape ``(ladders, frames)``.
    """

    frames: Float[Array, "ladders frames atoms 3"]
    potential: Float[Array, "ladders frames"]
    acceptance: Float[Array, " pairs"]


def geometric_temperatures(low: float, high: float, count: int) -> np.ndarray:
    """``count`` temperatures from ``low`` to ``high`` K in a constant ratio (equal exchange
    acceptance when the heat capacity does not depend on T)."""
    if not (0 < low < high) or count < 2:
        raise ValueError(f"need 0 < low < high and count >= 2, got {low}, {high}, {count}")
    return low * (high / low) ** (np.arange(count) / (count - 1))


def parallel_tempering(
    potential,
    masses: Float[Array, " atoms"],
    start: Float[Array, "atoms 3"],
    temperatures: Float[Array, " K"],
    key: PRNGKeyArray,
    *,
    ladders: int,
    rounds: int,
    burn_in: int,
    exchange_every: int = 500,
    dt: float = 0.001,
    friction: float = 1.0,
) -> TemperingRun:
    r"""Replica-exchange Langevin dynamics (module docstring) of ``potential.energy(x)`` (kJ/mol,
    x in nm), every replica starting from ``start``.

    ``rounds`` rounds of ``exchange_every`` steps each, an exchange attempt after each; the first
    ``burn_in`` rounds are discarded and the coldest replica is saved after every later round.
    ``temperatures`` in K, increasing; ``dt`` in ps, ``friction`` in 1/ps.
    """
    temperatures = np.asarray(temperatures, float)
    if temperatures.ndim != 1 or temperatures.size < 2 or np.any(np.diff(temperatures) <= 0):
        raise ValueError("temperatures must be an increasing 1-D array of at least 2 values (K)")
    for name, value in (("ladders", ladders), ("rounds", rounds), ("exchange_every", exchange_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in < rounds:
        raise ValueError(f"burn_in must be an integer in [0, rounds), got {burn_in!r}")
    dtype = jnp.asarray(start).dtype
    k_count = temperatures.size
    kt = jnp.asarray(np.tile(BOLTZMANN * temperatures, ladders), dtype)  # (ladders * K,), ladder-major
    init, step = simulate.nvt_langevin(potential.energy, space.free()[1], dt, kT=1.0, gamma=friction)
    init_key, run_key = jax.random.split(key)
    chains = ladders * k_count
    positions = jnp.broadcast_to(jnp.asarray(start), (chains,) + jnp.shape(start))
    masses = jnp.asarray(masses, dtype)[:, None]
    state = jax.vmap(lambda k, x, t: init(k, x, mass=masses, kT=t))(jax.random.split(init_key, chains), positions, kt)
    energy = jax.vmap(potential.energy)
    beta = 1.0 / kt.reshape(ladders, k_count)

    def exchange(state, key, parity):
        u = energy(state.position).reshape(ladders, k_count)
        lower = jnp.arange(k_count - 1)
        active = (lower % 2) == parity
        log_accept = (beta[:, :-1] - beta[:, 1:]) * (u[:, :-1] - u[:, 1:])
        accept = active & (jnp.log(jax.random.uniform(key, log_accept.shape, dtype)) < log_accept)
        # permutation of each ladder: pair (k, k+1) swapped where accepted (active pairs are disjoint)
        index = jnp.arange(k_count)
        up = jnp.concatenate([accept, jnp.zeros((ladders, 1), bool)], axis=1)  # k takes k+1
        down = jnp.concatenate([jnp.zeros((ladders, 1), bool), accept], axis=1)  # k+1 takes k
        source = jnp.where(up, index + 1, jnp.where(down, index - 1, index))  # (ladders, K)
        flat = (source + k_count * jnp.arange(ladders)[:, None]).reshape(-1)
        scale = jnp.sqrt(kt / kt[flat])[:, None, None]
        state = state.set(position=state.position[flat], momentum=state.momentum[flat] * scale,
                          force=state.force[flat])
        return state, accept, active, u

    def one_round(carry, key):
        state, parity = carry
        state = jax.lax.fori_loop(0, exchange_every, lambda _, s: jax.vmap(lambda s, t: step(s, kT=t))(s, kt), state)
        state, accept, active, u = exchange(state, key, parity)
        cold = state.position.reshape((ladders, k_count) + state.position.shape[1:])[:, 0]
        cold_u = energy(cold)
        return (state, 1 - parity), (cold, cold_u, jnp.sum(accept, 0), ladders * active)

    run = jax.jit(lambda state, keys: jax.lax.scan(one_round, (state, 0), keys)[1])
    frames, cold_u, accepted, attempted = (v[burn_in:] for v in run(state, jax.random.split(run_key, rounds)))
    acceptance = jnp.sum(accepted, 0) / jnp.maximum(jnp.sum(attempted, 0), 1)
    return TemperingRun(jnp.swapaxes(frames, 0, 1), cold_u.T, acceptance)
