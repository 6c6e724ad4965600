r"""Wavefunction ansätze :math:`\log|\psi(x)|` for variational Monte Carlo (atomic units: bohr).

An ansatz is an immutable Equinox module: calling it on one configuration ``x`` (the flat
vector of all particle coordinates; for electrons shape ``(3 * n_electrons,)``, the
``n_up`` spin-up electrons first) returns :math:`\log|\psi(x)|`, and :meth:`signed_log`
returns :math:`(\operatorname{sign}\psi(x), \log|\psi(x)|)` for real wavefunctions. The
trainable parameters are the floating-point array leaves (``eqx.filter(ansatz,
eqx.is_inexact_array)``); nuclear positions, charges and sizes are static. Batches of
walkers are handled with ``jax.vmap``.

Distances use the floored, cusp-safe norm of :mod:`fepy.apps.qvmc._geometry`, so values
and derivatives of every order are finite with an electron exactly on a nucleus or two
electrons coinciding (a same-spin coincidence is a node of a fermionic ansatz:
:math:`\log|\psi| = -\infty` there, as it must be).

- :class:`GaussianAnsatz`: :math:`e^{-\omega|x|^2/2}`, exact for a harmonic trap.
- :class:`HydrogenicAnsatz`: :math:`e^{-\alpha\sum_i|r_i - R|}`, exact for hydrogen.
- :class:`SlaterJastrow`: Slater-type s orbitals, one determinant per spin, cusp Jastrow.
- :class:`FermiNet`: a small FermiNet (Pfau et al. 2020) with envelopes and several determinants.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._validate import concrete, to_float_array
from ._geometry import check_molecule, electron_distances, pair_sum


def _inverse_softplus(y):
    """``log(exp(y) - 1)``, so that ``softplus`` of the result is ``y > 0``."""
    return y + jnp.log(-jnp.expm1(-y))


def _log_sum_signed(
    signs: Float[Array, " n"], logs: Float[Array, " n"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Sign and log of :math:`|\sum_d s_d e^{l_d}|`, stable for huge :math:`l_d` and cancellations.

    The largest :math:`l_d` is factored out (as a constant for differentiation) before
    exponentiating, so the terms are at most 1 in magnitude; an exact cancellation gives
    :math:`-\infty` (a node), never NaN.
    """
    shift = jax.lax.stop_gradient(jnp.max(logs))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    total = jnp.sum(signs * jnp.exp(logs - shift))
    return jnp.sign(total), shift + jnp.log(jnp.abs(total))


class AbstractAnsatz(eqx.Module):
    r"""A real wavefunction :math:`\psi(x)`, evaluated as :math:`(\operatorname{sign}\psi, \log|\psi|)`.

    Subclasses implement :meth:`signed_log` for one configuration ``x`` of shape ``(dim,)``;
    ``ansatz(x)`` is :math:`\log|\psi(x)|`, the function the local energy and
    :math:`|\psi|^2` sampling need.
    """

    @abc.abstractmethod
    def signed_log(self, x: Float[Array, " dim"]) -> tuple[Float[Array, ""], Float[Array, ""]]:
        r""":math:`(\operatorname{sign}\psi(x), \log|\psi(x)|)`."""

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        r""":math:`\log|\psi(x)|`."""
        return self.signed_log(x)[1]


class GaussianAnsatz(AbstractAnsatz):
    r""":math:`\psi(x) = e^{-\omega|x|^2/2}`, one parameter :math:`\omega > 0`.

    Nodeless (bosons or distinguishable particles, any dimension): the exact ground state
    of the harmonic trap :math:`V = \frac{\omega^2}{2}|x|^2` at its own frequency, with
    :math:`E_{loc} = \omega\dim/2` everywhere. ``omega`` is trainable.
    """

    omega: Float[Array, ""] = eqx.field(converter=to_float_array)

    def signed_log(self, x):
        return jnp.ones((), x.dtype), -0.5 * self.omega * jnp.sum(x * x)

    def __check_init__(self):
        if self.omega.ndim != 0:
            raise ValueError(f"GaussianAnsatz omega must be a scalar, got shape {self.omega.shape}")
        omega = concrete(self.omega)
        if omega is not None and not (math.isfinite(omega) and omega > 0):
            raise ValueError(f"GaussianAnsatz omega must be finite and > 0, got {omega}")


