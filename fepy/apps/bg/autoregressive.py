r"""A transferable, autoregressive Boltzmann generator: atoms placed one by one in internal
coordinates by conditional densities whose parameters are shared across molecules (nm, rad).

**The density.** For a molecule with a `ZMatrix` (atoms :math:`a_0, a_1, \dots` in placement
order; atom :math:`a_p` placed by its bond :math:`r_p` to its parent :math:`j`, the angle
:math:`\theta_p = \angle(a_p, j, k)` and the torsion :math:`\phi_p = \mathrm{dihedral}(a_p, j,
k, l)`), the model is

.. math::

    q(r, \theta, \phi) = \prod_{p \ge 1} q_\vartheta(r_p \mid C_p)\,
        q_\vartheta(\phi_p \mid r_p, C_p)\, q_\vartheta(\theta_p \mid r_p, \phi_p, C_p)

(:math:`\theta_p` from :math:`p \ge 2`, :math:`\phi_p` from :math:`p \ge 3`), each factor a
normalised 1-D density whose parameters are outputs of networks :math:`\vartheta` of the
context :math:`C_p`, which holds

* the molecule graph :math:`M` and the atom types :math:`A`: per-atom features (`molecules.
  atom_features`: element, bonds, bonded hydrogens, charge, Lennard-Jones :math:`\sigma,
  \epsilon`) passed through ``rounds`` rounds of message passing over the bonds, giving an
  embedding :math:`h_a`; the context takes :math:`h` of the new atom and of :math:`j, k, l`;
* per-place features :math:`F_p`: the force field's equilibrium bond length and angle
  :math:`r^0_p, \theta^0_p` and their harmonic thermal widths :math:`s = (\beta k)^{-1/2}`
  (AMBER's :math:`\tfrac12 k (r - r^0)^2`), whether :math:`l` is a sibling (bonded to
  :math:`j`: an improper, narrow torsion) or not (a proper torsion);
* the placed atoms :math:`R_{<p}`: every atom :math:`a` placed before :math:`p` (but
  :math:`j`) sends a message :math:`m(h_a, \hat d_a, |d_a|, \mathrm{hops}(a_p, a))` built
  from its position :math:`d_a = x_a - x_j` in the local frame of the reference atoms (the
  NeRF frame: :math:`e_1 \parallel x_k - x_j`, :math:`e_3 \parallel e_1 \times (x_k - x_l)`),
  its distance to :math:`j` (radial basis) and its graph distance to the new atom (one-hot);
  the messages are summed (an invariant set function, so the context is invariant under
  rotations and translations of the placed atoms).

The three 1-D densities (the conditional flow of one atom, autoregressive in the order
:math:`r, \phi, \theta`):

* :math:`r_p = r^0_p + s_r (\mu + \sigma\, g(z))`, :math:`z \sim N(0, 1)`, :math:`g` a monotone
  rational-quadratic spline on :math:`[-B, B]` (identity outside), :math:`\mu, \sigma > 0` and the
  spline's bins outputs of the r-head; at initialisation (zero last layers) the harmonic density
  :math:`N(r^0, s_r^2)`.
* :math:`\phi_p = \mathrm{wrap}(c(b) + s)`, :math:`c` a circular spline (equal end slopes) and
  :math:`s` a rotation (`splines`), from a base :math:`b` whose density on the circle is the
  *partial-energy profile* of the new atom: the atom is put at bond :math:`r_p`, angle
  :math:`\theta^0_p` and the :math:`G` = `PROFILE_POINTS` torsions of a grid, and :math:`U_p`
  (the force-field terms it completes with the atoms placed before it: its pairs with them, the
  angles and torsions whose other atoms are placed; `MoleculeGraph.partial_energy`) is evaluated
  there; the base density interpolates :math:`e^{-\lambda\beta(U_p - \min U_p)} + \epsilon`
  linearly between the grid points (:math:`\lambda > 0` a head output, 1 at initialisation;
  :math:`\epsilon` = `PROFILE_FLOOR`), normalised exactly and sampled by its inverse
  distribution function (a quadratic per bin): continuous and periodic.
* :math:`\theta_p = \theta^0_p + s_\theta (\mu + \sigma\, g(b))` with the spline :math:`g` as
  for :math:`r`, and a base :math:`b` on the standardised grid `ANGLE_GRID` (:math:`\pm 12`
  thermal widths; exponential tails beyond, so that no angle has zero density) whose density is
  the partial-energy profile of the atom at
  :math:`r_p, \phi_p` and the grid's angles (the harmonic :math:`e^{-b^2/2}` for the places 1, 2,
  which have no torsion), likewise interpolated and scaled.

A bond or an angle beyond its domain (:math:`r \le 0`, :math:`\theta \notin (0, \pi)`: over 12
thermal widths away for AMBER's terms, in the floor's exponential tail) is not excluded by these
densities; the model is exact on the domain, and a sample beyond it (a mass below
`PROFILE_FLOOR` per angle at initialisation) has a NaN :math:`\log q` (the log-determinant of
`InternalCoordinates` is undefined there), which the importance weights of the model file count
as zero.

The profiles are the Rosenbluth weights of configurational-bias Monte Carlo (Rosenbluth &
Rosenbluth 1955; Siepmann & Frenkel 1992), used as the bases of learnt flows: what the placed atoms
say (the narrow improper torsions of a hydrogen beside its siblings, the angles at a tetrahedral
centre, steric clashes) is in the base and transfers to any molecule by construction; the
networks learn what they do not say (the atoms placed later). At initialisation the model is this
configurational-bias proposal.

Every factor is exact and normalised, so :math:`\log q` is exact; sampling places the atoms in
order (a ``lax.scan``), evaluation sees all atoms at once (each context masked to the atoms placed
before). The model is a density on the reduced canonical-frame space of `internal` (the
3n - 6 coordinates :math:`\tilde y` that remain when the position and orientation are fixed):

.. math:: \log q(\tilde y) = \log q(r, \theta, \phi)
          - \log\left|\det \frac{\partial \tilde y}{\partial (r, \theta, \phi)}\right| ,

the bijection and its log-determinant being `InternalCoordinates`; its target is
`ReducedEnergy`, so importance weights, ESS and :math:`\log\tilde Z` follow as for any
`fepy.AbstractDensity`.

**Transfer.** `TransferableBG` holds the shared parameters; `MoleculeGraph.build` describes a
molecule (any the force field parametrises); `TransferableBG.bind` gives the `BoundBG` of one
molecule, or of several at once (the product density on the concatenated reduced vectors,
:math:`\log q = \sum_m \log q_m`), which trains all of them jointly by `fepy.ForwardKL` on
rows that concatenate one MD frame of each molecule (`JointEnergy` is the matching product
target). The graphs are padded to a common number of atoms; the molecules are evaluated one after
the other in one compiled program. The graphs' arrays are data: their gradient is stopped, so a
solver that trains every inexact leaf of the family trains the shared parameters only.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from scipy.sparse.csgraph import shortest_path

from jax_md.mm_forcefields.amber.energy import lennard_jones

from ...families.density import AbstractDensity
from ...targets.energy import Energy
from ..tps.molecular import bond_angle, dihedral, place_atom, torsion_frame
from ..tps.openmm import COULOMB
from .internal import InternalCoordinates, ZMatrix
from .molecules import N_FEATURES
from .splines import spline_transform

MAX_HOPS = 6
"""Graph distances from the new atom are one-hot encoded up to this many bonds (and beyond)."""

RBF_CENTRES = tuple(np.linspace(0.1, 0.7, 8))
"""Centres (nm) of the Gaussian radial basis of a placed atom's distance to the parent atom."""
RBF_WIDTH = 0.08  # nm
N_GEOMETRY = 3 + len(RBF_CENTRES) + MAX_HOPS + 1
LOG_2PI = math.log(2 * math.pi)

