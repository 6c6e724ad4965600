r"""Mean-field Lennard-Jones attraction with the Weeks-Chandler-Andersen split (kT, lengths in σ).

The Lennard-Jones potential :math:`u(r) = 4\varepsilon[(\sigma/r)^{12} - (\sigma/r)^6]` is split
at its minimum :math:`r_m = 2^{1/6}\sigma` (Weeks, Chandler & Andersen, J. Chem. Phys. 54,
5237 (1971)) into a repulsive core, left to a hard-sphere functional, and the attraction

.. math:: u_{att}(r) = \begin{cases} -\varepsilon & r < r_m \\ u(r) & r_m \le r < r_c \\
          0 & r \ge r_c, \end{cases}

truncated (not shifted) at the cutoff :math:`r_c`. Its mean-field (random-phase) excess
free energy per unit area in planar geometry is

.. math:: \beta F_{att}[\rho] = \frac{1}{2}\iint \rho(z)\,\rho(z')\,\beta\Phi_{att}(z - z')\,dz\,dz',
          \qquad \Phi_{att}(z) = 2\pi\int_{|z|}^{\infty} r\,u_{att}(r)\,dr,

the pair potential integrated over the plane at height z (:math:`r^2 = s^2 + z^2`,
:math:`s\,ds = r\,dr`). With :math:`H(r) = \varepsilon\sigma^2[(\sigma/r)^4 - \tfrac25(\sigma/r)^{10}]`,
an antiderivative of :math:`r\,u(r)`, it is in closed form

.. math:: \Phi_{att}(z) = 2\pi\begin{cases}
          -\tfrac{\varepsilon}{2}(r_m^2 - z^2) + H(r_c) - H(r_m) & |z| < r_m \\
          H(r_c) - H(|z|) & r_m \le |z| < r_c \\ 0 & |z| \ge r_c, \end{cases}

and :math:`\int\Phi_{att}\,dz = \int u_{att}\,d^3r
= 4\pi\varepsilon\sigma^3\big[-\tfrac{\sqrt2}{3} - \tfrac{10}{9\sqrt2}
+ \tfrac43(\sigma/r_c)^3 - \tfrac49(\sigma/r_c)^9\big]`, which is
:math:`-\tfrac{32\sqrt2}{9}\pi\varepsilon\sigma^3` without a cutoff. Energies below are in ε,
lengths in σ; the temperature is :math:`T^* = kT/\varepsilon`.

**Cut and shifted** (``shift=True``): the potential :math:`u - u(r_c)` inside :math:`r_c`, the fluid
simulated by `fepy.apps.dft.bulk_lj` and the GCMC, has the same WCA core
(:math:`u + \varepsilon` below :math:`r_m`) and the attraction :math:`u_{att} - u(r_c)` for
:math:`r < r_c`, which adds :math:`-\pi u(r_c)(r_c^2 - z^2)` to :math:`\Phi_{att}` for
:math:`|z| < r_c` and :math:`-\tfrac{4\pi}{3}r_c^3 u(r_c)` to its integral (:math:`u(r_c) < 0`:
the shift weakens the attraction, by 7 % at :math:`r_c = 2.5\sigma`).
"""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ...families.grid import Grid
from ...physics.convolution import convolve, kernel_weights
from ...targets.functional import AbstractExcessFunctional

R_MIN = 2.0 ** (1.0 / 6.0)
"""The minimum of the Lennard-Jones potential, :math:`r_m = 2^{1/6}\\sigma`, where WCA splits it."""


def _h(r: ArrayLike) -> ArrayLike:
    """An antiderivative of r u(r) for the full LJ potential (ε = σ = 1); 0 at r = inf."""
    return r**-4.0 - 0.4 * r**-10.0


def _shift(cutoff: float, shift: bool) -> float:
    """:math:`u(r_c)` (ε) when the potential is shifted by it, else 0 (also without a cutoff)."""
    return 4.0 * (cutoff**-12.0 - cutoff**-6.0) if shift and math.isfinite(cutoff) else 0.0