def _points(nuclei, name: str) -> tuple[tuple[float, float, float], ...]:
    """Nuclear positions as a static tuple of (x, y, z) in bohr, from shape (n_atoms, 3) or (3,)."""
    array = np.asarray(nuclei, dtype=float)
    if array.shape == (3,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] < 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} nuclei must be finite with shape (n_atoms, 3), got {np.shape(nuclei)}")
    return tuple(tuple(map(float, row)) for row in array)


class HydrogenicAnsatz(AbstractAnsatz):
    r""":math:`\psi(x) = e^{-\alpha\sum_i |r_i - R|}`, one parameter :math:`\alpha` (bohr⁻¹).

    A product of 1s orbitals on one nucleus at :math:`R` (``nuclei``, shape (3,) or (1, 3),
    bohr; static), symmetric in the electrons (a spin singlet for two). Exact for hydrogen
    at :math:`\alpha = 1` (-1/2 Ha); for helium the textbook variational optimum is
    :math:`\alpha = 27/16` with :math:`E = -(27/16)^2 = -2.8477` Ha. ``alpha`` is trainable.
    """

    alpha: Float[Array, ""] = eqx.field(converter=to_float_array)
    nuclei: tuple[tuple[float, float, float], ...] = eqx.field(
        static=True, default=(0.0, 0.0, 0.0), converter=lambda n: _points(n, "HydrogenicAnsatz")
    )

    def signed_log(self, x):
        r_ae = electron_distances(x, jnp.asarray(self.nuclei, x.dtype)).r_ae
        return jnp.ones((), x.dtype), -self.alpha * jnp.sum(r_ae)

    def __check_init__(self):
        if self.alpha.ndim != 0:
            raise ValueError(f"HydrogenicAnsatz alpha must be a scalar, got shape {self.alpha.shape}")
        if len(self.nuclei) != 1:
            raise ValueError(f"HydrogenicAnsatz takes one nucleus, got {len(self.nuclei)}")
        alpha = concrete(self.alpha)
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"HydrogenicAnsatz alpha must be finite and > 0, got {alpha}")


def _check_system(name: str, nuclei, charges, n_up, n_down):
    """Static nuclei and charges of a molecule, after checking them and the spin occupations."""
    points = _points(nuclei, name)
    charges = np.asarray(charges, dtype=float).reshape(-1)
    check_molecule(name, np.asarray(points), charges, n_up, n_down)
    return points, tuple(map(float, charges)), int(n_up), int(n_down)


def _shell_exponent(z: float, n: int) -> float:
    r"""Screened hydrogenic exponent :math:`\zeta = Z_{eff}/n` of the ns shell (Slater's rules).

    :math:`Z_{eff} = Z - 0.3` for 1s and :math:`Z - 1.7` (a full 1s core) beyond, at least 1.
    """
    return max(z - (0.3 if n == 1 else 1.7), 1.0) / n


class CuspJastrow(eqx.Module):
    r"""Electron-electron cusp factor :math:`e^{J}`, :math:`J = \sum_{i<j} a_{ij} r_{ij}/(1 + b\,r_{ij})`.

    :math:`a_{ij} = 1/2` for antiparallel and :math:`1/4` for parallel spins, so
    :math:`\partial_{r_{ij}} J = a_{ij}` at coalescence (Kato's cusp conditions);
    :math:`b = \mathrm{softplus}(\mathtt{b\_raw}) > 0` (bohr⁻¹) is trainable and sets the
    range, :math:`J \to a_{ij}/b` at large :math:`r_{ij}`.
    """

    b_raw: Float[Array, ""]
    n_up: int = eqx.field(static=True)

    def __init__(self, n_up: int, b: float = 1.0):
        self.n_up = n_up
        self.b_raw = _inverse_softplus(to_float_array(b))

    @property
    def b(self) -> Float[Array, ""]:
        return jax.nn.softplus(self.b_raw)

    def __call__(self, r_ee: Float[Array, "n_el n_el"]) -> Float[Array, ""]:
        """J from the electron-electron distance matrix (bohr), spin-up electrons first."""
        spin = np.arange(r_ee.shape[0]) < self.n_up
        a = np.where(spin[:, None] == spin[None, :], 0.25, 0.5)
        return pair_sum(a * r_ee / (1.0 + self.b * r_ee))


def _electron_geometry(x, nuclei, n_electrons: int, name: str):
    if x.shape != (3 * n_electrons,):
        raise ValueError(f"{name} configuration must have shape ({3 * n_electrons},), got {x.shape}")
    return electron_distances(x, jnp.asarray(nuclei, x.dtype))