PROFILE_POINTS = 180
"""Grid points of the partial-energy profile of a torsion on the circle (2 degrees apart)."""
ANGLE_GRID = tuple(np.linspace(-12.0, 12.0, 121))
"""The grid of the partial-energy profile of an angle, in thermal widths s_theta about theta_0;
beyond it the angle's base density has exponential tails (any angle has a finite log q)."""
PROFILE_FLOOR = 1e-6
r"""The profile density's floor, relative to its maximum: :math:`\log q` stays finite where the
profile is far below its peak (a mass of about 1e-5 per coordinate; a floor of 1e-3 put about 1 %
of each angle's and 3 % of a narrow torsion's draws far from its peak)."""
MIN_DISTANCE = 0.05
"""nm: pair distances in the partial energy are clipped below this (a conditioning signal, not U)."""


class MoleculeGraph(eqx.Module):
    r"""What `TransferableBG` knows of a molecule, every array indexed by place (Z-matrix order),
    padded to ``n`` places (`MoleculeGraph.pad`).

    ``features``: `molecules.atom_features` of each atom; ``adjacency``: 1 for bonded places;
    ``hops``: graph distance between places, clipped to `MAX_HOPS`; ``refs``: the places of
    :math:`j, k, l` (0 where a place has none); ``prior``: :math:`r^0, s_r, \theta^0,
    s_\theta` (nm, rad; 1 where absent); ``sibling``: 1 where the torsion reference is bonded
    to the parent; ``valid``: 1 for the molecule's places, 0 for padding.

    The force field by place, for the partial energies :math:`U_p` (the terms of U whose
    last-placed atom is at place p, so that :math:`U = \sum_p U_p`): ``pair_qq``,
    ``pair_sigma``, ``pair_epsilon`` the Coulomb factor :math:`q_a q_b / 4\pi\epsilon_0`
    (kJ nm/mol), :math:`\sigma` (nm) and :math:`\epsilon` (kJ/mol) of each pair (the 1-4 pairs'
    scaled values, 0 for the excluded 1-2 and 1-3 pairs); ``angles`` (places, vertex in the
    middle), ``angle_parameters`` (:math:`\theta_0`, k) and ``angle_mask`` of the angle terms
    completed at each place; ``torsions``, ``torsion_parameters`` (periodicity, phase, k) and
    ``torsion_mask`` likewise; ``beta`` (mol/kJ).
    """

    features: Float[Array, "n features"]
    adjacency: Float[Array, "n n"]
    hops: Int[Array, "n n"]
    refs: Int[Array, "n 3"]
    prior: Float[Array, "n 4"]
    sibling: Float[Array, " n"]
    valid: Float[Array, " n"]
    pair_qq: Float[Array, "n n"]
    pair_sigma: Float[Array, "n n"]
    pair_epsilon: Float[Array, "n n"]
    angles: Int[Array, "n a 3"]
    angle_parameters: Float[Array, "n a 2"]
    angle_mask: Float[Array, "n a"]
    torsions: Int[Array, "n t 4"]
    torsion_parameters: Float[Array, "n t 3"]
    torsion_mask: Float[Array, "n t"]
    beta: Float[Array, ""]

    @classmethod
    def build(cls, zmatrix: ZMatrix, features, potential, beta: float) -> "MoleculeGraph":
        """The graph of a molecule with this `ZMatrix`, per-atom ``features`` (atoms, `N_FEATURES`)
        and force field ``potential`` (a `fepy.apps.tps.MolecularPotential`: its bonds are the
        graph, its bond and angle terms the priors) at inverse temperature ``beta`` (mol/kJ)."""
        n = zmatrix.n_atoms
        features = np.asarray(features, np.float64)
        if features.shape != (n, N_FEATURES):
            raise ValueError(f"MoleculeGraph features must have shape ({n}, {N_FEATURES}), got {features.shape}")
        if potential.n_atoms != n:
            raise ValueError(f"the potential has {potential.n_atoms} atoms, the Z-matrix {n}")
        if not beta > 0:
            raise ValueError(f"MoleculeGraph beta must be positive, got {beta!r}")
        order = np.asarray(zmatrix.order)
        place = np.empty(n, np.int64)
        place[order] = np.arange(n)
        bonds = np.asarray(potential.bonds)
        adjacency = np.zeros((n, n))
        adjacency[place[bonds[:, 0]], place[bonds[:, 1]]] = 1
        adjacency = np.maximum(adjacency, adjacency.T)
        hops = shortest_path(adjacency, unweighted=True)
        bond_terms = {frozenset(map(int, b)): (r0, k) for b, r0, k in
                      zip(bonds, np.asarray(potential.bond_length), np.asarray(potential.bond_k))}
        angle_terms = {}
        for (a, v, c), t0, k in zip(np.asarray(potential.angles), np.asarray(potential.angle_theta0),
                                    np.asarray(potential.angle_k)):
            angle_terms[(int(a), int(v), int(c))] = angle_terms[(int(c), int(v), int(a))] = (t0, k)
        refs = np.zeros((n, 3), np.int64)
        prior = np.ones((n, 4))
        sibling = np.zeros(n)
        for i, j in zmatrix.bond_atoms:
            p = place[i]
            if frozenset((int(i), int(j))) not in bond_terms:
                raise ValueError(f"the Z-matrix bond {i}-{j} has no bond term in the force field")
            r0, k = bond_terms[frozenset((int(i), int(j)))]
            refs[p, 0] = place[j]
            prior[p, :2] = r0, 1 / math.sqrt(beta * k)
        for i, j, k in zmatrix.angle_atoms:
            p = place[i]
            if (int(i), int(j), int(k)) not in angle_terms:
                raise ValueError(f"the Z-matrix angle {i}-{j}-{k} has no angle term in the force field")
            t0, kt = angle_terms[(int(i), int(j), int(k))]
            refs[p, 1] = place[k]
            prior[p, 2:] = t0, 1 / math.sqrt(beta * kt)
        for i, j, k, l in zmatrix.torsion_atoms:
            p = place[i]
            refs[p, 2] = place[l]
            sibling[p] = adjacency[place[j], place[l]]
        qq, sigma, epsilon = _pair_tables(potential, place)
        angles = _terms_by_place(place[np.asarray(potential.angles)],
                                 np.stack([np.asarray(potential.angle_theta0), np.asarray(potential.angle_k)], -1), n)
        torsions = _terms_by_place(place[np.asarray(potential.torsions)],
                                   np.stack([np.asarray(potential.torsion_periodicity, np.float64),
                                             np.asarray(potential.torsion_phase), np.asarray(potential.torsion_k)], -1), n)
        return cls(jnp.asarray(features[order]), jnp.asarray(adjacency),
                   jnp.asarray(np.minimum(hops, MAX_HOPS).astype(np.int32)), jnp.asarray(refs.astype(np.int32)),
                   jnp.asarray(prior), jnp.asarray(sibling), jnp.ones(n), jnp.asarray(qq), jnp.asarray(sigma),
                   jnp.asarray(epsilon), *angles, *torsions, jnp.asarray(float(beta)))

    @property
    def n(self) -> int:
        """The number of places (atoms plus padding)."""
        return self.valid.shape[-1]

    def pad(self, n: int, angles: int, torsions: int) -> "MoleculeGraph":
        """The same molecule with ``n - self.n`` padding places (no bonds, masked everywhere) and
        room for ``angles`` angle and ``torsions`` torsion terms per place (masked)."""
        extra = n - self.n
        more_angles, more_torsions = angles - self.angles.shape[1], torsions - self.torsions.shape[1]
        if min(extra, more_angles, more_torsions) < 0:
            raise ValueError(f"cannot pad a graph of {self.n} places to {n}")
        rows = lambda a, value=0: jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), constant_values=value)
        square = lambda a, value=0: jnp.pad(a, [(0, extra), (0, extra)], constant_values=value)
        terms = lambda a, more: jnp.pad(a, [(0, extra), (0, more)] + [(0, 0)] * (a.ndim - 2))
        return MoleculeGraph(
            rows(self.features), square(self.adjacency), square(self.hops, MAX_HOPS), rows(self.refs),
            rows(self.prior, 1), rows(self.sibling), rows(self.valid), square(self.pair_qq), square(self.pair_sigma),
            square(self.pair_epsilon), terms(self.angles, more_angles), terms(self.angle_parameters, more_angles),
            terms(self.angle_mask, more_angles), terms(self.torsions, more_torsions),
            terms(self.torsion_parameters, more_torsions), terms(self.torsion_mask, more_torsions), self.beta)

    def partial_energy(self, x: Float[Array, "n 3"], p) -> Float[Array, ""]:
        r""":math:`U_p(x)` (kJ/mol): the force-field terms completed by placing the atom of place p,
        i.e. its Coulomb and Lennard-Jones pairs with the atoms placed before it and the angle and
        torsion terms whose other atoms are placed before it (the functional forms of
        `fepy.apps.tps.MolecularPotential`; pair distances clipped below `MIN_DISTANCE`). The
        bond of place p and its Z-matrix angle are among them only through constants in the
        torsion of place p: they do not depend on it."""
        d = jnp.maximum(jnp.linalg.norm(x - x[p], axis=-1), MIN_DISTANCE)
        before = jnp.arange(self.n) < p
        pairs = jnp.where(before, self.pair_qq[p] / d + lennard_jones(d, self.pair_sigma[p], self.pair_epsilon[p]), 0.0)
        theta0, k_angle = self.angle_parameters[p, :, 0], self.angle_parameters[p, :, 1]
        angle = jnp.sum(self.angle_mask[p] * 0.5 * k_angle * (bond_angle(x, self.angles[p]) - theta0) ** 2)
        periodicity, phase, k_torsion = (self.torsion_parameters[p, :, i] for i in range(3))
        torsion = jnp.sum(self.torsion_mask[p] * k_torsion
                          * (1 + jnp.cos(periodicity * dihedral(x, self.torsions[p]) - phase)))
        return jnp.sum(pairs) + angle + torsion


