r"""Hard rods in one dimension: Percus's exact functional and the exact results it must reproduce.

Rods of length (diameter) σ on a line, kT units, lengths in σ, densities per length.
Percus (J. Stat. Phys. 15, 505 (1976)) gave the exact excess free energy

.. math:: \beta F_{exc}[\rho] = \int \Phi(x)\,dx, \qquad \Phi = -n_0 \ln(1 - n_1),

.. math:: n_0(x) = \tfrac12\big[\rho(x - R) + \rho(x + R)\big], \qquad
          n_1(x) = \int_{x-R}^{x+R} \rho(x')\,dx', \qquad R = \sigma/2,

so that DFT with it is exact for any external potential. Its bulk limit is the Tonks gas
(Phys. Rev. 50, 955 (1936)), with packing :math:`\eta = \rho\sigma`:

.. math:: \beta f_{exc} = -\rho\ln(1 - \eta), \quad
          \beta\mu_{exc} = -\ln(1 - \eta) + \frac{\eta}{1 - \eta}, \quad
          \beta p = \frac{\rho}{1 - \eta},

and its second functional derivative in bulk is the exact direct correlation function

.. math:: c(x) = -\Theta(\sigma - |x|)\Big[\frac{1}{1 - \eta} + \frac{\rho(\sigma - |x|)}{(1 - \eta)^2}\Big].

At a hard wall that stops the rod centres at x = 0, in contact with bulk at pressure p,
the gaps between the wall and the first rod and between successive rods are independent
and exponential with rate βp (the isobaric ensemble), so rod k (k = 0, 1, ...) sits at
kσ plus a Gamma(k + 1, βp) distance and the exact profile is

.. math:: \rho(x) = \sum_{k \ge 0} \Theta(x - k\sigma)\,
          \frac{(\beta p)^{k+1} (x - k\sigma)^k}{k!}\,e^{-\beta p (x - k\sigma)},

with contact value :math:`\rho(0^+) = \beta p` (the contact theorem) and
:math:`\rho(\infty) = \rho_b`. The rods' positions plus σ form a renewal process with
spacings :math:`T = \sigma + E`, :math:`E \sim \mathrm{Exp}(\beta p)`, so by the renewal
theorem the adsorption is

.. math:: \Gamma = \int_0^\infty (\rho - \rho_b)\,dx = \sigma\rho_b + \frac{\rho_b^2}{2(\beta p)^2} - \frac12

(0 for the ideal gas, 1/2 at close packing).
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float
from scipy.special import gammaln

from ...families.grid import Grid
from ...physics.convolution import convolve, kernel_weights, pad_stack, point_weights
from ...targets.functional import AbstractExcessFunctional


class HardRods(AbstractExcessFunctional):
    r"""Percus's exact excess functional for hard rods of length ``sigma`` (module docstring), kT.

    On a `fepy.Grid` the density is piecewise linear between the points and
    :math:`n_0, n_1` are exact for it (`fepy.physics.convolution`), so every bulk
    quantity is exact to round-off. βF is the sum of Φ by the grid's cell quadrature
    (`fepy.Grid.cell_quadrature`; the midpoint rule by default) over the grid and, for
    non-periodic grids, over the margins beyond the edges whose weighted densities still
    see the grid's density (the density is extended by twice the kernels' reach), so that
    its gradient is the exact functional derivative of this discretisation.
    """

    sigma: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"HardRods sigma must be finite and > 0, got {self.sigma!r}")

    def weights(self, dx: float, offsets=(0.0,)) -> tuple[np.ndarray, np.ndarray]:
        r"""Exact grid weights of :math:`w_0 = [\delta(x - R) + \delta(x + R)]/2` and :math:`w_1 = \Theta(R - |x|)`
        at each of ``offsets`` τ (σ) from the points: two arrays of shape ``(len(offsets), 2m + 1)``."""
        radius = 0.5 * self.sigma
        w1 = pad_stack([kernel_weights(np.ones_like, radius, dx, offset=tau) for tau in offsets])
        reach = (w1.shape[-1] - 1) // 2
        w0 = np.stack(
            [0.5 * (point_weights(radius - tau, dx, reach) + point_weights(-radius - tau, dx, reach)) for tau in offsets]
        )
        return w0, w1

    def weighted_densities(
        self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk
    ) -> tuple[Float[Array, "*batch m q"], Float[Array, "*batch m q"]]:
        r""":math:`(n_0, n_1)` at the quadrature points of the grid's cells and, unless periodic, of
        the cells within the kernels' reach beyond each edge."""
        w0, w1 = self.weights(grid.dx, tuple(grid.cell_quadrature()[0]))
        reach = (w1.shape[-1] - 1) // 2
        extended = grid.extend_for_kernels(rho, reach, rho_bulk)
        return convolve(extended, w0), convolve(extended, w1)

    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        r""":math:`\beta F_{exc} = -\int n_0\ln(1 - n_1)\,dx` by the cell quadrature (kT)."""
        n0, n1 = self.weighted_densities(rho, grid, rho_bulk)
        return grid.integrate_cells(-n0 * jnp.log1p(-n1))

    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        r""":math:`\beta f_{exc} = -\rho\ln(1 - \rho\sigma)` (kT per σ)."""
        rho = jnp.asarray(rho, float)
        return -rho * jnp.log1p(-rho * self.sigma)

    def max_density(self) -> float:
        """Close packing, 1/σ: Φ diverges as :math:`n_1 \\to 1`."""
        return 1.0 / self.sigma


