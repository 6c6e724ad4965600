r"""Internal coordinates of a molecule: a Z-matrix built from its bond graph, and the exact
bijection between bond lengths, bond angles and torsions and Cartesian positions (nm, rad).

**The Z-matrix.** `ZMatrix.from_bonds` places the atoms one by one in an order read off the bond
graph (no hand-written table): the root is the non-terminal atom of least eccentricity (the
graph's centre); the non-terminal atoms follow in breadth-first order, the larger side branch
first (the size of its breadth-first subtree: the backbone before a methyl group), then the
terminal atoms (hydrogens, carbonyl oxygens) in the order of the atom they hang on. Atom
:math:`i` at place :math:`p \ge 3` is put by the NeRF rule at distance :math:`r` from its
bonded parent :math:`j`, at the angle :math:`\theta = \angle(i, j, k)` with :math:`k` the
parent of :math:`j` (for :math:`j` the root, the atom placed second) and at the torsion
:math:`\phi = \mathrm{dihedral}(i, j, k, l)`, where :math:`l` is, in this order of preference,
an atom already placed and bonded to :math:`j` (a sibling of :math:`i`: an "improper" torsion,
narrow, e.g. the second and third methyl hydrogen at :math:`\pm 120°` from the first, or the
:math:`C_\beta` of an amino acid at :math:`\pm 120°` from the backbone, which carries the
chirality), else an atom already placed and bonded to :math:`k` (a proper torsion, e.g. the
backbone :math:`\phi` and :math:`\psi`). For alanine dipeptide this gives the root CA with N
and C placed second and third, :math:`\phi` and :math:`\psi` as torsions, and 14 of its 19
torsions narrow (circular spread below 0.21 rad in 300 K MD; the other five, :math:`\phi`,
:math:`\psi` and the three methyl rotors, spread 0.65 rad and more).

**The external degrees of freedom.** A configuration :math:`x \in \mathbb{R}^{3n}` is the
position :math:`t = x_{a_0}` of the root :math:`a_0`, a rotation :math:`R \in SO(3)` and the
*canonical-frame* configuration :math:`y = R^\top (x - t)` in which :math:`a_0` is at the origin,
the second atom :math:`a_1` on the positive x axis, the third :math:`a_2` in the xy plane with
:math:`y > 0` (`InternalCoordinates.from_cartesian`; :math:`R` has determinant +1, so
chirality is kept). The 3n - 6 free coordinates of :math:`y`, the *reduced* vector

.. math:: \tilde y = (y_{a_1,x},\; y_{a_2,x},\; y_{a_2,y},\; y_{a_3},\; \dots,\; y_{a_{n-1}})

(atoms in placement order), are in one-to-one correspondence with :math:`(t, R, \tilde y)`,
and the volume element is :math:`dx = y_{a_1,x}^2\, y_{a_2,y}\; dt\; d\mu(R)\; d\tilde y` with
:math:`\mu` the Haar measure of total mass :math:`8\pi^2` (the solid angle :math:`4\pi` of
the :math:`a_0 \to a_1` direction times the :math:`2\pi` turn about it; cylindrical
coordinates for :math:`a_2`). A density :math:`e^{-\beta U(x)}` invariant under rotations and
translations therefore has, on the reduced space, the marginal

.. math::

    p(\tilde y) \propto e^{-\beta U(y)}\, y_{a_1,x}^2\, y_{a_2,y}, \qquad
    Z = \int e^{-\beta U} dx = V \cdot 8\pi^2 \cdot \tilde Z, \quad
    \tilde Z = \int e^{-\beta U(y)}\, y_{a_1,x}^2\, y_{a_2,y}\, d\tilde y ,

with :math:`V` the volume of the box (infinite in vacuum: only :math:`\tilde Z` is finite).
`ReducedEnergy` is this target: :math:`\tilde U = U - k_BT \log(y_{a_1,x}^2\, y_{a_2,y})`.

**The bijection.** `InternalCoordinates` maps the 3n - 6 internal coordinates

.. math:: q = (r_1, \dots, r_{n-1},\; \theta_2, \dots, \theta_{n-1},\; \phi_3, \dots, \phi_{n-1})

(bond of atom :math:`a_p` to its parent, angle at the parent for :math:`p \ge 2`, torsion for
:math:`p \ge 3`) to :math:`\tilde y`: :math:`a_1 = (r_1, 0, 0)`, :math:`a_2` at :math:`r_2,
\theta_2` from its parent (:math:`a_0` or :math:`a_1`) in the upper half of the xy plane, and
the others by NeRF. Each atom is placed by spherical coordinates about its parent given the
atoms before it (a triangular Jacobian), so

.. math:: \log\left|\det\frac{\partial\tilde y}{\partial q}\right|
          = \log r_2 + \sum_{p=3}^{n-1} \big(2\log r_p + \log\sin\theta_p\big)

(:math:`a_1` contributes 1, :math:`a_2` the planar polar factor :math:`r_2`; together with the
external factor :math:`y_{a_1,x}^2 y_{a_2,y} = r_1^2 r_2 \sin\theta_2` this is the familiar
:math:`\prod r^2 \sin\theta` of the Cartesian volume). The domain is :math:`r > 0`,
:math:`0 < \theta < \pi`, :math:`\phi \in (-\pi, \pi]`; the image is :math:`\tilde y` with
:math:`y_{a_1,x} > 0`, :math:`y_{a_2,y} > 0` and no three consecutive reference atoms
collinear.
"""

