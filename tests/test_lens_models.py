"""Lens model files: the posterior on the spine, small CLI runs, and (slow) the issue's acceptance."""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fepy
from fepy.apps import lensing
from fepy.cli import load_model, main

MODELS = Path(__file__).resolve().parents[1] / "models"
PNGS = ("observed.png", "model.png", "residual.png", "source.png")
SMALL = dict(num_pix=30, pixel_width=0.12, supersampling=1, fwhm=0.15)


def sets(config):
    return [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]


def test_parameters_round_trip_and_keep_their_order_under_jit():
    sie = load_model(MODELS / "sie_sersic_lens.py")
    parameters = lensing.Parameters(sie.PRIORS)
    z = parameters.unconstrain(sie.TRUTH)
    # parameters as a traced argument: a dict field would come back with its keys sorted
    back = eqx.filter_jit(lambda p, z: p.values(z))(parameters, z)
    np.testing.assert_allclose(back, [sie.TRUTH[n] for n in sie.PRIORS], rtol=1e-12)
    with pytest.raises(ValueError, match="no value for the parameters"):
        parameters.unconstrain({"theta_E": 1.0})
    with pytest.raises(ValueError, match="scalar numpyro distribution"):
        lensing.Parameters({"a": 1.0})


def test_sie_small_run_writes_finite_figures_and_pngs(tmp_path):
    out = tmp_path / "sie"
    config = dict(SMALL, starts=2, steps=150, learning_rate=0.03)
    assert main(["run", str(MODELS / "sie_sersic_lens.py"), "--out", str(out), "--no-progress", *sets(config)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("theta_E", "theta_E_std", "e1", "e1_std", "e2", "e2_std", "reduced_chi2", "energy_min"):
        assert np.isfinite(summary[key]), key
    assert summary["reference"]["theta_E"] == 1.2 and summary["reference"]["reduced_chi2"] == 1.0
    assert summary["theta_E_std"] > 0
    for name in PNGS:
        assert (out / name).stat().st_size > 1000


def test_pixelated_small_run_writes_finite_figures_and_pngs(tmp_path):
    out = tmp_path / "pix"
    config = dict(SMALL, source_pix=10, source_width=0.8, strengths=4, steps=0)
    assert main(["run", str(MODELS / "pixelated_source_lens.py"), "--out", str(out), "--no-progress", *sets(config)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("reduced_chi2", "log_evidence", "log10_strength", "theta_E"):
        assert np.isfinite(summary[key]), key
    assert len(summary["log_evidence_scan"]["log_evidence"]) == 4
    for name in PNGS:
        assert (out / name).stat().st_size > 1000


def _sie_fit(seed, **config):
    sie = load_model(MODELS / "sie_sersic_lens.py")
    problem = sie.build(dict(seed=seed, **config))
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(seed))
    return sie, problem.target, sie.fit(problem.target, sol.family)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_sie_recovers_theta_e_and_ellipticity_within_two_sigma(seed):
    sie, _, result = _sie_fit(seed)
    for name in ("theta_E", "e1", "e2"):
        pull = (result["values"][name] - sie.TRUTH[name]) / result["std"][name]
        assert abs(pull) < 2, (name, result["values"][name], result["std"][name])
    assert abs(result["reduced_chi2"] - 1) < 0.1


@pytest.mark.slow
def test_pixelated_source_residuals_at_the_noise_level():
    pix = load_model(MODELS / "pixelated_source_lens.py")
    problem = pix.build({})
    summary = pix.observables(problem.target, problem.family, {})
    assert not summary["strength_at_edge"]
    assert abs(summary["reduced_chi2"] - 1) < 0.1


@pytest.mark.slow
def test_nuts_posterior_agrees_with_a_long_reference_chain():
    """4 short chains from the MAP against one chain 4x as long, on a small image: the means
    of theta_E, e1, e2 within 4 combined Monte Carlo standard errors, the standard
    deviations within 25%, and both within 2 sigma of the Laplace approximation's."""
    config = dict(SMALL, starts=4, steps=1000)
    _, target, result = _sie_fit(0, **config)
    z = jnp.asarray(result["z"])
    short = fepy.nuts(target, z, jax.random.key(1), warmup=300, samples=300, chains=4, dense_mass=True)
    long = fepy.nuts(target, z, jax.random.key(2), warmup=300, samples=1200, chains=1, dense_mass=True)
    assert np.all(np.asarray(short.r_hat) < 1.05)
    index = [target.names.index(n) for n in ("theta_E", "e1", "e2")]
    for run in (short, long):
        values = jax.vmap(target.parameters.values)(run.positions.reshape(-1, target.dim))
        run_values = np.asarray(values)[:, index]
        run_se = run_values.std(axis=0) / np.sqrt(np.asarray(run.n_eff)[index])
        if run is short:
            a, a_se, a_sd = run_values.mean(axis=0), run_se, run_values.std(axis=0)
        else:
            b, b_se, b_sd = run_values.mean(axis=0), run_se, run_values.std(axis=0)
    assert np.all(np.abs(a - b) < 4 * np.hypot(a_se, b_se)), (a, b, a_se, b_se)
    np.testing.assert_allclose(a_sd, b_sd, rtol=0.25)
    laplace_sd = np.array([result["std"][n] for n in ("theta_E", "e1", "e2")])
    np.testing.assert_allclose(b_sd, laplace_sd, rtol=0.25)