def tonks_pressure(rho: ArrayLike, sigma: float = 1.0) -> Array:
    r"""Exact :math:`\beta p = \rho/(1 - \rho\sigma)` of the hard-rod fluid (kT per σ)."""
    rho = jnp.asarray(rho, float)
    return rho / (1.0 - rho * sigma)


def tonks_density(beta_pressure: ArrayLike, sigma: float = 1.0) -> Array:
    r"""The bulk density of the hard-rod fluid at pressure βp, :math:`\rho = \beta p/(1 + \beta p\sigma)`
    (the inverse of `tonks_pressure`), per σ."""
    beta_pressure = jnp.asarray(beta_pressure, float)
    return beta_pressure / (1.0 + beta_pressure * sigma)


def tonks_excess_chemical_potential(rho: ArrayLike, sigma: float = 1.0) -> Array:
    r"""Exact :math:`\beta\mu_{exc} = -\ln(1 - \eta) + \eta/(1 - \eta)`, :math:`\eta = \rho\sigma` (kT)."""
    eta = jnp.asarray(rho, float) * sigma
    return -jnp.log1p(-eta) + eta / (1.0 - eta)


def direct_correlation(x: ArrayLike, rho: ArrayLike, sigma: float = 1.0) -> Array:
    r"""Exact bulk :math:`c(x) = -\Theta(\sigma - |x|)[1/(1-\eta) + \rho(\sigma - |x|)/(1-\eta)^2]` (dimensionless).

    At :math:`|x| = \sigma`, where c jumps by :math:`1/(1-\eta)`, it returns the mean of both sides.
    """
    x, rho = jnp.abs(jnp.asarray(x, float)), jnp.asarray(rho, float)
    eta = rho * sigma
    inside = 1.0 / (1.0 - eta) + rho * (sigma - x) / (1.0 - eta) ** 2
    step = jnp.where(x < sigma, 1.0, jnp.where(x == sigma, 0.5, 0.0))
    return -step * inside


def wall_density(x: ArrayLike, beta_pressure: float, sigma: float = 1.0) -> np.ndarray:
    r"""Exact density (per σ) at a distance x ≥ 0 from the contact plane of a hard wall (module docstring).

    ``beta_pressure`` is the bulk βp (`tonks_pressure`); ρ(0) = βp and ρ(∞) = βp/(1 + βpσ).
    Evaluated in NumPy as a sum of Gamma densities in log form (a reference, not traced).
    """
    x = np.asarray(x, float)
    if not (np.isfinite(beta_pressure) and beta_pressure > 0):
        raise ValueError(f"beta_pressure must be finite and > 0, got {beta_pressure!r}")
    if np.any(x < 0):
        raise ValueError("wall_density needs x >= 0 (distance from the contact plane)")
    k = np.arange(int(np.max(x, initial=0.0) // sigma) + 1)[:, None]
    t = x[None] - k * sigma
    positive = t > 0
    t_safe = np.where(positive, t, 1.0)
    log_pdf = (k + 1) * np.log(beta_pressure) + k * np.log(t_safe) - beta_pressure * t_safe - gammaln(k + 1)
    terms = np.where(positive, np.exp(log_pdf), 0.0)
    terms[0] = beta_pressure * np.exp(-beta_pressure * x)  # k = 0 includes x = 0
    return terms.sum(axis=0)


def wall_adsorption(beta_pressure: float, sigma: float = 1.0) -> float:
    r"""Exact adsorption :math:`\Gamma = \sigma\rho_b + \rho_b^2/(2(\beta p)^2) - 1/2` at a hard wall
    (module docstring), with :math:`\rho_b = \beta p/(1 + \beta p\sigma)` (rods per wall)."""
    rho_b = beta_pressure / (1.0 + beta_pressure * sigma)
    return sigma * rho_b + rho_b**2 / (2.0 * beta_pressure**2) - 0.5