from collections import deque

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import paramax
from flowjax.bijections import AbstractBijection, Chain
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ...families.flow import Flow
from ...targets.energy import Energy
from ..tps.metrics import wrap_angle
from ..tps.molecular import bond_angle, dihedral, place_atom, unit
from .splines import NormalUniform, coupling_flow


class ZMatrix(eqx.Module):
    """The placement order and reference atoms of a molecule (module docstring), all static.

    ``order[p]`` is the atom placed at step p; ``parent[p - 1]`` (p >= 1) its bonded reference j,
    ``angle_ref[p - 2]`` (p >= 2) the k of its angle, ``torsion_ref[p - 3]`` (p >= 3) the l of
    its torsion (atom indices). ``generations`` groups the places p >= 3 whose reference atoms are
    all placed in earlier groups, so that each group is placed at once.
    """

    n_atoms: int = eqx.field(static=True)
    order: tuple[int, ...] = eqx.field(static=True)
    parent: tuple[int, ...] = eqx.field(static=True)
    angle_ref: tuple[int, ...] = eqx.field(static=True)
    torsion_ref: tuple[int, ...] = eqx.field(static=True)
    generations: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    def __check_init__(self):
        n = self.n_atoms
        if n < 3:
            raise ValueError(f"a Z-matrix needs at least 3 atoms, got {n}")
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"ZMatrix order must be a permutation of 0..{n - 1}")
        if (len(self.parent), len(self.angle_ref), len(self.torsion_ref)) != (n - 1, n - 2, n - 3):
            raise ValueError("ZMatrix parent, angle_ref, torsion_ref must have n-1, n-2, n-3 entries")
        place = {a: p for p, a in enumerate(self.order)}
        for p in range(1, n):
            refs = (self.parent[p - 1],) + ((self.angle_ref[p - 2],) if p >= 2 else ()) + (
                (self.torsion_ref[p - 3],) if p >= 3 else ())
            if len(set(refs)) != len(refs) or any(place[a] >= p for a in refs):
                raise ValueError(f"the reference atoms {refs} of atom {self.order[p]} (place {p}) must be "
                                 "distinct and placed before it")
        if self.parent[0] != self.order[0] or {self.parent[1], self.angle_ref[0]} != set(self.order[:2]):
            raise ValueError("the second atom must hang on the first, the third on the first or second")

    @classmethod
    def from_bonds(cls, n_atoms: int, bonds: Int[ArrayLike, "bonds 2"]) -> "ZMatrix":
        """The Z-matrix of a connected molecule of ``n_atoms`` atoms with these bonds (pairs of
        atom indices), by the rules of the module docstring."""
        bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        if isinstance(n_atoms, bool) or not isinstance(n_atoms, int) or n_atoms < 3:
            raise ValueError(f"n_atoms must be an integer >= 3, got {n_atoms!r}")
        if bonds.size and (bonds.min() < 0 or bonds.max() >= n_atoms):
            raise ValueError(f"bonds name atoms outside 0..{n_atoms - 1}")
        if np.any(bonds[:, 0] == bonds[:, 1]):
            raise ValueError("a bond joins an atom to itself")
        neighbours = [set() for _ in range(n_atoms)]
        for a, b in bonds:
            neighbours[a].add(int(b))
            neighbours[b].add(int(a))
        neighbours = [sorted(s) for s in neighbours]
        distances = np.array([_bfs_distances(neighbours, a) for a in range(n_atoms)])
        if np.any(distances < 0):
            raise ValueError("the bond graph is not connected: every atom must be bonded into one molecule")
        inner = [a for a in range(n_atoms) if len(neighbours[a]) > 1]
        root = min(inner or range(n_atoms), key=lambda a: (distances[a].max(), a))
        # breadth first over the non-terminal atoms, larger subtrees first, then the terminal atoms
        skeleton = set(inner) | {root}
        size = _subtree_sizes(neighbours, root)
        order, parent_of = [root], {root: None}
        queue = deque([root])
        while queue:
            a = queue.popleft()
            for b in sorted((b for b in neighbours[a] if b in skeleton and b not in parent_of),
                            key=lambda b: (-size[b], b)):
                parent_of[b] = a
                order.append(b)
                queue.append(b)
        for a in list(order):
            for b in neighbours[a]:
                if b not in parent_of:
                    parent_of[b] = a
                    order.append(b)
        if len(order) < 3:
            raise ValueError("a Z-matrix needs at least 3 atoms")
        place = {a: p for p, a in enumerate(order)}
        parent, angle_ref, torsion_ref = [], [], []
        for p, i in enumerate(order[1:], start=1):
            j = parent_of[i]
            parent.append(j)
            if p < 2:
                continue
            if p == 2:
                k = order[1] if j == order[0] else order[0]
            else:  # the parent of j, or for j the root the second atom
                k = parent_of[j] if parent_of[j] is not None else order[1]
            angle_ref.append(k)
            if p < 3:
                continue
            placed = lambda a: place[a] < p
            siblings = [a for a in neighbours[j] if placed(a) and a not in (i, k)]
            cousins = [a for a in neighbours[k] if placed(a) and a not in (i, j)]
            candidates = sorted(siblings, key=place.get) + sorted(cousins, key=place.get)
            if not candidates:
                raise ValueError(f"no torsion reference for atom {i}: neither its parent {j} nor {k} has "
                                 "another atom placed before it")
            torsion_ref.append(candidates[0])
        generation = {order[0]: 0, order[1]: 0, order[2]: 0}
        for p in range(3, len(order)):
            refs = (parent[p - 1], angle_ref[p - 2], torsion_ref[p - 3])
            generation[order[p]] = 1 + max(generation[a] for a in refs)
        groups = {}
        for p in range(3, len(order)):
            groups.setdefault(generation[order[p]], []).append(p)
        return cls(n_atoms, tuple(order), tuple(parent), tuple(angle_ref), tuple(torsion_ref),
                   tuple(tuple(groups[g]) for g in sorted(groups)))

    @classmethod
    def from_topology(cls, topology) -> "ZMatrix":
        """The Z-matrix of the bond graph of an ``openmm.app.Topology`` (one molecule)."""
        bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
        return cls.from_bonds(topology.getNumAtoms(), bonds)

    @property
    def dim(self) -> int:
        """3n - 6, the number of internal coordinates."""
        return 3 * self.n_atoms - 6

    @property
    def bond_atoms(self) -> Int[np.ndarray, "n-1 2"]:
        """(i, j) of each bond coordinate r_p, p = 1..n-1."""
        return np.stack([self.order[1:], self.parent], axis=1)

    @property
    def angle_atoms(self) -> Int[np.ndarray, "n-2 3"]:
        """(i, j, k) of each angle coordinate theta_p (vertex j), p = 2..n-1."""
        return np.stack([self.order[2:], self.parent[1:], self.angle_ref], axis=1)

    @property
    def torsion_atoms(self) -> Int[np.ndarray, "n-3 4"]:
        """(i, j, k, l) of each torsion coordinate phi_p, p = 3..n-1."""
        return np.stack([self.order[3:], self.parent[2:], self.angle_ref[1:], self.torsion_ref], axis=1)

    def kinds(self) -> Int[np.ndarray, " dim"]:
        """0 for a bond length, 1 for an angle, 2 for a torsion, per internal coordinate."""
        n = self.n_atoms
        return np.repeat([0, 1, 2], [n - 1, n - 2, n - 3])


