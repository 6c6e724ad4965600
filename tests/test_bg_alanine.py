"""Alanine dipeptide Boltzmann generator: the internal-coordinate bijection (fepy.apps.bg.internal),
circular splines (fepy.apps.bg.splines), replica exchange (fepy.apps.bg.tempering), the analysis
figures and models/alanine_dipeptide_bg.py."""

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
import pytest
from conftest import perturbed
from scipy.integrate import quad
from scipy.spatial.transform import Rotation

import fepy
from fepy.apps.bg.analysis import dihedral_histogram, free_energy_difference, histogram_kl
from fepy.apps.bg.internal import (InternalCoordinates, ReducedEnergy, ZMatrix, internal_coordinate_flow,
                                   periodic_mask, signed_volume)
from fepy.apps.bg.splines import MixedSplineCoupling, NormalUniform, spline_transform
from fepy.apps.bg.tempering import BOLTZMANN, parallel_tempering
from fepy.apps.tps import alanine_dipeptide
from fepy.apps.tps.molecular import dihedral
from fepy.cli import load_model

MODEL = Path(__file__).resolve().parents[1] / "models" / "alanine_dipeptide_bg.py"


@pytest.fixture(scope="module")
def ad():
    return alanine_dipeptide()


@pytest.fixture(scope="module")
def ic(ad):
    return InternalCoordinates(ZMatrix.from_topology(ad.topology))


