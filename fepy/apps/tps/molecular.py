r"""Molecular geometry in JAX: bond and dihedral angles, placing an atom from internal coordinates,
Kabsch superposition and RMSD (nm, rad).

The dihedral of atoms (a, b, c, d) is the IUPAC angle φ in (-π, π] between the planes
(a, b, c) and (b, c, d), positive when, looking along b → c, the bond b-a turns clockwise
onto c-d (OpenMM's ``PeriodicTorsionForce`` convention), computed without regularisers as

.. math:: \phi = \operatorname{atan2}\big(|b_2|\, b_1 \cdot (b_2 \times b_3),\;
          (b_1 \times b_2) \cdot (b_2 \times b_3)\big), \qquad
          b_1 = x_b - x_a,\ b_2 = x_c - x_b,\ b_3 = x_d - x_c.

(``jax_md.mm_forcefields.base.compute_dihedral`` computes the same angle but adds 1e-10
to the components of b_2 and to the cosine term, absolute offsets tuned for Å that bias
a torsion energy in nm by 2.7e-9 relative on alanine dipeptide.)

The backbone dihedrals of residue i of a protein chain are φ_i = C(i-1)-N-CA-C and
ψ_i = N-CA-C-N(i+1); for alanine dipeptide (ACE-ALA-NME) that is one pair,
φ = C(ACE)-N-CA-C and ψ = N-CA-C-N(NME).

The RMSD after optimal superposition is

.. math:: \mathrm{RMSD}(x, y) = \min_{R \in SO(3),\, t}
          \Big(\sum_i w_i |R x_i + t - y_i|^2\Big)^{1/2}, \qquad \sum_i w_i = 1,

with weights uniform by default (pass masses for a mass-weighted RMSD). The optimal
translation matches the weighted centroids and the optimal rotation is Kabsch's,
:math:`R = V \operatorname{diag}(1, 1, \operatorname{sign}\det VU^T) U^T` from the SVD
:math:`U S V^T` of the weighted covariance :math:`\sum_i w_i \bar x_i \bar y_i^T` of the
centred coordinates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int


def dihedral(
    x: Float[Array, "atoms 3"], atoms: Int[ArrayLike, "*batch 4"]
) -> Float[Array, "*batch"]:
    """The dihedral angle (rad, in (-π, π]) of each quadruple of atom indices in ``atoms``."""
    p = x[jnp.asarray(atoms)]  # (*batch, 4, 3)
    b1, b2, b3 = (p[..., k + 1, :] - p[..., k, :] for k in range(3))
    n1, n2 = jnp.cross(b1, b2), jnp.cross(b2, b3)
    y = jnp.linalg.norm(b2, axis=-1) * jnp.sum(b1 * n2, axis=-1)
    return jnp.arctan2(y, jnp.sum(n1 * n2, axis=-1))


def bond_angle(x: Float[Array, "atoms 3"], atoms: Int[ArrayLike, "*batch 3"]) -> Float[Array, "*batch"]:
    """The angle (rad, in [0, π]) at the middle atom of each triple, atan2(|a × b|, a · b) (exact
    near 0 and π, where an arccos of the cosine loses half the digits)."""
    p = x[jnp.asarray(atoms)]  # (*batch, 3, 3)
    a, b = p[..., 0, :] - p[..., 1, :], p[..., 2, :] - p[..., 1, :]
    return jnp.arctan2(jnp.linalg.norm(jnp.cross(a, b), axis=-1), jnp.sum(a * b, axis=-1))


def unit(v: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3"]:
    """v / |v| along the last axis; 0 for v = 0 (|v|² is offset by 1e-30, far below any length
    squared in nm² that a molecule has)."""
    return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + 1e-30)


def torsion_frame(xj: Float[Array, "*batch 3"], xk: Float[Array, "*batch 3"],
                  xl: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    r"""The orthonormal frame (rows e_1, e_2, e_3) in which an atom i bonded to j, with angle
    θ = ∠(i, j, k) and dihedral φ(i, j, k, l), lies along
    :math:`\cos\theta\, e_1 + \sin\theta \cos\phi\, e_2 + \sin\theta \sin\phi\, e_3` from j:
    e_1 = unit(x_k - x_j), e_3 = unit(e_1 × (x_k - x_l)), e_2 = e_1 × e_3."""
    axis = unit(xk - xj)
    normal = unit(jnp.cross(axis, xk - xl))
    return jnp.stack([axis, jnp.cross(axis, normal), normal], axis=-2)


def place_atom(xj: Float[Array, "*batch 3"], xk: Float[Array, "*batch 3"], xl: Float[Array, "*batch 3"],
               r: Float[Array, "*batch"], theta: Float[Array, "*batch"],
               phi: Float[Array, "*batch"]) -> Float[Array, "*batch 3"]:
    """The position of atom i with |x_i - x_j| = r (nm), ∠(i, j, k) = θ and dihedral(i, j, k, l) = φ
    (rad): the natural-extension reference frame (NeRF) construction in `torsion_frame`."""
    frame = torsion_frame(xj, xk, xl)
    direction = jnp.stack([jnp.cos(theta), jnp.sin(theta) * jnp.cos(phi), jnp.sin(theta) * jnp.sin(phi)], axis=-1)
    return xj + r[..., None] * jnp.einsum("...k,...kd->...d", direction, frame)


def backbone_dihedral_atoms(
    topology,
) -> tuple[Int[np.ndarray, "residues 4"], Int[np.ndarray, "residues 4"]]:
    """Atom indices of φ = C(i-1)-N-CA-C and ψ = N-CA-C-N(i+1), found by atom name.

    ``topology`` is an ``openmm.app.Topology`` (anything with ``chains()``, each with
    ``residues()``, each with ``atoms()`` having ``name`` and ``index``). One row for each
    residue with atoms N, CA and C whose neighbours in its chain have a C before and an N
    after it; for alanine dipeptide, the ALA.
    """
    phi, psi = [], []
    for chain in topology.chains():
        residues = [{a.name: a.index for a in r.atoms()} for r in chain.residues()]
        for before, here, after in zip(residues, residues[1:], residues[2:]):
            if {"N", "CA", "C"} <= here.keys() and "C" in before and "N" in after:
                phi.append([before["C"], here["N"], here["CA"], here["C"]])
                psi.append([here["N"], here["CA"], here["C"], after["N"]])
    return np.array(phi, np.int32).reshape(-1, 4), np.array(psi, np.int32).reshape(-1, 4)


def _weights(n: int, weights: Float[ArrayLike, " atoms"] | None) -> Float[Array, " atoms"]:
    w = jnp.ones(n) if weights is None else jnp.asarray(weights)
    return w / jnp.sum(w)


def kabsch(
    x: Float[Array, "atoms d"],
    reference: Float[Array, "atoms d"],
    weights: Float[ArrayLike, " atoms"] | None = None,
    *,
    proper: bool = True,
) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
    """The rotation R and translation t that best superpose x onto ``reference``: x @ R.T + t.

    Any dimension d (3 for molecules). ``proper=False`` lets R be any orthogonal matrix,
    reflections included (the orthogonal Procrustes solution :math:`R = VU^T`)."""
    w = _weights(x.shape[0], weights)
    cx, cy = w @ x, w @ reference
    u, _, vt = jnp.linalg.svd(((x - cx) * w[:, None]).T @ (reference - cy))
    d = jnp.sign(jnp.linalg.det(vt.T @ u.T)) if proper else 1.0
    rotation = vt.T @ jnp.diag(jnp.ones(x.shape[1]).at[-1].set(d)) @ u.T
    return rotation, cy - rotation @ cx


def align(
    x: Float[Array, "atoms 3"],
    reference: Float[Array, "atoms 3"],
    weights: Float[ArrayLike, " atoms"] | None = None,
) -> Float[Array, "atoms 3"]:
    """x rotated and translated onto ``reference`` (Kabsch). Its gradient goes through the
    SVD, which is undefined when two singular values coincide (e.g. a linear molecule)."""
    rotation, shift = kabsch(x, reference, weights)
    return x @ rotation.T + shift


def rmsd(
    x: Float[Array, "atoms 3"],
    reference: Float[Array, "atoms 3"],
    weights: Float[ArrayLike, " atoms"] | None = None,
) -> Float[Array, ""]:
    """The RMSD of x from ``reference`` after optimal superposition (module docstring), nm.

    The superposition is a minimiser, so (envelope theorem) the gradient of the RMSD is
    that at fixed R and t: they are held by ``stop_gradient``, which keeps the gradient
    exact and free of the SVD's derivative. At RMSD = 0 the gradient is taken as 0.
    """
    w = _weights(x.shape[0], weights)
    rotation, shift = jax.lax.stop_gradient(kabsch(x, reference, weights))
    msd = w @ jnp.sum((x @ rotation.T + shift - reference) ** 2, axis=-1)
    positive = msd > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, msd, 1.0)), 0.0)


def local_minimum(
    energy, x: Float[ArrayLike, "atoms 3"], *, gtol: float = 1e-3, max_steps: int = 5000
) -> Float[Array, "atoms 3"]:
    r"""The local minimum of ``energy`` reached from ``x`` by L-BFGS (`optax.lbfgs`, zoom line search).

    Stops when the largest force component :math:`\max_i |\partial U/\partial x_i|` is below
    ``gtol`` (kJ/mol/nm for a potential in kJ/mol and nm) or after ``max_steps`` iterations, as
    OpenMM's ``LocalEnergyMinimizer`` (tolerance 10 kJ/mol/nm by default) does. Transition-path
    benchmarks start and end at minimised structures (TPS-DPS's ``minimizeEnergy``), so that the
    path's energies are measured from the basin's bottom, not from a strained crystal structure.
    Raises ``ValueError`` if the minimum is not reached or is not finite.
    """
    x = jnp.asarray(x)
    flat = lambda y: energy(y.reshape(x.shape))
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(flat)

    def step(carry):
        y, state, _ = carry
        value, grad = value_and_grad(y, state=state)
        updates, state = opt.update(grad, state, y, value=value, grad=grad, value_fn=flat)
        return optax.apply_updates(y, updates), state, jnp.max(jnp.abs(grad))

    def running(carry):
        return (carry[2] > gtol) & (optax.tree.get(carry[1], "count") < max_steps)

    y0 = x.ravel()
    y, _, force = jax.jit(lambda y: jax.lax.while_loop(running, step, (y, opt.init(y), jnp.asarray(jnp.inf, y.dtype))))(y0)
    force = float(jnp.max(jnp.abs(jax.grad(flat)(y))))
    if not (np.isfinite(force) and force <= gtol * 10):
        raise ValueError(f"local_minimum: the largest force component is {force:.3g} after {max_steps} L-BFGS steps (gtol {gtol})")
    return y.reshape(x.shape)