def _bfs_distances(neighbours, source) -> np.ndarray:
    distance = np.full(len(neighbours), -1)
    distance[source] = 0
    queue = deque([source])
    while queue:
        a = queue.popleft()
        for b in neighbours[a]:
            if distance[b] < 0:
                distance[b] = distance[a] + 1
                queue.append(b)
    return distance


def _subtree_sizes(neighbours, root) -> dict[int, int]:
    """The number of atoms under each atom of the breadth-first tree from ``root`` (itself included)."""
    parent, order, queue = {root: None}, [root], deque([root])
    while queue:
        a = queue.popleft()
        for b in neighbours[a]:
            if b not in parent:
                parent[b] = a
                order.append(b)
                queue.append(b)
    size = dict.fromkeys(order, 1)
    for a in reversed(order[1:]):
        size[parent[a]] += size[a]
    return size


class InternalCoordinates(AbstractBijection):
    r"""The bijection q -> reduced canonical-frame Cartesian coordinates of a `ZMatrix`
    (module docstring), with the exact log-determinant :math:`\log r_2 + \sum_{p\ge3}
    (2\log r_p + \log\sin\theta_p)`. A flowjax bijection on shape ``(3n - 6,)``."""

    zmatrix: ZMatrix
    shape: tuple[int, ...] = eqx.field(static=True)
    cond_shape: None = eqx.field(static=True, default=None)

    def __init__(self, zmatrix: ZMatrix):
        if not isinstance(zmatrix, ZMatrix):
            raise TypeError(f"InternalCoordinates needs a ZMatrix, got {type(zmatrix).__name__}")
        self.zmatrix = zmatrix
        self.shape = (zmatrix.dim,)

    def _split(self, q):
        n = self.zmatrix.n_atoms
        return q[: n - 1], q[n - 1 : 2 * n - 3], q[2 * n - 3 :]

    def _log_det(self, r, theta):
        return jnp.log(r[1]) + jnp.sum(2 * jnp.log(r[2:]) + jnp.log(jnp.sin(theta[1:])))

    def transform_and_log_det(self, q, condition=None):
        z = self.zmatrix
        r, theta, phi = self._split(q)
        o = z.order
        x = jnp.zeros((z.n_atoms, 3), q.dtype)
        x = x.at[o[1], 0].set(r[0])
        # a_2 in the upper half of the xy plane, at r_2 from its parent, theta_2 from the other atom
        along, start = (1.0, 0.0) if z.parent[1] == o[0] else (-1.0, r[0])
        x = x.at[o[2]].set(jnp.stack([start + along * r[1] * jnp.cos(theta[0]), r[1] * jnp.sin(theta[0]),
                                      jnp.zeros_like(r[0])]))
        for group in z.generations:
            p = np.asarray(group)
            atoms = np.asarray(z.order)[p]
            j = np.asarray(z.parent)[p - 1]
            k = np.asarray(z.angle_ref)[p - 2]
            l = np.asarray(z.torsion_ref)[p - 3]
            x = x.at[atoms].set(place_atom(x[j], x[k], x[l], r[p - 1], theta[p - 2], phi[p - 3]))
        return self._reduce(x), self._log_det(r, theta)

    def inverse_and_log_det(self, y, condition=None):
        x = self.to_cartesian(y)
        q = self.internal(x)
        r, theta, _ = self._split(q)
        return q, -self._log_det(r, theta)

    def internal(self, x: Float[Array, "atoms 3"]) -> Float[Array, " dim"]:
        """The internal coordinates q of a Cartesian configuration (any frame: q is invariant)."""
        z = self.zmatrix
        bond = z.bond_atoms
        r = jnp.linalg.norm(x[bond[:, 0]] - x[bond[:, 1]], axis=-1)
        return jnp.concatenate([r, bond_angle(x, z.angle_atoms), dihedral(x, z.torsion_atoms)])

    def _reduce(self, y: Float[Array, "atoms 3"]) -> Float[Array, " dim"]:
        o = self.zmatrix.order
        return jnp.concatenate([y[o[1], :1], y[o[2], :2], y[np.asarray(o[3:])].reshape(-1)])

    def to_cartesian(self, y: Float[Array, " dim"]) -> Float[Array, "atoms 3"]:
        """The canonical-frame positions (atoms, 3), in the molecule's atom order, of a reduced vector."""
        o = np.asarray(self.zmatrix.order)
        zero = jnp.zeros((1,), y.dtype)
        placed = jnp.concatenate([jnp.zeros(3, y.dtype), y[:1], zero, zero, y[1:3], zero, y[3:]]).reshape(-1, 3)
        return jnp.zeros_like(placed).at[o].set(placed)

    def from_cartesian(self, x: Float[Array, "atoms 3"]) -> Float[Array, " dim"]:
        r"""The reduced vector of a configuration in any frame: translated so that :math:`a_0` is at
        the origin and rotated (a proper rotation) so that :math:`a_1` lies on +x and :math:`a_2`
        in the xy plane with y > 0."""
        o = self.zmatrix.order
        centred = x - x[o[0]]
        e1 = unit(centred[o[1]])
        v = centred[o[2]] - jnp.dot(centred[o[2]], e1) * e1
        e2 = unit(v)
        rotation = jnp.stack([e1, e2, jnp.cross(e1, e2)])
        return self._reduce(centred @ rotation.T)


