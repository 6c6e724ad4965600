"""The transferable autoregressive Boltzmann generator (fepy.apps.bg.autoregressive) on capped
peptides ACE-X-NME (fepy.apps.bg.molecules): exact log-density, normalised periodic conditionals,
invariance under atom relabelling, joint training on two molecules and evaluation on a third."""

import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed

import fepy
from fepy.apps.bg.autoregressive import JointEnergy, MoleculeGraph, TransferableBG
from fepy.apps.bg.internal import InternalCoordinates, ReducedEnergy, ZMatrix
from fepy.apps.bg.molecules import beta, capped_peptide
from fepy.cli import load_model, main

MODEL = Path(__file__).resolve().parents[1] / "models" / "transferable_bg.py"
BETA = beta(300.0)
TINY = dict(hidden=8, rounds=1, environment=8, width=16, depth=1, knots=4, interval=3.0)


@pytest.fixture(scope="module")
def peptides():
    return {r: capped_peptide(r) for r in ("ALA", "GLY", "SER")}


def bound(peptide):
    return (MoleculeGraph.build(peptide.zmatrix, peptide.features, peptide.potential, BETA),
            InternalCoordinates(peptide.zmatrix))


@pytest.fixture(scope="module")
def model():
    """A tiny model far from its initial (configurational-bias) state."""
    return perturbed(TransferableBG(jax.random.key(0), **TINY), 0.1)


@eqx.filter_jit
def sample_and_evaluate(density, key, n):
    y, log_q = density.sample_and_log_prob(key, n)
    return y, log_q, density.log_prob(y)


def test_samples_round_trip_and_log_q_of_sampling_equals_evaluation(peptides, model):
    """Two molecules bound at once (padded to a common size): log q of the sequential sampler equals
    log q of the masked all-atoms evaluation, and the samples are molecules with finite energy."""
    graphs, coordinates = zip(*(bound(peptides[r]) for r in ("ALA", "GLY")))
    density = model.bind(graphs, coordinates)
    assert density.dim == (3 * 22 - 6) + (3 * 19 - 6)
    y, log_q, log_prob = sample_and_evaluate(density, jax.random.key(1), 16)
    assert np.all(np.isfinite(log_q)) and float(jnp.std(log_q)) > 1.0
    # float64 rounding of the round trip y~ -> q, amplified by the steep partial energies of the torsion base
    np.testing.assert_allclose(log_prob, log_q, rtol=1e-10, atol=0)
    target = JointEnergy([ReducedEnergy(peptides[r].potential, c, BETA) for r, c in zip(("ALA", "GLY"), coordinates)])
    assert target.dim == density.dim
    assert np.all(np.isfinite(jax.vmap(target.energy)(y)))


def test_log_q_is_the_product_of_conditionals_minus_the_log_det(peptides, model):
    """log q(y~) against a direct evaluation: each place's three conditional densities from a context
    computed with every later atom moved away (the model is autoregressive: nothing placed later may
    change it), minus log|det dy~/dq| from jax.jacfwd of the internal-coordinate map."""
    peptide = peptides["SER"]
    graph, coordinates = bound(peptide)
    density = model.bind(graph, coordinates)
    y, log_q, _ = sample_and_evaluate(density, jax.random.key(2), 2)
    y = y[0]
    z = peptide.zmatrix
    order = np.asarray(z.order)
    q = coordinates.inverse(y)
    x = coordinates.to_cartesian(y)[order]  # positions by place
    n = z.n_atoms
    r = np.concatenate([[0.0], q[: n - 1]])
    theta = np.concatenate([[0.0, 0.0], q[n - 1 : 2 * n - 3]])
    phi = np.concatenate([[0.0, 0.0, 0.0], q[2 * n - 3 :]])
    h, env_atom = model._atom_terms(graph)

    @jax.jit
    def place_terms(p):
        later = jnp.arange(n)[:, None] >= p
        moved = jnp.where(later, x + jax.random.normal(jax.random.fold_in(jax.random.key(7), p), x.shape), x)
        context = model._context(graph, h, env_atom, moved, p)  # later atoms anywhere
        return model.place_log_prob(graph, moved, p, context, jnp.asarray(r)[p], jnp.asarray(theta)[p], jnp.asarray(phi)[p])

    total = 0.0
    for p in range(1, n):
        terms = place_terms(p)
        total += float(terms[0]) + (float(terms[1]) if p >= 2 else 0.0) + (float(terms[2]) if p >= 3 else 0.0)
    log_det = jnp.linalg.slogdet(jax.jacfwd(coordinates.transform)(q))[1]
    np.testing.assert_allclose(float(log_q[0]), total - float(log_det), rtol=0, atol=1e-8)


