r"""Densities on a uniform 1-D grid: the family of classical density functional theory.

Lengths are in particle diameters :math:`\sigma`, densities in :math:`\sigma^{-d}` (1-D rods:
per length; 3-D planar geometry: per volume, varying along z only).
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._validate import is_concrete

Side = Literal["periodic", "bulk", "empty"]
_SIDES = ("periodic", "bulk", "empty")


class Grid(eqx.Module):
    r"""Cell-centred points :math:`x_i = (i + \tfrac12)\,dx`, :math:`i = 0 \dots n-1`, on :math:`[0, n\,dx)`.

    Each edge says what lies beyond it:

    - ``"periodic"`` (both edges): the grid wraps around;
    - ``"bulk"``: the fluid continues at the bulk density :math:`\rho_b` of the chemical
      potential, and particles may flow through the edge (an open system);
    - ``"empty"``: nothing (density 0) and no flux: a hard wall at the edge.

    Hard walls inside the grid are regions where the external potential is ``+inf``.

    At an ``"empty"`` edge the density falls linearly from the first point to 0 at -dx/2
    (each point keeps its whole hat function). This is deliberate: every point then weighs
    one cell in the weighted densities, as in the midpoint ideal-gas term, so the
    Euler-Lagrange equation is consistent at the first points, and at the points the
    weighted densities equal those of the density cut at the contact plane to O(dx²)
    when R/dx is whole. A density extrapolated linearly to the contact plane and cut
    there makes the first two points weigh 9/8 and 7/8 of a cell: an O(1) error in their
    chemical potential (hard rods at η = 0.8, dx = 0.02: contact density 0.007 βp, or 2.1 βp
    with the ideal-gas term weighted alike, against 1.15 βp here).

    Between the points the density is piecewise linear (`fepy.physics.convolution`), so
    weighted densities are exact anywhere in a cell. Local terms (ideal gas, external
    potential, `integrate`) take the midpoint rule; the free-energy density of a
    weighted-density functional, :math:`\int\Phi(n(x))\,dx`, takes the
    ``quadrature``-point Gauss-Legendre rule on each cell (`cell_quadrature`; 1, the
    default, is the midpoint rule), at the cost of one set of convolutions per point.
    More points pay where Φ varies on scales below dx: hard rods at a dense wall, where
    :math:`1 - n_1 \approx e^{-\beta p\sigma} + \beta p\,s` at a distance s past x = R (the
    window's edge on the contact plane) grows by orders of magnitude within one cell, so
    that the midpoint rule misjudges the force on the first layer by O(1) until
    dx ≪ e^{-βpσ}/βp. Measured ρ(0⁺)/βp - 1 at η = 0.85 for dx = 0.02, 0.01, 0.005, 0.0025:
    +26.5, +26.4, +22.8, +15.6 % with 1 point; -2.7, -1.7, -1.0, -0.55 % with 4;
    -1.5, -0.76, -0.38, -0.17 % with 8 (more in ``models/hard_rods_wall.py``).
    """

    n: int = eqx.field(static=True)
    dx: float = eqx.field(static=True)
    left: Side = eqx.field(static=True, default="periodic")
    right: Side = eqx.field(static=True, default="periodic")
    quadrature: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 2:
            raise ValueError(f"Grid n must be an integer >= 2, got {self.n!r}")
        if not (np.isfinite(self.dx) and self.dx > 0):
            raise ValueError(f"Grid spacing dx must be finite and > 0, got {self.dx!r}")
        for name in ("left", "right"):
            if getattr(self, name) not in _SIDES:
                raise ValueError(f"Grid {name} must be one of {_SIDES}, got {getattr(self, name)!r}")
        if (self.left == "periodic") != (self.right == "periodic"):
            raise ValueError("a periodic Grid is periodic at both edges")
        q = self.quadrature
        if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 1:
            raise ValueError(f"Grid quadrature (points per cell) must be an integer >= 1, got {q!r}")

    @property
    def length(self) -> float:
        return self.n * self.dx

    @property
    def periodic(self) -> bool:
        return self.left == "periodic"

    @property
    def points(self) -> Float[Array, " n"]:
        """Cell centres :math:`x_i` (σ)."""
        return (jnp.arange(self.n) + 0.5) * self.dx

    def integrate(self, f: Float[Array, "*batch n"]) -> Float[Array, "*batch"]:
        r""":math:`\int f\,dx \approx \sum_i f_i\,dx` (midpoint rule) along the last axis."""
        return jnp.sum(f, axis=-1) * self.dx

    def cell_quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Offsets :math:`\tau_q` (σ) from the cell centre and weights :math:`w_q` (summing to 1) of
        the ``quadrature``-point Gauss-Legendre rule on a cell: :math:`\int_{x_i - dx/2}^{x_i + dx/2} f
        \approx dx\sum_q w_q f(x_i + \tau_q)`, exact for polynomials of degree 2·quadrature - 1."""
        nodes, weights = np.polynomial.legendre.leggauss(self.quadrature)
        return 0.5 * self.dx * nodes, 0.5 * weights

    def integrate_cells(self, f: Float[Array, "*batch m q"]) -> Float[Array, "*batch"]:
        r""":math:`\sum_i dx \sum_q w_q f(x_i + \tau_q)` (`cell_quadrature`): ``f`` at the rule's points of each cell."""
        _, weights = self.cell_quadrature()
        return jnp.sum(f @ jnp.asarray(weights, f.dtype), axis=-1) * self.dx

    def extend(self, rho: Float[Array, "*batch n"], width: int, rho_bulk) -> Float[Array, "*batch n+2*width"]:
        """``rho`` with ``width`` points added on each side as the edges say (wrap, bulk, zero)."""
        if width == 0:
            return rho
        if self.periodic:
            return jnp.concatenate([rho[..., -width:], rho, rho[..., :width]], axis=-1)
        rho_bulk = jnp.broadcast_to(jnp.asarray(rho_bulk, rho.dtype), rho.shape[:-1])[..., None]
        pads = []
        for side in (self.left, self.right):
            value = rho_bulk if side == "bulk" else jnp.zeros_like(rho_bulk)
            pads.append(jnp.broadcast_to(value, (*rho.shape[:-1], width)))
        return jnp.concatenate([pads[0], rho, pads[1]], axis=-1)


    def extend_for_kernels(self, rho: Float[Array, "*batch n"], reach: int, rho_bulk) -> Array:
        """``rho`` extended for kernels of half-width ``reach`` points: convolving it gives the
        weighted densities on the integration domain of a local functional, the grid itself if
        periodic, else the grid plus ``reach`` points beyond each edge (whose weighted
        densities still see the grid's density, so that the free energy's gradient is the
        exact functional derivative)."""
        return self.extend(rho, reach if self.periodic else 2 * reach, rho_bulk)


# the cubic through the first four cell centres (dx/2, 3dx/2, ...) extrapolated to the edge
_EDGE_WEIGHTS = np.array([35.0, -35.0, 21.0, -5.0]) / 16.0


def contact_density(rho: Float[Array, "*batch n"], side: str = "left") -> Float[Array, "*batch"]:
    r"""The density at a grid edge, e.g. :math:`\rho(0^+)` at a hard wall, from the cell centres.

    The cell centres lie dx/2, 3dx/2, ... from the edge; the cubic through the first
    four is extrapolated to it, (35ρ₀ - 35ρ₁ + 21ρ₂ - 5ρ₃)/16, with an error O(dx⁴) for a
    smooth profile; the discretisation error of the solved profile itself remains.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    edge = rho[..., :4] if side == "left" else rho[..., :-5:-1]
    return edge @ jnp.asarray(_EDGE_WEIGHTS, rho.dtype)


class GridDensity(eqx.Module):
    r"""The family :math:`q = \rho(x)` of DFT: a density profile on a `Grid`.

    ``rho`` has shape ``(*batch, n)``: leading axes are independent profiles (one per
    external potential or chemical potential of a batched `fepy.GrandPotential`).
    """

    rho: Float[Array, "*batch n"]
    grid: Grid

    def __check_init__(self):
        if self.rho.ndim < 1 or self.rho.shape[-1] != self.grid.n:
            raise ValueError(f"GridDensity rho must have shape (*batch, {self.grid.n}), got {self.rho.shape}")
        if is_concrete(self.rho):
            rho = np.asarray(self.rho)
            if not np.all(np.isfinite(rho)) or np.any(rho < 0):
                raise ValueError("GridDensity rho must be finite and >= 0")

    @property
    def dim(self) -> int:
        return self.grid.n

    def contact_density(self, side: str = "left") -> Float[Array, "*batch"]:
        """The density extrapolated to the ``side`` edge (`contact_density`)."""
        return contact_density(self.rho, side)

    def number(self) -> Float[Array, "*batch"]:
        r"""Particle number :math:`N = \int\rho\,dx` (per unit area in 3-D planar geometry)."""
        return self.grid.integrate(self.rho)
