"""VMC / WQMC on systems with exact answers, stochastic reconfiguration, blocking errors, NaN walkers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fepy
from fepy._estimators import blocking_mean_and_stderr
from fepy.apps.qvmc import GaussianAnsatz, HarmonicTrap, HydrogenicAnsatz, MolecularHamiltonian, qmc_solver

jax.config.update("jax_enable_x64", True)


def run(target, ansatz, solver, steps, walkers=256, seed=0, centers=None, scale=1.0):
    centers = jnp.zeros(target.dim) if centers is None else centers
    family = fepy.Wavefunction.initialize(ansatz, walkers, key=jax.random.key(seed), centers=centers, scale=scale)
    return fepy.minimize(target, family, solver, steps=steps, key=jax.random.key(seed + 1))


def test_harmonic_trap_exact_ansatz_has_zero_variance():
    trap = HarmonicTrap(omega=1.3, n_particles=2, space_dim=3)
    sol = run(trap, GaussianAnsatz(1.3), fepy.VMC(optax.sgd(0.0), window=10), steps=20)
    assert np.max(np.abs(sol.trace["energy"] - 1.3 * 6 / 2)) < 1e-10
    assert np.max(sol.trace["variance"]) < 1e-18
    assert sol.summary["energy_stderr"] < 1e-10


@pytest.mark.parametrize("solver", ["vmc", "vmc_sr", "wqmc", "wfr"])
def test_harmonic_trap_trained_to_the_exact_energy(solver):
    trap = HarmonicTrap(omega=1.0, n_particles=2, space_dim=3)
    lr = 0.05 if solver == "vmc_sr" else 0.03
    sol = run(trap, GaussianAnsatz(0.6), qmc_solver(solver, learning_rate=lr, window=50), steps=300)
    # the exact answer is a = omega, E = 3 with zero variance: both reached to round-off / 1e-6
    assert sol.summary["energy"] == pytest.approx(3.0, abs=1e-6)
    assert float(sol.family.ansatz.omega) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("solver", ["vmc_sr", "wqmc"])
def test_hydrogen_one_parameter_ansatz_reaches_the_exact_energy(solver):
    hydrogen = MolecularHamiltonian.atom(1)
    lr = 0.05 if solver == "vmc_sr" else 0.02
    sol = run(hydrogen, HydrogenicAnsatz(0.6), qmc_solver(solver, learning_rate=lr, window=50), steps=300)
    assert sol.summary["energy"] == pytest.approx(-0.5, abs=1e-5)
    assert float(sol.family.ansatz.alpha) == pytest.approx(1.0, abs=2e-3)


def test_variational_energy_of_helium_product_ansatz():
    """E(alpha) = alpha^2 - 27 alpha / 8 for exp(-alpha (r1 + r2)): at alpha = 2, -2.75 Ha."""
    helium = MolecularHamiltonian.atom(2)
    solver = fepy.VMC(optax.sgd(0.0), window=200, mcmc_steps=5)
    sol = run(helium, HydrogenicAnsatz(2.0), solver, steps=400, walkers=512)
    exact = 2.0**2 - 27 * 2.0 / 8
    assert abs(sol.summary["energy"] - exact) < 5 * sol.summary["energy_stderr"] + 1e-3
    assert 0 < sol.summary["energy_stderr"] < 0.01


def test_stochastic_reconfiguration_woodbury_equals_direct_solve():
    key1, key2 = jax.random.split(jax.random.key(3))
    n, p, damping = 12, 40, 1e-2
    jacobian = jax.random.normal(key1, (n, p))
    energy = jax.random.normal(key2, (n,))
    weights = jnp.full(n, 1 / n)
    centered = energy - energy.mean()
    delta = fepy.StochasticReconfiguration(damping)(jacobian, weights, centered)
    o = jacobian - jacobian.mean(axis=0)
    s = o.T @ o / n
    g = 2 * o.T @ centered / n
    direct = jnp.linalg.solve(s + damping * jnp.eye(p), g)
    np.testing.assert_allclose(delta, direct, rtol=1e-8, atol=1e-10)


def test_blocking_error_of_an_ar1_series():
    """AR(1) with coefficient rho: the standard error of the mean is sigma/sqrt(n) sqrt((1+rho)/(1-rho))."""
    rho, n = 0.8, 2**16
    noise = np.random.default_rng(0).normal(size=n)
    series = np.empty(n)
    series[0] = noise[0] / np.sqrt(1 - rho**2)
    for i in range(1, n):
        series[i] = rho * series[i - 1] + noise[i]
    _, stderr = blocking_mean_and_stderr(jnp.asarray(series))
    exact = np.sqrt(1 / (1 - rho**2) / n * (1 + rho) / (1 - rho))
    naive = series.std() / np.sqrt(n)
    assert stderr == pytest.approx(exact, rel=0.25)
    assert stderr > 2 * naive


@pytest.mark.parametrize("solver", ["vmc", "vmc_sr", "wqmc", "wfr"])
def test_nan_walkers_are_restarted_and_the_run_goes_on(solver):
    """An ansatz that is NaN beyond r = 2.5 bohr: walkers started there are restarted, the
    parameters stay finite (a broken walker must not poison the update), the run finishes."""

    class Clipped(fepy.apps.qvmc.AbstractAnsatz):
        inner: HydrogenicAnsatz

        def signed_log(self, x):
            sign, log = self.inner.signed_log(x)
            # NaN beyond 2.5 bohr through the parameters, as a real network overflows:
            # both log|psi| and its parameter gradient are NaN there
            return sign, log + self.inner.alpha * 0.0 * jnp.sqrt(2.5 - jnp.linalg.norm(x))

    hydrogen = MolecularHamiltonian.atom(1)
    solver = qmc_solver(solver, learning_rate=0.02, window=20)
    sol = run(hydrogen, Clipped(HydrogenicAnsatz(0.9)), solver, steps=40, scale=2.0)
    assert np.isfinite(float(sol.family.ansatz.inner.alpha))
    assert sol.trace["bad_walkers"][0] > 0
    assert sol.trace["bad_walkers"][-1] == 0
    assert np.all(np.isfinite(sol.trace["energy"]))


def test_vmc_checkpoint_resume_is_exact(tmp_path):
    hydrogen = MolecularHamiltonian.atom(1)
    solver = qmc_solver("vmc", learning_rate=0.02, window=10)
    family = fepy.Wavefunction.initialize(HydrogenicAnsatz(0.7), 64, key=jax.random.key(0), centers=jnp.zeros(3))
    key = jax.random.key(1)
    whole = fepy.minimize(hydrogen, family, solver, steps=30, key=key)
    fepy.minimize(hydrogen, family, solver, steps=15, key=key, callbacks=[fepy.Checkpoint(tmp_path, every=15)])
    resumed = fepy.minimize(hydrogen, family, solver, steps=30, key=key, resume=tmp_path)
    np.testing.assert_array_equal(resumed.family.walkers, whole.family.walkers)
    np.testing.assert_array_equal(resumed.trace["energy"], whole.trace["energy"])
    assert float(resumed.family.ansatz.alpha) == float(whole.family.ansatz.alpha)


def test_wavefunction_input_errors():
    with pytest.raises(ValueError, match="walkers"):
        fepy.Wavefunction(GaussianAnsatz(1.0), jnp.zeros(3))
    with pytest.raises(ValueError, match="dim"):
        fepy.minimize(
            HarmonicTrap(omega=1.0, n_particles=1, space_dim=3),
            fepy.Wavefunction(GaussianAnsatz(1.0), jnp.zeros((4, 2))),
            fepy.VMC(optax.sgd(0.1)),
            steps=1,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="window"):
        fepy.VMC(optax.sgd(0.1), window=0)
