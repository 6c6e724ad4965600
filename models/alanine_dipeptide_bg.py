r"""Alanine dipeptide in vacuum at 300 K: a Boltzmann generator in internal coordinates.

**Target.** ACE-ALA-NME, amber99sb-ildn, no cutoff, no constraints (`fepy.apps.tps.alanine_dipeptide`,
the JAX AMBER potential of the transition-path models), :math:`k_BT` = 2.494 kJ/mol. The flow
lives on the 60 reduced canonical-frame coordinates of `fepy.apps.bg.internal` (root CA, N on
+x, C in the xy plane), where the Boltzmann density is
:math:`e^{-\beta U}\, y_{N,x}^2\, y_{C,y}` (`ReducedEnergy`; :math:`\tilde Z = Z/(8\pi^2 V)`, so
``log_z`` is :math:`\log\tilde Z`). Every estimate is for **L-alanine**: the Boltzmann density
of this achiral force field gives the mirror image (D) the same weight, but MD never inverts
CA, so the reference, and the target of the estimates, is the L-restricted density
:math:`p\,1_L`; a flow sample of D chirality (signed volume of CA's N, C, CB of the other sign
than the packaged structure's) gets weight 0 and is counted (``wrong_chirality_fraction``).

**Flow.** `internal_coordinate_flow`: z from N(0, 1) x Uniform on the torus, ``layers``
coupling layers of bounded rational-quadratic splines (bonds, angles, narrow torsions) and
circular splines (the torsions whose spread on the MD data exceeds ``periodic_spread``: the 5
broad ones, phi, psi and the three methyl rotors), the fixed standardisation of the MD data, then the
exact internal-coordinate bijection (log-det :math:`\log r_2 + \sum (2\log r + \log\sin\theta)`).

**MD reference.** Replica-exchange Langevin dynamics (`fepy.apps.bg.tempering`) on the same JAX
potential: ``md_ladders`` independent ladders of ``md_replicas`` temperatures from 300 to
``md_max_temperature`` K, BAOAB with 2 fs steps, exchanges every 0.1 ps (the cold replica saved
then). Plain 300 K MD crossed no phi barrier in 3 ns (measured); the hot replicas do. The last
``md_held_out`` ladders (independent runs) are held out: they are the reference of the
histograms and the held-out NLL; the others are the training data. Cached as a compressed
``.npz`` in ``md_cache`` (keyed by the MD settings), reproducible from ``md_seed``.

**Training.** `fepy.ForwardKL` (maximum likelihood) on the training frames, plus ``reverse`` x
the reverse KL of the exact energy (default 0.1, ``samples`` energy evaluations per step; 0: ML
alone, FAB's "Flow w/ ML" baseline). On seed 0 the mix raised the ESS from 1,067 to 1,641 of
20,000 and lowered the held-out NLL (benchmarks/README.md).

**Figures** (`analyze`, on ``estimate_samples`` fresh flow samples): Kish ESS, log Z with its
standard error, NLL of the held-out MD frames, the (phi, psi) free-energy surface of the flow
(raw and reweighted) against MD with the histogram KL of the FAB evaluation
(`fepy.apps.bg.analysis`, 64 x 64 bins) beside the KL of the training MD (all of it:
``kl_md_train``; one ladder, median over them: ``kl_md_ladder``) and of an exact sampler with as
many samples as the flow (``kl_flow_floor``), and free-energy differences between the states

* ``c7ax``: phi > 0 (C7ax and alpha_L) against phi < 0 (C7eq, C5, alpha_R), across the slow
  phi barrier;
* ``c5``: C5 (phi < 0, psi > 100° or psi < -120°) against C7eq (phi < 0, -120° < psi < 100°),
  a fast equilibrium (alpha_R, psi near -40°, is almost empty in vacuum).

For MD, the error of a difference is the spread of the ladders (independent runs).
"""

import functools
import hashlib
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy._estimators import kish_ess, log_z_and_stderr
from fepy.apps.bg.analysis import dihedral_histogram, free_energy_difference, histogram_kl, histogram_kl_floor
from fepy.apps.bg.internal import InternalCoordinates, ReducedEnergy, ZMatrix, internal_coordinate_flow, signed_volume
from fepy.apps.bg.tempering import BOLTZMANN, geometric_temperatures, parallel_tempering
from fepy.apps.tps import alanine_dipeptide, dihedral

