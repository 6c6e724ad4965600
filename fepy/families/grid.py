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
    """

    n: int = eqx.field(static=True)
    dx: float = eqx.field(static=True)
    left: Side = eqx.field(static=True, default="periodic")
    right: Side = eqx.field(static=True, default="periodic")

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
