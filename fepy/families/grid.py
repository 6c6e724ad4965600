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

    def number(self) -> Float[Array, "*batch"]:
        r"""Particle number :math:`N = \int\rho\,dx` (per unit area in 3-D planar geometry)."""
        return self.grid.integrate(self.rho)