def _pair_tables(potential, place) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coulomb factor, sigma and epsilon of every pair by place (exceptions' own values; 0 where excluded)."""
    n = place.size
    qq, sigma, epsilon = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    charges, sig, eps = (np.asarray(a, np.float64) for a in (potential.charges, potential.sigma, potential.epsilon))
    i, j = np.asarray(potential.pairs).T
    values = (COULOMB * charges[i] * charges[j], 0.5 * (sig[i] + sig[j]), np.sqrt(eps[i] * eps[j]))
    for table, value in zip((qq, sigma, epsilon), values):
        table[place[i], place[j]] = table[place[j], place[i]] = value
    i, j = np.asarray(potential.exceptions).reshape(-1, 2).T
    values = (COULOMB * np.asarray(potential.exception_charge_prod), np.asarray(potential.exception_sigma),
              np.asarray(potential.exception_epsilon))
    for table, value in zip((qq, sigma, epsilon), values):
        table[place[i], place[j]] = table[place[j], place[i]] = value
    return qq, sigma, epsilon


def _terms_by_place(atoms: np.ndarray, parameters: np.ndarray, n: int):
    """Bonded terms (rows of places) grouped by the place of their last-placed atom, padded:
    (places, terms, width) atoms, (places, terms, parameters), (places, terms) mask."""
    atoms = atoms.reshape(-1, atoms.shape[-1])
    last = atoms.max(axis=1)
    width = max(1, int(np.bincount(last, minlength=n).max()) if atoms.size else 1)
    out_atoms = np.zeros((n, width, atoms.shape[1]), np.int32)
    out_parameters = np.zeros((n, width, parameters.shape[1]))
    mask = np.zeros((n, width))
    for p in range(n):
        rows = np.flatnonzero(last == p)
        out_atoms[p, : rows.size], out_parameters[p, : rows.size], mask[p, : rows.size] = atoms[rows], parameters[rows], 1
    # a dummy term's atoms are 0, 1, 2(, 3): finite geometry; its mask is 0
    out_atoms[mask == 0] = np.arange(atoms.shape[1])
    return jnp.asarray(out_atoms), jnp.asarray(out_parameters), jnp.asarray(mask)


def _real_head_split(out, knots):
    """Spline parameters (3K, plus the unused rotation 0), shift mu and scale sigma > 0."""
    raw = jnp.concatenate([out[: 3 * knots], jnp.zeros((1,), out.dtype)])
    return raw, out[3 * knots], jax.nn.softplus(out[3 * knots + 1] + math.log(math.e - 1))


def _log_normal(z):
    return -0.5 * z**2 - 0.5 * LOG_2PI


def _frame_atoms(graph, x, p):
    """The positions of j, k, l of place p; a fixed frame for places < 3, which have none (keeps
    everything finite; what depends on it is masked)."""
    framed = p >= 3
    j, k, l = graph.refs[p, 0], graph.refs[p, 1], graph.refs[p, 2]
    return (jnp.where(framed, x[j], jnp.zeros(3, x.dtype)),
            jnp.where(framed, x[k], jnp.array([1.0, 0.0, 0.0], x.dtype)),
            jnp.where(framed, x[l], jnp.array([1.0, 1.0, 0.0], x.dtype)))


def partial_energy_profile(graph: MoleculeGraph, x: Float[Array, "n 3"], p, r, theta, phi) -> Float[Array, " points"]:
    r""":math:`-\beta U_p` (`MoleculeGraph.partial_energy`) with the atom of place p put at bond ``r``
    and at each (``theta``, ``phi``) of a grid (1-D arrays of one length, or a scalar for one):
    the log of the Rosenbluth (configurational-bias) weights of growing the molecule by that atom,
    up to a constant."""
    theta, phi = jnp.broadcast_arrays(theta, phi)
    xj, xk, xl = _frame_atoms(graph, x, p)
    ones = jnp.ones((theta.shape[0], 1), x.dtype)
    candidates = place_atom(xj * ones, xk * ones, xl * ones, r * ones[:, 0], theta, phi)
    energy = jax.vmap(lambda c: graph.partial_energy(x.at[p].set(c), p))(candidates)
    return -graph.beta * energy


def _table(log_nodes, scale, h, tails: bool = False):
    """Node values exp(scale (l - max l)) + floor of a piecewise-linear density with bins of width
    ``h`` between the nodes, and its integral; with ``tails``, plus exponential tails
    v_0 e^{x - start} and v_G e^{end - x} beyond the grid (areas v_0 and v_G)."""
    values = jnp.exp(scale * (log_nodes - jnp.max(log_nodes))) + PROFILE_FLOOR
    total = 0.5 * h * jnp.sum(values[:-1] + values[1:])
    return values, total + (values[0] + values[-1] if tails else 0.0)


def _table_log_prob(values, total, start, h, x, tails: bool = False):
    """log of the density interpolating ``values`` (G + 1 nodes from ``start``, ``h`` apart)
    linearly, normalised by ``total``; beyond the grid its exponential tails (``tails``) or 0."""
    bins = values.shape[0] - 1
    t = (x - start) / h
    g = jnp.clip(jnp.floor(t), 0, bins - 1).astype(jnp.int32)
    v0, v1 = values[g], values[g + 1]
    inside = (t >= 0) & (t <= bins)
    log_inside = jnp.log(jnp.where(inside, v0 + (v1 - v0) * (t - g), 1.0))
    if tails:
        end = start + bins * h
        outside = jnp.where(x < start, jnp.log(values[0]) + (x - start), jnp.log(values[-1]) - (x - end))
    else:
        outside = -jnp.inf
    return jnp.where(inside, log_inside, outside) - jnp.log(total)


def _table_sample(values, total, start, h, u, tails: bool = False):
    """The inverse of that density's distribution function at ``u`` in (0, 1) (a quadratic per
    bin, a logarithm in the tails)."""
    bins = values.shape[0] - 1
    areas = 0.5 * h * (values[:-1] + values[1:])
    cumulative = jnp.cumsum(areas)
    left = values[0] if tails else 0.0
    target = u * total - left
    g = jnp.clip(jnp.searchsorted(cumulative, target, side="right"), 0, bins - 1)
    a = jnp.clip(target - (cumulative[g] - areas[g]), 0.0, areas[g])
    v0, slope = values[g], (values[g + 1] - values[g]) / h
    t = 2 * a / (v0 + jnp.sqrt(jnp.maximum(v0**2 + 2 * slope * a, 0.0)))
    x = start + g * h + t
    if not tails:
        return x
    end = start + bins * h
    below = start + jnp.log(jnp.clip(u * total / values[0], 1e-300, 1.0))
    beyond = end - jnp.log(jnp.clip(1 - (target - cumulative[-1]) / values[-1], 1e-300, 1.0))
    return jnp.where(target < 0, below, jnp.where(target > cumulative[-1], beyond, x))


class TransferableBG(eqx.Module):
    """The shared parameters of the autoregressive Boltzmann generator (module docstring).

    ``hidden``: width of the atom embeddings; ``rounds``: message-passing rounds over the bonds;
    ``environment``: width of the placed-atom messages; ``width``/``depth``: the context MLP;
    ``knots``/``interval``: bins K and half-width B of the bond and angle splines (the torsion
    splines span the circle). The heads' last layers are zero: the initial model is the harmonic
    force-field prior for bonds and the partial-energy profiles for torsions and angles.
    """

    embed: eqx.nn.Linear
    messages: tuple[eqx.nn.MLP, ...]
    env_atom: eqx.nn.Linear
    env_geometry: eqx.nn.Linear
    env_out: eqx.nn.Linear
    trunk: eqx.nn.MLP
    head_r: eqx.nn.MLP
    head_phi: eqx.nn.MLP
    head_theta: eqx.nn.MLP
    knots: int = eqx.field(static=True)
    interval: float = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, hidden: int = 32, rounds: int = 3, environment: int = 64,
                 width: int = 128, depth: int = 2, knots: int = 8, interval: float = 4.0):
        for name, value, minimum in (("hidden", hidden, 1), ("rounds", rounds, 0), ("environment", environment, 1),
                                     ("width", width, 1), ("depth", depth, 1), ("knots", knots, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TransferableBG {name} must be an integer >= {minimum}, got {value!r}")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"TransferableBG interval must be a positive finite number, got {interval!r}")
        keys = iter(jax.random.split(key, 9 + rounds))
        self.embed = eqx.nn.Linear(N_FEATURES, hidden, key=next(keys))
        self.messages = tuple(eqx.nn.MLP(2 * hidden, hidden, hidden, 1, jax.nn.silu, key=next(keys))
                              for _ in range(rounds))
        self.env_atom = eqx.nn.Linear(hidden, environment, key=next(keys))
        self.env_geometry = eqx.nn.Linear(N_GEOMETRY, environment, use_bias=False, key=next(keys))
        self.env_out = eqx.nn.Linear(environment, environment, key=next(keys))
        context_in = 4 * hidden + environment + 4 + 3
        self.trunk = eqx.nn.MLP(context_in, width, width, depth - 1, jax.nn.silu, final_activation=jax.nn.silu,
                                key=next(keys))
        real_out, theta_out, phi_out = 3 * knots + 2, 3 * knots + 3, 3 * knots + 2
        zero_last = lambda mlp: eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                                            (jnp.zeros_like(mlp.layers[-1].weight), jnp.zeros_like(mlp.layers[-1].bias)))
        self.head_r = zero_last(eqx.nn.MLP(width, real_out, width // 2, 1, jax.nn.silu, key=next(keys)))
        self.head_phi = zero_last(eqx.nn.MLP(width + 1, phi_out, width // 2, 1, jax.nn.silu, key=next(keys)))
        self.head_theta = zero_last(eqx.nn.MLP(width + 3, theta_out, width // 2, 1, jax.nn.silu, key=next(keys)))
        self.knots, self.interval = knots, float(interval)

    # ------------------------------------------------------------------ context

    def embeddings(self, graph: MoleculeGraph) -> Float[Array, "n hidden"]:
        """Atom embeddings h by message passing over the bonds: h <- h + MLP(h, sum of bonded h)."""
        h = jax.vmap(self.embed)(graph.features) * graph.valid[:, None]
        for mlp in self.messages:
            h = (h + jax.vmap(mlp)(jnp.concatenate([h, graph.adjacency @ h], axis=-1))) * graph.valid[:, None]
        return h

    def _context(self, graph: MoleculeGraph, h, env_atom, x: Float[Array, "n 3"], p) -> Float[Array, " width"]:
        """The context vector of place p from the atoms placed before it (module docstring)."""
        j, k, l = graph.refs[p, 0], graph.refs[p, 1], graph.refs[p, 2]
        framed = p >= 3
        xj, xk, xl = _frame_atoms(graph, x, p)
        frame = torsion_frame(xj, xk, xl)
        d = x - xj
        distance = jnp.sqrt(jnp.sum(d * d, axis=-1) + 1e-30)
        local = (d @ frame.T) / distance[:, None]
        rbf = jnp.exp(-0.5 * ((distance[:, None] - jnp.asarray(RBF_CENTRES, x.dtype)) / RBF_WIDTH) ** 2)
        hops = jax.nn.one_hot(graph.hops[p], MAX_HOPS + 1, dtype=x.dtype)
        geometry = jnp.concatenate([local, rbf, hops], axis=-1)
        messages = jax.vmap(self.env_out)(jax.nn.silu(env_atom + jax.vmap(self.env_geometry)(geometry)))
        index = jnp.arange(graph.n)
        mask = framed & (index < p) & (index != j)
        environment = jnp.sum(jnp.where(mask[:, None], messages, 0.0), axis=0) / 4
        prior = graph.prior[p]
        features = jnp.concatenate([
            h[p], h[j], h[k] * (p >= 2), h[l] * framed, environment,
            jnp.stack([prior[0] / 0.1, jnp.log(prior[1]), prior[2], jnp.log(prior[3])]),
            jnp.stack([graph.sibling[p], jnp.asarray(p == 1, x.dtype), jnp.asarray(p == 2, x.dtype)]),
        ])
        return self.trunk(features)

    def _atom_terms(self, graph):
        """The embeddings h and their part of the placed-atom messages (computed once per molecule)."""
        h = self.embeddings(graph)
        return h, jax.vmap(self.env_atom)(h)

    # ------------------------------------------------------------------ one place

    def _real_log_prob(self, out, value, loc, scale):
        raw, mu, sigma = _real_head_split(out, self.knots)
        y = ((value - loc) / scale - mu) / sigma
        z, log_det = spline_transform(y, raw, False, self.knots, self.interval, inverse=True)
        return _log_normal(z) + log_det - jnp.log(sigma) - jnp.log(scale)

    def _real_sample(self, out, z, loc, scale):
        raw, mu, sigma = _real_head_split(out, self.knots)
        y, log_det = spline_transform(z, raw, False, self.knots, self.interval, inverse=False)
        return loc + scale * (mu + sigma * y), _log_normal(z) - log_det - jnp.log(sigma) - jnp.log(scale)

    def _phi_base(self, graph, x, p, context, u_r, r):
        """The torsion spline's parameters and its base: the profile on the circle at theta_0."""
        raw = self.head_phi(jnp.concatenate([context, u_r[None] / 4]))
        scale = jax.nn.softplus(raw[3 * self.knots + 1] + math.log(math.e - 1))
        grid = -jnp.pi + 2 * jnp.pi * jnp.arange(PROFILE_POINTS, dtype=x.dtype) / PROFILE_POINTS
        log_profile = jax.lax.stop_gradient(partial_energy_profile(graph, x, p, r, graph.prior[p, 2], grid))
        nodes = jnp.concatenate([log_profile, log_profile[:1]])  # periodic: the last node is the first
        return raw[: 3 * self.knots + 1], _table(nodes, scale, 2 * jnp.pi / PROFILE_POINTS)

    def _theta_base(self, graph, x, p, context, u_r, r, phi):
        """The angle's spline, shift and scale, and its base on the standardised grid `ANGLE_GRID`:
        the profile at the drawn torsion (places >= 3), the harmonic prior before."""
        out = self.head_theta(jnp.concatenate([context, u_r[None] / 4, jnp.stack([jnp.cos(phi), jnp.sin(phi)])]))
        raw, mu, sigma = _real_head_split(out, self.knots)
        scale = jax.nn.softplus(out[3 * self.knots + 2] + math.log(math.e - 1))
        u = jnp.asarray(ANGLE_GRID, x.dtype)
        prior = graph.prior[p]
        profile = partial_energy_profile(graph, x, p, r, prior[2] + prior[3] * u, phi)
        log_profile = jax.lax.stop_gradient(jnp.where(p >= 3, profile, -0.5 * u**2))
        return raw, mu, sigma, _table(log_profile, scale, u[1] - u[0], tails=True)

    def place_log_prob(self, graph: MoleculeGraph, x, p, context, r, theta, phi) -> Float[Array, " 3"]:
        """log q(r | C), log q(theta | r, phi, C), log q(phi | r, C) of place p (positions ``x`` by
        place; only the atoms placed before p are read)."""
        prior = graph.prior[p]
        u_r = (r - prior[0]) / prior[1]
        log_r = self._real_log_prob(self.head_r(context), r, prior[0], prior[1])
        raw_phi, (values, total) = self._phi_base(graph, x, p, context, u_r, r)
        base, log_det = spline_transform(phi, raw_phi, True, self.knots, self.interval, inverse=True)
        log_phi = _table_log_prob(values, total, -jnp.pi, 2 * jnp.pi / PROFILE_POINTS, base) + log_det
        raw, mu, sigma, (values, total) = self._theta_base(graph, x, p, context, u_r, r, phi)
        y = ((theta - prior[2]) / prior[3] - mu) / sigma
        base, log_det = spline_transform(y, raw, False, self.knots, self.interval, inverse=True)
        log_theta = (_table_log_prob(values, total, ANGLE_GRID[0], ANGLE_GRID[1] - ANGLE_GRID[0], base, True) + log_det
                     - jnp.log(sigma) - jnp.log(prior[3]))
        return jnp.stack([log_r, log_theta, log_phi])

    def place_sample(self, graph: MoleculeGraph, x, p, context, noise) -> tuple[Float[Array, " 3"], Float[Array, " 3"]]:
        """(r, theta, phi) of place p from ``noise`` = (z_r, z_theta ~ N(0, 1), z_phi ~ U(-pi, pi)),
        drawn in the order r, phi, theta, and their three log-densities."""
        prior = graph.prior[p]
        r, log_r = self._real_sample(self.head_r(context), noise[0], prior[0], prior[1])
        u_r = (r - prior[0]) / prior[1]
        raw_phi, (values, total) = self._phi_base(graph, x, p, context, u_r, r)
        h = 2 * jnp.pi / PROFILE_POINTS
        base = _table_sample(values, total, -jnp.pi, h, (noise[2] + jnp.pi) / (2 * jnp.pi))
        phi, log_det = spline_transform(base, raw_phi, True, self.knots, self.interval, inverse=False)
        log_phi = _table_log_prob(values, total, -jnp.pi, h, base) - log_det
        raw, mu, sigma, (values, total) = self._theta_base(graph, x, p, context, u_r, r, jnp.where(p >= 3, phi, 0.0))
        h = ANGLE_GRID[1] - ANGLE_GRID[0]
        base = _table_sample(values, total, ANGLE_GRID[0], h, jax.scipy.special.ndtr(noise[1]), True)
        y, log_det = spline_transform(base, raw, False, self.knots, self.interval, inverse=False)
        theta = prior[2] + prior[3] * (mu + sigma * y)
        log_theta = (_table_log_prob(values, total, ANGLE_GRID[0], h, base, True) - log_det - jnp.log(sigma)
                     - jnp.log(prior[3]))
        return jnp.stack([r, theta, phi]), jnp.stack([log_r, log_theta, log_phi])

    # ------------------------------------------------------------------ one molecule, one configuration

    @staticmethod
    def _masks(graph):
        p = jnp.arange(graph.n)
        return jnp.stack([p >= 1, p >= 2, p >= 3], axis=-1) & (graph.valid[:, None] > 0)

    def internal_log_prob(self, graph: MoleculeGraph, x: Float[Array, "n 3"],
                          q: Float[Array, "n 3"]) -> Float[Array, ""]:
        r""":math:`\log q(r, \theta, \phi)` of one configuration: ``x`` the positions by place,
        ``q`` the (r, theta, phi) of each place (any value where a place has none)."""
        h, env_atom = self._atom_terms(graph)
        contexts = jax.vmap(lambda p: self._context(graph, h, env_atom, x, p))(jnp.arange(graph.n))
        mask = self._masks(graph)
        safe = jnp.where(mask, q, jnp.stack([graph.prior[:, 0], graph.prior[:, 2], jnp.zeros(graph.n, q.dtype)], -1))
        log_q = jax.vmap(lambda p, c, v: self.place_log_prob(graph, x, p, c, v[0], v[1], v[2]))(
            jnp.arange(graph.n), contexts, safe)
        return jnp.sum(jnp.where(mask, log_q, 0.0))

    def internal_sample(self, graph: MoleculeGraph, noise: Float[Array, "n 3"]
                        ) -> tuple[Float[Array, "n 3"], Float[Array, ""]]:
        r"""(r, theta, phi) of each place drawn in order from ``noise`` (rows (z_r, z_theta, z_phi))
        and :math:`\log q(r, \theta, \phi)`; the places are put down by the conventions of
        `InternalCoordinates` (a_1 on +x, a_2 in the upper xy half-plane, NeRF after)."""
        h, env_atom = self._atom_terms(graph)
        mask = self._masks(graph)
        dtype = noise.dtype

        def place(x, p):
            q, log_q = self.place_sample(graph, x, p, self._context(graph, h, env_atom, x, p), noise[p])
            r, theta, phi = q
            j, k, l = graph.refs[p, 0], graph.refs[p, 1], graph.refs[p, 2]
            second = jnp.stack([r, jnp.zeros_like(r), jnp.zeros_like(r)])
            along = jnp.where(j == 0, 1.0, -1.0)
            third = jnp.stack([x[j, 0] + along * r * jnp.cos(theta), r * jnp.sin(theta), jnp.zeros_like(r)])
            later = place_atom(x[j][None], x[k][None], x[l][None], r[None], theta[None], phi[None])[0]
            position = jnp.where(p == 1, second, jnp.where(p == 2, third, later))
            x = x.at[p].set(jnp.where(graph.valid[p] > 0, position, x[p]))
            return x, (q, jnp.sum(jnp.where(mask[p], log_q, 0.0)))

        x0 = jnp.zeros((graph.n, 3), dtype)
        _, (q, log_q) = jax.lax.scan(place, x0, jnp.arange(1, graph.n))
        q = jnp.concatenate([jnp.zeros((1, 3), dtype), q])
        return q, jnp.sum(log_q)

    def bind(self, graphs, coordinates) -> "BoundBG":
        """The `BoundBG` of one molecule (a `MoleculeGraph` and its `InternalCoordinates`) or of
        several (sequences of both, in the same order)."""
        if isinstance(graphs, MoleculeGraph):
            graphs, coordinates = (graphs,), (coordinates,)
        return BoundBG.of(self, tuple(graphs), tuple(coordinates))


class BoundBG(AbstractDensity):
    r"""`TransferableBG` bound to molecules: the density :math:`\prod_m q_m(\tilde y_m)` on the
    concatenated reduced canonical-frame vectors :math:`(\tilde y_1, \tilde y_2, \dots)` of
    `InternalCoordinates` (module docstring); for one molecule, its Boltzmann generator, whose
    target is `ReducedEnergy`. ``graphs``: the molecules' `MoleculeGraph` padded to a common
    size and stacked; ``coordinates``: their `InternalCoordinates`. ``chunk``: configurations
    per vectorised pass of `log_prob` (bounds its memory). Build it with `TransferableBG.bind`."""

    model: TransferableBG
    graphs: MoleculeGraph
    coordinates: tuple[InternalCoordinates, ...]
    chunk: int = eqx.field(static=True, default=256)

    @classmethod
    def of(cls, model, graphs: tuple[MoleculeGraph, ...], coordinates: tuple[InternalCoordinates, ...],
           chunk: int = 256) -> "BoundBG":
        if not graphs or len(graphs) != len(coordinates):
            raise ValueError(f"bind needs one InternalCoordinates per MoleculeGraph, got {len(graphs)} graphs and "
                             f"{len(coordinates)} coordinates")
        for g, c in zip(graphs, coordinates):
            if not isinstance(g, MoleculeGraph) or not isinstance(c, InternalCoordinates):
                raise TypeError("bind takes MoleculeGraphs and InternalCoordinates")
            if g.n != c.zmatrix.n_atoms:
                raise ValueError(f"a graph of {g.n} atoms is bound to a Z-matrix of {c.zmatrix.n_atoms}")
        sizes = [max(g.n for g in graphs), max(g.angles.shape[1] for g in graphs),
                 max(g.torsions.shape[1] for g in graphs)]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *(g.pad(*sizes) for g in graphs))
        return cls(model, stacked, tuple(coordinates), chunk)

    def _fixed_graphs(self) -> MoleculeGraph:
        """The graphs are data, not parameters: their float arrays (features, force field) are
        leaves of this module, so a solver that trains every inexact leaf would move them; the
        gradient is stopped here (Adam then leaves them unchanged)."""
        return jax.lax.stop_gradient(self.graphs)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(c.shape[0] for c in self.coordinates)

    @property
    def dim(self) -> int:
        return sum(self.dims)

    def _split(self, y):
        bounds = np.cumsum((0,) + self.dims)
        return [y[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _places(self, coordinates, y):
        """Positions by place (padded) and (r, theta, phi) by place of one molecule's reduced vector,
        with -log|det| of the internal-coordinate map."""
        z = coordinates.zmatrix
        n, pad = z.n_atoms, self.graphs.n - z.n_atoms
        q, neg_log_det = coordinates.inverse_and_log_det(y)
        x = coordinates.to_cartesian(y)[np.asarray(z.order)]
        zero = jnp.zeros((1,), y.dtype)
        r = jnp.concatenate([zero, q[: n - 1]])
        theta = jnp.concatenate([zero, zero, q[n - 1 : 2 * n - 3]])
        phi = jnp.concatenate([zero, zero, zero, q[2 * n - 3 :]])
        return jnp.pad(x, ((0, pad), (0, 0))), jnp.pad(jnp.stack([r, theta, phi], -1), ((0, pad), (0, 0))), neg_log_det

    def _log_prob_rows(self, y: Float[Array, "b dim"]) -> Float[Array, " b"]:
        xs, qs, neg = zip(*(jax.vmap(lambda v, c=c: self._places(c, v))(part)
                            for c, part in zip(self.coordinates, self._split(y))))
        log_q = 0.0
        for m, (x, q) in enumerate(zip(xs, qs)):
            graph = jax.tree.map(lambda a: a[m], self._fixed_graphs())
            log_q = log_q + jax.vmap(lambda a, b: self.model.internal_log_prob(graph, a, b))(x, q)
        return log_q + sum(neg)

    def log_prob(self, x: Float[Array, "... dim"]) -> Float[Array, "..."]:
        r""":math:`\log q(\tilde y)`, exact (module docstring)."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"BoundBG log_prob expects points of shape (..., {self.dim}), got {x.shape}")
        flat = x.reshape(-1, self.dim)
        if flat.shape[0] <= self.chunk:
            out = self._log_prob_rows(flat)
        else:
            out = jax.lax.map(lambda row: self._log_prob_rows(row[None])[0], flat, batch_size=self.chunk)
        return out.reshape(x.shape[:-1])

    def sample_and_log_prob(self, key, n):
        """``n`` samples of every molecule, drawn atom by atom, and their exact log q."""
        dtype = jnp.result_type(float)
        molecules = len(self.coordinates)
        normal_key, uniform_key = jax.random.split(key)
        shape = (molecules, n, self.graphs.n)
        noise = jnp.concatenate([jax.random.normal(normal_key, shape + (2,), dtype),
                                 jax.random.uniform(uniform_key, shape + (1,), dtype, -jnp.pi, jnp.pi)], -1)
        ys, total = [], 0.0
        for m, c in enumerate(self.coordinates):
            graph = jax.tree.map(lambda a: a[m], self._fixed_graphs())
            q, log_q = jax.vmap(lambda e: self.model.internal_sample(graph, e))(noise[m])
            total = total + log_q
            k = c.zmatrix.n_atoms
            flat = jnp.concatenate([q[:, 1:k, 0], q[:, 2:k, 1], q[:, 3:k, 2]], axis=-1)
            y, log_det = jax.vmap(c.transform_and_log_det)(flat)
            ys.append(y)
            total = total - log_det
        return jnp.concatenate(ys, axis=-1), total


class JointEnergy(Energy):
    r"""The product of several targets at one temperature on the concatenated coordinates,
    :math:`U(x_1, x_2, \dots) = \sum_m U_m(x_m)`: the target of a `BoundBG` of several molecules
    (e.g. their `ReducedEnergy`), whose log Z is the sum of theirs."""

    components: tuple[Energy, ...]
    beta: float
    dim: int = eqx.field(static=True)

    def __init__(self, components):
        components = tuple(components)
        if not components or not all(isinstance(c, Energy) for c in components):
            raise TypeError("JointEnergy needs one or more fepy Energy targets")
        betas = {float(c.beta) for c in components}
        if len(betas) != 1:
            raise ValueError(f"JointEnergy components must share one beta, got {sorted(betas)}")
        self.components = components
        self.beta = betas.pop()
        self.dim = sum(c.dim for c in components)

    def energy(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        bounds = np.cumsum([0] + [c.dim for c in self.components])
        return sum(c.energy(x[a:b]) for c, a, b in zip(self.components, bounds[:-1], bounds[1:]))