def test_conditionals_are_normalised_and_the_torsion_density_is_periodic(peptides):
    """At contexts of a real molecule, each 1-D conditional integrates to 1 (trapezoid rule on a
    fine grid over the density's support; the angle's base stops at 12 widths, a jump of its floor
    density that the rule integrates to within h x jump / 2 < 1e-6), and the
    torsion density is periodic: the same at -pi and pi, and at phi and phi + 2 pi. A milder
    perturbation than the other tests' (0.05): with 0.3 some splines have bins far narrower than
    any quadrature grid of this size resolves."""
    model = perturbed(TransferableBG(jax.random.key(0), **TINY), 0.05)
    peptide = peptides["ALA"]
    graph, coordinates = bound(peptide)
    density = model.bind(graph, coordinates)
    y, _, _ = sample_and_evaluate(density, jax.random.key(3), 2)
    x = coordinates.to_cartesian(y[0])[np.asarray(peptide.zmatrix.order)]
    h, env_atom = model._atom_terms(graph)
    circle = jnp.linspace(-jnp.pi, jnp.pi, 200_001)

    def mass(log_density, centre, width):
        """The integral of a 1-D density: located on a coarse grid of +-1000 widths, then integrated on
        a fine grid over where it exceeds e^-50 of its peak (trapezoid rule)."""
        coarse = centre + width * jnp.linspace(-1000, 1000, 100_001)
        values = jax.vmap(log_density)(coarse)
        above = values > jnp.max(values) - 50
        lo = jnp.min(jnp.where(above, coarse, jnp.inf)) - 0.02 * width
        hi = jnp.max(jnp.where(above, coarse, -jnp.inf)) + 0.02 * width
        fine = jnp.linspace(lo, hi, 40_001)
        return jnp.trapezoid(jnp.exp(jax.vmap(log_density)(fine)), fine)

    @jax.jit
    def densities(p):
        context = model._context(graph, h, env_atom, x, p)
        prior = graph.prior[p]
        r, theta = prior[0] + 0.7 * prior[1], prior[2] - 0.4 * prior[3]
        log_prob = lambda *v: model.place_log_prob(graph, x, p, context, *v)
        log_phi = jax.vmap(lambda v: log_prob(r, theta, v)[2])(circle)
        shifted = jax.vmap(lambda v: log_prob(r, theta, v)[2])(circle[::10_000] + 2 * jnp.pi)
        masses = [mass(lambda v: log_prob(v, theta, 0.3)[0], prior[0], prior[1]),
                  mass(lambda v: log_prob(r, v, 0.3)[1], prior[2], prior[3]),
                  jnp.trapezoid(jnp.exp(log_phi), circle)]
        return jnp.stack(masses), log_phi, shifted

    for p in (5, 12, 21):
        masses, log_phi, shifted = densities(p)
        np.testing.assert_allclose(masses, 1.0, atol=1e-6)
        assert float(jnp.std(log_phi)) > 0.05  # a real test: not the uniform density
        np.testing.assert_allclose(log_phi[0], log_phi[-1], rtol=0, atol=1e-10)
        np.testing.assert_allclose(shifted, log_phi[::10_000], rtol=0, atol=1e-9)


def relabelled(peptide, perm):
    """The same molecule with atom a renamed perm[a]: Z-matrix, features and force field."""
    inverse = np.argsort(perm)
    z = peptide.zmatrix
    rename = lambda atoms: tuple(int(perm[a]) for a in atoms)
    zmatrix = ZMatrix(z.n_atoms, rename(z.order), rename(z.parent), rename(z.angle_ref), rename(z.torsion_ref),
                      z.generations)
    pot = peptide.potential
    index = lambda a: jnp.asarray(perm)[a]
    potential = eqx.tree_at(
        lambda u: (u.bonds, u.angles, u.torsions, u.pairs, u.exceptions, u.charges, u.sigma, u.epsilon), pot,
        (index(pot.bonds), index(pot.angles), index(pot.torsions), index(pot.pairs), index(pot.exceptions),
         pot.charges[inverse], pot.sigma[inverse], pot.epsilon[inverse]))
    return zmatrix, peptide.features[inverse], potential


