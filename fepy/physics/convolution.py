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
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _hat(t):
    return np.maximum(0.0, 1.0 - np.abs(t))


def kernel_weights(
    kernel: Callable[[np.ndarray], np.ndarray], radius: float, dx: float, order: int = 8, breaks: Sequence[float] = ()
) -> np.ndarray:
    r"""Weights :math:`c_k`, :math:`k = -m \dots m` (``m = ceil(radius/dx)``), of a kernel supported on [-radius, radius].

    ``kernel`` maps NumPy offsets s (σ) to w(s); it must be smooth (polynomial) inside
    the support, or between the points ``breaks`` where it is not (where it or a
    derivative jumps), which are added to the breakpoints of the quadrature. Returns an
    array of length ``2m + 1``, index ``k + m``.
    """
    m = int(np.ceil(radius / dx - 1e-12))
    nodes, gauss = np.polynomial.legendre.leggauss(order)
    out = np.zeros(2 * m + 1)
    for k in range(-m, m + 1):
        lo, hi = max((k - 1) * dx, -radius), min((k + 1) * dx, radius)
        if hi <= lo:
            continue
        points = np.unique(np.clip([lo, k * dx, hi, *breaks], lo, hi))
        for a, b in zip(points[:-1], points[1:]):
            s = 0.5 * (b - a) * nodes + 0.5 * (a + b)
            out[k + m] += 0.5 * (b - a) * np.sum(gauss * kernel(s) * _hat(s / dx - k))
    return out


def point_weights(offset: float, dx: float, m: int) -> np.ndarray:
    r"""Weights of the point kernel :math:`\delta(s - \mathrm{offset})` on ``2m + 1`` points: :math:`\rho(x - \mathrm{offset})`."""
    k = np.arange(-m, m + 1)
    return _hat(offset / dx - k)


def convolve(rho_extended: Float[Array, "*batch N"], weights: np.ndarray) -> Float[Array, "*batch N-2m"]:
    r""":math:`n_i = \sum_k c_k \rho_{i-k}` for the interior points of ``rho_extended``.

    ``rho_extended`` carries ``m = (len(weights) - 1) // 2`` extra points on each side (e.g.
    from `fepy.Grid.extend`); the result has ``m`` fewer on each side.
    """
    weights = jnp.asarray(weights, rho_extended.dtype)
    flat = rho_extended.reshape(-1, rho_extended.shape[-1])
    # 'valid' convolution: out_i = sum_j c_j rho_ext[i + 2m - j]
    out = jax.vmap(lambda r: jnp.convolve(r, weights, mode="valid", precision=jax.lax.Precision.HIGHEST))(flat)
    return out.reshape(*rho_extended.shape[:-1], out.shape[-1])
