"""A transferable, autoregressive Boltzmann generator for capped peptides ACE-X-NME in vacuum.

One `fepy.apps.bg.autoregressive.TransferableBG` (atoms placed one by one in Z-matrix order,
each atom's bond, torsion and angle drawn from conditional spline flows whose networks see the
molecule graph, the atom types, the force field's bond and angle parameters and the atoms already
placed, over bases that are the force field's own configurational-bias proposal: harmonic bonds,
partial-energy profiles of the torsion and the angle given the placed atoms) is trained by
maximum likelihood (`fepy.ForwardKL`) on Langevin MD of the ``train`` peptides jointly: the family is the model bound to all of them (the product density),
each data row one MD frame of every training molecule, the target their `JointEnergy`
(amber99sb-ildn, vacuum, ``temperature`` K, on the reduced canonical-frame spaces of
`fepy.apps.bg.internal`).

It is then evaluated on the ``held_out`` peptides, never seen in training, each through the
model bound to that molecule alone (an `fepy.AbstractDensity` whose target is its
`ReducedEnergy`): ``estimate_samples`` samples give the importance weights
:math:`w = e^{-\\beta \\tilde U}/q`, their Kish ESS, :math:`\\log \\tilde Z` with its standard error
(the partition function on the reduced space, :math:`Z = 8\\pi^2 V \\tilde Z`), the NLL of the
held-out MD frames (nats, reduced space), and the backbone (phi, psi) histograms of raw and
reweighted samples against MD (KL(MD || model) and the total-variation distance on a
``rama_bins`` x ``rama_bins`` grid). With ``evaluate_train`` the same figures for the training
molecules show the gap. The defaults (three training molecules, 2000 steps, about 30 min on one
CPU core) are what a CPU affords; more molecules and longer training are the next step (measured
figures in benchmarks/README.md, "Transferable autoregressive Boltzmann generator").

Keys written (one per molecule X and figure): ``ess_X``, ``ess_fraction_X``, ``log_z_X``,
``log_z_stderr_X``, ``nll_X``, ``rama_kl_raw_X``, ``rama_kl_reweighted_X``, ``rama_tv_raw_X``,
``rama_tv_reweighted_X``, ``atoms_X``, ``samples_per_s_X`` (compiled sampling rate);
``ess_held_out_mean`` the mean ESS fraction over the held-out molecules. The MD frames are cached
as compressed ``.npz`` under ``md_cache`` (outside git).
"""

import hashlib
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fepy
from fepy._estimators import kish_ess, log_z_and_stderr
from fepy.apps.bg.autoregressive import JointEnergy, MoleculeGraph, TransferableBG
from fepy.apps.bg.internal import InternalCoordinates, ReducedEnergy
from fepy.apps.bg.molecules import RESIDUES, beta, capped_peptide, md_frames
from fepy.apps.tps.molecular import dihedral

DEFAULTS = dict(
    seed=0,
    temperature=300.0,  # K
    train="ALA,GLY,SER",
    held_out="THR,CYS,ILE,GLN",
    md_frames=2000,  # per molecule, one every md_every steps: 1 ns
    md_every=250,
    md_dt=0.002,  # ps
    md_equilibration=10_000,  # steps
    md_friction=1.0,  # 1/ps
    md_seed=0,
    md_cache="runs/transferable_bg/md",  # folder of the cached MD ("" = no cache)
    hidden=32,
    rounds=3,
    environment=64,
    width=128,
    depth=2,
    knots=8,
    interval=4.0,
    steps=2000,  # ~0.6 s per step on one CPU core for three molecules (30 min); more is better
    batch=16,  # rows per step; a row holds one frame of every training molecule
    lr=1e-3,  # peak of a cosine decay to 0 (benchmarks README: transferable BG)
    reverse=0.0,  # weight of the reverse KL of the joint target
    estimate_samples=2000,  # model samples per molecule for ESS, log Z and the Ramachandran plot
    evaluate_train=False,  # also evaluate the training molecules
    rama_bins=36,
)

MD_KEYS = ("temperature", "md_frames", "md_every", "md_dt", "md_equilibration", "md_friction", "md_seed")


