r"""Surface-brightness profiles in lenstronomy's parameter conventions.

A profile gives the surface brightness :math:`I(x, y)` (flux per arcsec², e.g. counts/s per
arcsec²) at positions ``(x, y)`` in arcsec; as a source it is evaluated at the ray-shot
positions :math:`\beta = \theta - \alpha(\theta)`. The parameters are the keyword arguments of
the lenstronomy ``LightModel`` profile of the same name (``amp``, ``R_sersic``, ``n_sersic``,
``sigma``, ``e1``, ``e2``, ``center_x``, ``center_y``), as JAX arrays (differentiable).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._validate import to_float_array
from ._ellipse import check, check_ellipticity, coordinates

Coordinate = Float[Array, "..."]

# lenstronomy's SersicUtil numerics: radii floored at 1e-4 arcsec (``smoothing``), zero
# brightness beyond 1000 R_sersic (``max_R_frac``), b_n floored at 1e-5.
_SMOOTHING = 1e-4
_MAX_R_FRAC = 1000.0


class AbstractLightProfile(eqx.Module):
    """A surface-brightness distribution on a plane (angles in arcsec)."""

    @abc.abstractmethod
    def surface_brightness(self, x: Coordinate, y: Coordinate) -> Coordinate:
        """Surface brightness at ``(x, y)`` (flux per arcsec²)."""


class SersicElliptic(AbstractLightProfile):
    r"""Elliptical Sérsic profile, lenstronomy's ``'SERSIC_ELLIPSE'``:

    .. math::

        I = A \exp\left(-b_n\left[(R/R_s)^{1/n} - 1\right]\right), \qquad
        R = \sqrt{q x'^2 + y'^2/q}, \qquad b_n = 1.9992\,n - 0.3271,

    so ``amp`` :math:`A` is the brightness at the half-light radius ``R_sersic``
    :math:`R_s` (arcsec, the product average of the semi-axes: lenstronomy's default,
    ``sersic_major_axis=False``) and ``n_sersic`` the index. :math:`b_n` is lenstronomy's
    linear approximation, not the exact root of :math:`\Gamma(2n) = 2\gamma(2n, b_n)` (off by
    3.4e-3 relative at most for 1 <= n <= 8, 3.0e-2 at n = 0.5), so ``R_sersic`` is the
    half-light radius only to that accuracy. The
    elliptical radius is lenstronomy's smooth map of ``(e1, e2)``,
    :math:`R^2 = [((1-e_1)x - e_2 y)^2 + (-e_2 x + (1+e_1) y)^2] / (1 - |e|^2)`, and follows
    its numerics: :math:`R` and :math:`R_s` floored at 1e-4 arcsec (finite derivatives at
    the centre), zero beyond :math:`1000 R_s`.
    """

    amp: Array = eqx.field(converter=to_float_array)
    R_sersic: Array = eqx.field(converter=to_float_array)
    n_sersic: Array = eqx.field(converter=to_float_array)
    e1: Array = eqx.field(converter=to_float_array, default=0.0)
    e2: Array = eqx.field(converter=to_float_array, default=0.0)
    center_x: Array = eqx.field(converter=to_float_array, default=0.0)
    center_y: Array = eqx.field(converter=to_float_array, default=0.0)

    def __check_init__(self):
        check("SersicElliptic", "R_sersic", self.R_sersic, 0.0)
        check("SersicElliptic", "n_sersic", self.n_sersic, 0.0)
        check("SersicElliptic", "amp", self.amp, -np.inf)
        check_ellipticity("SersicElliptic", self.e1, self.e2)

    def surface_brightness(self, x, y):
        x, y = coordinates(x, y)
        dx, dy = x - self.center_x, y - self.center_y
        e1, e2 = self.e1, self.e2
        norm = jnp.sqrt(jnp.maximum(jnp.abs(1 - e1 * e1 - e2 * e2), 1e-6))
        u = ((1 - e1) * dx - e2 * dy) / norm
        v = (-e2 * dx + (1 + e1) * dy) / norm
        R = jnp.maximum(jnp.sqrt(u * u + v * v), _SMOOTHING)
        ratio = R / jnp.maximum(self.R_sersic, _SMOOTHING)
        b_n = jnp.maximum(1.9992 * self.n_sersic - 0.3271, 1e-5)
        inside = ratio <= _MAX_R_FRAC
        ratio = jnp.where(inside, ratio, 1.0)
        return jnp.where(inside, self.amp * jnp.exp(-b_n * (ratio ** (1 / self.n_sersic) - 1)), 0.0)


class Gaussian(AbstractLightProfile):
    r"""Round Gaussian, lenstronomy's ``'GAUSSIAN'``:
    :math:`I = \frac{A}{2\pi\sigma^2}\exp\left(-\frac{r^2}{2\sigma^2}\right)`, so ``amp``
    :math:`A` is the total flux (the integral over the plane) and ``sigma`` (arcsec) the width."""

    amp: Array = eqx.field(converter=to_float_array)
    sigma: Array = eqx.field(converter=to_float_array)
    center_x: Array = eqx.field(converter=to_float_array, default=0.0)
    center_y: Array = eqx.field(converter=to_float_array, default=0.0)

    def __check_init__(self):
        check("Gaussian", "sigma", self.sigma, 0.0)
        check("Gaussian", "amp", self.amp, -np.inf)

    def surface_brightness(self, x, y):
        x, y = coordinates(x, y)
        r2 = ((x - self.center_x) ** 2 + (y - self.center_y) ** 2) / self.sigma**2
        return self.amp / (2 * jnp.pi * self.sigma**2) * jnp.exp(-r2 / 2)


class LightModel(AbstractLightProfile):
    """The sum of light profiles, e.g. ``LightModel((SersicElliptic(...), Gaussian(...)))``."""

    components: tuple[AbstractLightProfile, ...]

    def __init__(self, components):
        self.components = tuple(components)

    def __check_init__(self):
        if not self.components:
            raise ValueError("LightModel needs at least one light profile")
        for c in self.components:
            if not isinstance(c, AbstractLightProfile):
                raise ValueError(f"LightModel components must be light profiles, got {type(c).__name__}")

    def surface_brightness(self, x, y):
        first = self.components[0].surface_brightness(x, y)
        return sum((c.surface_brightness(x, y) for c in self.components[1:]), first)
