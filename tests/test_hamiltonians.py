"""Laplacians, local energies of analytic wavefunctions, cusp safety and validation of the qvmc Hamiltonians."""

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fepy  # noqa: E402
from fepy.apps.qvmc import HarmonicTrap, MolecularHamiltonian, electron_distances, safe_norm  # noqa: E402
from fepy.physics.laplacian import (  # noqa: E402
    grad_and_laplacian,
    hutchinson_laplacian,
    local_kinetic_energy,
)

DIM = 6


_RNG = np.random.default_rng(7)
_W = _RNG.normal(size=(5, DIM))
_B = np.linspace(-1.0, 1.0, 5)
_A = np.array([0.7, -1.1, 0.4, 0.9, -0.3])
_Q = _RNG.normal(size=(DIM, DIM))


def smooth(x):
    """A generic smooth function with a dense Hessian (a small tanh network plus a quadratic)."""
    return _A @ jnp.tanh(_W @ x / 2 + _B) + 0.1 * x @ _Q @ x + jnp.sin(x[0] * x[1])


def fd_grad_and_laplacian(f, x, h):
    """Central differences: O(h^2) gradient and Laplacian (2 dim + 1 evaluations)."""
    e = np.eye(x.shape[0]) * h
    fp = np.array([f(x + ei) for ei in e])
    fm = np.array([f(x - ei) for ei in e])
    f0 = float(f(x))
    return (fp - fm) / (2 * h), float(np.sum(fp - 2 * f0 + fm) / h**2)


# --------------------------------------------------------------------------- Laplacians


def test_laplacian_matches_central_differences():
    x = jax.random.normal(jax.random.key(0), (DIM,))
    g, lap = jax.jit(grad_and_laplacian, static_argnums=0)(smooth, x)
    f = jax.jit(smooth)
    h = 1e-3
    g_h, lap_h = fd_grad_and_laplacian(f, x, h)
    g_h2, lap_h2 = fd_grad_and_laplacian(f, x, h / 2)
    # The central-difference error is c h^2 + O(h^4) plus round-off ~ eps |f| / h^2 (~1e-10 here);
    # the h vs h/2 difference measures 3/4 of it, so |FD(h/2) - exact| <~ |FD(h) - FD(h/2)| / 3.
    err_lap = abs(lap_h2 - lap_h) / 3
    assert abs(lap_h2 - float(lap)) < 4 * err_lap + 1e-8
    assert np.max(np.abs(g_h2 - np.asarray(g))) < 4 * np.max(np.abs(g_h - g_h2)) / 3 + 1e-9
    # and the FD error really is O(h^2): Richardson extrapolation removes it.
    assert abs((4 * lap_h2 - lap_h) / 3 - float(lap)) < 1e-6
    assert abs(lap_h - float(lap)) < 1e-4  # c h^2 with c = O(1)


def test_laplacian_analytic():
    d = 5
    a = jnp.linspace(0.5, 2.0, d)
    b = jnp.arange(1.0, d + 1.0) / d

    def f(x):
        return jnp.sum(jnp.sin(a * x)) + (b @ x) ** 2 + x[0] * x[1] * x[2] + jnp.exp(-x @ x / 2)

    def lap_exact(x):
        r2 = x @ x
        return -jnp.sum(a**2 * jnp.sin(a * x)) + 2 * b @ b + (r2 - d) * jnp.exp(-r2 / 2)

    def grad_exact(x):
        cross = jnp.array([x[1] * x[2], x[0] * x[2], x[0] * x[1], 0.0, 0.0])
        return a * jnp.cos(a * x) + 2 * (b @ x) * b + cross - x * jnp.exp(-x @ x / 2)

    for seed in range(3):
        x = jax.random.normal(jax.random.key(seed), (d,))
        g, lap = jax.jit(grad_and_laplacian, static_argnums=0)(f, x)
        np.testing.assert_allclose(lap, lap_exact(x), rtol=0, atol=1e-12)
        np.testing.assert_allclose(g, grad_exact(x), rtol=0, atol=1e-12)


def test_hutchinson_unbiased():
    x = jax.random.normal(jax.random.key(1), (DIM,))
    _, exact = jax.jit(grad_and_laplacian, static_argnums=0)(smooth, x)
    keys = jax.random.split(jax.random.key(2), 4000)
    grads, est = jax.jit(jax.vmap(lambda k: hutchinson_laplacian(smooth, x, k, samples=1)))(keys)
    est = np.asarray(est)
    stderr = est.std(ddof=1) / np.sqrt(est.size)
    assert est.std() > 1e-3  # dense Hessian: a genuinely noisy estimator
    assert abs(est.mean() - float(exact)) < 4 * stderr
    # its variance is 2 sum_{i != j} H_ij^2 for Rademacher probes
    hess = jax.jit(jax.hessian(smooth))(x)
    var_theory = 2 * float(jnp.sum(hess**2) - jnp.sum(jnp.diag(hess) ** 2))
    np.testing.assert_allclose(est.var(ddof=1), var_theory, rtol=0.15)
    np.testing.assert_allclose(grads, jnp.broadcast_to(jax.jit(jax.grad(smooth))(x), grads.shape), atol=1e-12)