def residues(text: str) -> tuple[str, ...]:
    names = tuple(r.strip().upper() for r in text.split(",") if r.strip())
    unknown = [r for r in names if r not in RESIDUES]
    if unknown:
        raise ValueError(f"unknown residues {unknown}: choose from {RESIDUES}")
    return names


def molecule(residue: str, config):
    """The peptide, its graph, internal coordinates and target at the configured temperature."""
    c = {**DEFAULTS, **config}
    peptide = capped_peptide(residue)
    b = beta(c["temperature"])
    graph = MoleculeGraph.build(peptide.zmatrix, peptide.features, peptide.potential, b)
    coordinates = InternalCoordinates(peptide.zmatrix)
    return peptide, graph, coordinates, ReducedEnergy(peptide.potential, coordinates, b)


def md(residue: str, config, peptide=None) -> np.ndarray:
    """MD frames (frames, atoms, 3) in nm of ACE-residue-NME, cached under ``md_cache``."""
    c = {**DEFAULTS, **config}
    settings = {k: c[k] for k in MD_KEYS}
    tag = hashlib.sha256(json.dumps({"residue": residue, **settings}, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(c["md_cache"]) / f"{residue}_{tag}.npz" if c["md_cache"] else None
    if cache is not None and cache.is_file():
        return np.load(cache)["frames"]
    peptide = peptide or capped_peptide(residue)
    frames = md_frames(peptide, frames=c["md_frames"], every=c["md_every"], equilibration=c["md_equilibration"],
                       temperature=c["temperature"], dt=c["md_dt"], friction=c["md_friction"], seed=c["md_seed"])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, frames=frames, config=json.dumps({"residue": residue, **settings}))
    return frames


def reduced(coordinates: InternalCoordinates, frames) -> np.ndarray:
    """MD frames as reduced canonical-frame vectors (rows)."""
    return np.asarray(jax.vmap(coordinates.from_cartesian)(jnp.asarray(frames, jnp.result_type(float))))


def build(config) -> fepy.Problem:
    c = {**DEFAULTS, **config}
    train = residues(c["train"])
    if not train:
        raise ValueError("train names no molecule")
    model = TransferableBG(jax.random.key(c["seed"]), hidden=c["hidden"], rounds=c["rounds"],
                           environment=c["environment"], width=c["width"], depth=c["depth"], knots=c["knots"],
                           interval=c["interval"])
    graphs, coordinates, targets, rows = [], [], [], []
    rng = np.random.default_rng(c["seed"])
    for residue in train:
        peptide, graph, coords, target = molecule(residue, c)
        y = reduced(coords, md(residue, c, peptide))
        graphs.append(graph)
        coordinates.append(coords)
        targets.append(target)
        rows.append(y[rng.permutation(len(y))])
    n = min(len(y) for y in rows)
    data = np.concatenate([y[:n] for y in rows], axis=1)  # row i: frame i of each molecule (shuffled)
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(optax.cosine_decay_schedule(c["lr"], c["steps"])))
    solver = fepy.ForwardKL(optimizer, data, c["batch"], reverse=c["reverse"], samples=c["batch"], summary_samples=2)
    return fepy.Problem(JointEnergy(targets), model.bind(graphs, coordinates), solver, c["steps"])


def ramachandran(peptide, coordinates, y) -> np.ndarray:
    """(phi, psi) in rad of reduced vectors ``y`` (rows)."""
    atoms = jnp.stack([jnp.asarray(peptide.phi), jnp.asarray(peptide.psi)])
    return np.asarray(jax.vmap(lambda v: dihedral(coordinates.to_cartesian(v), atoms))(jnp.asarray(y)))


def histogram(angles, bins, weights=None) -> np.ndarray:
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    h, _, _ = np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges], weights=weights)
    return h / h.sum()


def rama_distances(reference, angles, bins, weights=None) -> tuple[float, float]:
    """KL(reference || model) with a 1e-6 floor on the model's bins, and the total variation."""
    p, q = histogram(reference, bins), histogram(angles, bins, weights)
    q_floor = np.maximum(q, 1e-6)
    kl = float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q_floor), 0.0)))
    return kl, float(0.5 * np.abs(p - q).sum())