def configurations(ad, n=6, scale=0.01, seed=0):
    """Both packaged structures with Gaussian noise, in random orientations and positions."""
    base = jnp.stack([ad.c7eq, ad.c7ax])
    noise = scale * jax.random.normal(jax.random.key(seed), (n // 2, 2, 22, 3))
    x = np.asarray((base[None] + noise).reshape(n, 22, 3))
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    return jnp.asarray(np.einsum("nij,naj->nai", rotations, x) + np.random.default_rng(seed).normal(size=(n, 1, 3)))


# ----------------------------------------------------------------------------- the Z-matrix


def test_zmatrix_of_alanine_dipeptide_is_built_from_the_bond_graph(ad):
    z = ZMatrix.from_topology(ad.topology)
    names = ad.atom_names
    phi, psi = np.asarray(ad.phi), np.asarray(ad.psi)
    n, ca, c = phi[1], phi[2], phi[3]
    assert z.order[:3] == (ca, n, c)  # the centre, then the two backbone branches
    torsions = {tuple(map(int, t)) for t in z.torsion_atoms}
    torsions |= {t[::-1] for t in torsions}  # dihedral(a, b, c, d) = dihedral(d, c, b, a)
    assert tuple(map(int, phi)) in torsions and tuple(map(int, psi)) in torsions  # phi and psi are coordinates
    cb = names.index("CB")
    assert (cb, int(ca), int(n), int(c)) in torsions  # CB at +-120 deg from the backbone: the chirality
    assert z.dim == 60 and np.bincount(z.kinds()).tolist() == [21, 20, 19]
    # every bond coordinate is a bond of the topology
    bonds = {frozenset((b[0].index, b[1].index)) for b in ad.topology.bonds()}
    assert all(frozenset(map(int, pair)) in bonds for pair in z.bond_atoms)


def test_zmatrix_of_small_molecules_and_bad_graphs():
    methane = ZMatrix.from_bonds(5, [(0, 1), (0, 2), (0, 3), (0, 4)])
    assert methane.order[0] == 0 and methane.dim == 9
    assert all(row[1] == 0 for row in methane.torsion_atoms)  # every H hangs on C, torsions to siblings
    water = ZMatrix.from_bonds(3, [(0, 1), (1, 2)])
    assert water.order[0] == 1 and water.dim == 3
    butane = ZMatrix.from_bonds(4, [(0, 1), (1, 2), (2, 3)])
    assert tuple(butane.torsion_atoms[0]) in {(0, 1, 2, 3), (3, 2, 1, 0)}  # the one proper torsion
    with pytest.raises(ValueError, match="not connected"):
        ZMatrix.from_bonds(4, [(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="n_atoms"):
        ZMatrix.from_bonds(2, [(0, 1)])
    with pytest.raises(ValueError, match="outside"):
        ZMatrix.from_bonds(3, [(0, 1), (1, 3)])
    with pytest.raises(ValueError, match="placed before"):
        ZMatrix(3, (0, 1, 2), (0, 2), (1,), (), ())


# ----------------------------------------------------------------------------- the bijection


@eqx.filter_jit
def bijection_figures(ic, x):
    """Everything the bijection test checks, in one compiled program."""
    y = jax.vmap(ic.from_cartesian)(x)
    q, inverse_log_det = jax.vmap(ic.inverse_and_log_det)(y)
    back, log_det = jax.vmap(ic.transform_and_log_det)(q)
    jacobian_log_det = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(ic.transform))(q))[1]
    internal, canonical = jax.vmap(ic.internal)(x), jax.vmap(ic.to_cartesian)(y)
    return y, q, inverse_log_det, back, log_det, jacobian_log_det, internal, canonical


def test_internal_coordinates_invert_and_log_det_is_the_jacobian(ad, ic):
    x = configurations(ad)
    y, q, inverse_log_det, back, log_det, jacobian_log_det, internal, canonical = bijection_figures(ic, x)
    np.testing.assert_allclose(back, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=0, atol=1e-12)
    np.testing.assert_allclose(jacobian_log_det, log_det, rtol=0, atol=1e-9)
    # log|det| = log r2 + sum_{p>=3} (2 log r_p + log sin theta_p), written out from q
    n = 22
    r, theta = q[:, : n - 1], q[:, n - 1 : 2 * n - 3]
    by_hand = jnp.log(r[:, 1]) + jnp.sum(2 * jnp.log(r[:, 2:]) + jnp.log(jnp.sin(theta[:, 1:])), axis=1)
    np.testing.assert_allclose(log_det, by_hand, rtol=0, atol=1e-12)
    # q are the molecule's own bonds, angles, torsions (invariant), the canonical frame a rigid motion
    np.testing.assert_allclose(q, internal, rtol=0, atol=1e-12)
    distances = lambda p: jnp.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
    np.testing.assert_allclose(distances(canonical), distances(x), rtol=0, atol=1e-12)
    chiral = [int(ad.phi[2]), int(ad.phi[1]), int(ad.phi[3]), ad.atom_names.index("CB")]
    np.testing.assert_allclose(signed_volume(canonical, chiral), signed_volume(x, chiral), rtol=1e-10)
    o = ic.zmatrix.order
    assert np.all(np.abs(canonical[:, o[0]]) < 1e-15) and np.all(np.abs(canonical[:, o[1], 1:]) < 1e-13)
    assert np.all(np.abs(canonical[:, o[2], 2]) < 1e-13) and np.all(canonical[:, o[2], 1] > 0)


def test_reduced_density_is_the_cartesian_marginal(ad, ic):
    """dx = y1x^2 y2y dt dmu(R) dy~: the Jacobian of (t, omega, y~) -> x = t + exp([omega]) y(y~)
    at t = 0, omega = 0, where the Haar density of exponential coordinates is 1 (it integrates to
    8 pi^2 over the ball |omega| < pi)."""
    y = ic.from_cartesian(configurations(ad, n=2)[0])

    def cartesian(v):
        t, omega, reduced = v[:3], v[3:6], v[6:]
        skew = jnp.array([[0, -omega[2], omega[1]], [omega[2], 0, -omega[0]], [-omega[1], omega[0], 0]])
        return (t + ic.to_cartesian(reduced) @ jax.scipy.linalg.expm(skew).T).reshape(-1)

    v = jnp.concatenate([jnp.zeros(6), y])
    log_det = jax.jit(lambda v: jnp.linalg.slogdet(jax.jacfwd(cartesian)(v))[1])(v)
    np.testing.assert_allclose(log_det, 2 * jnp.log(y[0]) + jnp.log(y[2]), rtol=0, atol=1e-10)
    haar, _ = quad(lambda a: 4 * math.pi * 2 * (1 - math.cos(a)), 0, math.pi)
    assert haar == pytest.approx(8 * math.pi**2, rel=1e-12)
    # the target: U of the configuration minus kT log of that factor
    target = ReducedEnergy(ad.potential, ic, beta=2.0)
    expected = ad.potential.energy(configurations(ad, n=2)[0]) - (2 * jnp.log(y[0]) + jnp.log(y[2])) / 2.0
    np.testing.assert_allclose(eqx.filter_jit(lambda t, v: t.energy(v))(target, y), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- circular splines


def coupling():
    """A perturbed layer on (periodic, real, periodic, real) transforming the first two."""
    periodic = jnp.array([True, False, True, False])
    transformed = jnp.array([True, True, False, False])
    layer = MixedSplineCoupling(jax.random.key(0), transformed, periodic, knots=6, interval=3.0, width=16, depth=1)
    return perturbed(layer, 0.3)


@jax.jit
def circular_figures(raw, x):
    """The periodic transformer's ends, slopes and round trip at points x, in one compiled program."""
    f = lambda v: spline_transform(v, raw, jnp.array(True), 6, 3.0, inverse=False)
    slope = jax.grad(lambda v: f(v)[0])
    ends = jnp.array([-math.pi, math.pi])
    y, log_det = jax.vmap(f)(x)
    back, _ = jax.vmap(lambda v: spline_transform(v, raw, jnp.array(True), 6, 3.0, inverse=True))(y)
    return jax.vmap(f)(ends)[0], jax.vmap(slope)(ends), y, log_det, jnp.log(jax.vmap(slope)(x)), back


def test_circular_spline_is_a_c1_map_of_the_circle():
    raw = 0.8 * jax.random.normal(jax.random.key(3), (3 * 6 + 1,))
    assert abs(float(raw[-1])) > 0.1  # a rotation is part of the map
    x = jnp.linspace(-math.pi, math.pi, 41)[1:-1]
    end_values, end_slopes, y, log_det, log_slope, back = circular_figures(raw, x)
    assert math.remainder(float(end_values[1] - end_values[0]), 2 * math.pi) == pytest.approx(0.0, abs=1e-12)
    assert float(end_slopes[0]) == pytest.approx(float(end_slopes[1]), rel=1e-12)  # C1 across -pi = pi
    np.testing.assert_allclose(log_det, log_slope, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-12)
    # the circle onto itself: the images cover [-pi, pi) once (monotone up to the rotation's wrap)
    assert np.all(np.abs(y) <= math.pi) and np.sum(np.diff(np.asarray(y)) < 0) <= 1


@eqx.filter_jit
def coupling_figures(layer, z, x, wrapped):
    y, log_det = jax.vmap(layer.transform_and_log_det)(z)
    back, inverse_log_det = jax.vmap(layer.inverse_and_log_det)(y)
    jacobian_log_det = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(layer.transform))(z))[1]
    return layer.transform(x), layer.transform(wrapped), y, log_det, back, inverse_log_det, jacobian_log_det


def test_coupling_layer_is_continuous_in_a_periodic_condition_and_exact():
    layer = coupling()
    x = jnp.array([0.3, -0.7, math.pi - 1e-9, 1.1])
    wrapped = x.at[2].set(-math.pi + 1e-9)
    z = jnp.stack([jnp.array([0.5, 0.2, -2.0, -0.4]), jnp.array([-3.0, 2.5, 1.0, 0.9]), x])
    at_x, at_wrapped, y, log_det, back, inverse_log_det, jacobian_log_det = coupling_figures(layer, z, x, wrapped)
    np.testing.assert_allclose(at_x[:2], at_wrapped[:2], rtol=0, atol=1e-7)
    np.testing.assert_allclose(y[:, 2:], z[:, 2:], rtol=0, atol=0)  # the kept half
    assert float(jnp.min(jnp.abs(y[:, :2] - z[:, :2]))) > 1e-3  # the transformed half moved
    np.testing.assert_allclose(jacobian_log_det, log_det, rtol=0, atol=1e-10)
    np.testing.assert_allclose(back, z, rtol=0, atol=1e-10)
    np.testing.assert_allclose(inverse_log_det, -log_det, rtol=0, atol=1e-10)


def test_spline_pieces_reject_bad_input():
    with pytest.raises(ValueError, match="masks of shape"):
        MixedSplineCoupling(jax.random.key(0), jnp.array([True, False]), jnp.array([True, False, False]), knots=4,
                            interval=3.0, width=4, depth=1)
    with pytest.raises(ValueError, match="knots >= 2"):
        MixedSplineCoupling(jax.random.key(0), jnp.array([True, False]), jnp.array([True, False]), knots=1,
                            interval=3.0, width=4, depth=1)
    with pytest.raises(ValueError, match="boolean mask"):
        NormalUniform(np.array([1.0, 0.0]))


def test_normal_uniform_base_is_normalised():
    base = NormalUniform(np.array([True, False]))
    x, log_q = base.sample_and_log_prob(jax.random.key(0), 1000)
    assert np.all(np.abs(x[:, 0]) <= math.pi)
    np.testing.assert_allclose(base.log_prob(x), log_q, rtol=0, atol=1e-14)
    h_phi, h_u = 2 * math.pi / 600, 0.01
    phi = -math.pi + h_phi * (np.arange(600) + 0.5)
    u = np.arange(-9, 9, h_u) + h_u / 2
    grid = jnp.asarray(np.stack(np.meshgrid(phi, u, indexing="ij"), -1).reshape(-1, 2))
    assert float(jnp.sum(jnp.exp(base.log_prob(grid))) * h_phi * h_u) == pytest.approx(1.0, abs=1e-8)
    assert float(base.log_prob(jnp.array([4.0, 0.0]))) == -math.inf


@eqx.filter_jit
def flow_figures(flow, key):
    y, log_q = flow.sample_and_log_prob(key, 8)
    z, log_det_inverse = flow.inverse_and_log_det(y)
    back, log_det = flow.transform_and_log_det(z)
    bijection = paramax.unwrap(flow.bijection)
    jacobian_log_det = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(bijection.transform))(z))[1]
    return y, log_q, flow.log_prob(y), log_det_inverse, back, log_det, jacobian_log_det