def planar_kernel(z: ArrayLike, cutoff: float = math.inf, shift: bool = False) -> np.ndarray:
    r""":math:`\Phi_{att}(z) = 2\pi\int_{|z|}^\infty r\,u_{att}(r)\,dr` (ε σ², module docstring), NumPy;
    ``shift``: of the cut-and-shifted potential."""
    z = np.abs(np.asarray(z, float))
    tail = _h(cutoff)  # 0 without a cutoff (inf)
    core = -0.5 * (R_MIN**2 - z**2) + tail - _h(R_MIN)
    outer = tail - _h(np.maximum(z, R_MIN))
    kernel = 2.0 * np.pi * np.where(z < R_MIN, core, np.where(z < cutoff, outer, 0.0))
    u_cut = _shift(cutoff, shift)
    return kernel - np.pi * u_cut * np.where(z < cutoff, cutoff**2 - z**2, 0.0) if u_cut else kernel


def integrated_attraction(cutoff: float = math.inf, shift: bool = False) -> float:
    r""":math:`\int u_{att}\,d^3r = \int\Phi_{att}\,dz` (ε σ³), closed form (module docstring);
    ``shift``: of the cut-and-shifted potential."""
    tail = (4.0 / 3.0) * cutoff**-3.0 - (4.0 / 9.0) * cutoff**-9.0  # 0 without a cutoff (inf)
    u_cut = _shift(cutoff, shift)
    shifted = -(4.0 * math.pi / 3.0) * cutoff**3 * u_cut if u_cut else 0.0
    return 4.0 * math.pi * (-math.sqrt(2.0) / 3.0 - 10.0 / (9.0 * math.sqrt(2.0)) + tail) + shifted


class MeanFieldAttraction(AbstractExcessFunctional):
    r"""The WCA attraction of the Lennard-Jones fluid in mean field (module docstring), kT units.

    Add it to a hard-sphere functional for the whole fluid,
    ``FMT(white_bear_ii) + MeanFieldAttraction(temperature=1.5)``.

    Attributes:
        temperature: :math:`T^* = kT/\varepsilon` (> 0).
        cutoff: :math:`r_c` in σ, beyond :math:`r_m = 2^{1/6}`; finite, since the kernel
            has to fit on a grid (`integrated_attraction` and `planar_kernel` also take
            ``inf``).
        shift: the attraction of the potential cut and shifted at r_c (module docstring),
            the fluid of `fepy.apps.dft.bulk_lj` and of the GCMC; default: cut only.

    On a `fepy.Grid` the density is piecewise linear and the convolution with
    :math:`\Phi_{att}` is exact for it (`fepy.physics.convolution.kernel_weights`, with
    :math:`r_m` as a breakpoint of the quadrature), so the bulk limit is exact to round-off.
    βF is :math:`\tfrac12\sum_i\rho_i\,(\beta\Phi_{att}*\rho)_i\,dz` over the grid and, unless
    periodic, over the :math:`r_c` wide margins beyond its edges, whose density (bulk or
    0) interacts with the grid's; its gradient is the exact functional derivative
    :math:`(\beta\Phi_{att}*\rho)_i` of this discretisation.
    """

    temperature: float = eqx.field(static=True)
    cutoff: float = eqx.field(static=True, default=2.5)
    shift: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature T* = kT/epsilon must be finite and > 0, got {self.temperature!r}")
        if not (np.isfinite(self.cutoff) and self.cutoff > R_MIN):
            raise ValueError(f"cutoff must be finite and > 2^(1/6) = {R_MIN:.4f}, got {self.cutoff!r}")

    def weights(self, dx: float) -> np.ndarray:
        r"""Exact grid weights of :math:`\beta\Phi_{att}` at spacing ``dx``."""
        return kernel_weights(
            lambda z: planar_kernel(z, self.cutoff, self.shift) / self.temperature, self.cutoff, dx,
            breaks=(-R_MIN, R_MIN),
        )

    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        r""":math:`\beta F_{att} = \tfrac12\sum_i \rho_i\,(\beta\Phi_{att} * \rho)_i\,dz` (kT per σ²)."""
        weights = self.weights(grid.dx)
        reach = (len(weights) - 1) // 2
        if grid.periodic:
            return 0.5 * grid.integrate(rho * convolve(grid.extend(rho, reach, rho_bulk), weights))
        potential = convolve(grid.extend(rho, 2 * reach, rho_bulk), weights)
        return 0.5 * grid.integrate(grid.extend(rho, reach, rho_bulk) * potential)

    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        r""":math:`\beta f_{att} = \tfrac12\rho^2\int\beta u_{att}\,d^3r` (kT per σ³)."""
        rho = jnp.asarray(rho, float)
        return 0.5 * rho**2 * integrated_attraction(self.cutoff, self.shift) / self.temperature