def evaluate(model: TransferableBG, residue: str, config, key) -> dict:
    """ESS, log Z, NLL of MD and Ramachandran distances of ``model`` bound to ``residue``;
    also returns the angles and weights for the plots (keys starting with '_')."""
    c = {**DEFAULTS, **config}
    peptide, graph, coordinates, target = molecule(residue, c)
    density = model.bind(graph, coordinates)
    y_md = reduced(coordinates, md(residue, c, peptide))
    draw = eqx.filter_jit(lambda d, k: d.sample_and_log_prob(k, c["estimate_samples"]))
    y, log_q = draw(density, key)
    start = time.perf_counter()  # a second draw, compiled: the sampling rate
    jax.block_until_ready(draw(density, jax.random.fold_in(key, 1)))
    rate = c["estimate_samples"] / (time.perf_counter() - start)
    log_w = jax.vmap(target.log_density)(y) - log_q
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    log_z, stderr = log_z_and_stderr(log_w)
    ess = float(kish_ess(log_w))
    nll = float(-jnp.mean(eqx.filter_jit(lambda d, v: d.log_prob(v))(density, jnp.asarray(y_md))))
    md_angles, angles = ramachandran(peptide, coordinates, y_md), ramachandran(peptide, coordinates, y)
    weights = np.asarray(jax.nn.softmax(log_w))
    kl_raw, tv_raw = rama_distances(md_angles, angles, c["rama_bins"])
    kl_rw, tv_rw = rama_distances(md_angles, angles, c["rama_bins"], weights)
    return dict(ess=ess, ess_fraction=ess / c["estimate_samples"], log_z=float(log_z), log_z_stderr=float(stderr),
                nll=nll, rama_kl_raw=kl_raw, rama_kl_reweighted=kl_rw, rama_tv_raw=tv_raw,
                rama_tv_reweighted=tv_rw, atoms=peptide.n_atoms, samples_per_s=rate,
                _md_angles=md_angles, _angles=angles, _weights=weights)


def analyze(target, family, config) -> dict:
    """The figures of `evaluate` for every held-out (and, if ``evaluate_train``, training) molecule."""
    c = {**DEFAULTS, **config}
    names = residues(c["held_out"]) + (residues(c["train"]) if c["evaluate_train"] else ())
    key = jax.random.key(c["seed"] + 10_000)
    return {r: evaluate(family.model, r, c, jax.random.fold_in(key, i)) for i, r in enumerate(names)}


def observables(target, family, config, analysis) -> dict:
    c = {**DEFAULTS, **config}
    out = {}
    for residue, figures in analysis.items():
        out.update({f"{k}_{residue}": v for k, v in figures.items() if not k.startswith("_")})
    held = residues(c["held_out"])
    if held:
        out["ess_held_out_mean"] = float(np.mean([analysis[r]["ess_fraction"] for r in held]))
    return out


def reference(config) -> dict:
    """No exact log Z exists for these molecules: the reference is the MD itself (the
    Ramachandran distances are measured against it)."""
    return {}


def plots(target, family, out, config, analysis) -> list[str]:
    """Ramachandran histograms of MD, raw and reweighted model samples, one row per held-out
    molecule (and per training molecule when evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = {**DEFAULTS, **config}
    names = list(analysis)
    fig, axes = plt.subplots(len(names), 3, figsize=(10, 3.2 * len(names)), squeeze=False)
    edges = np.linspace(-np.pi, np.pi, c["rama_bins"] + 1)
    held = set(residues(c["held_out"]))
    for row, residue in zip(axes, names):
        a = analysis[residue]
        panels = [(a["_md_angles"], None, "MD"), (a["_angles"], None, "model"),
                  (a["_angles"], a["_weights"], f"reweighted (ESS {a['ess_fraction']:.1%})")]
        for ax, (angles, weights, title) in zip(row, panels):
            h = histogram(angles, c["rama_bins"], weights)
            ax.pcolormesh(edges, edges, -np.log(np.where(h > 0, h, np.nan)).T, cmap="viridis_r")
            kind = "held out" if residue in held else "train"
            ax.set_title(f"ACE-{residue}-NME ({kind}): {title}", fontsize=9)
            ax.set_xlabel("phi (rad)")
            ax.set_ylabel("psi (rad)")
    fig.tight_layout()
    fig.savefig(Path(out) / "ramachandran.png", dpi=90)
    plt.close(fig)
    return ["ramachandran.png"]
