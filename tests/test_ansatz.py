"""Wavefunction ansätze: closed forms, antisymmetry, signed log-sums, cusp safety, batching."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fepy.apps.qvmc import (
    FermiNet,
    GaussianAnsatz,
    HarmonicTrap,
    HydrogenicAnsatz,
    MolecularHamiltonian,
    SlaterJastrow,
)
from fepy.apps.qvmc.ansatz import _log_sum_signed
from fepy.physics.laplacian import grad_and_laplacian

jax.config.update("jax_enable_x64", True)

LIH = dict(nuclei=[[0.0, 0.0, 0.0], [0.0, 0.0, 3.015]], charges=[3.0, 1.0], n_up=2, n_down=2)
LI = dict(nuclei=[[0.0, 0.0, 0.0]], charges=[3.0], n_up=2, n_down=1)
HE = dict(nuclei=[[0.0, 0.0, 0.0]], charges=[2.0], n_up=1, n_down=1)
SMALL = dict(hidden=(8, 8), pair_hidden=(4, 4), determinants=2)


def ansatz(kind, system, **kwargs):
    key = jax.random.key(1)
    if kind == "slater":
        return SlaterJastrow(**system, key=key, **kwargs)
    return FermiNet(**system, key=key, **{**SMALL, **kwargs})


@eqx.filter_jit
def signed_log(psi, x):
    return psi.signed_log(x)


@eqx.filter_jit
def parameter_grad(psi, x):
    return eqx.filter_grad(lambda a: a(x))(psi)


@eqx.filter_jit
def value_and_derivatives(psi, x):
    """log|psi|, its gradient and Laplacian in x, and its gradient in the parameters."""
    return psi(x), grad_and_laplacian(psi, x), parameter_grad(psi, x)


def swap(x, i, j):
    r = x.reshape(-1, 3)
    return r.at[jnp.array([i, j])].set(r[jnp.array([j, i])]).reshape(-1)


def finite_tree(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def test_log_sum_signed_matches_direct_sum():
    signs = jnp.array([1.0, -1.0, 1.0, -1.0])
    logs = jnp.array([0.3, -1.2, 2.0, 1.9])
    total = np.sum(np.asarray(signs) * np.exp(np.asarray(logs)))
    sign, log = _log_sum_signed(signs, logs)
    assert sign == np.sign(total)
    assert log == pytest.approx(np.log(abs(total)), abs=1e-13)


@pytest.mark.parametrize("scale", [800.0, -800.0])
def test_log_sum_signed_is_stable_for_huge_determinants_that_cancel(scale):
    # e^{s} - e^{s} - e^{s-1} = -e^{s-1}: overflows (s = 800) or underflows (s = -800) when exponentiated.
    sign, log = _log_sum_signed(jnp.array([1.0, -1.0, -1.0]), jnp.array([scale, scale, scale - 1.0]))
    assert sign == -1.0
    assert log == pytest.approx(scale - 1.0, abs=1e-12)
    # e^{s} - e^{s - log 2} = e^{s}/2, and its gradient d/dl_d = s_d e^{l_d} / total.
    signs, logs = jnp.array([1.0, -1.0]), jnp.array([scale, scale - np.log(2.0)])
    assert _log_sum_signed(signs, logs)[1] == pytest.approx(scale - np.log(2.0), abs=1e-12)
    grad = jax.grad(lambda l: _log_sum_signed(signs, l)[1])(logs)
    np.testing.assert_allclose(grad, [2.0, -1.0], atol=1e-12)


def test_log_sum_signed_exact_cancellation_is_a_node_not_nan():
    sign, log = _log_sum_signed(jnp.array([1.0, -1.0]), jnp.array([5.0, 5.0]))
    assert sign == 0.0 and log == -jnp.inf


def test_gaussian_ansatz_closed_form_and_zero_variance_in_its_trap():
    x = jnp.array([0.3, -1.1, 0.7, 2.0, 0.1, -0.4])
    psi = GaussianAnsatz(1.7)
    assert psi.signed_log(x)[0] == 1.0
    assert psi(x) == pytest.approx(-0.5 * 1.7 * float(x @ x), abs=1e-14)
    trap = HarmonicTrap(omega=1.7, n_particles=2)
    assert eqx.filter_jit(trap.local_energy)(psi, x) == pytest.approx(1.7 * 6 / 2, abs=1e-12)


def test_hydrogenic_ansatz_closed_form_and_exact_hydrogen():
    center = np.array([0.5, -0.2, 1.0])
    x = jnp.array([0.3, -1.1, 0.7, 2.0, 0.1, -0.4])
    psi = HydrogenicAnsatz(27 / 16, nuclei=center[None])
    expected = -27 / 16 * np.linalg.norm(np.asarray(x).reshape(2, 3) - center, axis=1).sum()
    assert psi(x) == pytest.approx(expected, abs=1e-13)
    assert psi.signed_log(x)[0] == 1.0
    hydrogen = MolecularHamiltonian.atom(1)
    energy = eqx.filter_jit(hydrogen.local_energy)(HydrogenicAnsatz(1.0), x[:3])
    assert energy == pytest.approx(-0.5, abs=1e-12)


@pytest.mark.parametrize("kind", ["slater", "ferminet"])
@pytest.mark.parametrize("system", [LI, LIH], ids=["Li", "LiH"])
def test_exchanging_same_spin_electrons_flips_the_sign(kind, system):
    psi = ansatz(kind, system)
    n_up = system["n_up"]
    x = jax.random.normal(jax.random.key(2), (3 * (n_up + system["n_down"]),)) * 1.5
    sign, log = signed_log(psi, x)
    assert sign != 0 and jnp.isfinite(log)
    for i, j in [(0, 1)] + ([(n_up, n_up + 1)] if system["n_down"] > 1 else []):
        sign_swapped, log_swapped = signed_log(psi, swap(x, i, j))
        assert sign_swapped == -sign
        assert log_swapped == pytest.approx(float(log), abs=1e-10)
    # An up and a down electron are not exchangeable: only finiteness is required.
    assert jnp.isfinite(signed_log(psi, swap(x, 0, n_up))[1])


@pytest.mark.parametrize("kind", ["slater", "ferminet"])
def test_finite_values_and_derivatives_at_coalescence(kind):
    psi = ansatz(kind, HE)
    x_nucleus = jnp.array([0.0, 0.0, 0.0, 0.4, -0.3, 0.8])  # the up electron on the nucleus
    x_pair = jnp.array([0.5, 0.2, -0.3, 0.5, 0.2, -0.3])  # the up and the down electron coincide
    for x in (x_nucleus, x_pair):
        assert finite_tree(value_and_derivatives(psi, x))


def test_hydrogenic_gradient_at_the_nucleus_is_finite():
    grad = jax.grad(HydrogenicAnsatz(1.0))(jnp.zeros(3))
    assert finite_tree(grad)


@pytest.mark.parametrize("kind", ["slater", "ferminet"])
def test_parameter_gradients_exist_and_are_finite(kind):
    psi = ansatz(kind, LIH)
    x = jax.random.normal(jax.random.key(3), (12,))
    grads = parameter_grad(psi, x)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert finite_tree(leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0
    for scalar in (GaussianAnsatz(1.0), HydrogenicAnsatz(1.0)):
        grad = parameter_grad(scalar, x)
        assert finite_tree(grad) and len(jax.tree.leaves(grad)) == 1


@pytest.mark.parametrize("kind", ["slater", "ferminet"])
def test_jit_and_vmap_over_walkers(kind):
    psi = ansatz(kind, LI)
    xs = jax.random.normal(jax.random.key(4), (5, 9))
    batched = eqx.filter_jit(lambda a, walkers: jax.vmap(a.signed_log)(walkers))(psi, xs)
    for k in range(5):
        sign, log = signed_log(psi, xs[k])
        assert batched[0][k] == sign and batched[1][k] == pytest.approx(float(log), abs=1e-12)


def test_ferminet_sizes_options_and_one_spin_channel():
    count = lambda a: sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array)))
    key = jax.random.key(0)
    he, lih = FermiNet(**HE, key=key), FermiNet(**LIH, key=key)
    assert 0 < count(he) < count(lih)
    hydrogen = FermiNet([0.0, 0.0, 0.0], [1.0], 1, 0, jastrow=False, key=key, **SMALL)
    assert hydrogen.jastrow is None and jnp.isfinite(signed_log(hydrogen, jnp.array([0.3, 0.1, -0.2]))[1])


def test_slater_jastrow_aufbau_puts_h2_electrons_on_different_atoms():
    nuclei = [[0, 0, -0.7], [0, 0, 0.7]]
    psi = SlaterJastrow(nuclei, [1.0, 1.0], 1, 1, n_basis_per_atom=2, key=jax.random.key(0))
    assert int(jnp.argmax(psi.c_up[0])) == 0 and int(jnp.argmax(psi.c_down[0])) == 2


def test_invalid_arguments_raise_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="omega"):
        GaussianAnsatz(-1.0)
    with pytest.raises(ValueError, match="one nucleus"):
        HydrogenicAnsatz(1.0, nuclei=[[0, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="charges"):
        SlaterJastrow([[0, 0, 0]], [1.0, 2.0], 1, 1, key=key)
    with pytest.raises(ValueError, match="n_down"):
        FermiNet([[0, 0, 0]], [2.0], 1, -1, key=key)
    with pytest.raises(ValueError, match="basis functions"):
        SlaterJastrow([[0, 0, 0]], [4.0], 2, 2, n_basis_per_atom=1, key=key)
    with pytest.raises(ValueError, match="pair_hidden"):
        FermiNet([[0, 0, 0]], [2.0], 1, 1, hidden=(8, 8), pair_hidden=(4,), key=key)
    with pytest.raises(ValueError, match="shape"):
        SlaterJastrow(**HE, key=key)(jnp.zeros(9))