def _slogdet(orbitals):
    """``slogdet`` that treats a spin channel without electrons as the empty determinant 1."""
    if orbitals.shape[-1] == 0:
        return jnp.ones(orbitals.shape[:-2]), jnp.zeros(orbitals.shape[:-2])
    return jnp.linalg.slogdet(orbitals)


def _aufbau(shells, n_basis: int, n_basis_per_atom: int, key, perturbation: float):
    """Coefficients (len(shells), n_basis): one basis function per occupied shell, plus noise."""
    c = np.zeros((len(shells), n_basis))
    for k, (_, atom, n) in enumerate(shells):
        c[k, atom * n_basis_per_atom + n] = 1.0
    noise = jax.random.normal(key, c.shape, dtype=jnp.result_type(float))
    return to_float_array(c) + perturbation * noise


class SlaterJastrow(AbstractAnsatz):
    r"""Slater-Jastrow ansatz :math:`\psi = \det[\phi^\uparrow_k(r_i)]\,\det[\phi^\downarrow_k(r_j)]\,e^{J}`.

    Orbitals are expansions in Slater-type s functions on every nucleus,

    .. math:: \phi_k(r) = \sum_A\sum_b c_{k,Ab}\, e^{-\zeta_{Ab}|r - R_A|},

    with ``n_basis_per_atom`` trainable exponents :math:`\zeta_{Ab} > 0` (bohr⁻¹, through a
    softplus) per atom, initialised at the screened shell exponents
    :math:`Z_{eff}/n`, ``n = 1..n_basis_per_atom``; the coefficients are
    trainable, ``c_up`` of shape (n_up, n_basis) and ``c_down`` (n_down, n_basis). They start
    as an aufbau guess: each spin fills the atomic shells in order of the hydrogenic energy
    :math:`-\zeta^2/2` (1s of every atom, then 2s, ...; ties between equivalent atoms are
    broken in opposite orders for the two spins, so H2 starts as one electron per atom),
    plus a small random perturbation drawn from ``key``. A determinant is invariant to
    adding one row to another, so an ns function needs no explicit orthogonalisation to the
    inner shells. :math:`J` is the :class:`CuspJastrow`. Determinants are evaluated with
    ``slogdet``; the electron-nucleus cusp is not imposed (it is learnt through the exponents).
    """

    zeta_raw: Float[Array, "n_atoms n_basis_per_atom"]
    c_up: Float[Array, "n_up n_basis"]
    c_down: Float[Array, "n_down n_basis"]
    jastrow: CuspJastrow
    nuclei: tuple[tuple[float, float, float], ...] = eqx.field(static=True)
    charges: tuple[float, ...] = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(
        self,
        nuclei,
        charges,
        n_up: int,
        n_down: int,
        *,
        n_basis_per_atom: int = 4,
        key: PRNGKeyArray,
        perturbation: float = 0.01,
    ):
        nuclei, charges, n_up, n_down = _check_system("SlaterJastrow", nuclei, charges, n_up, n_down)
        if not isinstance(n_basis_per_atom, int) or n_basis_per_atom < 1:
            raise ValueError(
                f"SlaterJastrow n_basis_per_atom must be an integer >= 1, got {n_basis_per_atom!r}"
            )
        if len(nuclei) * n_basis_per_atom < max(n_up, n_down):
            raise ValueError(
                f"SlaterJastrow needs at least max(n_up, n_down) = {max(n_up, n_down)} basis functions, "
                f"got {len(nuclei)} atoms x {n_basis_per_atom}"
            )
        self.nuclei, self.charges, self.n_up, self.n_down = nuclei, charges, n_up, n_down
        zeta = np.array([[_shell_exponent(z, n) for n in range(1, n_basis_per_atom + 1)] for z in charges])
        self.zeta_raw = _inverse_softplus(to_float_array(zeta))
        # Shells (energy, atom A, n - 1) in aufbau order; basis index A * n_basis_per_atom + n - 1.
        shells = [(-0.5 * zeta[a, n] ** 2, a, n) for a, n in np.ndindex(zeta.shape)]
        up = sorted(shells, key=lambda s: (s[0], s[1]))
        down = sorted(shells, key=lambda s: (s[0], -s[1]))
        key_up, key_down = jax.random.split(key)
        self.c_up, self.c_down = (
            _aufbau(order[:count], len(nuclei) * n_basis_per_atom, n_basis_per_atom, k, perturbation)
            for order, count, k in ((up, n_up, key_up), (down, n_down, key_down))
        )
        self.jastrow = CuspJastrow(n_up)

    @property
    def zeta(self) -> Float[Array, "n_atoms n_basis_per_atom"]:
        """Basis exponents (bohr⁻¹)."""
        return jax.nn.softplus(self.zeta_raw)

    def signed_log(self, x):
        r_ae, r_ee, _, _ = _electron_geometry(x, self.nuclei, self.n_up + self.n_down, "SlaterJastrow")
        basis = jnp.exp(-self.zeta[None] * r_ae[..., None]).reshape(r_ae.shape[0], -1)
        sign_up, log_up = _slogdet(basis[: self.n_up] @ self.c_up.T)
        sign_down, log_down = _slogdet(basis[self.n_up :] @ self.c_down.T)
        return sign_up * sign_down, log_up + log_down + self.jastrow(r_ee)


