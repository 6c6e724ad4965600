r"""Neural excess free-energy functionals, trained on simulation data (kT, lengths in σ).

`NeuralFunctional` is a convolutional network that ends in a scalar:

.. math:: \beta F_\theta[\rho] = \int \Phi_\theta\big(n_1(x), \dots, n_K(x)\big)\,dx, \qquad
          n_a(x) = \sum_b M_{ab}\,(\omega_b \star \rho)(x),

with learned weighted densities :math:`n_a` (a learned mixing :math:`M` of fixed kernels
:math:`\omega_b` on :math:`[-R, R]`: Legendre polynomials :math:`P_k(s/R)` and the two point
kernels :math:`\delta(s \mp R)`) and a learned local free-energy density :math:`\Phi_\theta`
(an MLP with smooth activations, so Hessians exist). It is the shape of every
weighted-density functional — Percus's exact hard-rod functional is one instance
(:math:`n_0` from the point kernels, :math:`n_1` from :math:`P_0`,
:math:`\Phi = -n_0\ln(1 - n_1)`) — so the network can represent the exact answer. The
kernels are integrated exactly against the piecewise-linear density
(`fepy.physics.convolution`), so the functional is the same at every grid spacing and
in every box (periodic, walled or open), like the analytic functionals. The ideal-gas
limit is exact: :math:`\Phi_\theta(n) = \mathrm{MLP}(n) - \mathrm{MLP}(0) - n\cdot\nabla\mathrm{MLP}(0)`,
so :math:`F_\theta = O(\rho^2)`. The functional is reflection symmetric, like the fluid:
the free-energy density is averaged over the weighted densities of the mirrored kernels
:math:`\omega_b(-s)` (:math:`P_k \to (-1)^k P_k`, :math:`\delta(s - R) \leftrightarrow \delta(s + R)`),

.. math:: \beta F_\theta[\rho] = \int \tfrac12\big[\Phi_\theta(M b(x)) + \Phi_\theta(M S b(x))\big]\,dx,
          \qquad b_b = \omega_b \star \rho,

with S the signed permutation of the kernels, so :math:`F_\theta[\rho(-\,\cdot)] = F_\theta[\rho]`.
The bulk free energy and the bulk Hessian, hence `pair_correlation_loss`, are the same with
or without the mirror term (:math:`S` leaves :math:`\int\omega_b` unchanged, and a bulk
Hessian is already even); it removes from inhomogeneous profiles the part of the
functional that is odd under reflection, which bulk data cannot constrain.

Two ways to learn it (the comparison of Dijkman et al., PRL 134, 056103 (2025)):

- `euler_lagrange_loss` (the "naive" profile loss, one-body direct correlations as in
  Sammüller et al., PNAS 120, e2312484120 (2023)): for each simulated profile in an
  external potential, the Euler-Lagrange equation
  :math:`\delta\beta F/\delta\rho(x) = \beta\mu - \beta V_{ext}(x) - \ln\rho(x)` must hold.
- `pair_correlation_loss` (pair-correlation matching): in bulk, the Hessian of the
  functional is minus the direct correlation function,
  :math:`\delta^2\beta F/\delta\rho(x)\delta\rho(x') = -c(x - x')`, and its first derivative
  is the excess chemical potential; both come from bulk simulations only (g(r) and the
  Ornstein-Zernike equation).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ...families.grid import Grid
from ...physics.convolution import convolve, kernel_weights, pad_stack, point_weights
from ...targets.functional import AbstractExcessFunctional
from .ornstein_zernike import direct_correlation_1d


@functools.lru_cache(maxsize=64)
def _basis_weights(radius: float, degree: int, dx: float, offsets: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """Grid weights of the kernels P_0..P_{degree-1}(s/R) and delta(s -+ R) at each of ``offsets`` from
    the points, shape (degree + 2, len(offsets), 2m + 1)."""
    polynomials = [
        pad_stack([
            kernel_weights(lambda s, k=k: np.polynomial.legendre.Legendre.basis(k)(s / radius), radius, dx, offset=tau)
            for tau in offsets
        ])
        for k in range(degree)
    ]
    m = (polynomials[0].shape[-1] - 1) // 2
    points = [np.stack([point_weights(a - tau, dx, m) for tau in offsets]) for a in (-radius, radius)]
    return np.stack(polynomials + points)


def _basis_integrals(radius: float, degree: int) -> np.ndarray:
    r""":math:`\int\omega_b`: 2R for :math:`P_0`, 0 for the higher Legendre polynomials, 1 for each point kernel."""
    return np.array([2.0 * radius] + [0.0] * (degree - 1) + [1.0, 1.0])


class NeuralFunctional(AbstractExcessFunctional):
    r"""A learned weighted-density functional :math:`\beta F_\theta[\rho] = \int\Phi_\theta(n(x))\,dx` (module docstring).

    Attributes:
        mixing: :math:`M`, shape ``(features, degree + 2)``: the learned weighted densities
            as combinations of the fixed kernels.
        mlp: :math:`\mathbb R^K \to \mathbb R`, the local free-energy density (kT per σ^d).
        radius: the kernels' half-width R (σ): the range of the direct correlations the
            functional can describe is 2R.
        degree: number of Legendre kernels.
        max_density_bound: the bulk density bound used by `bulk_density` (σ^-d).
    """

    mixing: Float[Array, "features basis"]
    mlp: eqx.nn.MLP
    radius: float = eqx.field(static=True)
    degree: int = eqx.field(static=True)
    max_density_bound: float = eqx.field(static=True)

    def __init__(
        self,
        radius: float = 0.5,
        features: int = 8,
        degree: int = 4,
        width: int = 64,
        depth: int = 2,
        max_density: float = 1.0,
        *,
        key: PRNGKeyArray,
    ):
        for name, value in (("features", features), ("degree", degree), ("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NeuralFunctional {name} must be a positive integer, got {value!r}")
        if not (np.isfinite(radius) and radius > 0):
            raise ValueError(f"NeuralFunctional radius must be finite and > 0 (σ), got {radius!r}")
        if not (np.isfinite(max_density) and max_density > 0):
            raise ValueError(f"NeuralFunctional max_density must be finite and > 0, got {max_density!r}")
        mix_key, mlp_key = jax.random.split(key)
        basis = degree + 2
        dtype = jnp.result_type(float)
        # scale so that a unit density gives weighted densities of order one
        scale = 1.0 / np.sqrt(basis) / np.maximum(_basis_integrals(radius, degree), 1.0)
        self.mixing = jax.random.normal(mix_key, (features, basis), dtype) * jnp.asarray(scale, dtype)
        self.mlp = eqx.nn.MLP(features, "scalar", width, depth, activation=jax.nn.softplus, key=mlp_key, dtype=dtype)
        self.radius, self.degree, self.max_density_bound = float(radius), degree, float(max_density)

    def _phi(self, n: Float[Array, "*points features"]) -> Float[Array, "*points"]:
        r""":math:`\Phi_\theta(n) = \mathrm{MLP}(n) - \mathrm{MLP}(0) - n\cdot\nabla\mathrm{MLP}(0)`."""
        zero = jnp.zeros(n.shape[-1], n.dtype)
        value0, grad0 = jax.value_and_grad(self.mlp)(zero)
        flat = n.reshape(-1, n.shape[-1])
        return (jax.vmap(self.mlp)(flat) - value0 - flat @ grad0).reshape(n.shape[:-1])

    def _kernel_densities(
        self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk
    ) -> Float[Array, "*batch m q basis"]:
        r""":math:`b_b = \omega_b \star \rho` at the quadrature points of the grid's cells
        (`fepy.Grid.cell_quadrature`) and, unless periodic, of the cells within the kernels'
        reach beyond each edge."""
        weights = _basis_weights(self.radius, self.degree, grid.dx, tuple(grid.cell_quadrature()[0]))
        reach = (weights.shape[-1] - 1) // 2
        extended = grid.extend_for_kernels(rho, reach, rho_bulk)
        return jnp.stack([convolve(extended, w) for w in weights], axis=-1)

    def _mirror(self, b: Float[Array, "*points basis"]) -> Float[Array, "*points basis"]:
        r""":math:`S b`: the kernel densities of the mirrored kernels :math:`\omega_b(-s)`."""
        order = np.concatenate([np.arange(self.degree), [self.degree + 1, self.degree]])
        sign = np.concatenate([(-1.0) ** np.arange(self.degree), [1.0, 1.0]])
        return b[..., order] * jnp.asarray(sign, b.dtype)

    def weighted_densities(
        self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk
    ) -> Float[Array, "*batch m q features"]:
        """The learned :math:`n_a = (M b)_a` at the points of `_kernel_densities` (mirror term: :math:`M S b`)."""
        return self._kernel_densities(rho, grid, rho_bulk) @ self.mixing.T

    def free_energy(self, rho: Float[Array, "*batch n"], grid: Grid, rho_bulk) -> Float[Array, "*batch"]:
        b = self._kernel_densities(rho, grid, rho_bulk)
        phi = 0.5 * (self._phi(b @ self.mixing.T) + self._phi(self._mirror(b) @ self.mixing.T))
        return grid.integrate_cells(phi)

    def bulk_free_energy_density(self, rho: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        rho = jnp.asarray(rho, self.mixing.dtype)
        per_unit = self.mixing @ jnp.asarray(_basis_integrals(self.radius, self.degree), rho.dtype)
        return self._phi(rho[..., None] * per_unit)

    def max_density(self) -> float:
        return self.max_density_bound


def euler_lagrange_loss(
    functional: AbstractExcessFunctional,
    grid: Grid,
    rho: Float[Array, "batch n"],
    beta_external: Float[Array, "batch n"],
    beta_mu: Float[Array, " batch"],
    rho_bulk: Float[Array, " batch"],
    min_density: float,
) -> Float[Array, ""]:
    r"""Mean squared residual of the Euler-Lagrange equation on simulated profiles (kT²).

    .. math:: \frac{1}{|\mathcal D|}\sum_{(s, i)\in\mathcal D}
              \Big(\frac{\delta\beta F}{\delta\rho(x_i)}[\rho_s] - \big(\beta\mu_s - \beta V_s(x_i) - \ln\rho_s(x_i)\big)\Big)^2

    over the points where the simulated density exceeds ``min_density`` (the logarithm of a
    sparsely sampled density is too noisy to learn from) and the potential is finite.
    """
    target = jnp.asarray(beta_mu)[:, None] - beta_external - jnp.log(jnp.maximum(rho, min_density))
    use = (rho > min_density) & jnp.isfinite(beta_external)
    residual = functional.derivative(rho, grid, rho_bulk) - jnp.where(use, target, 0.0)
    return jnp.sum(jnp.where(use, residual**2, 0.0)) / jnp.maximum(jnp.sum(use), 1)


def bulk_hessian_column(functional: AbstractExcessFunctional, grid: Grid, rho_bulk) -> Float[Array, " n"]:
    r""":math:`\delta^2\beta F/\delta\rho(x_i)\,\delta\rho(x_0)` at the uniform density ``rho_bulk`` on a periodic ``grid``.

    The Hessian of the discretised functional divided by :math:`dx^2`; for the exact
    functional it is :math:`-c(x_i - x_0)`, the bulk direct correlation function
    (periodic images included).
    """
    if not grid.periodic:
        raise ValueError("bulk_hessian_column needs a periodic grid (a homogeneous fluid)")
    uniform = jnp.full(grid.n, rho_bulk, jnp.result_type(float))
    direction = jnp.zeros(grid.n, uniform.dtype).at[0].set(1.0)
    _, column = jax.jvp(lambda r: functional.derivative(r, grid, rho_bulk), (uniform,), (direction,))
    return column / grid.dx


def pair_correlation_loss(
    functional: AbstractExcessFunctional,
    grid: Grid,
    rho_bulk: Float[Array, " batch"],
    direct_correlation: Float[Array, "batch n"],
    beta_mu_excess: Float[Array, " batch"],
    chemical_potential_weight: float = 1.0,
) -> Float[Array, ""]:
    r"""Pair-correlation matching (Dijkman et al. 2025) at bulk densities ``rho_bulk``.

    .. math:: \frac1{B}\sum_b \Big[\frac1n\sum_i\big(H_b(x_i) + c_b(x_i)\big)^2
              + w\,\big(\mu_\theta(\rho_b) - \beta\mu_{exc,b}\big)^2\Big]

    with :math:`H_b` the `bulk_hessian_column` at :math:`\rho_b` and :math:`c_b(x_i)` the
    direct correlation function from simulation on the periodic ``grid`` (σ^d), and
    :math:`\mu_\theta` the functional's first derivative at the uniform density.
    """

    def one(rho_b, c, mu_exc):
        hessian = bulk_hessian_column(functional, grid, rho_b)
        uniform = jnp.full(grid.n, rho_b, hessian.dtype)
        mu = functional.derivative(uniform, grid, rho_b)[0]
        return jnp.mean((hessian + c) ** 2) + chemical_potential_weight * (mu - mu_exc) ** 2

    return jnp.mean(jax.vmap(one)(rho_bulk, direct_correlation, beta_mu_excess))


def pair_correlation_data(
    bins: Float[Array, " bins"], g: Float[Array, "batch bins"], density: Float[Array, " batch"], grid: Grid
) -> Float[Array, "batch n"]:
    r"""Bulk direct correlation functions on a periodic ``grid``, from simulated pair correlations.

    ``g`` is sampled in bins of width ``grid.dx`` centred at ``bins`` (σ, e.g. from
    `fepy.apps.dft.gcmc_dataset.generate_bulk`), at the bulk ``density``. It is
    interpolated to the distances :math:`i\,dx`, turned into c by the 1-D Ornstein-Zernike
    equation (`fepy.apps.dft.ornstein_zernike.direct_correlation_1d`) and laid out as the
    periodic offsets :math:`x_i - x_0` of the grid: the target of `pair_correlation_loss`.
    Distances beyond the sampled range, or beyond half the box, get c = 0.
    """
    bins, g, density = np.asarray(bins, float), np.atleast_2d(np.asarray(g, float)), np.atleast_1d(density)
    if not np.allclose(np.diff(bins), grid.dx, rtol=1e-4):
        raise ValueError(f"pair-correlation bins must have the grid spacing {grid.dx}, got spacing {np.diff(bins)[:3]}")
    distance = np.arange(bins.size) * grid.dx
    out = np.zeros((g.shape[0], grid.n))
    reach = min(bins.size, grid.n // 2 + 1)
    for b in range(g.shape[0]):
        h = np.interp(distance, bins, g[b]) - 1.0
        h[0] = 2 * h[1] - h[2]  # linear extrapolation to contact from the first two distances
        c = np.asarray(direct_correlation_1d(h, grid.dx, density[b]))
        out[b, :reach] = c[:reach]
        out[b, grid.n - reach + 1:] = c[1:reach][::-1]
    return jnp.asarray(out)


def train(
    functional: NeuralFunctional,
    loss,
    optimizer: optax.GradientTransformation,
    steps: int,
) -> tuple[NeuralFunctional, np.ndarray]:
    """Minimise ``loss(functional)`` (a closure over the data) with ``optimizer`` for ``steps`` steps.

    Returns the trained functional and the loss per step. Raises FloatingPointError naming
    the step when the loss becomes NaN or Inf.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train steps must be a positive integer, got {steps!r}")
    params, static = eqx.partition(functional, eqx.is_inexact_array)

    @jax.jit
    def run(params, opt_state):
        def body(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static)))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        return jax.lax.scan(body, (params, opt_state), None, length=steps)

    (params, _), losses = run(params, optimizer.init(params))
    losses = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise FloatingPointError(f"training step {bad[0] + 1}: loss is {losses[bad[0]]}")
    return eqx.combine(params, static), losses