class ReducedEnergy(Energy):
    r"""The Boltzmann density of a molecule on the reduced canonical-frame space (module
    docstring): :math:`\tilde U(\tilde y) = U(y) - k_BT\,\log(y_{a_1,x}^2\, y_{a_2,y})`, whose
    partition function is :math:`\tilde Z = Z / (8\pi^2 V)`.

    ``potential`` is any module with ``energy(x)`` for positions of shape (atoms, 3) (e.g. a
    `fepy.apps.tps.MolecularPotential`, kJ/mol and nm), ``coordinates`` the `InternalCoordinates`
    that fix the frame convention, ``beta`` = 1/kT in the potential's unit.
    """

    potential: eqx.Module
    coordinates: InternalCoordinates
    beta: float
    dim: int = eqx.field(static=True)

    def __init__(self, potential, coordinates: InternalCoordinates, beta: float):
        if not callable(getattr(potential, "energy", None)):
            raise TypeError(f"ReducedEnergy potential needs an energy(x) method, got {type(potential).__name__}")
        if not isinstance(coordinates, InternalCoordinates):
            raise TypeError(f"ReducedEnergy coordinates must be InternalCoordinates, got {type(coordinates).__name__}")
        self.potential = potential
        self.coordinates = coordinates
        self.beta = beta
        self.dim = coordinates.shape[0]

    def energy(self, y: Float[Array, " dim"]) -> Float[Array, ""]:
        x = self.coordinates.to_cartesian(y)
        return self.potential.energy(x) - (2 * jnp.log(y[0]) + jnp.log(y[2])) / self.beta