def test_hutchinson_exact_for_diagonal_hessian():
    def f(x):  # separable: diagonal Hessian, so v^T H v = tr H for every Rademacher v
        return jnp.sum(jnp.sin(x) + 0.3 * x**4)

    x = jax.random.normal(jax.random.key(3), (DIM,))
    _, exact = jax.jit(grad_and_laplacian, static_argnums=0)(f, x)
    keys = jax.random.split(jax.random.key(4), 16)
    _, est = jax.jit(jax.vmap(lambda k: hutchinson_laplacian(f, x, k, samples=1)))(keys)
    np.testing.assert_allclose(est, jnp.full(16, exact), rtol=0, atol=1e-12)


def test_kinetic_hutchinson_needs_key():
    with pytest.raises(ValueError, match="key"):
        local_kinetic_energy(lambda x: -x @ x, jnp.ones(3), None, hutchinson_samples=2)


# --------------------------------------------------------------------------- local energies


def random_points(key, n, dim, scale=1.5):
    return scale * jax.random.normal(key, (n, dim))


def hydrogenic(alpha):
    return lambda x: -alpha * safe_norm(x)


def test_hydrogen_exact_ground_state():
    h = MolecularHamiltonian.atom(1)
    assert (h.n_up, h.n_down, h.dim) == (1, 0, 3)
    xs = random_points(jax.random.key(10), 64, 3)
    e_loc = jax.jit(jax.vmap(lambda x: h.local_energy(hydrogenic(1.0), x)))(xs)
    np.testing.assert_allclose(e_loc, -0.5, rtol=0, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.6, 1.3])
def test_hydrogenic_local_energy(alpha):
    h = MolecularHamiltonian.atom(1.0, 1, 0)
    xs = random_points(jax.random.key(11), 64, 3)
    e_loc = jax.jit(jax.vmap(lambda x: h.local_energy(hydrogenic(alpha), x)))(xs)
    r = jnp.linalg.norm(xs, axis=-1)
    np.testing.assert_allclose(e_loc, -(alpha**2) / 2 + (alpha - 1) / r, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("omega", "n", "space_dim"), [(1.0, 1, 3), (0.7, 4, 2), (2.5, 3, 1)])