DEFAULTS = dict(
    seed=0,
    temperature=300.0,  # K
    # MD reference: replica-exchange Langevin dynamics
    md_ladders=8,  # independent ladders; the last md_held_out are held out
    md_held_out=2,
    md_replicas=10,  # temperatures per ladder, geometric from `temperature` to md_max_temperature
    md_max_temperature=1000.0,  # K
    md_rounds=10000,  # rounds of md_exchange_every steps (0.1 ps); the 300 K replica is saved after each
    md_burn_in=500,  # rounds discarded
    md_exchange_every=50,
    md_dt=0.002,  # ps
    md_friction=1.0,  # 1/ps
    md_seed=0,
    md_cache="runs/alanine_dipeptide_bg/md",  # folder of the cached MD reference ("" = none)
    # flow
    layers=8,
    knots=8,
    interval=5.0,  # B of the bounded splines, in standard deviations of the MD data
    width=64,  # 128 fitted the training frames better and the held-out ones worse (benchmarks/README.md)
    depth=2,
    periodic_spread=0.5,  # rad: torsions with a larger circular spread on the MD data are periodic
    # training
    steps=3000,
    batch=256,
    lr=1e-3,  # peak of a cosine decay to 0
    reverse=0.1,  # weight of the reverse KL in the loss (0: maximum likelihood alone)
    samples=128,  # reverse-KL samples per step (reverse > 0)
    # estimates
    estimate_samples=20_000,
    chunk=2000,  # flow samples per compiled batch
)

MD_KEYS = ("temperature", "md_ladders", "md_replicas", "md_max_temperature", "md_rounds", "md_burn_in",
           "md_exchange_every", "md_dt", "md_friction", "md_seed")
C5_PSI = (math.radians(-120.0), math.radians(100.0))  # C7eq between, C5 outside (phi < 0)


def _float32(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def md_tag(config) -> str:
    """A short hash of the MD settings: the name of the cached reference."""
    c = {**DEFAULTS, **config}
    return hashlib.sha256(json.dumps({k: c[k] for k in MD_KEYS}, sort_keys=True).encode()).hexdigest()[:12]


def md_cache_path(config) -> Path | None:
    """Where the MD reference of these settings is cached (None without ``md_cache``)."""
    c = {**DEFAULTS, **config}
    return Path(c["md_cache"]) / f"md_{md_tag(c)}.npz" if c["md_cache"] else None


_FRAMES: dict[str, np.ndarray] = {}  # this process's MD references, by md_tag (build and analyze share one)


def md_reference(config) -> np.ndarray:
    """The saved 300 K frames, shape (ladders, frames, 22, 3) in nm (module docstring), from the
    cache or by running the replica exchange (float32; about 3 minutes per ladder-ns on 2 busy CPU cores)."""
    c = {**DEFAULTS, **config}
    if not 1 <= c["md_held_out"] < c["md_ladders"]:
        raise ValueError(f"md_held_out must be in [1, md_ladders), got {c['md_held_out']} of {c['md_ladders']}")
    tag, cache = md_tag(c), md_cache_path(c)
    if tag in _FRAMES:
        return _FRAMES[tag]
    if cache is not None and cache.is_file():
        frames = np.load(cache)["frames"].astype(np.float64)
    else:
        temperatures = geometric_temperatures(c["temperature"], c["md_max_temperature"], c["md_replicas"])
        run = parallel_tempering(
            _float32(molecule().potential), molecule().masses, jnp.asarray(molecule().c7eq, jnp.float32),
            temperatures, jax.random.key(c["md_seed"]), ladders=c["md_ladders"], rounds=c["md_rounds"],
            burn_in=c["md_burn_in"], exchange_every=c["md_exchange_every"], dt=c["md_dt"], friction=c["md_friction"])
        frames = np.asarray(run.frames, np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, frames=frames, acceptance=np.asarray(run.acceptance),
                                temperatures=temperatures, config=json.dumps({k: c[k] for k in MD_KEYS}))
        frames = frames.astype(np.float64)
    _FRAMES[tag] = frames
    return frames


@functools.cache
def molecule():
    """`fepy.apps.tps.alanine_dipeptide` (built once per process)."""
    return alanine_dipeptide()


def coordinates(ad) -> InternalCoordinates:
    """The internal coordinates of the molecule's bond graph (root CA, N, C)."""
    return InternalCoordinates(ZMatrix.from_topology(ad.topology))


def split(config, coords: InternalCoordinates):
    """Reduced coordinates of the training and the held-out MD frames (rows)."""
    c = {**DEFAULTS, **config}
    frames = md_reference(c)
    reduce = jax.jit(jax.vmap(coords.from_cartesian))
    train = frames[: c["md_ladders"] - c["md_held_out"]].reshape(-1, *frames.shape[2:])
    held_out = frames[c["md_ladders"] - c["md_held_out"] :].reshape(-1, *frames.shape[2:])
    return reduce(jnp.asarray(train)), reduce(jnp.asarray(held_out))


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    coords = coordinates(molecule())
    target = ReducedEnergy(molecule().potential, coords, beta=1.0 / (BOLTZMANN * c["temperature"]))
    train, _ = split(c, coords)
    q = jax.vmap(coords.inverse)(train)
    flow = internal_coordinate_flow(jax.random.key(c["seed"]), coords, q, spread=c["periodic_spread"],
                                    layers=c["layers"], knots=c["knots"], interval=c["interval"], width=c["width"],
                                    depth=c["depth"])
    schedule = optax.cosine_decay_schedule(c["lr"], c["steps"])
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))
    solver = fepy.ForwardKL(optimizer, train, c["batch"], reverse=c["reverse"], samples=c["samples"],
                            summary_samples=min(c["estimate_samples"], 4096))
    return fepy.Problem(target, flow, solver, c["steps"])


