r"""Shared helpers of the lens and light profiles: ellipticity, rotation, validation.

Ellipticities follow lenstronomy: the complex ellipticity :math:`e_1 + i e_2 = c\,e^{2i\phi}`
with modulus :math:`c = (1 - q)/(1 + q)`, axis ratio :math:`q` (minor/major) and position
angle :math:`\phi` of the major axis, counter-clockwise from the x axis.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._validate import concrete

# lenstronomy's ceiling on |e| (param_util.ellipticity2phi_q), so that q >= 5e-5 > 0 even for
# traced values that stray beyond the unit disc during an optimisation.
MAX_ELLIPTICITY = 0.9999


def phi_q(e1, e2) -> tuple[Array, Array]:
    r"""Position angle :math:`\phi = \mathrm{atan2}(e_2, e_1)/2` (radian) and axis ratio
    :math:`q = (1 - c)/(1 + c)`, :math:`c = \min(|e|, 0.9999)`.

    At exactly :math:`e = 0` (:math:`q = 1`, any :math:`\phi`) the values are :math:`\phi = 0`,
    :math:`q = 1` with finite (zero) derivatives in :math:`e`; the derivatives there are not
    the true ones, so start optimisations off the round case.
    """
    c2 = e1 * e1 + e2 * e2
    nonzero = c2 > 0
    c = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, c2, 1.0)), 0.0)
    c = jnp.minimum(c, MAX_ELLIPTICITY)
    phi = 0.5 * jnp.arctan2(jnp.where(nonzero, e2, 0.0), jnp.where(nonzero, e1, 1.0))
    return phi, (1 - c) / (1 + c)


def rotate(x, y, angle) -> tuple[Array, Array]:
    """Coordinates in the frame rotated counter-clockwise by ``angle`` (lenstronomy's util.rotate)."""
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return x * cos + y * sin, -x * sin + y * cos


def coordinates(x, y) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """``x`` and ``y`` as float arrays of one shape, with a clear error otherwise."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    dtype = jnp.result_type(x, y, float)
    return x.astype(dtype), y.astype(dtype)


def check(profile: str, name: str, value, low: float, high: float = np.inf, closed: bool = False) -> None:
    """ValueError unless every value of ``value`` is finite and in (low, high), or [low, high)
    with ``closed``; traced values are left unchecked."""
    v = concrete(value)
    if v is None:
        return
    ok = np.isfinite(v) & (v >= low if closed else v > low) & (v < high)
    if not np.all(ok):
        side = "[" if closed else "("
        raise ValueError(f"{profile} {name} must be finite and in {side}{low}, {high}), got {v}")


def check_ellipticity(profile: str, e1, e2) -> None:
    """ValueError unless |e1 + i e2| < 1 (axis ratio q > 0); traced values are left unchecked."""
    a, b = concrete(e1), concrete(e2)
    if a is None or b is None:
        return
    modulus = np.hypot(a, b)
    if not np.all(np.isfinite(modulus) & (modulus < 1)):
        raise ValueError(
            f"{profile} ellipticity |(e1, e2)| must be < 1 (axis ratio q = (1-|e|)/(1+|e|) > 0), "
            f"got e1={a}, e2={b}"
        )
