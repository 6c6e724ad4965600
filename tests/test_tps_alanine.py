"""Alanine dipeptide transition paths: the field's metrics, the aligned control and end state, the model file.

Oracles: the target structure itself hits (THP 100 %, RMSD 0, EPD 0); metrics, terminal cost and
hit test are invariant, and the control force equivariant, under rigid motions; angle wrapping at
the ±pi seam. The model builds and trains a few steps on a tiny configuration.
"""

import importlib.util
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fepy
from fepy.apps.tps import AlignedEndState, AlignedForce, FlatPotential, alanine_dipeptide
from fepy.apps.tps.molecular import local_minimum
from fepy.apps.tps.metrics import (
    dihedral_distance,
    final_rmsd,
    pairwise_distance_error,
    transition_metrics,
    wrap_angle,
)

pytest.importorskip("openmm")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ad():
    return alanine_dipeptide()


@pytest.fixture(scope="module")
def heavy(ad):
    return np.flatnonzero(np.asarray(ad.masses) > 1.5)


def rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return jnp.asarray(q * np.linalg.det(q))  # a proper rotation


def paths_of(frames):
    """A batch of one-step 'paths' whose final frames are ``frames`` (n, atoms, 3)."""
    frames = jnp.asarray(frames)
    n, dim = frames.shape[0], frames[0].size
    positions = jnp.stack([frames.reshape(n, dim)] * 2, axis=1)
    zeros = jnp.zeros(n)
    return fepy.Paths(jnp.array([0.0, 0.001]), positions, None, jnp.zeros((n, 1, dim)), zeros, zeros, zeros)


def test_wrap_angle_maps_to_the_half_open_interval():
    a = jnp.array([0.0, np.pi, -np.pi, 3 * np.pi / 2, -3 * np.pi / 2, 2 * np.pi + 0.1])
    np.testing.assert_allclose(wrap_angle(a), [0.0, np.pi, np.pi, -np.pi / 2, np.pi / 2, 0.1], atol=1e-12)


def test_metrics_of_the_target_itself(ad, heavy):
    measure = fepy.PathMeasure(FlatPotential(ad.potential), ad.c7eq.ravel(),
                               AlignedEndState(ad.c7ax, heavy, 0.02, ad.phi, ad.psi),
                               temperature=2.494, friction=1.0, dt=0.001, steps=1)
    m = transition_metrics(measure, paths_of(ad.c7ax[None]), ad.c7ax, ad.phi, ad.psi, heavy)
    assert m["thp"] == 100.0 and m["hits"] == 1
    assert m["rmsd"] < 1e-5 and m["epd"] < 1e-12
    assert m["ets"] == pytest.approx(float(ad.potential.energy(ad.c7ax)))
    # the start is not the target: ~2 rad away in (phi, psi)
    m = transition_metrics(measure, paths_of(ad.c7eq[None]), ad.c7ax, ad.phi, ad.psi, heavy)
    assert m["thp"] == 0.0 and np.isnan(m["ets"]) and m["rmsd"] > 0.5


def test_metrics_are_invariant_under_rigid_motions(ad, heavy):
    frames = jnp.stack([ad.c7eq, ad.c7ax + 0.01 * jax.random.normal(jax.random.key(0), ad.c7ax.shape)])
    moved = jnp.stack([f @ rotation(i).T + jnp.array([0.3, -1.0, 2.0]) for i, f in enumerate(frames)])
    for fn in (lambda p: final_rmsd(p, ad.c7ax, heavy), lambda p: pairwise_distance_error(p, ad.c7ax)):
        np.testing.assert_allclose(fn(paths_of(moved)), fn(paths_of(frames)), rtol=1e-6, atol=1e-10)
    d = [float(dihedral_distance(f.ravel(), ad.c7ax, ad.phi, ad.psi)) for f in (frames[1], moved[1])]
    assert d[0] == pytest.approx(d[1], abs=1e-8) and d[0] < 0.75