@eqx.filter_jit
def _flow_batch(target, flow, key, n):
    """n flow samples: reduced coordinates, log q, log w = -beta U~ - log q, Cartesian positions."""
    y, log_q = flow.sample_and_log_prob(key, n)
    log_w = jax.vmap(target.log_density)(y) - log_q
    return y, log_q, log_w, jax.vmap(target.coordinates.to_cartesian)(y)


@eqx.filter_jit
def _log_prob(flow, y):
    return flow.log_prob(y)


def _chunked(fn, rows, chunk):
    return np.concatenate([np.asarray(fn(rows[i : i + chunk])) for i in range(0, rows.shape[0], chunk)])


def _states(phi, psi):
    """Membership of the states of the module docstring: (phi<0, phi>0, C7eq, C5)."""
    negative = phi < 0
    c7eq = negative & (psi > C5_PSI[0]) & (psi < C5_PSI[1])
    return negative, ~negative, c7eq, negative & ~c7eq


def _md_difference(ladder_states, kt):
    """Delta F between two states of the pooled MD ladders, the error from the ladders' spread:
    each ladder's fraction of frames in each state is one block (`free_energy_difference`)."""
    a, b = (np.array([s.mean() for s in states]) for states in ladder_states)
    return free_energy_difference(np.zeros(a.size), a, b, kt)


def analyze(target, family, config) -> dict:
    """Flow samples and their weights, MD dihedrals, histograms and the figures (module docstring)."""
    c = {**DEFAULTS, **config}
    kt = 1.0 / target.beta
    ad = molecule()
    coords = target.coordinates
    frames = md_reference(c)
    angles = jax.jit(jax.vmap(lambda x: jnp.stack([dihedral(x, ad.phi), dihedral(x, ad.psi)])))
    md = np.stack([np.asarray(angles(jnp.asarray(f))) for f in frames])  # (ladders, frames, 2)
    train_ladders = c["md_ladders"] - c["md_held_out"]

    key = jax.random.key(c["seed"] + 10_000)
    batches = [_flow_batch(target, family, jax.random.fold_in(key, i), min(c["chunk"], c["estimate_samples"] - s))
               for i, s in enumerate(range(0, c["estimate_samples"], c["chunk"]))]
    y, log_q, log_w, x = (np.concatenate([np.asarray(b[k]) for b in batches]) for k in range(4))
    phi, psi = (np.asarray(a) for a in angles(jnp.asarray(x)).T)

    n, ca, c_atom = ad.phi[1], ad.phi[2], ad.phi[3]
    chiral = np.array([int(ca), int(n), int(c_atom), ad.atom_names.index("CB")])
    reference_sign = np.sign(float(signed_volume(ad.c7eq, chiral)))
    is_l = np.sign(np.asarray(signed_volume(jnp.asarray(x), chiral))) == reference_sign
    log_w_l = np.where(is_l & np.isfinite(log_w), log_w, -np.inf)
    weights = np.exp(log_w_l - np.max(log_w_l))
    log_z, log_z_stderr = log_z_and_stderr(jnp.asarray(log_w_l))

    _, held_out = split(c, coords)
    held_out_log_q = _chunked(lambda r: _log_prob(family, r), held_out, c["chunk"])

    histograms = dict(
        md_held_out=dihedral_histogram(*md[train_ladders:].reshape(-1, 2).T),
        md_train=dihedral_histogram(*md[:train_ladders].reshape(-1, 2).T),
        md=dihedral_histogram(*md.reshape(-1, 2).T),
        flow=dihedral_histogram(phi[is_l], psi[is_l]),
        reweighted=dihedral_histogram(phi, psi, weights),
    )
    out = dict(
        ess=float(kish_ess(jnp.asarray(log_w_l))), ess_all_chiralities=float(kish_ess(jnp.asarray(log_w))),
        log_z=float(log_z), log_z_stderr=float(log_z_stderr),
        wrong_chirality_fraction=float(np.mean(~is_l)), nonfinite_weight_fraction=float(np.mean(~np.isfinite(log_w))),
        held_out_nll=float(-np.mean(held_out_log_q)), held_out_frames=int(held_out.shape[0]),
        kl_flow=histogram_kl(histograms["md_held_out"], histograms["flow"]),
        kl_reweighted=histogram_kl(histograms["md_held_out"], histograms["reweighted"]),
        kl_md_train=histogram_kl(histograms["md_held_out"], histograms["md_train"]),
        md_frames=int(md.shape[0] * md.shape[1]), estimate_samples=int(c["estimate_samples"]),
    )
    # the KL of an exact sampler with as many independent samples as the flow's (L) samples, and
    # that of one training ladder (a 300 K replica-exchange run as long as each held-out one)
    out["kl_flow_floor"], out["kl_flow_floor_sd"] = histogram_kl_floor(histograms["md_held_out"], int(np.sum(is_l)))
    ladders = [histogram_kl(histograms["md_held_out"], dihedral_histogram(*ladder.T)) for ladder in md[:train_ladders]]
    out.update(kl_md_ladder=float(np.median(ladders)), kl_md_ladder_min=float(np.min(ladders)),
               kl_md_ladder_max=float(np.max(ladders)))
    md_states = [_states(*ladder.T) for ladder in md]
    flow_states = _states(phi, psi)
    zeros = np.zeros(phi.size)
    for name, (a, b) in dict(c7ax=(0, 1), c5=(2, 3)).items():
        out[f"delta_f_{name}_md"], out[f"delta_f_{name}_md_stderr"] = _md_difference(
            ([s[a] for s in md_states], [s[b] for s in md_states]), kt)
        out[f"delta_f_{name}_flow"], out[f"delta_f_{name}_flow_stderr"] = free_energy_difference(
            np.where(is_l, zeros, -np.inf), flow_states[a], flow_states[b], kt)
        out[f"delta_f_{name}_reweighted"], out[f"delta_f_{name}_reweighted_stderr"] = free_energy_difference(
            log_w_l, flow_states[a], flow_states[b], kt)
    phi_samples = dict(md=md[..., 0].ravel(), flow=phi[is_l], flow_weights=weights[is_l])
    return dict(figures=out, histograms=histograms, phi=phi_samples)


