"""The planar neural LJ functional (models/neural_lj_planar.py) and its analytic baseline."""

import math
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.integrate import quad

import fepy
from fepy.apps.dft import MeanFieldAttraction, integrated_attraction, planar_kernel
from fepy.apps.dft.lj import R_MIN
from fepy.cli import load_model

MODEL = Path(__file__).resolve().parents[1] / "models" / "neural_lj_planar.py"


def cut_shifted_attraction(r, cutoff):
    """WCA attraction of the LJ potential cut and shifted at the cutoff (ε), NumPy scalar."""
    u = lambda s: 4 * (s**-12 - s**-6)  # noqa: E731
    return (u(max(r, R_MIN)) if r >= R_MIN else -1.0) - u(cutoff) if r < cutoff else 0.0


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, 1.5, 2.4])
def test_shifted_mean_field_kernel_is_the_cut_and_shifted_attraction_over_the_plane(z):
    cutoff = 2.5
    inner = quad(lambda r: r * cut_shifted_attraction(r, cutoff), z, max(z, R_MIN))[0] if z < R_MIN else 0.0
    outer = quad(lambda r: r * cut_shifted_attraction(r, cutoff), max(z, R_MIN), cutoff, limit=200)[0]
    assert planar_kernel(z, cutoff, shift=True) == pytest.approx(2 * math.pi * (inner + outer), rel=1e-10)


def test_shifted_mean_field_bulk_and_weights():
    cutoff, temperature = 2.5, 2.0
    total = 4 * math.pi * quad(lambda r: r * r * cut_shifted_attraction(r, cutoff), 0, R_MIN)[0] + 4 * math.pi * quad(
        lambda r: r * r * cut_shifted_attraction(r, cutoff), R_MIN, cutoff, limit=200
    )[0]
    assert integrated_attraction(cutoff, shift=True) == pytest.approx(total, rel=1e-12)
    # the shift weakens the attraction by (4 pi / 3) r_c^3 |u(r_c)|: 7 % at 2.5 sigma
    assert integrated_attraction(cutoff, shift=True) / integrated_attraction(cutoff) == pytest.approx(0.9275, abs=5e-4)
    assert integrated_attraction(math.inf, shift=True) == integrated_attraction(math.inf)
    attraction = MeanFieldAttraction(temperature=temperature, cutoff=cutoff, shift=True)
    assert attraction.weights(0.01).sum() == pytest.approx(total / temperature, rel=1e-12)
    rho = 0.4
    grid = fepy.Grid(1000, 0.01)
    uniform = np.full(grid.n, rho)
    assert float(attraction.free_energy(uniform, grid, rho)) == pytest.approx(
        grid.length * float(attraction.bulk_free_energy_density(rho)), rel=1e-12
    )


def test_barker_henderson_diameter():
    """d = ∫_0^{r_m} (1 - e^{-βu_rep}) dr against a plain trapezoid sum; below r_m, shrinking as T* grows."""
    model = load_model(MODEL)
    r = np.linspace(0.5, R_MIN, 200_001)  # e^{-βu_rep} < 1e-300 below 0.5σ at these T*
    for temperature in (1.0, 2.0):
        integrand = -np.expm1(-(4 * (r**-12 - r**-6) + 1) / temperature)
        expected = 0.5 + np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(r))
        assert model.barker_henderson_diameter(temperature) == pytest.approx(expected, rel=1e-9)
    assert R_MIN > model.barker_henderson_diameter(1.0) > model.barker_henderson_diameter(2.0) > 0.95
    with pytest.raises(ValueError, match="temperature"):
        model.barker_henderson_diameter(0.0)


def test_neural_lj_planar_model_trains_and_solves_at_held_out_potentials():
    """The model end to end at a tiny budget: bulk MD → c2 → PCM → converged Picard solves, GCMC, baseline."""
    model = load_model(MODEL)
    config = dict(
        dz=0.05, density_min=0.2, density_max=0.6, state_points=2, n_particles=128, md_equilibration=200,
        md_blocks=4, md_samples_per_block=5, insertions=8, degree=4, width=16, train_steps=20, held_out=2,
        capacity=160, replicas=2, blocks=2, sweeps_per_block=5, equilibration=5, steps=400,
    )
    problem = model.build(config)
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    assert sol.summary["residual"] < 1e-8
    found = model.observables(problem.target, sol.family, config)
    assert found["baseline_residual"] < 1e-8
    for name in ("mae_vs_gcmc", "chi2_vs_gcmc", "baseline_mae_vs_gcmc", "gcmc_noise_floor", "train_seconds"):
        assert np.isfinite(found[name]) and found[name] > 0, name
    profiles = model.reference(config)["profile"]
    assert len(profiles) == 2 and profiles[0]["rho"].shape == (problem.target.grid.n // 10,)
    with pytest.raises(ValueError, match="multiple of dz"):
        model.build(dict(config, dz=0.3))


@pytest.mark.slow
def test_pair_correlation_matching_reproduces_planar_gcmc_at_held_out_potentials():
    """Issue 4 (Dijkman et al. 2025's setting): the neural functional trained on bulk MD only against GCMC.

    The model's defaults (16.5 min on two loaded cores: MD 6.0, training 5.1, GCMC 4.5): 6 bulk
    state points at T* = 2 up to ρ = 0.85, dz = 0.01, 3 held-out random potentials with walls,
    whose GCMC densities stay below 0.66. Measured: mean |Δρ|/ρ̄ = 1.20 % beside a GCMC noise
    floor of 1.03 % (pure noise gives about 0.8 of the floor), mean z² = 2.19; FMT + mean-field
    WCA at the same βμ 13.2 % (mean z² 215: its bulk density is 11 % high), and at the neural
    bulk density 2.1 % (mean z² 10.7). A replicate (seed 1: new MD, network and potentials)
    gave, in its two environments within the trained densities, 1.5 and 1.8 % (floors 1.0 and
    1.1 %, z² 3.3 and 3.9) against 2.4 and 4.3 % (z² 6.5 and 27) for the matched baseline; its
    third environment, an attractive wall adsorbing up to ρ = 2.2, lies outside the training
    range, and there the network is worse (7.4 %, z² 39) than the baseline (2.9 %), which is
    why the test asserts that its environments stay inside.
    """
    model = load_model(MODEL)
    problem = model.build({})
    sol = fepy.minimize(problem.target, problem.family, problem.solver, steps=problem.steps, key=jax.random.key(0))
    assert sol.summary["residual"] < 1e-8
    found = model.observables(problem.target, sol.family, {})
    assert found["baseline_residual"] < 1e-8
    assert found["gcmc_max_density"] < model.DEFAULTS["density_max"]  # inside the trained densities
    assert found["mae_vs_gcmc"] < 2 * found["gcmc_noise_floor"]
    assert found["chi2_vs_gcmc"] < 6
    assert found["baseline_mae_vs_gcmc"] > 5 * found["mae_vs_gcmc"]
    assert found["baseline_matched_chi2_vs_gcmc"] > 2 * found["chi2_vs_gcmc"]