def signed_volume(x: Float[Array, "*batch atoms 3"], atoms: Int[ArrayLike, " 4"]) -> Float[Array, " *batch"]:
    r""":math:`(x_b - x_a) \cdot ((x_c - x_a) \times (x_d - x_a))` for ``atoms`` = (a, b, c, d): its
    sign is the handedness of the centre a with neighbours b, c, d (nm³); mirror images have
    opposite signs (for an amino acid, a = CA and b, c, d = N, C, CB tell L from D)."""
    a, b, c, d = (jnp.asarray(x)[..., i, :] for i in np.asarray(atoms))
    return jnp.sum((b - a) * jnp.cross(c - a, d - a), axis=-1)


def periodic_mask(zmatrix: ZMatrix, q: Float[ArrayLike, "n dim"], spread: float = 0.5) -> np.ndarray:
    r"""Which internal coordinates a flow should treat as periodic: the torsions whose circular
    spread :math:`\sqrt{-2\log R}` on samples ``q`` (rows; :math:`R` the mean resultant length of
    :math:`e^{i\phi}`) exceeds ``spread`` rad (broad or multimodal: rotors, the backbone); the
    narrow torsions, bonds and angles are not."""
    q = np.asarray(q)
    kinds = zmatrix.kinds()
    resultant = np.abs(np.mean(np.exp(1j * q[:, kinds == 2]), axis=0))
    mask = np.zeros(zmatrix.dim, bool)
    mask[kinds == 2] = np.sqrt(-2 * np.log(np.maximum(resultant, 1e-300))) > spread
    return mask