def observables(target, family, config, analysis) -> dict:
    """The scalar figures of `analyze` (kJ/mol for free energies; they replace the training
    summary's log_z, log_z_stderr and ess)."""
    return dict(analysis["figures"])


def plots(target, family, out, config, analysis) -> list[str]:
    """ramachandran.png: the (phi, psi) free energy -kT log p (kJ/mol) of MD, the flow's samples
    and the reweighted samples, side by side; phi.png: the phi marginals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kt = 1.0 / target.beta
    h, f = analysis["histograms"], analysis["figures"]
    panels = [("MD (replica exchange, all ladders)", h["md"]),
              (f"flow samples, KL {f['kl_flow']:.3f}", h["flow"]),
              (f"flow reweighted, KL {f['kl_reweighted']:.3f} (ESS {f['ess']:.0f})", h["reweighted"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharex=True, sharey=True)
    extent = [-180, 180, -180, 180]
    for ax, (title, density) in zip(axes, panels):
        with np.errstate(divide="ignore"):
            free = -kt * np.log(density)
        free -= np.min(free)
        image = ax.imshow(np.where(np.isfinite(free), free, np.nan).T, origin="lower", extent=extent, vmin=0, vmax=30,
                          cmap="viridis", aspect="equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("phi (deg)")
    axes[0].set_ylabel("psi (deg)")
    fig.colorbar(image, ax=axes, label="free energy (kJ/mol)", shrink=0.85)
    fig.suptitle(f"alanine dipeptide, vacuum, 300 K; KL(MD held-out || MD train) = {f['kl_md_train']:.3f}", fontsize=11)
    fig.savefig(Path(out) / "ramachandran.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    p = analysis["phi"]
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-np.pi, np.pi, 91)
    for values, weights, label in ((p["md"], None, "MD"), (p["flow"], None, "flow"),
                                   (p["flow"], p["flow_weights"], "flow reweighted")):
        density, edges = np.histogram(values, bins, weights=weights, density=True)
        with np.errstate(divide="ignore"):
            ax.plot(np.degrees(edges[:-1] + np.diff(edges) / 2), -kt * np.log(density), label=label)
    ax.set_xlabel("phi (deg)")
    ax.set_ylabel("-kT log p(phi) (kJ/mol)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out) / "phi.png", dpi=110)
    plt.close(fig)
    return ["ramachandran.png", "phi.png"]
