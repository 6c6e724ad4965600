"""Particle Boltzmann generators (fepy.apps.bg): the DW4 / LJ13 energies against hand
computation, the centre-of-mass-free Gaussian, the EGNN field's symmetries, `fepy.CNF`'s exact
log-density (a linear field with a closed form, normalisation on the subspace, invariances),
the couplings of `fepy.FlowMatching`, and tiny runs of models/dw4_bg.py and models/lj13_bg.py."""

import itertools
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import perturbed

import fepy
from fepy.apps import bg
from fepy.apps.bg import evaluation
from fepy.cli import load_model
from fepy.solvers.flow_matching import assignment

MODELS = Path(__file__).resolve().parents[1] / "models"


def orthogonal(d, seed):
    """A random orthogonal matrix with determinant -1 (a reflection: the symmetry group is O(d))."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return jnp.asarray(np.sign(np.linalg.det(q)) * q @ np.diag([-1.0] + [1.0] * (d - 1)))


def transformed(x, n, d, rotation, shift, perm):
    """Each configuration rotated/reflected, shifted and relabelled."""
    p = x.reshape(x.shape[:-1] + (n, d))
    return ((p @ rotation.T + shift)[..., perm, :]).reshape(x.shape)


def com_free_basis(n, d):
    """Orthonormal columns spanning the centre-of-mass-free subspace of R^{nd}."""
    projector = np.kron(np.eye(n) - np.ones((n, n)) / n, np.eye(d))
    w, v = np.linalg.eigh(projector)
    return v[:, w > 0.5]


# ----------------------------------------------------------------------------- energies


def test_dw4_energy_of_a_square_and_of_random_configurations():
    target = bg.dw4()
    assert (target.dim, target.com_free_dim, target.beta) == (8, 6, 1.0)
    f = lambda r: -4.0 * (r - 4.0) ** 2 + 0.9 * (r - 4.0) ** 4  # noqa: E731  (a = 0)
    for s in (2.0, 4.0, 5.5):  # a square of side s: 4 sides and 2 diagonals, each pair once
        square = jnp.array([0.0, 0.0, s, 0.0, s, s, 0.0, s])
        assert float(target.energy(square)) == pytest.approx(4 * f(s) + 2 * f(s * math.sqrt(2)), rel=1e-13)
    x = np.random.default_rng(0).normal(scale=3.0, size=8)
    p = x.reshape(4, 2)
    loops = sum(f(np.linalg.norm(p[i] - p[j])) for i in range(4) for j in range(i + 1, 4))
    assert float(target.energy(jnp.asarray(x))) == pytest.approx(loops, rel=1e-12)
    # the linear term a (d - d0) is part of the definition (0 for DW4)
    tilted = bg.MultiDoubleWell(n_particles=4, space_dim=2, a=0.5)
    d = np.array([np.linalg.norm(p[i] - p[j]) for i in range(4) for j in range(i + 1, 4)])
    assert float(tilted.energy(jnp.asarray(x))) == pytest.approx(loops + 0.5 * np.sum(d - 4.0), rel=1e-12)
    # invariant under O(2), translations and relabelling
    y = transformed(jnp.asarray(x), 4, 2, orthogonal(2, 1), jnp.array([3.0, -1.0]), jnp.array([2, 0, 3, 1]))
    assert float(target.energy(y)) == pytest.approx(loops, rel=1e-12)


def test_lj13_energy_in_both_pair_conventions():
    unique, ordered = bg.lj13("unique"), bg.lj13("ordered")
    assert bg.lj13().pairs == "ordered" and unique.dim == 39 and unique.com_free_dim == 36
    # an equilateral triangle of side r_m (three pairs at the minimum, -epsilon each), each
    # vertex 1/sqrt(3) from the centroid: oscillator (1/2) * 3 * (1/3) = 1/2
    triangle = jnp.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, math.sqrt(3) / 2, 0.0]) + 7.0
    three = bg.LennardJonesCluster(n_particles=3, space_dim=3, pairs="unique")
    assert float(three.energy(triangle)) == pytest.approx(-3.0 + 0.5, rel=1e-13)
    both = bg.LennardJonesCluster(n_particles=3, space_dim=3, pairs="ordered")
    assert float(both.energy(triangle)) == pytest.approx(-6.0 + 0.5, rel=1e-13)
    # 13 random particles against a double loop: sum over i < j, the ordered sum doubles it
    x = np.random.default_rng(2).normal(scale=1.5, size=39)
    p = x.reshape(13, 3)
    lj = sum((1 / r**12 - 2 / r**6) for r in (np.linalg.norm(p[i] - p[j]) for i in range(13) for j in range(i + 1, 13)))
    oscillator = 0.5 * np.sum((p - p.mean(0)) ** 2)
    assert float(unique.energy(jnp.asarray(x))) == pytest.approx(lj + oscillator, rel=1e-12)
    assert float(ordered.energy(jnp.asarray(x))) == pytest.approx(2 * lj + oscillator, rel=1e-12)
    y = transformed(jnp.asarray(x), 13, 3, orthogonal(3, 3), jnp.array([1.0, 2.0, -3.0]), jnp.arange(13)[::-1])
    assert float(ordered.energy(y)) == pytest.approx(2 * lj + oscillator, rel=1e-12)
    with pytest.raises(ValueError, match="pairs must be 'unique' or 'ordered'"):
        bg.lj13("all")
    with pytest.raises(ValueError, match="n_particles must be an integer >= 2"):
        bg.MultiDoubleWell(n_particles=1, space_dim=2)


def test_com_free_gaussian_is_the_gaussian_of_the_subspace():
    n, d, scale = 4, 3, 1.7
    base = bg.CoMFreeGaussian(n, d, scale)
    x, log_q = base.sample_and_log_prob(jax.random.key(0), 20_000)
    assert float(jnp.max(jnp.abs(x.reshape(-1, n, d).mean(1)))) < 1e-13
    # the density of N(0, scale^2 I) in orthonormal coordinates of the subspace
    basis = com_free_basis(n, d)
    c = np.asarray(x) @ basis
    explicit = -0.5 * np.sum(c**2, 1) / scale**2 - 0.5 * basis.shape[1] * np.log(2 * np.pi * scale**2)
    np.testing.assert_allclose(log_q, explicit, rtol=1e-12)
    # constant along translations, and its covariance is scale^2 P (sample cov: stderr ~ scale^2 sqrt(2/n))
    np.testing.assert_allclose(base.log_prob(x[:5] + jnp.tile(jnp.array([1.0, -2.0, 0.5]), n)), log_q[:5], rtol=1e-12)
    projector = np.kron(np.eye(n) - np.ones((n, n)) / n, np.eye(d))
    assert np.max(np.abs(np.cov(np.asarray(x).T) - scale**2 * projector)) < 6 * scale**2 * math.sqrt(2 / 20_000)


# ----------------------------------------------------------------------------- the EGNN field


@pytest.mark.parametrize("n, d", [(4, 2), (5, 3)])
def test_egnn_field_is_equivariant_and_com_free(n, d):
    field = perturbed(bg.EGNNField(jax.random.key(1), n, d, width=8, layers=2), 0.3)
    x = jax.random.normal(jax.random.key(2), (n * d,))
    t = jnp.asarray(0.37)
    v = field(t, x)
    assert float(jnp.std(v)) > 1e-2  # not the zero field it starts as
    np.testing.assert_allclose(v.reshape(n, d).sum(0), 0.0, atol=1e-13)
    rotation, shift, perm = orthogonal(d, 5), jax.random.normal(jax.random.key(3), (d,)), jnp.roll(jnp.arange(n), 1)
    moved = transformed(x, n, d, rotation, shift, perm)
    expected = transformed(v, n, d, rotation, jnp.zeros(d), perm)  # v rotates and relabels, ignores shifts
    np.testing.assert_allclose(field(t, moved), expected, atol=1e-12)
    assert float(jnp.max(jnp.abs(bg.EGNNField(jax.random.key(1), n, d, width=8, layers=2)(t, x)))) == 0.0


# ----------------------------------------------------------------------------- the CNF


class LinearField(eqx.Module):
    """v(t, x) = a P x: the centre-of-mass-free part grows as e^{a t}; divergence on V = a (n-1) d."""

    a: float
    n: int = eqx.field(static=True)
    d: int = eqx.field(static=True)

    def __call__(self, t, x):
        return self.a * bg.remove_com(x, self.n, self.d)


def test_cnf_of_a_linear_field_is_the_scaled_gaussian():
    n, d, a, scale = 3, 2, 0.4, 1.3
    base = bg.CoMFreeGaussian(n, d, scale)
    cnf = fepy.CNF(LinearField(a, n, d), base, rtol=1e-10, atol=1e-10)
    exact = bg.CoMFreeGaussian(n, d, scale * math.exp(a))  # x_1 = e^a x_0 on the subspace
    x, log_q = cnf.sample_and_log_prob(jax.random.key(0), 64)
    np.testing.assert_allclose(log_q, exact.log_prob(x), atol=1e-8)
    np.testing.assert_allclose(cnf.log_prob(x), exact.log_prob(x), atol=1e-8)
    z, log_det = cnf.inverse_and_log_det(x)
    np.testing.assert_allclose(z, x * math.exp(-a), atol=1e-8)
    np.testing.assert_allclose(log_det, -a * (n - 1) * d, atol=1e-8)  # the trace on V, not on R^{nd}
    # fixed steps: the same to Dormand-Prince's O(h^5) accuracy
    fixed = fepy.CNF(LinearField(a, n, d), base, steps=8)
    np.testing.assert_allclose(fixed.log_prob(x), exact.log_prob(x), atol=1e-7)


@pytest.fixture(scope="module")
def small_cnf():
    """A perturbed EGNN CNF of 3 particles in 2-D (a 4-dimensional subspace)."""
    field = perturbed(bg.EGNNField(jax.random.key(4), 3, 2, width=8, layers=2), 0.15)
    return fepy.CNF(field, bg.CoMFreeGaussian(3, 2), rtol=1e-8, atol=1e-8)


@eqx.filter_jit
def cnf_checks(cnf, key):
    x, log_q = cnf.sample_and_log_prob(key, 128)
    moved = transformed(x, 3, 2, orthogonal(2, 7), jnp.array([0.7, -2.0]), jnp.array([1, 2, 0]))
    return x, log_q, cnf.log_prob(x), cnf.log_prob(moved)


def test_cnf_log_q_is_consistent_and_invariant(small_cnf):
    x, log_q, log_prob, log_prob_moved = cnf_checks(small_cnf, jax.random.key(5))
    # a real test: the flow is not its base
    assert float(jnp.std(log_q - small_cnf.base.log_prob(x))) > 0.05
    np.testing.assert_allclose(log_prob, log_q, atol=1e-6)  # backward solve = forward solve
    np.testing.assert_allclose(log_prob_moved, log_prob, atol=1e-10)  # O(2), translations, relabelling
    np.testing.assert_allclose(x.reshape(-1, 3, 2).mean(1), 0.0, atol=1e-12)  # samples stay on V


def test_cnf_density_is_normalised_on_the_com_free_subspace(small_cnf):
    # int_V q = E_g[q / g] with g a wider Gaussian on V (4-dimensional): 1 within 4 stderr,
    # which fails if the log-determinant were the trace on R^{6} or the base normalised elsewhere
    g = bg.CoMFreeGaussian(3, 2, 1.6)
    y, log_g = g.sample_and_log_prob(jax.random.key(6), 4000)
    ratio = np.exp(np.asarray(evaluation.log_prob_in_chunks(small_cnf, y, 1000) - log_g))
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std(ddof=1) / math.sqrt(ratio.size), (ratio.mean(), ratio.std())


# ----------------------------------------------------------------------------- couplings and training


def test_assignment_and_ot_coupling_are_optimal():
    rng = np.random.default_rng(8)
    for n in (5, 7):  # by enumeration in JAX (n <= 6), by scipy's Hungarian algorithm beyond
        cost = rng.random((3, n, n))
        perm = np.asarray(jax.jit(assignment)(jnp.asarray(cost)))
        for c, p in zip(cost, perm):
            best = min(c[np.arange(n), q].sum() for q in itertools.permutations(range(n)))
            assert c[np.arange(n), p].sum() == pytest.approx(best, rel=1e-12)
    x0, x1 = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(6, 4)) + 1.0)
    a, b = fepy.OTCoupling()(x0, x1, jax.random.key(0))
    assert a is x0 and sorted(map(tuple, np.asarray(b))) == sorted(map(tuple, np.asarray(x1)))
    best = min(float(jnp.sum((x0 - x1[jnp.asarray(q)]) ** 2)) for q in itertools.permutations(range(6)))
    assert float(jnp.sum((a - b) ** 2)) == pytest.approx(best, rel=1e-12)


def test_orbit_alignment_moves_data_along_its_orbit_towards_the_base():
    n, d = 5, 3
    align = bg.OrbitAlignment(n, d)
    x0 = bg.CoMFreeGaussian(n, d).sample(jax.random.key(1), 64)
    x1 = bg.CoMFreeGaussian(n, d, 2.0).sample(jax.random.key(2), 64)
    _, y = align(x0, x1, jax.random.key(3))
    # an isometry and a relabelling of each row: same pair distances, same norm, still on V
    np.testing.assert_allclose(np.sort(bg.pair_distances(y, n, d), 1), np.sort(bg.pair_distances(x1, n, d), 1), atol=1e-12)
    np.testing.assert_allclose(y.reshape(-1, n, d).mean(1), 0.0, atol=1e-12)
    before, after = jnp.sum((x0 - x1) ** 2, 1), jnp.sum((x0 - y) ** 2, 1)
    assert bool(jnp.all(after <= before + 1e-12)) and float(jnp.mean(after)) < 0.7 * float(jnp.mean(before))
    # a rotated, reflected, relabelled copy of the base row is aligned back onto it
    copy = transformed(x0, n, d, orthogonal(d, 9), jnp.zeros(d), jnp.array([3, 0, 4, 1, 2]))
    _, back = align(x0, copy, jax.random.key(4))
    assert float(jnp.median(jnp.max(jnp.abs(back - x0), 1))) < 1e-10


def test_flow_matching_trains_the_field_only_and_rejects_bad_input():
    n, d = 3, 2
    target = bg.MultiDoubleWell(n_particles=n, space_dim=d)
    data = bg.CoMFreeGaussian(n, d, 2.0).sample(jax.random.key(0), 512)
    cnf = fepy.CNF(bg.EGNNField(jax.random.key(1), n, d, width=8, layers=2), bg.CoMFreeGaussian(n, d))
    solver = fepy.FlowMatching(optax.adam(3e-3), data, 64, coupling=bg.OrbitAlignment(n, d), sigma=0.01)
    sol = fepy.minimize(target, cnf, solver, steps=60, key=jax.random.key(2))
    assert sol.trace["loss"].shape == (60,) and np.mean(sol.trace["loss"][-10:]) < 0.8 * np.mean(sol.trace["loss"][:10])
    assert sol.family.base == cnf.base and sol.summary["steps"] == 60
    with pytest.raises(ValueError, match="data have dim 8, the CNF has dim 6"):
        fepy.minimize(target, cnf, fepy.FlowMatching(optax.adam(1e-3), jnp.zeros((4, 8))), steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="data contain NaN"):
        fepy.FlowMatching(optax.adam(1e-3), jnp.full((4, 6), jnp.nan))
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        fepy.FlowMatching(optax.adam(1e-3), data, sigma=-1.0)
    with pytest.raises(TypeError, match="needs a family of type CNF"):
        fepy.minimize(target, fepy.Flow.affine(jax.random.key(0), 6), solver, steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="steps must be None"):
        fepy.CNF(cnf.field, cnf.base, steps=0)


# ----------------------------------------------------------------------------- the model files


def tiny_run(name, **config):
    model = load_model(MODELS / f"{name}.py")
    config = {**model.DEFAULTS, **config}
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    analysis = model.analyze(problem.target, sol.family, config)
    return model, problem, sol, analysis, model.observables(problem.target, sol.family, config, analysis)


TINY_DATA = dict(train_samples=40, test_samples=40, anneal_steps=60, decorrelation_steps=10, data_leapfrog=3, width=8,
                 layers=1, ode_steps=4, steps=20, batch=32, estimate_samples=40, chunk=40)


@pytest.mark.parametrize("name", ["dw4_bg", "lj13_bg"])
def test_model_tiny_run_writes_its_estimates(name, tmp_path):
    model, problem, sol, analysis, out = tiny_run(name, **TINY_DATA)
    expected = {"ess", "ess_fraction", "log_z", "log_z_stderr", "nll", "reference_log_z", "entropy", "kl_forward",
                "energy_reweighted", "energy_md"}
    assert expected <= set(out) and all(math.isfinite(out[k]) for k in expected)
    assert 1.0 <= out["ess"] <= 40 and out["ess_fraction"] == pytest.approx(out["ess"] / 40)
    assert out["entropy"] == pytest.approx(out["energy_md"] + out["reference_log_z"], rel=1e-6)
    assert analysis[0].test.shape == (40, problem.target.dim) and sol.trace["loss"].shape == (20,)
    assert model.plots(problem.target, sol.family, tmp_path, {}, analysis) == ["distances_energies.png"]
    assert (tmp_path / "distances_energies.png").stat().st_size > 10_000


@pytest.mark.slow
def test_dw4_acceptance():
    """models/dw4_bg.py with its defaults (float64 here). Statistical consistency: the flow's
    importance-sampling log Z agrees with the independent SMC log Z of the held-out data, and the
    reweighted mean energy with the held-out samples' mean, each within 4 combined standard errors
    (plus the O(1/ESS) downward bias of log Z-hat); the Gibbs inequality KL(p||q) = NLL - H(p) >= 0
    within 4 standard errors of the NLL. Usefulness floor (not a published figure): ESS >= 10 % of
    the 2,000 samples."""
    model, problem, sol, analysis, out = tiny_run("dw4_bg")
    assert out["ess_fraction"] >= 0.1, out
    log_z_error = math.hypot(out["log_z_stderr"], out["reference_log_z_stderr"])
    assert abs(out["log_z"] - out["reference_log_z"]) < 4 * log_z_error + 1.0 / out["ess"], out
    energy_error = math.hypot(out["energy_reweighted_stderr"], out["energy_md_stderr"])
    assert abs(out["energy_reweighted"] - out["energy_md"]) < 4 * energy_error, out
    assert out["kl_forward"] > -4 * out["nll_stderr"], out
