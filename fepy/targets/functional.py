r"""Grand potentials of inhomogeneous classical fluids: the target of density functional theory.

In kT units (:math:`\beta = 1/kT` absorbed), lengths in particle diameters σ:

.. math:: \beta\Omega[\rho] = \int \rho\,(\ln\rho - 1)\,dx + \beta F_{exc}[\rho]
          + \int \rho\,(\beta V_{ext} - \beta\mu)\,dx,

(the thermal wavelength is set to σ, which only shifts βμ). The equilibrium density
minimises βΩ; it solves the Euler-Lagrange equation
:math:`\rho = \exp(\beta\mu - \beta V_{ext} - \delta\beta F_{exc}/\delta\rho)`.
βΩ is the variational free energy of DFT: F[q] = E_q[H] - T S[q] with q = ρ.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
from jaxtyping import Array, Float

from ..families.grid import Grid


class AbstractExcessFunctional(eqx.Module):
    r"""An excess (over ideal) free energy functional :math:`\beta F_{exc}[\rho]` (kT units).

    Subclasses implement :meth:`free_energy` on a grid and :meth:`bulk_free_energy_density`
    for a uniform fluid; everything else (functional derivative, bulk chemical potential
    and pressure, direct correlation function) follows by automatic differentiation.
    """

    @abc.abstractmethod
    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        r""":math:`\beta F_{exc}[\rho]` of each profile (per unit area in 3-D planar geometry).

        Beyond the grid's edges the density is what the grid says (wrapped, ``rho_bulk``,
        or 0); the free-energy density is integrated over every point whose weighted
        densities depend on the grid's density, so that the derivative with respect to
        each grid point is the exact functional derivative (times dx).
        """

    @abc.abstractmethod
    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        r""":math:`\beta f_{exc}(\rho) = \beta F_{exc}/V` of the uniform fluid at density ρ."""

    def derivative(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch n"]:
        r""":math:`\delta\beta F_{exc}/\delta\rho(x_i) = -c^{(1)}(x_i)` (kT), by autodiff of :meth:`free_energy`."""
        return jax.grad(lambda r: jnp.sum(self.free_energy(r, grid, rho_bulk)))(rho) / grid.dx

    def bulk_chemical_potential(self, rho) -> Array:
        r"""Excess chemical potential :math:`\beta\mu_{exc} = d\beta f_{exc}/d\rho`."""
        rho = jnp.asarray(rho, float)
        return jnp.vectorize(jax.grad(self.bulk_free_energy_density))(rho)

    def bulk_pressure(self, rho) -> Array:
        r""":math:`\beta p = \rho + \rho\,\beta\mu_{exc} - \beta f_{exc}` (ideal plus excess)."""
        rho = jnp.asarray(rho, float)
        return rho + rho * self.bulk_chemical_potential(rho) - self.bulk_free_energy_density(rho)

    def bulk_density(self, beta_mu, rho_max: float | None = None, iterations: int = 60) -> Array:
        r"""The bulk density with :math:`\ln\rho + \beta\mu_{exc}(\rho) = \beta\mu`, by bisection in ln ρ.

        Assumes one root in (0, ``rho_max``) (no coexistence at this βμ). ``rho_max``
        defaults to :meth:`max_density`.
        """
        beta_mu = jnp.asarray(beta_mu, float)
        hi = jnp.full_like(beta_mu, jnp.log(self.max_density() if rho_max is None else rho_max))
        lo = jnp.full_like(beta_mu, -60.0)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            f = mid + self.bulk_chemical_potential(jnp.exp(mid)) - beta_mu
            return jnp.where(f > 0, lo, mid), jnp.where(f > 0, mid, hi)

        lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
        return jnp.exp(0.5 * (lo + hi))

    def max_density(self) -> float:
        """An upper bound of the bulk density (close packing); used by :meth:`bulk_density`."""
        return 10.0

    def __add__(self, other: "AbstractExcessFunctional") -> "SumFunctional":
        """``a + b``: the `SumFunctional` of both (sums are flattened)."""
        if not isinstance(other, AbstractExcessFunctional):
            return NotImplemented
        return SumFunctional(tuple(t for f in (self, other) for t in (f.terms if isinstance(f, SumFunctional) else (f,))))


class SumFunctional(AbstractExcessFunctional):
    r""":math:`\beta F_{exc} = \sum_k \beta F_k`, e.g. hard-sphere repulsion plus a mean-field attraction.

    Made by ``+``; free energies, bulk free-energy densities (hence derivatives, chemical
    potentials and pressures) add, and the bulk density is bounded by the smallest
    :meth:`max_density` of the terms.
    """

    terms: tuple[AbstractExcessFunctional, ...]

    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        return sum(term.free_energy(rho, grid, rho_bulk) for term in self.terms)

    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        return sum(term.bulk_free_energy_density(rho) for term in self.terms)

    def max_density(self) -> float:
        return min(term.max_density() for term in self.terms)


class GrandPotential(eqx.Module):
    r"""The grand potential :math:`\beta\Omega[\rho]` on a grid (module docstring), kT units.

    Attributes:
        grid: the `fepy.Grid` (spacing, what lies beyond the edges).
        excess: the excess functional, or None for an ideal gas.
        beta_external: :math:`\beta V_{ext}(x_i)`, shape ``(*batch, n)`` or ``(n,)``;
            ``+inf`` marks hard walls (no particle centre there).
        beta_mu: :math:`\beta\mu`, shape ``(*batch,)`` or scalar.
        rho_bulk: the bulk density at βμ (the density beyond a ``"bulk"`` edge); use
            `GrandPotential.from_bulk_density` or `GrandPotential.from_chemical_potential`.

    Leading axes of ``beta_external``, ``beta_mu`` and the family's density are
    independent problems solved together (batched solves).
    """

    grid: Grid
    excess: AbstractExcessFunctional | None
    beta_external: Float[Array, "*batch n"]
    beta_mu: Float[Array, "*batch"]
    rho_bulk: Float[Array, "*batch"]

    def __check_init__(self):
        if self.beta_external.shape[-1:] != (self.grid.n,):
            raise ValueError(
                f"GrandPotential beta_external must have shape (*batch, {self.grid.n}), got {self.beta_external.shape}"
            )

    @classmethod
    def from_bulk_density(cls, grid, excess, rho_bulk, beta_external) -> "GrandPotential":
        r"""βμ from the bulk density: :math:`\beta\mu = \ln\rho_b + \beta\mu_{exc}(\rho_b)`."""
        rho_bulk = jnp.asarray(rho_bulk, float)
        beta_mu = jnp.log(rho_bulk) + (0.0 if excess is None else excess.bulk_chemical_potential(rho_bulk))
        return cls(grid, excess, jnp.asarray(beta_external, float), beta_mu, rho_bulk)

    @classmethod
    def from_chemical_potential(cls, grid, excess, beta_mu, beta_external) -> "GrandPotential":
        """The bulk density from βμ (`AbstractExcessFunctional.bulk_density`)."""
        beta_mu = jnp.asarray(beta_mu, float)
        rho_bulk = jnp.exp(beta_mu) if excess is None else excess.bulk_density(beta_mu)
        return cls(grid, excess, jnp.asarray(beta_external, float), beta_mu, rho_bulk)

    @property
    def dim(self) -> int:
        """Number of grid points (the dimension of the density a solver moves)."""
        return self.grid.n

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch axes of the problems: those of ``beta_external``, ``beta_mu`` and ``rho_bulk`` broadcast."""
        return jnp.broadcast_shapes(self.beta_external.shape[:-1], jnp.shape(self.beta_mu), jnp.shape(self.rho_bulk))

    @property
    def allowed(self) -> Array:
        """Where particle centres may be (finite external potential)."""
        return jnp.isfinite(self.beta_external)

    def excess_free_energy(self, rho) -> Array:
        if self.excess is None:
            return jnp.zeros(rho.shape[:-1], rho.dtype)
        return self.excess.free_energy(rho, self.grid, self.rho_bulk)

    def omega(self, rho: Float[Array, "*batch n"]) -> Float[Array, "*batch"]:
        r""":math:`\beta\Omega[\rho]` of each profile (ρ = 0 where the potential is infinite)."""
        finite_v = jnp.where(self.allowed, self.beta_external, 0.0)
        local = xlogy(rho, rho) - rho + rho * (finite_v - jnp.asarray(self.beta_mu)[..., None])
        return self.grid.integrate(local) + self.excess_free_energy(rho)

    def excess_derivative(self, rho) -> Array:
        r""":math:`\delta\beta F_{exc}/\delta\rho` (0 for an ideal gas)."""
        if self.excess is None:
            return jnp.zeros_like(rho)
        return self.excess.derivative(rho, self.grid, self.rho_bulk)

    def euler_lagrange_exponent(self, excess_derivative: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
        r""":math:`\ln\rho_{EL} = \beta\mu - \beta V_{ext} - \delta\beta F_{exc}/\delta\rho` for a given
        excess derivative (`excess_derivative`); ``-inf`` behind walls."""
        finite_v = jnp.where(self.allowed, self.beta_external, 0.0)  # no inf - inf in a gradient
        exponent = jnp.asarray(self.beta_mu)[..., None] - finite_v - excess_derivative
        return jnp.where(self.allowed, exponent, -jnp.inf)

    def euler_lagrange_density(self, rho: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
        r"""The Picard map :math:`\exp(\beta\mu - \beta V_{ext} - \delta\beta F_{exc}/\delta\rho)` (0 behind walls)."""
        return jnp.exp(self.euler_lagrange_exponent(self.excess_derivative(rho)))

    def local_chemical_potential(self, rho) -> Array:
        r""":math:`\delta\beta\Omega/\delta\rho = \ln\rho + \beta V_{ext} + \delta\beta F_{exc}/\delta\rho - \beta\mu` (0 at equilibrium)."""
        finite_v = jnp.where(self.allowed, self.beta_external, 0.0)
        value = jnp.log(jnp.where(self.allowed, rho, 1.0)) + finite_v + self.excess_derivative(rho)
        return jnp.where(self.allowed, value - jnp.asarray(self.beta_mu)[..., None], 0.0)