def test_internal_coordinate_flow_is_exact_on_alanine_dipeptide(ad, ic):
    x = configurations(ad, n=40, scale=0.005)
    q = jax.vmap(ic.internal)(x)
    periodic = periodic_mask(ic.zmatrix, q)
    assert periodic[ic.zmatrix.kinds() != 2].sum() == 0  # only torsions are periodic
    flow = internal_coordinate_flow(jax.random.key(1), ic, q, layers=2, knots=5, width=16, depth=1)
    coupling_layers = flow.bijection.bijections[0]
    flow = eqx.tree_at(lambda f: f.bijection.bijections[0], flow, perturbed(coupling_layers, 0.1))
    y, log_q, log_prob, log_det_inverse, back, log_det, jacobian_log_det = flow_figures(flow, jax.random.key(2))
    assert float(jnp.std(log_det)) > 0.1  # the couplings are far from the identity
    np.testing.assert_allclose(log_prob, log_q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back, y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(log_det_inverse, -log_det, rtol=0, atol=1e-9)
    np.testing.assert_allclose(jacobian_log_det, log_det, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- replica exchange


class TiltedDoubleWell(eqx.Module):
    """One particle: U = a (x0^2 - 1)^2 + b x0 + k (x1^2 + x2^2) / 2 (kJ/mol, nm)."""

    a: float = 25.0
    b: float = 2.0
    k: float = 100.0

    def energy(self, x):
        p = x[0]
        return self.a * (p[0] ** 2 - 1) ** 2 + self.b * p[0] + 0.5 * self.k * (p[1] ** 2 + p[2] ** 2)


def test_replica_exchange_equilibrates_across_a_barrier():
    """Barrier a = 10 kT at 300 K: Langevin from the left well alone stays there; the ladder's
    cold replicas reach the exact population of the right well (quadrature)."""
    well = TiltedDoubleWell()
    kt = BOLTZMANN * 300.0
    right = quad(lambda p: math.exp(-(well.a * (p * p - 1) ** 2 + well.b * p) / kt), 0, 3)[0]
    left = quad(lambda p: math.exp(-(well.a * (p * p - 1) ** 2 + well.b * p) / kt), -3, 0)[0]
    exact = right / (left + right)
    start = jnp.array([[-1.0, 0.0, 0.0]])
    run = parallel_tempering(well, jnp.ones(1), start, np.array([300.0, 600.0, 1200.0, 2400.0]), jax.random.key(0),
                             ladders=32, rounds=400, burn_in=40, exchange_every=20, dt=0.01, friction=5.0)
    fraction = np.asarray(run.frames[..., 0, 0] > 0).mean(axis=1)  # per ladder: independent
    mean, stderr = fraction.mean(), fraction.std(ddof=1) / math.sqrt(fraction.size)
    assert abs(mean - exact) < 4 * stderr + 0.01, (mean, stderr, exact)
    assert np.all((np.asarray(run.acceptance) > 0.05) & (np.asarray(run.acceptance) < 0.95))
    alone = parallel_tempering(well, jnp.ones(1), start, np.array([300.0, 300.0001]), jax.random.key(1),
                               ladders=8, rounds=400, burn_in=40, exchange_every=20, dt=0.01, friction=5.0)
    assert float(jnp.mean(alone.frames[..., 0, 0] > 0)) < 0.05 < exact


# ----------------------------------------------------------------------------- the figures


def test_histogram_kl_and_free_energy_difference():
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-math.pi, math.pi, (2, 100_000))
    p = dihedral_histogram(phi, psi, bins=8)
    assert np.sum(p) * (2 * math.pi / 8) ** 2 == pytest.approx(1.0)
    assert histogram_kl(p, p) == 0.0
    q = dihedral_histogram(phi, psi, weights=1 + 0.5 * np.cos(phi), bins=8)
    assert histogram_kl(p, q) > 0
    # states A (phi < 0) and B (phi > 0) with weights 1 and 3: Delta F = -kT log 3
    log_w = np.where(phi > 0, math.log(3.0), 0.0)
    delta, stderr = free_energy_difference(log_w, phi < 0, phi > 0, 2.5)
    assert abs(delta + 2.5 * math.log(3.0)) < 4 * stderr and stderr < 0.02
    # blocks: fractions of equal-weight blocks give the pooled ratio
    delta, _ = free_energy_difference(np.zeros(2), np.array([0.8, 0.6]), np.array([0.2, 0.4]), 1.0)
    assert delta == pytest.approx(-math.log(0.3 / 0.7))


# ----------------------------------------------------------------------------- the model file


TINY = dict(md_ladders=2, md_held_out=1, layers=2, knots=4, width=8, depth=1, steps=3, batch=16, estimate_samples=64,
            chunk=64)


def test_model_file_tiny_run(ad, tmp_path):
    """build, train, analyze, observables, plots on a stand-in MD reference (the packaged structures
    with noise, written where the model caches its MD; the replica exchange has its own test)."""
    model = load_model(MODEL)
    config = {**model.DEFAULTS, **TINY, "md_cache": str(tmp_path / "md")}
    frames = np.asarray(configurations(ad, n=100, scale=0.005)).reshape(2, 50, 22, 3)
    model.md_cache_path(config).parent.mkdir()
    np.savez_compressed(model.md_cache_path(config), frames=frames)
    problem = model.build(config)
    assert problem.target.dim == 60 and problem.family.dim == 60
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    analysis = model.analyze(problem.target, sol.family, config)
    figures = model.observables(problem.target, sol.family, config, analysis)
    for key in ("ess", "log_z", "held_out_nll", "kl_flow", "kl_reweighted", "kl_md_train", "kl_flow_floor",
                "kl_md_ladder", "wrong_chirality_fraction", "delta_f_c7ax_reweighted", "delta_f_c5_md"):
        assert key in figures
    assert math.isfinite(figures["log_z"]) and math.isfinite(figures["held_out_nll"])
    assert 1 <= figures["ess"] <= 64 and 0 <= figures["wrong_chirality_fraction"] <= 1
    assert figures["held_out_frames"] == 50 and figures["md_frames"] == 100
    # each stand-in ladder holds the C7eq and C7ax structures alternately: phi > 0 in half of each
    assert figures["delta_f_c7ax_md"] == pytest.approx(0.0, abs=1e-12)
    written = model.plots(problem.target, sol.family, tmp_path, config, analysis)
    assert all((tmp_path / name).is_file() for name in written)


@pytest.mark.slow
def test_model_file_acceptance_run(tmp_path):
    """The model's defaults (the replica-exchange MD reference is made, ~30 min on 2 cores, unless
    cached in runs/; training ~15 min in float64). Accepted when:

    * no D-alanine among the samples (the flow keeps CA's chirality);
    * the importance weights are usable: ESS >= 100 (delta-method errors trustworthy) and the
      reweighted C7ax free energy resolved to better than kT;
    * both reweighted free-energy differences agree with the MD reference within 3 combined
      standard errors (the MD error from its independent ladders);
    * the Ramachandran KL from the held-out MD of the flow's samples, raw and reweighted, is below
      that of one training ladder of the MD (the median over them): the flow's 20,000 samples are
      at least as close to the reference as a replica-exchange run as long as each held-out one.
    """
    model = load_model(MODEL)
    config = dict(model.DEFAULTS)
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                        key=jax.random.fold_in(jax.random.key(0), 1))
    f = model.observables(problem.target, sol.family, config, model.analyze(problem.target, sol.family, config))
    kt = BOLTZMANN * config["temperature"]
    assert f["wrong_chirality_fraction"] == 0.0
    assert f["ess"] >= 100 and f["delta_f_c7ax_reweighted_stderr"] < kt, f
    for state in ("c7ax", "c5"):
        difference = f[f"delta_f_{state}_reweighted"] - f[f"delta_f_{state}_md"]
        error = math.hypot(f[f"delta_f_{state}_reweighted_stderr"], f[f"delta_f_{state}_md_stderr"])
        assert abs(difference) < 3 * error, (state, difference, error)
    assert f["kl_flow"] < f["kl_md_ladder"] and f["kl_reweighted"] < f["kl_md_ladder"], f