class Standardise(AbstractBijection):
    r"""The fixed affine map from a flow's standardised coordinates u to internal coordinates q:
    :math:`q = \mathrm{loc} + \mathrm{scale}\, u` for bonds and angles,
    :math:`q = \mathrm{wrap}(\mathrm{loc} + \mathrm{scale}\, u)` (to :math:`(-\pi, \pi]`) for torsions,
    with scale 1 for the torsions the flow treats as periodic (then a rotation of the circle,
    exact). For a narrow torsion the map is one-to-one for :math:`|\mathrm{scale}\,u| < \pi`
    only: u beyond (:math:`|u| > \pi/\mathrm{scale}`, over 10 standard deviations for the
    narrow torsions of `periodic_mask`) folds back. :math:`\log|\det| = \sum \log \mathrm{scale}`.
    ``loc`` and ``scale`` are `paramax.NonTrainable`: fixed by the data (`Standardise.from_data`)."""

    loc: Array
    scale: Array
    torsion: tuple[bool, ...] = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    cond_shape: None = eqx.field(static=True, default=None)

    def __init__(self, loc, scale, torsion):
        loc, scale = jnp.asarray(loc), jnp.asarray(scale)
        torsion = np.asarray(torsion, bool)
        if loc.ndim != 1 or loc.shape != scale.shape or torsion.shape != loc.shape:
            raise ValueError(f"Standardise loc, scale and torsion must be 1-D of one length, got "
                             f"{loc.shape}, {scale.shape}, {torsion.shape}")
        if not np.all(np.asarray(scale) > 0):
            raise ValueError("Standardise scale must be positive")
        self.loc, self.scale = paramax.NonTrainable(loc), paramax.NonTrainable(scale)
        self.torsion = tuple(bool(t) for t in torsion)
        self.shape = loc.shape

    @classmethod
    def from_data(cls, zmatrix: ZMatrix, q: Float[ArrayLike, "n dim"], periodic: np.ndarray) -> "Standardise":
        """Mean and standard deviation of each bond and angle, circular mean of each torsion and
        the standard deviation of its wrapped deviation from it (1 for a ``periodic`` one), from
        internal coordinates ``q`` (rows)."""
        q = np.asarray(q, np.float64)
        torsion = zmatrix.kinds() == 2
        mean_direction = np.angle(np.mean(np.exp(1j * q), axis=0))
        loc = np.where(torsion, mean_direction, q.mean(axis=0))
        deviation = np.where(torsion, np.asarray(wrap_angle(q - loc)), q - loc)
        scale = np.where(periodic, 1.0, deviation.std(axis=0))
        return cls(loc, scale, torsion)

    def transform_and_log_det(self, u, condition=None):
        q = self.loc + self.scale * u
        return jnp.where(np.asarray(self.torsion), wrap_angle(q), q), jnp.sum(jnp.log(self.scale))

    def inverse_and_log_det(self, q, condition=None):
        d = q - self.loc
        u = jnp.where(np.asarray(self.torsion), wrap_angle(d), d) / self.scale
        return u, -jnp.sum(jnp.log(self.scale))


def internal_coordinate_flow(
    key: PRNGKeyArray,
    coordinates: InternalCoordinates,
    q: Float[ArrayLike, "n dim"],
    *,
    spread: float = 0.5,
    **coupling,
) -> Flow:
    r"""A Boltzmann generator on the reduced canonical-frame space of a molecule: the `fepy.Flow`
    :math:`\tilde y = f_{\rm IC}(g(h_\theta(z)))` with :math:`z` from `NormalUniform`,
    :math:`h_\theta` a `coupling_flow` (``coupling``: its keyword arguments), :math:`g` the
    `Standardise` map fitted to the internal coordinates ``q`` (rows, e.g. of MD frames) and
    :math:`f_{\rm IC}` the `InternalCoordinates` bijection; the torsions whose circular spread
    on ``q`` exceeds ``spread`` rad are periodic (`periodic_mask`). Its log q is exact."""
    zmatrix = coordinates.zmatrix
    periodic = periodic_mask(zmatrix, q, spread)
    standardise = Standardise.from_data(zmatrix, q, periodic)
    return Flow(Chain([coupling_flow(key, periodic, **coupling), standardise, coordinates]), NormalUniform(periodic))
