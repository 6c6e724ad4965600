"""Boltzmann-generator throughput against the number of atoms: python -m benchmarks.bg_throughput [--atoms=4,13,32] [--quick].

For Lennard-Jones clusters of n atoms in 3-D (`fepy.apps.bg.LennardJonesCluster`, the LJ13
target with n particles; dimension 3n) it times, after compilation, on the device JAX has:

* **target**: energy-and-force evaluations per second (``jax.vmap`` of ``jax.value_and_grad``
  over a batch), the cost every training objective and every importance weight pays;
* **coupling flow** (`fepy.Flow.rq_spline`: 8 rational-quadratic spline coupling layers,
  width 64, not equivariant): samples per second *with* their exact log q
  (``sample_and_log_prob``), and the time of one `fepy.ReverseKL` training step (pathwise
  gradient of the reverse KL through the flow and the energy) on a batch;
* **equivariant CNF** (`fepy.CNF` with an `fepy.apps.bg.EGNNField` of width 32 and 3 layers
  on `fepy.apps.bg.CoMFreeGaussian`, as models/lj13_bg.py): samples per second with the exact
  log q (``ode_steps`` fixed Dormand-Prince steps, one forward-mode JVP per dimension for the
  divergence, so the cost grows like n^2 (edges) x 3n (trace)), and the time of one
  `fepy.FlowMatching` step with the equivariant `fepy.apps.bg.OrbitAlignment` coupling
  (Kabsch + Hungarian assignment per row) on a batch of centre-of-mass-free data.

Each figure is the best of ``repeats`` timed calls after one compiling call. The peers the
issue names do not install here: bgflow and fab-jax are not on PyPI and GitHub is unreachable
from this machine, so no peer column is measured (said so in the README rather than invented).
Writes benchmarks/results/bg/bg_throughput.json (with the device and CPU load).
"""

import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import fepy
from fepy.apps.bg import CoMFreeGaussian, EGNNField, LennardJonesCluster, OrbitAlignment

from ._common import environment

OUT = Path(__file__).resolve().parent / "results" / "bg" / "bg_throughput.json"
FULL = dict(atoms=[4, 13, 32], batch=256, cnf_batch=8, ode_steps=20, repeats=2)  # --atoms=4,13,32,55 on a GPU
QUICK = dict(atoms=[4, 13], batch=32, cnf_batch=4, ode_steps=4, repeats=1)


def best_time(fn, *args, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn(*args)`` after a compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def row(n: int, cfg: dict, key) -> dict:
    target = LennardJonesCluster(n_particles=n, space_dim=3)
    dim, batch, cnf_batch, repeats = 3 * n, cfg["batch"], cfg["cnf_batch"], cfg["repeats"]
    k_x, k_flow, k_field, k_step, k_sample = jax.random.split(key, 5)
    base = CoMFreeGaussian(n, 3, 1.0)
    x, _ = base.sample_and_log_prob(k_x, batch)

    energy_and_force = jax.jit(jax.vmap(jax.value_and_grad(target.energy)))
    t_energy = best_time(energy_and_force, x, repeats=repeats)

    flow = fepy.Flow.rq_spline(k_flow, dim)
    flow_sample = eqx.filter_jit(lambda f, k: f.sample_and_log_prob(k, batch))
    t_flow_sample = best_time(flow_sample, flow, k_sample, repeats=repeats)
    reverse = fepy.ReverseKL(optax.adam(1e-3), samples=batch)
    state = reverse.init(target, flow, k_step)
    reverse_step = eqx.filter_jit(lambda f, s, k: reverse.step(target, f, s, k))
    t_reverse = best_time(reverse_step, flow, state, k_step, repeats=repeats)

    cnf = fepy.CNF(EGNNField(k_field, n, 3, width=32, layers=3), base, steps=cfg["ode_steps"])
    cnf_sample = eqx.filter_jit(lambda f, k: f.sample_and_log_prob(k, cnf_batch))
    t_cnf_sample = best_time(cnf_sample, cnf, k_sample, repeats=repeats)
    matching = fepy.FlowMatching(optax.adam(1e-3), x, batch, coupling=OrbitAlignment(n, 3), summary_batch=batch)
    m_state = matching.init(target, cnf, k_step)
    matching_step = lambda f, s, k: matching.step(target, f, s, k)  # the coupling's assignment runs on the host
    t_matching = best_time(eqx.filter_jit(matching_step), cnf, m_state, k_step, repeats=repeats)

    return dict(atoms=n, dim=dim, batch=batch, cnf_batch=cnf_batch, ode_steps=cfg["ode_steps"],
                energy_evals_per_s=batch / t_energy,
                flow_samples_per_s=batch / t_flow_sample, flow_reverse_kl_step_s=t_reverse,
                cnf_samples_per_s=cnf_batch / t_cnf_sample, cnf_flow_matching_step_s=t_matching)


def table(result: dict) -> str:
    env = result["environment"]
    lines = [f"Device **{env['device']}** ({env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores), "
             f"{'float64' if env.get('x64') else 'float32'}, {env['date']}, commit {env['git_commit'][:10]}, "
             f"1-min load average {env.get('load_average_1min', float('nan')):.1f}. Batch {result['config']['batch']} "
             f"(CNF sampling: {result['config']['cnf_batch']} with {result['config']['ode_steps']} fixed ODE steps).", "",
             "| atoms | dim | energy+force evals/s | coupling flow samples/s (with log q) | reverse-KL step (ms) | "
             "EGNN CNF samples/s (exact log q) | flow-matching step (ms) | bgflow / FAB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['atoms']} | {r['dim']} | {r['energy_evals_per_s']:.3g} | {r['flow_samples_per_s']:.3g} | "
                     f"{1e3 * r['flow_reverse_kl_step_s']:.1f} | {r['cnf_samples_per_s']:.3g} | "
                     f"{1e3 * r['cnf_flow_matching_step_s']:.1f} | not installable here |")
    return "\n".join(lines)


def main(argv) -> dict:
    cfg = dict(QUICK if "--quick" in argv else FULL)
    for a in argv:
        if a.startswith("--atoms="):
            cfg["atoms"] = [int(v) for v in a.split("=", 1)[1].split(",")]
    rows = []
    for i, n in enumerate(cfg["atoms"]):
        rows.append(row(n, cfg, jax.random.key(i)))
        print(json.dumps(rows[-1]), flush=True)
    result = dict(name="bg_throughput", config=cfg, rows=rows, environment=environment())
    if "--quick" not in argv:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
