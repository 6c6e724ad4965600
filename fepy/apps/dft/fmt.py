r"""Fundamental measure theory (FMT) for hard spheres in planar geometry (kT, lengths in σ).

The excess free energy per unit area is a local function of weighted densities,

.. math:: \beta F_{exc}[\rho] = \int \Phi\big(n_0, n_1, n_2, n_3, n_{1v}, n_{2v}\big)(z)\,dz,
          \qquad n_\alpha(z) = \int \rho(z')\,w_\alpha(z - z')\,dz',

with, for spheres of radius :math:`R = d/2` and density varying along z only (the 3-D
weights integrated over the plane, Rosenfeld, PRL 63, 980 (1989)),

.. math:: w_3(z) = \pi(R^2 - z^2)\,\Theta(R - |z|), \quad
          w_2(z) = 2\pi R\,\Theta(R - |z|), \quad
          w_{2v}(z) = 2\pi z\,\Theta(R - |z|),

:math:`n_1 = n_2/(4\pi R)`, :math:`n_0 = n_2/(4\pi R^2)` and :math:`n_{1v} = n_{2v}/(4\pi R)`.
:math:`w_{2v}` is the z component of :math:`\hat{\mathbf r}\,\delta(R - r)` with
:math:`\mathbf r` pointing from the sphere's centre z' to z, so :math:`n_{2v} = -dn_3/dz`
(negative where the density rises with z, e.g. next to a wall on the left).

`FMT` takes the free-energy density Φ as a function, `rosenfeld`, `white_bear` or
`white_bear_ii`: the weighted densities, the bulk limit and the grid treatment are the
same for every Φ. In bulk the vector densities vanish and :math:`n_3 = \eta = \pi\rho d^3/6`
is the packing fraction; Rosenfeld's Φ gives the Percus-Yevick compressibility equation
of state, White Bear's and White Bear II's the Carnahan-Starling one (all checked in
``tests/test_dft_fmt.py``); the two White Bears differ away from bulk.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ...families.grid import Grid
from ...physics.convolution import convolve, kernel_weights, pad_stack
from ...targets.functional import AbstractExcessFunctional

Measure = Float[Array, "*shape"]  # a weighted density (or Φ) at each point
Phi = Callable[[Measure, Measure, Measure, Measure, Measure, Measure], Measure]


def rosenfeld(n0: Measure, n1: Measure, n2: Measure, n3: Measure, n1v: Measure, n2v: Measure) -> Measure:
    r"""Rosenfeld's original FMT free-energy density (PRL 63, 980 (1989)), kT per σ³.

    .. math:: \Phi = -n_0\ln(1 - n_3) + \frac{n_1 n_2 - n_{1v} n_{2v}}{1 - n_3}
              + \frac{n_2^3 - 3 n_2 n_{2v}^2}{24\pi(1 - n_3)^2}.
    """
    one_minus = 1.0 - n3
    return (
        -n0 * jnp.log1p(-n3)
        + (n1 * n2 - n1v * n2v) / one_minus
        + (n2**3 - 3.0 * n2 * n2v**2) / (24.0 * jnp.pi * one_minus**2)
    )


# Taylor coefficients (lowest order first) of the White Bear II factors below n3 = _SERIES_BELOW:
# phi2 = sum_j 6 x^j / ((j+2)(j+3)),  phi3 = 1 - sum_{j>=1} 3 x^j / ((j+1)(j+2)(j+3)).
# With 16 terms the truncation error at x = 0.1 is below 1e-18; the closed forms lose
# about 1e-16 / x^3 to cancellation, 1e-13 at x = 0.1.
_SERIES_BELOW, _TERMS = 0.1, 16
_PHI2_SERIES = np.array([6.0 / ((j + 2) * (j + 3)) for j in range(_TERMS)])
_PHI3_SERIES = np.array([1.0] + [-3.0 / ((j + 1) * (j + 2) * (j + 3)) for j in range(1, _TERMS)])


def _white_bear_ii_factors(n3: Measure) -> tuple[Measure, Measure]:
    r""":math:`\phi_2(n_3)` and :math:`\phi_3(n_3)` of White Bear II, both 1 at :math:`n_3 = 0`.

    .. math:: \phi_2 = \frac{6n_3 - 3n_3^2 + 6(1 - n_3)\ln(1 - n_3)}{n_3^3}, \qquad
              \phi_3 = \frac{6n_3 - 9n_3^2 + 6n_3^3 + 6(1 - n_3)^2\ln(1 - n_3)}{4 n_3^3};

    their Taylor series below :math:`n_3 = 0.1`, where the closed forms cancel.
    """
    small = n3 < _SERIES_BELOW
    x = jnp.where(small, 0.5, n3)  # a safe value for the unused branch (no NaN in its gradient)
    log = jnp.log1p(-x)
    phi2 = (6.0 * x - 3.0 * x**2 + 6.0 * (1.0 - x) * log) / x**3
    phi3 = (6.0 * x - 9.0 * x**2 + 6.0 * x**3 + 6.0 * (1.0 - x) ** 2 * log) / (4.0 * x**3)
    series2 = jnp.polyval(jnp.asarray(_PHI2_SERIES[::-1], n3.dtype), n3)
    series3 = jnp.polyval(jnp.asarray(_PHI3_SERIES[::-1], n3.dtype), n3)
    return jnp.where(small, series2, phi2), jnp.where(small, series3, phi3)


_WHITE_BEAR_SERIES = np.array([1.5] + [-2.0 / (j * (j + 1) * (j + 2)) for j in range(1, _TERMS)])


def _white_bear_factor(n3: Measure) -> Measure:
    r""":math:`g(n_3) = [n_3 + (1 - n_3)^2\ln(1 - n_3)]/n_3^2` of White Bear (mark I), 3/2 at :math:`n_3 = 0`;
    below :math:`n_3 = 0.1` its Taylor series :math:`\tfrac32 - \sum_{j\ge1} 2n_3^j/(j(j+1)(j+2))`, where
    the closed form cancels (it loses about 1e-16 / n3, 1e-15 at n3 = 0.1).
    """
    small = n3 < _SERIES_BELOW
    x = jnp.where(small, 0.5, n3)  # a safe value for the unused branch (no NaN in its gradient)
    closed = (x + (1.0 - x) ** 2 * jnp.log1p(-x)) / x**2
    series = jnp.polyval(jnp.asarray(_WHITE_BEAR_SERIES[::-1], n3.dtype), n3)
    return jnp.where(small, series, closed)


def white_bear(n0: Measure, n1: Measure, n2: Measure, n3: Measure, n1v: Measure, n2v: Measure) -> Measure:
    r"""White Bear (mark I) free-energy density (Roth, Evans, Lang & Kahl, J. Phys.: Condens.
    Matter 14, 12063 (2002); Yu & Wu's modified FMT, J. Chem. Phys. 117, 10156 (2002)), kT
    per σ³; its bulk limit is the Carnahan-Starling free energy, like White Bear II's, but
    the functionals differ where the density varies.

    .. math:: \Phi = -n_0\ln(1 - n_3) + \frac{n_1 n_2 - n_{1v} n_{2v}}{1 - n_3}
              + \big(n_2^3 - 3 n_2 n_{2v}^2\big)\,
              \frac{n_3 + (1 - n_3)^2\ln(1 - n_3)}{36\pi n_3^2 (1 - n_3)^2}.
    """
    one_minus = 1.0 - n3
    return (
        -n0 * jnp.log1p(-n3)
        + (n1 * n2 - n1v * n2v) / one_minus
        + _white_bear_factor(n3) * (n2**3 - 3.0 * n2 * n2v**2) / (36.0 * jnp.pi * one_minus**2)
    )


def white_bear_ii(n0: Measure, n1: Measure, n2: Measure, n3: Measure, n1v: Measure, n2v: Measure) -> Measure:
    r"""White Bear II free-energy density (Hansen-Goos & Roth, J. Phys.: Condens. Matter 18,
    8413 (2006)), kT per σ³; its bulk limit is the Carnahan-Starling free energy.

    .. math:: \Phi = -n_0\ln(1 - n_3)
              + \Big(1 + \tfrac19 n_3^2\phi_2(n_3)\Big)\frac{n_1 n_2 - n_{1v} n_{2v}}{1 - n_3}
              + \Big(1 - \tfrac49 n_3\phi_3(n_3)\Big)\frac{n_2^3 - 3 n_2 n_{2v}^2}{24\pi(1 - n_3)^2}.
    """
    phi2, phi3 = _white_bear_ii_factors(n3)
    one_minus = 1.0 - n3
    return (
        -n0 * jnp.log1p(-n3)
        + (1.0 + n3**2 * phi2 / 9.0) * (n1 * n2 - n1v * n2v) / one_minus
        + (1.0 - 4.0 * n3 * phi3 / 9.0) * (n2**3 - 3.0 * n2 * n2v**2) / (24.0 * jnp.pi * one_minus**2)
    )


class FMT(AbstractExcessFunctional):
    r"""Hard spheres of diameter ``diameter`` (σ) by fundamental measure theory, planar geometry.

    Attributes:
        phi: the free-energy density :math:`\Phi(n_0, n_1, n_2, n_3, n_{1v}, n_{2v})`,
            e.g. `white_bear_ii` (default), `white_bear` or `rosenfeld`.
        diameter: the hard-sphere diameter d in σ (1 for the reference fluid; smaller,
            e.g. a Barker-Henderson diameter, for the repulsive core of a soft potential).

    On a `fepy.Grid` the density is piecewise linear between the points and the weighted
    densities are exact for it (`fepy.physics.convolution.kernel_weights`), so bulk
    quantities are exact to round-off. βF is the sum of Φ by the grid's cell quadrature
    (`fepy.Grid.cell_quadrature`; the midpoint rule by default) over the grid and, for
    non-periodic grids, over the margins beyond the edges whose weighted densities still
    see the grid's density (the density is extended by twice the kernels' reach), so that
    its gradient is the exact functional derivative of this discretisation.
    """

    phi: Phi = eqx.field(static=True, default=white_bear_ii)
    diameter: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if not (np.isfinite(self.diameter) and self.diameter > 0):
            raise ValueError(f"FMT diameter must be finite and > 0, got {self.diameter!r}")

    @property
    def radius(self) -> float:
        return 0.5 * self.diameter

    def weights(self, dx: float, offsets=(0.0,)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Exact grid weights of :math:`w_3`, :math:`w_2` and :math:`w_{2v}` at spacing ``dx``, at each of
        ``offsets`` τ (σ) from the points: three arrays of shape ``(len(offsets), 2m + 1)``."""
        r = self.radius
        kernels = (
            lambda z: np.pi * (r**2 - z**2),
            lambda z: np.full_like(z, 2.0 * np.pi * r),
            lambda z: 2.0 * np.pi * z,
        )
        stacked = pad_stack([kernel_weights(w, r, dx, offset=tau) for w in kernels for tau in offsets])
        return tuple(stacked.reshape(len(kernels), len(offsets), -1))

    def _phi(self, n2: Measure, n3: Measure, n2v: Measure) -> Measure:
        r = self.radius
        return self.phi(n2 / (4 * np.pi * r**2), n2 / (4 * np.pi * r), n2, n3, n2v / (4 * np.pi * r), n2v)

    def weighted_densities(
        self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk
    ) -> tuple[Float[Array, "*batch m q"], Float[Array, "*batch m q"], Float[Array, "*batch m q"]]:
        r""":math:`(n_2, n_3, n_{2v})` at the quadrature points of the grid's cells and, unless periodic,
        of the cells within the kernels' reach beyond each edge."""
        w3, w2, w2v = self.weights(grid.dx, tuple(grid.cell_quadrature()[0]))
        reach = (w3.shape[-1] - 1) // 2
        extended = grid.extend_for_kernels(rho, reach, rho_bulk)
        return convolve(extended, w2), convolve(extended, w3), convolve(extended, w2v)

    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        r""":math:`\beta F_{exc} = \int \Phi(n_\alpha(z))\,dz` by the cell quadrature (kT per σ²)."""
        n2, n3, n2v = self.weighted_densities(rho, grid, rho_bulk)
        return grid.integrate_cells(self._phi(n2, n3, n2v))

    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        r""":math:`\Phi` at :math:`n_3 = \pi\rho d^3/6`, :math:`n_2 = \pi\rho d^2`, vectors 0 (kT per σ³)."""
        rho = jnp.asarray(rho, float)
        d = self.diameter
        return self._phi(np.pi * d**2 * rho, np.pi * d**3 / 6.0 * rho, jnp.zeros_like(rho))

    def packing_fraction(self, rho) -> Array:
        r""":math:`\eta = \pi\rho d^3/6`."""
        return np.pi * self.diameter**3 / 6.0 * jnp.asarray(rho, float)

    def max_density(self) -> float:
        r"""The density of packing fraction 1, :math:`6/(\pi d^3)`: Φ diverges as :math:`n_3 \to 1`."""
        return 6.0 / (np.pi * self.diameter**3)