def test_relabelling_the_atoms_leaves_the_density_unchanged(peptides, model):
    """The model sees the bond graph and the atoms' features, not their indices: with the atoms
    renamed (and the Z-matrix renamed with them) log q and the energy of the renamed configuration
    are those of the original. Built from the renamed bonds, `ZMatrix.from_bonds` gives a valid
    Z-matrix (possibly another order among equivalent atoms), on which the model is again exact."""
    peptide = peptides["ALA"]
    graph, coordinates = bound(peptide)
    perm = np.random.default_rng(0).permutation(peptide.n_atoms)
    zmatrix, features, potential = relabelled(peptide, perm)
    graph2 = MoleculeGraph.build(zmatrix, features, potential, BETA)
    coordinates2 = InternalCoordinates(zmatrix)
    y, log_q, _ = sample_and_evaluate(model.bind(graph, coordinates), jax.random.key(4), 8)
    x = jax.vmap(coordinates.to_cartesian)(y)
    x2 = jnp.zeros_like(x).at[:, perm].set(x)  # atom perm[a] at the position of atom a
    y2 = jax.vmap(coordinates2.from_cartesian)(x2)
    log_prob = eqx.filter_jit(lambda density, v: density.log_prob(v))
    energy = eqx.filter_jit(lambda u, v: jax.vmap(u.energy)(v))
    np.testing.assert_allclose(log_prob(model.bind(graph2, coordinates2), y2), log_q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(energy(potential, x2), energy(peptide.potential, x), rtol=1e-10)
    bonds = np.asarray(potential.bonds)
    fresh = ZMatrix.from_bonds(peptide.n_atoms, bonds)
    graph3 = MoleculeGraph.build(fresh, features, potential, BETA)
    _, log_q3, log_prob3 = sample_and_evaluate(model.bind(graph3, InternalCoordinates(fresh)), jax.random.key(5), 8)
    np.testing.assert_allclose(log_prob3, log_q3, rtol=0, atol=1e-9)


def test_bad_input_is_refused(peptides):
    peptide = peptides["ALA"]
    with pytest.raises(ValueError, match="features must have shape"):
        MoleculeGraph.build(peptide.zmatrix, peptide.features[:, :3], peptide.potential, BETA)
    with pytest.raises(ValueError, match="hidden must be an integer"):
        TransferableBG(jax.random.key(0), hidden=0)
    graph, coordinates = bound(peptide)
    other = InternalCoordinates(peptides["GLY"].zmatrix)
    with pytest.raises(ValueError, match="graph of 22 atoms"):
        TransferableBG(jax.random.key(0), **TINY).bind(graph, other)
    with pytest.raises(ValueError, match="capped_peptide builds"):
        capped_peptide("PRO")


def test_fepy_run_trains_on_two_molecules_and_evaluates_on_a_third(tmp_path):
    """`fepy run models/transferable_bg.py` with a tiny model on short MD: ForwardKL on ACE-ALA-NME and
    ACE-GLY-NME jointly lowers the NLL, and the model bound to ACE-SER-NME (never seen) gives finite
    importance weights, ESS, log Z and NLL of its MD, written to summary.json with the Ramachandran PNG."""
    out = tmp_path / "run"
    sets = dict(train="ALA,GLY", held_out="SER", md_frames=32, md_every=50, md_equilibration=500,
                md_cache=str(tmp_path / "md"), steps=40, batch=8, lr=3e-3, estimate_samples=64, rama_bins=12,
                **{k: v for k, v in TINY.items()})
    argv = ["run", str(MODEL), "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    nll = np.genfromtxt(out / "trace.csv", delimiter=",", names=True)["nll"]
    assert nll[-10:].mean() < nll[:10].mean()  # 40 steps from the configurational-bias start: ~1 nat per row
    assert 1.0 <= summary["ess_SER"] <= 64.0
    assert all(np.isfinite(summary[f"{k}_SER"]) for k in ("log_z", "log_z_stderr", "nll", "rama_kl_raw"))
    assert (out / "ramachandran.png").is_file()


@pytest.mark.slow
@pytest.mark.xfail(reason="not yet reached: the defaults (benchmark run, seed 0) give held-out ESS 23.5 (CYS) but "
                          "1.2 (THR), 1.5 (ILE), 1.0 (GLN) of 2000 (benchmarks/README.md, transferable BG)",
                   strict=False)
def test_held_out_ess():
    """The model file's defaults (1 ns MD per molecule, 2000 training steps): the Kish ESS of 2000
    samples on each held-out peptide is above 0.5 % (10 effective samples), and the reweighted
    Ramachandran histogram is no farther from MD than the raw one by more than the noise."""
    m = load_model(MODEL)
    problem = m.build({})
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(1))
    analysis = m.analyze(problem.target, sol.family, {"evaluate_train": False})
    for residue, figures in analysis.items():
        assert figures["ess_fraction"] > 0.005, (residue, figures["ess_fraction"])
        assert math.isfinite(figures["log_z"]) and math.isfinite(figures["nll"])
