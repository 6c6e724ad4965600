r"""Ornstein-Zernike relation of a uniform 3-D fluid: from g(r) to the direct correlation c(r) and the planar c2(z).

Lengths are in σ, densities in σ⁻³; correlation functions are dimensionless and their
Fourier transforms have units σ³.

**Transforms.** A radial function f(r) has the 3-D Fourier transform

.. math:: \hat f(k) = 4\pi\int_0^\infty r^2 f(r)\,\frac{\sin kr}{kr}\,dr, \qquad
          f(r) = \frac{1}{2\pi^2}\int_0^\infty k^2 \hat f(k)\,\frac{\sin kr}{kr}\,dk.

On the grid :math:`r_i = i\,\Delta r`, :math:`k_j = j\,\Delta k`, :math:`i, j = 0 \dots n-1`,
:math:`\Delta k = \pi/(n\,\Delta r)`, both integrals are the trapezoid rule of a type-I discrete
sine transform (f taken to vanish at :math:`r = n\,\Delta r`); the pair is exactly inverse on
the points :math:`i \ge 1` (the value at r = 0 carries no weight in the forward sum, the
inverse returns the transform's own estimate there). The sine transform is one FFT of
length 2n, so everything here is jittable and cheap for n ~ 10⁴.

**Ornstein-Zernike.** With h = g − 1 and the direct correlation c,
:math:`h = c + \rho\, c * h`, i.e. :math:`\hat c = \hat h/(1 + \rho\hat h)`
(J. P. Hansen & I. R. McDonald, *Theory of Simple Liquids*, 4th ed., ch. 3).
A simulation gives h only up to half its box, :math:`r \le R`; setting h = 0 beyond R spoils
:math:`\hat h` at small k (and so the compressibility). `direct_correlation_continued`
extends h beyond R self-consistently with a closure (the approach of L. Verlet, Phys. Rev.
165, 201 (1968)): h is held at the simulated values for r ≤ R, and for r > R the
closure (HNC, :math:`c = e^{-\beta u + \gamma} - 1 - \gamma`, or Percus-Yevick,
:math:`c = (e^{-\beta u} - 1)(1 + \gamma)`, with :math:`\gamma = h - c`) replaces the data, and
OZ is solved for c everywhere and h beyond R by Newton-GMRES iteration on γ.

**Planar geometry.** For a density varying along z only, the pair kernel per unit area is
the direct correlation integrated over the plane at height z
(:math:`r^2 = s^2 + z^2`, :math:`s\,ds = r\,dr`):

.. math:: c_2(z) = 2\pi\int_{|z|}^\infty r\,c(r)\,dr, \qquad \int c_2\,dz = \hat c(0),

and the Hessian of a planar excess functional of the uniform fluid is
:math:`\delta^2\beta F_{exc}/\delta\rho(z)\,\delta\rho(z') = -c_2(|z - z'|)` (per unit area).
The compressibility sum rule reads :math:`1 - \rho\hat c(0) = \beta\,\partial p/\partial\rho`.
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._validate import concrete


class RadialGrid(eqx.Module):
    r"""The grid :math:`r_i = i\,\Delta r` and its Fourier partner :math:`k_j = j\,\pi/(n\,\Delta r)`, i, j = 0..n-1.

    ``forward`` and ``inverse`` are the 3-D Fourier transforms of radial functions (see the
    module docstring); both act on the last axis and broadcast over leading axes.
    """

    n: int = eqx.field(static=True)
    dr: float = eqx.field(static=True)

    def __check_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 4:
            raise ValueError(f"RadialGrid n must be an integer >= 4, got {self.n!r}")
        if not (np.isfinite(self.dr) and self.dr > 0):
            raise ValueError(f"RadialGrid dr must be finite and > 0, got {self.dr!r}")

    @property
    def dk(self) -> float:
        r""":math:`\Delta k = \pi/(n\,\Delta r)` (σ⁻¹)."""
        return np.pi / (self.n * self.dr)

    @property
    def r(self) -> Float[Array, " n"]:
        """Radii :math:`r_i = i\\,\\Delta r` (σ)."""
        return jnp.arange(self.n) * self.dr

    @property
    def k(self) -> Float[Array, " n"]:
        """Wave numbers :math:`k_j = j\\,\\Delta k` (σ⁻¹)."""
        return jnp.arange(self.n) * self.dk

    def _check(self, f, name):
        f = jnp.asarray(f)
        if f.ndim < 1 or f.shape[-1] != self.n:
            raise ValueError(f"{name} must have shape (*batch, {self.n}), got {f.shape}")
        return f.astype(jnp.result_type(f.dtype, float))

    def _radial(self, f: Array, x: Array, y: Array, dx: float) -> Array:
        r""":math:`4\pi\,dx\sum_i x_i^2 f_i\,\sin(x_i y_j)/(x_i y_j)` for all j, the j = 0 term as its limit."""
        n = self.n
        xf = x[1:] * f[..., 1:]  # i = 1 .. n-1
        zeros = jnp.zeros((*f.shape[:-1], 1), f.dtype)
        odd = jnp.concatenate([zeros, xf, zeros, -xf[..., ::-1]], axis=-1)  # length 2n
        sine = -jnp.fft.rfft(odd, axis=-1).imag[..., 1:n] / 2  # sum_i x_i f_i sin(pi i j / n), j = 1..n-1
        at_zero = jnp.sum(x * x * f, axis=-1, keepdims=True)
        return 4 * np.pi * dx * jnp.concatenate([at_zero, sine / y[1:]], axis=-1)

    def forward(self, f: Float[ArrayLike, "*batch n"]) -> Float[Array, "*batch n"]:
        r""":math:`\hat f(k_j) = 4\pi\Delta r\sum_i r_i^2 f(r_i)\,\mathrm{sinc}(k_j r_i)` (σ³ × units of f)."""
        return self._radial(self._check(f, "f"), self.r, self.k, self.dr)

    def inverse(self, f_hat: Float[ArrayLike, "*batch n"]) -> Float[Array, "*batch n"]:
        r""":math:`f(r_i) = \frac{\Delta k}{2\pi^2}\sum_j k_j^2 \hat f(k_j)\,\mathrm{sinc}(k_j r_i)`."""
        return self._radial(self._check(f_hat, "f_hat"), self.k, self.r, self.dk) / (2 * np.pi) ** 3


def _check_density(density):
    density = jnp.asarray(density, float)
    value = concrete(density)
    if value is not None and not (np.all(np.isfinite(value)) and np.all(value > 0)):
        raise ValueError(f"density must be finite and > 0, got {value}")
    return density


def direct_correlation(
    h: Float[ArrayLike, "*batch n"], grid: RadialGrid, density: Float[ArrayLike, "*batch"]
) -> Float[Array, "*batch n"]:
    r"""c(r) from the total correlation h(r) on the whole grid: :math:`\hat c = \hat h/(1 + \rho\hat h)`.

    ``h`` must be known (and decayed) over the whole grid; for h known only up to a
    simulation's half box use `direct_correlation_continued`. ``density`` in σ⁻³.
    """
    density = _check_density(density)[..., None]
    h_hat = grid.forward(h)
    return grid.inverse(h_hat / (1 + density * h_hat))


def total_correlation(
    c: Float[ArrayLike, "*batch n"], grid: RadialGrid, density: Float[ArrayLike, "*batch"]
) -> Float[Array, "*batch n"]:
    r"""h(r) from the direct correlation c(r): :math:`\hat h = \hat c/(1 - \rho\hat c)` (the inverse of `direct_correlation`)."""
    density = _check_density(density)[..., None]
    c_hat = grid.forward(c)
    return grid.inverse(c_hat / (1 - density * c_hat))


class ContinuedCorrelation(eqx.Module):
    r"""The result of `direct_correlation_continued`: c(r) and h(r) on the whole grid.

    ``h`` equals the input for r ≤ ``r_match`` and is the closure's continuation beyond;
    ``c`` solves OZ with it. ``iterations`` (Newton steps) and ``residual``
    (:math:`\max|G(\gamma) - \gamma|` at the end, γ = h − c) report the convergence.
    """

    grid: RadialGrid
    density: Float[Array, "*batch"]
    c: Float[Array, "*batch n"]
    h: Float[Array, "*batch n"]
    iterations: Int[Array, ""]
    residual: Float[Array, ""]

    def c_hat_zero(self) -> Float[Array, "*batch"]:
        r""":math:`\hat c(0) = 4\pi\int r^2 c(r)\,dr` (σ³)."""
        return self.grid.forward(self.c)[..., 0]

    def inverse_compressibility(self) -> Float[Array, "*batch"]:
        r""":math:`1 - \rho\hat c(0) = \beta\,\partial p/\partial\rho = 1/S(0)` (dimensionless)."""
        return 1 - self.density * self.c_hat_zero()

    def planar(self, z: Float[ArrayLike, " m"]) -> Float[Array, "*batch m"]:
        """The planar direct correlation :math:`c_2(z)` (σ²) at heights ``z`` (σ), see `planar_direct_correlation`."""
        return planar_direct_correlation(self.c, self.grid, z)


def direct_correlation_continued(
    h: Float[ArrayLike, "*batch n"],
    grid: RadialGrid,
    density: Float[ArrayLike, "*batch"],
    r_match: float,
    beta_u: Float[ArrayLike, "*batch n"],
    closure: Literal["hnc", "py"] = "hnc",
    tol: float = 1e-10,
    max_iter: int = 30,
    krylov: int = 100,
) -> ContinuedCorrelation:
    r"""c(r) from h(r) known for r ≤ ``r_match`` only, with h continued beyond by a closure (Verlet 1968).

    The unknown is γ = h − c on the grid, and the equations are :math:`G(\gamma) = \gamma` with

    .. math:: c = \begin{cases} h_{data} - \gamma & r \le R \\ C(\beta u, \gamma) & r > R \end{cases},
              \qquad \widehat{G(\gamma)} = \frac{\rho\,\hat c^2}{1 - \rho\hat c}

    (OZ written for γ), with the closure C (``"hnc"``: :math:`e^{-\beta u + \gamma} - 1 - \gamma`,
    ``"py"``: :math:`(e^{-\beta u} - 1)(1 + \gamma)`). Plain (Picard) iteration of G is slow or
    diverges here: for perturbations inside R the Jacobian of G is :math:`1 - S(k)^2` in
    k-space, close to 1 where the structure factor S is small and below −1 at its main
    peak. So the equations are solved by Newton's method, each step a GMRES solve
    (``krylov`` vectors) with Jacobian-vector products by autodiff, started from the plain
    inversion of h truncated at R and stopped when :math:`\max|G(\gamma) - \gamma| <` ``tol``
    or after ``max_iter`` steps. ``beta_u`` is the pair potential over kT on the grid; only
    its values at r > R are used (they must be finite there), and ``h`` is only read for
    r ≤ R. Jittable and vmappable (with ``r_match`` fixed).
    """
    if not (np.isfinite(r_match) and grid.dr < r_match < (grid.n - 1) * grid.dr):
        raise ValueError(f"r_match must lie inside the grid (dr, (n-1) dr), got {r_match!r}")
    if closure not in ("hnc", "py"):
        raise ValueError(f"closure must be 'hnc' or 'py', got {closure!r}")
    for name, value in (("max_iter", max_iter), ("krylov", krylov)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    h = grid._check(h, "h")
    beta_u = jnp.broadcast_to(grid._check(beta_u, "beta_u"), h.shape)
    density = _check_density(density)
    rho = density[..., None]
    inside = grid.r <= r_match + 1e-9 * grid.dr
    value = concrete(beta_u)
    if value is not None and not np.all(np.isfinite(value[..., ~np.asarray(inside)])):
        raise ValueError("beta_u must be finite beyond r_match")
    h_data = jnp.where(inside, h, 0.0)
    beta_u = jnp.where(inside, 0.0, beta_u)

    def close(gamma):
        if closure == "hnc":
            outer = jnp.exp(-beta_u + gamma) - 1 - gamma
        else:
            outer = jnp.expm1(-beta_u) * (1 + gamma)
        return jnp.where(inside, h_data - gamma, outer)

    def update(gamma):
        c_hat = grid.forward(close(gamma))
        return grid.inverse(rho * c_hat**2 / (1 - rho * c_hat))

    def residual_fn(gamma):
        return update(gamma) - gamma

    def size(gamma):
        f = residual_fn(gamma)
        return jnp.where(jnp.all(jnp.isfinite(f)), jnp.max(jnp.abs(f)), jnp.inf)

    def newton(state):
        i, gamma, current = state
        f, linear = jax.linearize(residual_fn, gamma)
        step, _ = jax.scipy.sparse.linalg.gmres(
            lambda v: linear(v.reshape(gamma.shape)).ravel(), -f.ravel(), tol=1e-8, atol=0.0, restart=krylov, maxiter=1
        )
        step = step.reshape(gamma.shape)

        def shorter(search):  # halve the step until the residual decreases (at most 30 times)
            j, _ = search
            return j + 1, size(gamma + 0.5 ** (j + 1) * step)

        j, new = jax.lax.while_loop(
            lambda search: (search[0] < 30) & ~(search[1] < current), shorter, (0, size(gamma + step))
        )
        return i + 1, gamma + 0.5**j * step, new

    def cond(state):
        i, _, current = state
        return (i < max_iter) & (current > tol)

    gamma0 = jnp.where(inside, h_data, 0.0)  # c = 0 inside R: 1 - rho c_hat > 0 at the start
    iterations, gamma, residual = jax.lax.while_loop(cond, newton, (0, gamma0, size(gamma0)))
    c = close(gamma)
    return ContinuedCorrelation(grid, density, c, gamma + c, iterations, residual)


def planar_direct_correlation(
    c: Float[ArrayLike, "*batch n"], grid: RadialGrid, z: Float[ArrayLike, " m"]
) -> Float[Array, "*batch m"]:
    r""":math:`c_2(z) = 2\pi\int_{|z|}^{\infty} r\,c(r)\,dr` (σ²) for c piecewise linear between the grid points.

    The integral of :math:`r\,c(r)` over each interval is exact for the linear interpolant
    (so O(Δr²) for smooth c), and c is taken as 0 beyond the last grid point.
    """
    c = grid._check(c, "c")
    z = jnp.abs(jnp.asarray(z, c.dtype))
    if z.ndim != 1:
        raise ValueError(f"z must be one-dimensional, got shape {z.shape}")
    dr = grid.dr
    r = grid.r

    def piece(i, tau):
        """∫ r c(r) dr over [r_i + tau dr, r_{i+1}] for the linear interpolant."""
        ci, slope = c[..., i], c[..., i + 1] - c[..., i]
        ri = r[i]
        return dr * (
            ri * ci * (1 - tau) + (ri * slope + dr * ci) * (1 - tau**2) / 2 + dr * slope * (1 - tau**3) / 3
        )

    cells = jnp.arange(grid.n - 1)
    full = piece(cells, jnp.zeros(grid.n - 1, c.dtype))  # (*batch, n-1)
    tail = jnp.flip(jnp.cumsum(jnp.flip(full, -1), -1), -1)  # sum over cells >= i
    tail = jnp.concatenate([tail, jnp.zeros((*tail.shape[:-1], 1), c.dtype)], -1)
    s = z / dr
    i = jnp.clip(jnp.floor(s).astype(int), 0, grid.n - 2)
    tau = jnp.clip(s - i, 0.0, 1.0)
    beyond = z >= (grid.n - 1) * dr
    value = piece(i, tau) + tail[..., i + 1]
    return 2 * np.pi * jnp.where(beyond, 0.0, value)


def percus_yevick_hard_spheres(r: Float[ArrayLike, "*shape"], packing_fraction) -> Float[Array, "*shape"]:
    r"""Percus-Yevick direct correlation of hard spheres of diameter σ = 1 (Wertheim 1963, Thiele 1963).

    .. math:: c(r) = -\lambda_1 + 6\eta\lambda_2\,r - \tfrac12\eta\lambda_1 r^3 \quad (r < 1),
              \qquad c(r) = 0 \quad (r > 1),

    :math:`\lambda_1 = (1 + 2\eta)^2/(1 - \eta)^4`, :math:`\lambda_2 = (1 + \eta/2)^2/(1 - \eta)^4`,
    η = πρσ³/6 the packing fraction (M. S. Wertheim, Phys. Rev. Lett. 10, 321 (1963);
    E. Thiele, J. Chem. Phys. 39, 474 (1963)). At r = 1 the mean of the two one-sided limits
    is returned (the value a trapezoid rule wants at a jump).
    """
    r = jnp.asarray(r, float)
    eta = _check_packing(packing_fraction)
    lam1 = (1 + 2 * eta) ** 2 / (1 - eta) ** 4
    lam2 = (1 + eta / 2) ** 2 / (1 - eta) ** 4
    inner = -lam1 + 6 * eta * lam2 * r - 0.5 * eta * lam1 * r**3
    return jnp.where(r < 1, inner, jnp.where(r == 1, inner / 2, 0.0))


def percus_yevick_planar(z: Float[ArrayLike, "*shape"], packing_fraction) -> Float[Array, "*shape"]:
    r"""The planar kernel of `percus_yevick_hard_spheres` in closed form (σ = 1):

    .. math:: c_2(z) = 2\pi\left[-\frac{\lambda_1}{2}(1 - z^2) + 2\eta\lambda_2(1 - |z|^3)
              - \frac{\eta\lambda_1}{10}(1 - z^5)\right] \quad (|z| < 1), \qquad 0 \quad (|z| \ge 1),

    the integral :math:`2\pi\int_{|z|}^1 r\,c(r)\,dr` of the polynomial term by term.
    """
    z = jnp.abs(jnp.asarray(z, float))
    eta = _check_packing(packing_fraction)
    lam1 = (1 + 2 * eta) ** 2 / (1 - eta) ** 4
    lam2 = (1 + eta / 2) ** 2 / (1 - eta) ** 4
    inner = -lam1 / 2 * (1 - z**2) + 2 * eta * lam2 * (1 - z**3) - eta * lam1 / 10 * (1 - z**5)
    return jnp.where(z < 1, 2 * np.pi * inner, 0.0)


def percus_yevick_inverse_compressibility(packing_fraction) -> Array:
    r""":math:`\beta\,\partial p/\partial\rho = (1 + 2\eta)^2/(1 - \eta)^4`, the PY compressibility equation of state.

    The derivative of :math:`\beta p/\rho = (1 + \eta + \eta^2)/(1 - \eta)^3` (PY compressibility
    route, equal to Carnahan-Starling up to O(η⁴)); by the sum rule it equals :math:`1 - \rho\hat c(0)`.
    """
    eta = _check_packing(packing_fraction)
    return (1 + 2 * eta) ** 2 / (1 - eta) ** 4


def _check_packing(packing_fraction):
    eta = jnp.asarray(packing_fraction, float)
    value = concrete(eta)
    if value is not None and not (np.all(value > 0) and np.all(value < 1)):
        raise ValueError(f"packing_fraction must lie in (0, 1), got {value}")
    return eta


def direct_correlation_1d(h: Float[ArrayLike, " n"], dx: float, density) -> Float[Array, " n"]:
    r"""c(x) of a uniform 1-D fluid from h(x), :math:`x_i = i\,dx`, by the 1-D Ornstein-Zernike relation.

    In one dimension the transform of an even function is
    :math:`\hat f(k) = 2\int_0^\infty f(x)\cos kx\,dx` and OZ reads
    :math:`\hat c = \hat h/(1 + \rho\hat h)` (ρ per σ). ``h`` is sampled at
    :math:`i\,dx`, :math:`i = 0 \dots n-1`, and taken to vanish beyond; it is mirrored into
    a period of length 2n dx and transformed by one FFT (the trapezoid rule). Returns c at
    the same points.
    """
    h = jnp.asarray(h, float)
    if h.ndim != 1 or h.shape[0] < 3:
        raise ValueError(f"h must be a 1-D array of at least 3 samples, got shape {h.shape}")
    density = _check_density(density)
    full = jnp.concatenate([h, jnp.zeros(1, h.dtype), h[:0:-1]])
    h_hat = jnp.fft.fft(full).real * dx
    c = jnp.fft.ifft(h_hat / (1 + density * h_hat)).real / dx
    return c[: h.shape[0]]