def test_harmonic_trap_zero_variance(omega, n, space_dim):
    trap = HarmonicTrap(omega, n, space_dim)
    assert trap.dim == n * space_dim
    xs = random_points(jax.random.key(12), 64, trap.dim)
    e_loc = jax.jit(jax.vmap(lambda x: trap.local_energy(trap.log_psi_exact, x)))(xs)
    np.testing.assert_allclose(e_loc, omega * trap.dim / 2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(trap.ground_state_energy(), omega * trap.dim / 2)
    # the exact ground state has a diagonal Hessian: the Hutchinson estimate is exact too
    e_hutch = jax.jit(jax.vmap(lambda x, k: trap.local_energy(trap.log_psi_exact, x, k, hutchinson_samples=1)))(
        xs, jax.random.split(jax.random.key(13), xs.shape[0])
    )
    np.testing.assert_allclose(e_hutch, omega * trap.dim / 2, rtol=0, atol=1e-10)


def test_harmonic_trap_potential_and_wrong_ansatz():
    trap = HarmonicTrap(2.0, 2, 3)
    x = jnp.arange(6.0)
    np.testing.assert_allclose(trap.potential(x), 0.5 * 4.0 * x @ x)
    # exp(-a|x|^2/2): E_loc = a d/2 + (omega^2 - a^2)|x|^2 / 2
    a = 1.5
    e = trap.local_energy(lambda y: -a * y @ y / 2, x)
    np.testing.assert_allclose(e, a * 6 / 2 + (4.0 - a**2) * x @ x / 2, atol=1e-10)


@pytest.mark.parametrize("z_eff", [27 / 16, 2.0])
def test_helium_product_ansatz(z_eff):
    he = MolecularHamiltonian.atom(2)
    assert (he.n_up, he.n_down, he.dim) == (1, 1, 6)

    def log_psi(x):
        r_ae, _, _, _ = electron_distances(x, he.nuclei)
        return -z_eff * jnp.sum(r_ae)

    xs = random_points(jax.random.key(14), 64, 6)
    e_loc = jax.jit(jax.vmap(lambda x: he.local_energy(log_psi, x)))(xs)
    r1 = jnp.linalg.norm(xs[:, :3], axis=-1)
    r2 = jnp.linalg.norm(xs[:, 3:], axis=-1)
    r12 = jnp.linalg.norm(xs[:, :3] - xs[:, 3:], axis=-1)
    textbook = -(z_eff**2) + (z_eff - 2) * (1 / r1 + 1 / r2) + 1 / r12
    np.testing.assert_allclose(e_loc, textbook, rtol=0, atol=1e-10)


def test_h2_potential_and_nuclear_repulsion():
    h2 = MolecularHamiltonian.diatomic(1, 1, 1.4, 1, 1)
    np.testing.assert_allclose(h2.nuclear_repulsion(), 1 / 1.4, rtol=1e-14)
    np.testing.assert_allclose(h2.nuclei, [[0, 0, -0.7], [0, 0, 0.7]])
    x = jax.random.normal(jax.random.key(15), (6,))
    r = x.reshape(2, 3)
    ref = (
        -sum(1 / np.linalg.norm(r[i] - h2.nuclei[a]) for i in range(2) for a in range(2))
        + 1 / np.linalg.norm(r[0] - r[1])
        + 1 / 1.4
    )
    np.testing.assert_allclose(h2.potential(x), ref, rtol=1e-13)
    # heteronuclear, more electrons: LiH at R = 3.015
    lih = MolecularHamiltonian.diatomic(3, 1, 3.015, 2, 2)
    assert lih.dim == 12 and lih.n_atoms == 2
    np.testing.assert_allclose(lih.nuclear_repulsion(), 3 / 3.015, rtol=1e-14)
    assert MolecularHamiltonian.atom(3).nuclear_repulsion() == 0.0


def test_electron_distances_shapes():
    nuclei = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    x = jnp.arange(9.0)
    geo = electron_distances(x, nuclei)
    assert geo.r_ae.shape == (3, 2) and geo.r_ee.shape == (3, 3)
    assert geo.ae.shape == (3, 2, 3) and geo.ee.shape == (3, 3, 3)
    np.testing.assert_allclose(geo.r_ae, np.linalg.norm(geo.ae, axis=-1))
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(geo.r_ee[off], np.linalg.norm(geo.ee, axis=-1)[off])
    with pytest.raises(ValueError, match="3 \\* n_electrons"):
        electron_distances(jnp.ones(4), nuclei)


def test_hamiltonian_is_a_pytree_under_jit_and_grad():
    h2 = MolecularHamiltonian.diatomic(1, 1, 1.4, 1, 1)
    assert isinstance(h2, fepy.Hamiltonian)
    x = jax.random.normal(jax.random.key(16), (6,))
    v = jax.jit(lambda h, y: h.potential(y))(h2, x)
    np.testing.assert_allclose(v, h2.potential(x), rtol=1e-14)
    # Hellmann-Feynman-style force on the nuclei: differentiable and translation invariant overall
    g_nuc = jax.grad(lambda h: h.potential(x))(h2).nuclei
    g_x = jax.grad(h2.potential)(x).reshape(2, 3)
    np.testing.assert_allclose(g_nuc.sum(0) + g_x.sum(0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        h2.potential(jnp.ones(3))


# --------------------------------------------------------------------------- cusp safety


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def test_potential_finite_at_coincidences():
    h2 = MolecularHamiltonian.diatomic(1, 1, 1.4, 1, 1)
    on_nucleus = jnp.concatenate([h2.nuclei[0], jnp.array([0.3, -0.2, 0.5])])
    coincident = jnp.array([0.3, -0.2, 0.5, 0.3, -0.2, 0.5])
    both = jnp.concatenate([h2.nuclei[1], h2.nuclei[1]])
    @jax.jit
    def derivatives(h, x):
        return (
            jax.value_and_grad(h.potential)(x),
            jax.hessian(h.potential)(x),
            jax.grad(lambda hh: hh.potential(x))(h),
        )

    for x in (on_nucleus, coincident, both):
        assert _finite(derivatives(h2, x))
    # documented values: the electron-nucleus term is -Z / r_min, the e-e term +1 / r_min
    r_min = float(jnp.finfo(jnp.float64).eps)
    assert float(h2.potential(on_nucleus)) < -0.5 / r_min
    assert float(h2.potential(coincident)) > 0.5 / r_min


def test_hydrogen_local_energy_near_and_at_nucleus():
    h = MolecularHamiltonian.atom(1)
    direction = jnp.array([0.6, -0.48, 0.64])
    e_and_grad = jax.jit(jax.value_and_grad(lambda x: h.local_energy(hydrogenic(1.0), x)))
    for r in (1e-4, 1e-7, 1e-10):
        e, g = e_and_grad(r * direction)
        assert _finite(e) and _finite(g)
        # kinetic +1/r and potential -1/r cancel analytically; round-off ~ eps / r
        np.testing.assert_allclose(e, -0.5, atol=1e-14 / r + 1e-12)
    e0, g0 = e_and_grad(jnp.zeros(3))
    assert _finite(e0) and _finite(g0)  # large but finite at the exact coincidence


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(charges=[[1.0]], nuclei=[[0.0, 0, 0]], n_up=1, n_down=0), "charges must have shape"),
        (dict(charges=[], nuclei=np.zeros((0, 3)), n_up=1, n_down=0), "n_atoms >= 1"),
        (dict(charges=[1.0, 1.0], nuclei=[[0.0, 0, 0]], n_up=1, n_down=0), "nuclei must have shape"),
        (dict(charges=[1.0], nuclei=[0.0, 0, 0], n_up=1, n_down=0), "nuclei must have shape"),
        (dict(charges=[1.0], nuclei=[[0.0, 0, 0]], n_up=1, n_down=2), "n_up >= n_down"),
        (dict(charges=[1.0], nuclei=[[0.0, 0, 0]], n_up=1, n_down=-1), "n_up >= n_down >= 0"),
        (dict(charges=[1.0], nuclei=[[0.0, 0, 0]], n_up=0, n_down=0), "at least one electron"),
        (dict(charges=[1.0], nuclei=[[0.0, 0, 0]], n_up=1.0, n_down=0), "integer"),
        (dict(charges=[1.0], nuclei=[[0.0, 0, 0]], n_up=True, n_down=0), "integer"),
        (dict(charges=[0.0], nuclei=[[0.0, 0, 0]], n_up=1, n_down=0), "charges must be finite and > 0"),
        (dict(charges=[-1.0], nuclei=[[0.0, 0, 0]], n_up=1, n_down=0), "charges must be finite and > 0"),
        (dict(charges=[np.nan], nuclei=[[0.0, 0, 0]], n_up=1, n_down=0), "charges must be finite"),
        (dict(charges=[1.0], nuclei=[[0.0, np.inf, 0]], n_up=1, n_down=0), "positions must be finite"),
        (dict(charges=[1.0, 1.0], nuclei=[[0.0, 0, 1], [0, 0, 1]], n_up=1, n_down=1), "distinct"),
    ],
)
def test_molecular_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MolecularHamiltonian(**kwargs)


