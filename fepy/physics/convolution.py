r"""Weighted densities :math:`n(x) = \int w(x - x')\,\rho(x')\,dx'` on a uniform grid, exactly.

The density between grid points is taken piecewise linear (hat functions
:math:`\phi_j` centred on the points), so the convolution is the discrete sum
:math:`n_i = \sum_k c_k\,\rho_{i-k}` with the exact weights

.. math:: c_k = \int w(s)\,\phi\!\left(\frac{s}{dx} - k\right) ds,

integrated piecewise by Gauss-Legendre quadrature between the breakpoints of the hat
and of the kernel (exact for polynomial kernels up to degree 14). A point kernel
:math:`\delta(s - a)` gives the linear-interpolation weights :math:`c_k = \phi(a/dx - k)`.
For a uniform density :math:`\sum_k c_k = \int w` exactly, so bulk quantities computed
through the weighted densities are exact to round-off.

The same holds between the points: ``offset`` τ gives the weights of
:math:`n(x_i + \tau)`, for free-energy integrals by a quadrature rule inside each cell
(`fepy.Grid.cell_quadrature`); `pad_stack` brings the weights of several offsets to one
half-width, and `convolve` takes such a stack.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _hat(t):
    return np.maximum(0.0, 1.0 - np.abs(t))


def kernel_weights(
    kernel: Callable[[np.ndarray], np.ndarray],
    radius: float,
    dx: float,
    order: int = 8,
    breaks: Sequence[float] = (),
    offset: float = 0.0,
) -> np.ndarray:
    r"""Weights :math:`c_k` of :math:`n(x_i + \tau) = \sum_k c_k\,\rho_{i-k}` for a kernel supported on [-radius, radius].

    .. math:: c_k = \int w(s + \tau)\,\phi\!\left(\frac{s}{dx} - k\right) ds,
              \qquad k = -m \dots m,\quad m = \lceil(\mathrm{radius} + |\tau|)/dx\rceil,

    with τ = ``offset`` (σ; 0 gives the weighted density at the grid points). ``kernel``
    maps NumPy offsets s (σ) to w(s); it must be smooth (polynomial) inside the support,
    or between the points ``breaks`` where it is not (where it or a derivative jumps),
    which are added to the breakpoints of the quadrature. Returns an array of length
    ``2m + 1``, index ``k + m``.
    """
    low, high = -radius - offset, radius - offset  # where w(s + offset) is nonzero
    m = int(np.ceil(max(-low, high) / dx - 1e-12))
    nodes, gauss = np.polynomial.legendre.leggauss(order)
    out = np.zeros(2 * m + 1)
    for k in range(-m, m + 1):
        lo, hi = max((k - 1) * dx, low), min((k + 1) * dx, high)
        if hi <= lo:
            continue
        points = np.unique(np.clip([lo, k * dx, hi, *(b - offset for b in breaks)], lo, hi))
        for a, b in zip(points[:-1], points[1:]):
            s = 0.5 * (b - a) * nodes + 0.5 * (a + b)
            out[k + m] += 0.5 * (b - a) * np.sum(gauss * kernel(s + offset) * _hat(s / dx - k))
    return out


def point_weights(offset: float, dx: float, m: int) -> np.ndarray:
    r"""Weights of the point kernel :math:`\delta(s - \mathrm{offset})` on ``2m + 1`` points: :math:`\rho(x - \mathrm{offset})`.

    At :math:`x_i + \tau` the kernel :math:`\delta(s - a)` reads :math:`\rho(x_i + \tau - a)`: ``offset`` = a - τ.
    """
    k = np.arange(-m, m + 1)
    return _hat(offset / dx - k)


def pad_stack(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Weight arrays of odd lengths (half-widths m_j), zero-padded on both sides to the largest
    half-width m and stacked: shape ``(len(weights), 2m + 1)``."""
    m = max((len(w) - 1) // 2 for w in weights)
    return np.stack([np.pad(w, m - (len(w) - 1) // 2) for w in weights])


def convolve(rho_extended: Float[Array, "*batch N"], weights: np.ndarray) -> Array:
    r""":math:`n_i = \sum_k c_k \rho_{i-k}` for the interior points of ``rho_extended``.

    ``rho_extended`` carries ``m = (weights.shape[-1] - 1) // 2`` extra points on each side
    (e.g. from `fepy.Grid.extend`); the result has ``m`` fewer on each side. ``weights`` of
    shape ``(2m + 1,)`` give shape ``(*batch, N - 2m)``; a stack ``(q, 2m + 1)`` (one row per
    offset, `pad_stack`) gives ``(*batch, N - 2m, q)``.
    """
    if jnp.ndim(weights) == 2:
        return jnp.stack([convolve(rho_extended, w) for w in weights], axis=-1)
    weights = jnp.asarray(weights, rho_extended.dtype)
    flat = rho_extended.reshape(-1, rho_extended.shape[-1])
    # 'valid' convolution: out_i = sum_j c_j rho_ext[i + 2m - j]
    out = jax.vmap(lambda r: jnp.convolve(r, weights, mode="valid", precision=jax.lax.Precision.HIGHEST))(flat)
    return out.reshape(*rho_extended.shape[:-1], out.shape[-1])
