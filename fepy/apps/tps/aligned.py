r"""Transition paths of a molecule in the frame of a reference structure: flat potential, control, end state.

A molecular configuration is flattened to :math:`x \in \mathbb{R}^{3N}` (nm) for `fepy.PathMeasure`.
Everything here is invariant (or equivariant) under rigid motions through Kabsch superposition
onto a fixed reference structure :math:`y` (`fepy.apps.tps.molecular`): with :math:`R(x), t(x)`
the rotation and shift that best superpose the ``fit`` atoms of :math:`x` onto those of :math:`y`,

* `AlignedForce` is a control network
  :math:`b(x) = R^T\big[g(d/\ell) - k\,d_\text{fit}\big]`, :math:`d = Rx + t - y`: an MLP :math:`g`
  sees the aligned displacement from :math:`y` (in units of :math:`\ell`), a spring of stiffness
  :math:`k` (trained with :math:`g`) pulls the ``fit`` atoms towards :math:`y` (not the light
  hydrogens, whose control cost per unit force is 12 times a carbon's), and the force is rotated back, so
  :math:`b(Qx + c) = Q\,b(x)` for any rotation :math:`Q` and shift :math:`c` (TPS-DPS's
  ``BiasForce`` is built the same way: ``bias="force"`` is :math:`g`, ``bias="scale"`` a
  learned per-atom spring). The spring is the time-independent analogue of a steered-MD start
  (`fepy.Steered`): with it the first paths already reach :math:`y`, where the terminal cost's
  gradient is informative; training then bends them into low-energy valleys;
* `AlignedEndState` has the terminal cost
  :math:`\varphi(x) = \sum_{i \in \text{fit}} |R x_i + t - y_i|^2 / (2 w^2)` (:math:`k_BT`),
  i.e. :math:`n_\text{fit}\,\mathrm{RMSD}^2/(2w^2)`, a Gaussian of width :math:`w` per coordinate in
  aligned coordinates (TPS-DPS's relaxed indicator, which averages instead of sums), and counts a
  path as arrived when its backbone dihedrals are within 0.75 rad of :math:`y`'s (THP criterion).

The reference structure is data, not a parameter: it sits behind ``stop_gradient``, so an
optimiser sees a zero gradient for it (Adam then leaves it unchanged).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ...targets.path import AbstractEndState
from .metrics import HIT_RADIUS, dihedral_hit
from .molecular import kabsch, rmsd


def _indices(atoms, n: int, name: str) -> tuple[int, ...]:
    index = tuple(int(i) for i in np.asarray(atoms).ravel())
    if len(index) < 3 or min(index) < 0 or max(index) >= n:
        raise ValueError(f"{name} must be at least 3 atom indices in [0, {n}), got {index}")
    return index


class FlatPotential(eqx.Module):
    """U(x) of a flat configuration ``x`` of shape ``(3 atoms,)``, from an energy of ``(atoms, 3)`` positions."""

    energy: eqx.Module  # e.g. fepy.apps.tps.MolecularPotential (its .energy method is used)

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        return self.energy.energy(x.reshape(-1, 3))


class AlignedForce(eqx.Module):
    r"""A rotation-equivariant force network :math:`b(x) = R^T[g(d/\ell) - k d_\text{fit}]`, :math:`d = Rx + t - y` (module docstring).

    Attributes:
        network: :math:`g`, a map from ``3 atoms`` inputs to ``3 atoms`` outputs.
        reference: :math:`y`, shape ``(atoms, 3)`` (nm); not trained.
        fit: the atoms whose superposition defines R and t (e.g. the heavy atoms).
        stiffness: :math:`k` (force units of the output per nm; `fepy.Control` multiplies the
            output by its ``scale``, so the spring constant is ``scale * k`` energy/nm²); trained.
        length: :math:`\ell`, the input length unit (nm).
    """

    network: eqx.Module
    reference: Float[Array, "atoms 3"]
    fit: tuple[int, ...] = eqx.field(static=True)
    stiffness: Float[Array, ""]
    length: float = 0.1

    def __check_init__(self):
        if not float(self.length) > 0:
            raise ValueError(f"AlignedForce length must be > 0, got {self.length}")

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        y = jax.lax.stop_gradient(self.reference)
        xyz = x.reshape(y.shape)
        fit = np.asarray(self.fit)
        rotation, shift = kabsch(xyz[fit], y[fit])
        d = xyz @ rotation.T + shift - y
        spring = jnp.zeros_like(d).at[fit].set(d[fit])
        g = self.network((d / self.length).ravel()).reshape(y.shape) - self.stiffness * spring
        return (g @ rotation).ravel()

    @classmethod
    def mlp(
        cls,
        reference: Float[ArrayLike, "atoms 3"],
        fit: Int[ArrayLike, " k"],
        *,
        key: PRNGKeyArray,
        width: int = 128,
        depth: int = 3,
        stiffness: float = 0.0,
        length: float = 0.1,
        activation=jax.nn.silu,
    ) -> "AlignedForce":
        """An MLP :math:`g` whose last layer starts at zero, so that training starts from the spring
        of stiffness :math:`k` = ``stiffness`` alone (0: from the reference dynamics)."""
        reference = jnp.asarray(reference)
        if reference.ndim != 2 or reference.shape[1] != 3:
            raise ValueError(f"AlignedForce reference must have shape (atoms, 3), got {reference.shape}")
        dim = reference.size
        net = eqx.nn.MLP(dim, dim, width, depth, activation=activation, key=key)
        last = net.layers[-1]
        net = eqx.tree_at(lambda n: (n.layers[-1].weight, n.layers[-1].bias), net,
                          (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        fit = _indices(fit, reference.shape[0], "AlignedForce fit")
        return cls(net, reference, fit, jnp.asarray(stiffness, reference.dtype), length)


class AlignedEndState(AbstractEndState):
    r"""Arrival at a molecular structure: Gaussian terminal cost in aligned coordinates, dihedral hit test.

    Attributes:
        reference: :math:`y`, shape ``(atoms, 3)`` (nm).
        fit: the atoms superposed and scored by the cost (e.g. the heavy atoms).
        width: :math:`w` (nm), the per-coordinate width of the Gaussian.
        phi, psi: the atom indices of the backbone dihedrals of the hit test.
        radius: the hit test's radius in the (phi, psi) plane (rad; 0.75 as in PIPS/TPS-DPS).
    """

    reference: Float[Array, "atoms 3"]
    fit: tuple[int, ...] = eqx.field(static=True)
    width: float
    phi: tuple[int, ...] = eqx.field(static=True)
    psi: tuple[int, ...] = eqx.field(static=True)
    radius: float = HIT_RADIUS

    def __init__(self, reference, fit, width, phi, psi, radius=HIT_RADIUS):
        self.reference = jnp.asarray(reference)
        if self.reference.ndim != 2 or self.reference.shape[1] != 3:
            raise ValueError(f"AlignedEndState reference must have shape (atoms, 3), got {self.reference.shape}")
        n = self.reference.shape[0]
        self.fit = _indices(fit, n, "AlignedEndState fit")
        self.phi, self.psi = (_indices(a, n, f"AlignedEndState {s}") for a, s in ((phi, "phi"), (psi, "psi")))
        if len(self.phi) != 4 or len(self.psi) != 4:
            raise ValueError("AlignedEndState phi and psi must be 4 atom indices each")
        for name, value in (("width", width), ("radius", radius)):
            if not float(value) > 0:
                raise ValueError(f"AlignedEndState {name} must be > 0, got {value}")
        self.width, self.radius = float(width), float(radius)

    def cost(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        fit = np.asarray(self.fit)
        y = jax.lax.stop_gradient(self.reference)
        return len(self.fit) * rmsd(x.reshape(y.shape)[fit], y[fit]) ** 2 / (2 * self.width**2)

    def hit(self, x: Float[Array, " dim"]) -> Bool[Array, ""]:
        return dihedral_hit(x, jax.lax.stop_gradient(self.reference), self.phi, self.psi, self.radius)