def _dense(layer: eqx.nn.Linear, h: Float[Array, "... n_in"]) -> Float[Array, "... n_out"]:
    """A linear layer over the last axis, any leading axes."""
    return jnp.vectorize(layer, signature="(i)->(o)")(h)


def _log_features(d: Float[Array, "... 3"], r: Float[Array, "..."]) -> Float[Array, "... 4"]:
    r"""FermiNet's log-rescaled features :math:`(d\,\log(1+r)/r,\ \log(1+r))` of a displacement."""
    scale = jnp.log1p(r)
    return jnp.concatenate([d * (scale / r)[..., None], scale[..., None]], axis=-1)


def _residual(new, old):
    return new + old if new.shape == old.shape else new


class _Orbitals(eqx.Module):
    r"""One spin's orbitals, ``determinants`` sets of ``n``.

    .. math:: \phi^d_k(r_i) = (w_{dk}\cdot h_i + g_{dk})\sum_A \pi_{dkA} e^{-\sigma_{dkA}|r_i - R_A|}
    """

    linear: eqx.nn.Linear
    pi: Float[Array, "orbitals n_atoms"]
    sigma_raw: Float[Array, "orbitals n_atoms"]
    determinants: int = eqx.field(static=True)

    def __init__(self, width: int, n: int, determinants: int, charges, key):
        self.determinants = determinants
        self.linear = eqx.nn.Linear(width, determinants * n, key=key)
        sigma = [[_shell_exponent(z, k + 1) for z in charges] for k in range(n)] * determinants
        self.pi = jnp.ones((determinants * n, len(charges)), jnp.result_type(float))
        self.sigma_raw = _inverse_softplus(to_float_array(np.reshape(sigma, (determinants * n, len(charges)))))

    def __call__(
        self, h: Float[Array, "n width"], r_ae: Float[Array, "n n_atoms"]
    ) -> Float[Array, "determinants n n"]:
        n = h.shape[0]
        envelope = jnp.sum(self.pi * jnp.exp(-jax.nn.softplus(self.sigma_raw) * r_ae[:, None, :]), axis=-1)
        phi = _dense(self.linear, h) * envelope
        return jnp.moveaxis(phi.reshape(n, self.determinants, n), 1, 0)