def test_aligned_force_is_equivariant_and_end_state_invariant(ad, heavy):
    control = AlignedForce.mlp(ad.c7ax, heavy, key=jax.random.key(1), width=16, depth=2)
    # a non-zero last layer, so that the force is not identically zero
    last = control.network.layers[-1]
    control = eqx.tree_at(lambda c: c.network.layers[-1].weight, control,
                          0.1 * jax.random.normal(jax.random.key(2), last.weight.shape))
    q, shift = rotation(3), jnp.array([1.0, 2.0, -0.5])
    x = ad.c7eq
    f = control(x.ravel()).reshape(-1, 3)
    f_moved = control((x @ q.T + shift).ravel()).reshape(-1, 3)
    assert float(jnp.abs(f).max()) > 1e-3
    np.testing.assert_allclose(f_moved, f @ q.T, atol=1e-8)
    end = AlignedEndState(ad.c7ax, heavy, 0.02, ad.phi, ad.psi)
    assert float(end.cost(ad.c7ax.ravel())) < 1e-10 and bool(end.hit(ad.c7ax.ravel()))
    assert float(end.cost(x.ravel())) == pytest.approx(float(end.cost((x @ q.T + shift).ravel())), rel=1e-8)
    assert not bool(end.hit(x.ravel()))
    # the reference is not trained: its gradient is zero
    grad = eqx.filter_grad(lambda c: jnp.sum(c(x.ravel()) ** 2))(control)
    assert float(jnp.abs(grad.reference).max()) == 0.0


def test_aligned_validation(ad, heavy):
    with pytest.raises(ValueError, match="width"):
        AlignedEndState(ad.c7ax, heavy, 0.0, ad.phi, ad.psi)
    with pytest.raises(ValueError, match="fit"):
        AlignedEndState(ad.c7ax, [0, 1], 0.02, ad.phi, ad.psi)
    with pytest.raises(ValueError, match="shape"):
        AlignedForce.mlp(ad.c7ax.ravel(), heavy, key=jax.random.key(0))


def load_model():
    spec = importlib.util.spec_from_file_location("alanine_dipeptide_tps", ROOT / "models/alanine_dipeptide_tps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the PIPS run compiles the backward pass through the solve (~2 min on a shared 2-core CPU)
@pytest.mark.parametrize("objective", [pytest.param("relative_entropy", marks=pytest.mark.slow), "log_variance"])
def test_model_builds_trains_and_reports_finite_metrics(objective, tmp_path):
    model = load_model()
    config = dict(objective=objective, path_steps=20, trajectories=4, steps=2, hidden=8, depth=1,
                  eval_paths=4, buffer_size=8, minimize_ends=False)
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps,
                        key=jax.random.key(0))
    assert np.all(np.isfinite(sol.trace["loss"]))
    assert int(sol.summary["energy_evals"]) == 2 * 4 * 20
    metrics = model.observables(problem.target, sol.family, config, model.analyze(problem.target, sol.family, config))
    for key in ("rmsd", "thp", "epd", "log_likelihood"):
        assert np.isfinite(metrics[key]), key
    assert metrics["paths"] == 4


def test_model_rejects_bad_config():
    model = load_model()
    with pytest.raises(ValueError, match="objective"):
        model.build(dict(objective="kl"))
    with pytest.raises(ValueError, match="width"):
        model.build(dict(width=-1.0))
    with pytest.raises(ValueError, match="minimize_ends"):
        model.build(dict(minimize_ends="yes"))


def test_local_minimum_equals_openmms_minimizer(ad):
    """L-BFGS on the JAX potential reaches OpenMM's LocalEnergyMinimizer's minimum from C7ax (float64)."""
    import openmm as mm

    x = local_minimum(ad.potential.energy, ad.c7ax)
    assert float(jnp.max(jnp.abs(jax.grad(ad.potential.energy)(x)))) < 1e-2  # kJ/mol/nm
    context = mm.Context(ad.system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(ad.c7ax))
    mm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    openmm_minimum = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
    assert float(ad.potential.energy(x)) == pytest.approx(openmm_minimum, abs=1e-4)
    assert float(ad.potential.energy(x)) < float(ad.potential.energy(ad.c7ax)) - 70.0  # the packaged structure is strained