def test_constructor_validation():
    with pytest.raises(ValueError, match="bond length"):
        MolecularHamiltonian.diatomic(1, 1, 0.0, 1, 1)
    with pytest.raises(ValueError, match="bond length"):
        MolecularHamiltonian.diatomic(1, 1, -1.4, 1, 1)
    with pytest.raises(ValueError, match="n_up and n_down"):
        MolecularHamiltonian.atom(21)
    with pytest.raises(ValueError, match="both"):
        MolecularHamiltonian.atom(2, n_up=1)
    assert MolecularHamiltonian.atom(6).n_up == 4  # Hund: C is a triplet
    assert MolecularHamiltonian.atom(np.int64(3), 2, np.int64(1)).dim == 9


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0,), "omega must be finite and > 0"),
        ((-1.0,), "omega must be finite and > 0"),
        ((np.inf,), "omega must be finite and > 0"),
        ((jnp.ones(2),), "scalar"),
        ((1.0, 0), "n_particles >= 1"),
        ((1.0, 2, 0), "space_dim >= 1"),
        ((1.0, 2.0), "integer"),
    ],
)
def test_harmonic_validation(args, match):
    with pytest.raises(ValueError, match=match):
        HarmonicTrap(*args)


def test_validation_skips_traced_values():
    # built inside a transformation the value checks are deferred, the shape checks still run
    out = jax.jit(lambda w: HarmonicTrap(w, 2).potential(jnp.ones(6)))(2.0)
    np.testing.assert_allclose(out, 12.0)
    e = jax.jit(lambda z: MolecularHamiltonian(jnp.stack([z]), jnp.zeros((1, 3)), 1, 0).potential(jnp.ones(3)))(1.0)
    np.testing.assert_allclose(e, -1 / np.sqrt(3))
    assert eqx.tree_equal(HarmonicTrap(1.0), HarmonicTrap(1.0))