class FermiNet(AbstractAnsatz):
    r"""A small FermiNet (Pfau, Spencer, Matthews & Foulkes, Phys. Rev. Research 2, 033429, 2020).

    Inputs (bohr), log-rescaled as :math:`(d\log(1+r)/r, \log(1+r))`: one-electron streams
    :math:`h_i^0` from :math:`r_i - R_A` and :math:`|r_i - R_A|` for every nucleus, pair streams
    :math:`g_{ij}^0` from :math:`r_i - r_j` and :math:`|r_i - r_j|`. Layer :math:`l` first
    updates the pair streams, :math:`g^{l+1}_{ij} = \tanh(W_l g^l_{ij} + c_l) (+ g^l_{ij})`,
    then the one-electron streams from
    :math:`f_i = (h_i, \langle h_j\rangle_{j\uparrow}, \langle h_j\rangle_{j\downarrow},
    \langle g^{l+1}_{ij}\rangle_{j\uparrow}, \langle g^{l+1}_{ij}\rangle_{j\downarrow})`,
    :math:`h^{l+1}_i = \tanh(V_l f_i + b_l) (+ h^l_i)` (residual when the widths agree;
    spin groups without electrons are left out). The layers are shared by all electrons,
    so the streams are equivariant under permutations within each spin.

    Orbitals (``determinants`` sets per spin) are a linear map of the final stream times
    the envelope :math:`\sum_A\pi_{kA}e^{-\sigma_{kA}|r_i - R_A|}`, :math:`\sigma > 0`
    (softplus; initialised at the screened shell exponents, :math:`\pi = 1`), and

    .. math:: \psi = \sum_d \det[\phi^{d\uparrow}_k(r_i)]\det[\phi^{d\downarrow}_k(r_j)]\; e^{J},

    summed in the log domain with signs (:func:`_log_sum_signed`); :math:`J` is the
    :class:`CuspJastrow` when ``jastrow`` is true, else 0. ``hidden`` are the one-electron
    widths, ``pair_hidden`` the pair widths (one per layer).
    """

    layers: tuple[eqx.nn.Linear, ...]
    pair_layers: tuple[eqx.nn.Linear, ...]
    orbitals_up: _Orbitals
    orbitals_down: _Orbitals
    jastrow: CuspJastrow | None
    nuclei: tuple[tuple[float, float, float], ...] = eqx.field(static=True)
    charges: tuple[float, ...] = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(
        self,
        nuclei,
        charges,
        n_up: int,
        n_down: int,
        *,
        hidden: tuple[int, ...] = (32, 32),
        pair_hidden: tuple[int, ...] = (8, 8),
        determinants: int = 4,
        jastrow: bool = True,
        key: PRNGKeyArray,
    ):
        nuclei, charges, n_up, n_down = _check_system("FermiNet", nuclei, charges, n_up, n_down)
        hidden, pair_hidden = tuple(hidden), tuple(pair_hidden)
        widths = hidden + pair_hidden + (determinants,)
        positive = all(isinstance(w, int) and w >= 1 for w in widths)
        if not hidden or len(pair_hidden) != len(hidden) or not positive:
            raise ValueError(
                f"FermiNet needs positive integer widths, len(pair_hidden) == len(hidden) >= 1 and "
                f"determinants >= 1, got hidden={hidden}, pair_hidden={pair_hidden}, "
                f"determinants={determinants}"
            )
        self.nuclei, self.charges, self.n_up, self.n_down = nuclei, charges, n_up, n_down
        groups = (n_up > 0) + (n_down > 0)
        keys = jax.random.split(key, 2 * len(hidden) + 2)
        layers, pair_layers, width, pair_width = [], [], 4 * len(nuclei), 4
        for l, (w, p) in enumerate(zip(hidden, pair_hidden)):
            pair_layers.append(eqx.nn.Linear(pair_width, p, key=keys[2 * l]))
            layers.append(eqx.nn.Linear((1 + groups) * width + groups * p, w, key=keys[2 * l + 1]))
            width, pair_width = w, p
        self.layers, self.pair_layers = tuple(layers), tuple(pair_layers)
        self.orbitals_up = _Orbitals(width, n_up, determinants, charges, keys[-2])
        self.orbitals_down = _Orbitals(width, n_down, determinants, charges, keys[-1])
        self.jastrow = CuspJastrow(n_up) if jastrow else None

    def _spin_means(self, h: Float[Array, "n_el ..."], axis: int) -> list[Array]:
        """Means over the spin-up and over the spin-down electrons along ``axis`` (empty groups left out)."""
        return [jnp.mean(part, axis) for part in jnp.split(h, [self.n_up], axis=axis) if part.shape[axis] > 0]

    def signed_log(self, x):
        n = self.n_up + self.n_down
        r_ae, r_ee, ae, ee = _electron_geometry(x, self.nuclei, n, "FermiNet")
        h = _log_features(ae, r_ae).reshape(n, -1)
        g = _log_features(ee, r_ee)
        for layer, pair_layer in zip(self.layers, self.pair_layers):
            g = _residual(jnp.tanh(_dense(pair_layer, g)), g)
            one = [jnp.broadcast_to(m, h.shape) for m in self._spin_means(h, axis=0)]
            f = jnp.concatenate([h, *one, *self._spin_means(g, axis=1)], axis=-1)
            h = _residual(jnp.tanh(_dense(layer, f)), h)
        sign_up, log_up = _slogdet(self.orbitals_up(h[: self.n_up], r_ae[: self.n_up]))
        sign_down, log_down = _slogdet(self.orbitals_down(h[self.n_up :], r_ae[self.n_up :]))
        sign, log = _log_sum_signed(sign_up * sign_down, log_up + log_down)
        return sign, log if self.jastrow is None else log + self.jastrow(r_ee)
