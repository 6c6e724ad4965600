r"""Lens mass profiles in lenstronomy's parameter conventions (angles in arcsec).

Each profile gives the deflection :math:`\alpha = \nabla\psi` (arcsec), the convergence
:math:`\kappa = \nabla^2\psi / 2` (dimensionless surface density in units of the critical
density) and the lensing potential :math:`\psi` (arcsec²) at image-plane positions ``(x, y)``
of any one shape; a lensed ray lands on the source plane at :math:`\beta = \theta - \alpha(\theta)`.
The parameters are the keyword arguments of the lenstronomy profile of the same name
(``theta_E``, ``e1``, ``e2``, ``center_x``, ``center_y``, ``gamma1``, ``gamma2``, ``ra_0``,
``dec_0``, ``gamma``, ``s_scale``), so a lenstronomy ``kwargs_lens`` entry reads
``SIE(**kwargs)``. Parameters are JAX arrays (differentiable leaves; scalars, or batches
under ``jax.vmap``); concrete values are checked when a profile is built.

Ellipticity (see :mod:`._ellipse`): :math:`e_1 + i e_2 = \frac{1-q}{1+q} e^{2i\phi}`;
:math:`\theta_E` is the product-averaged (circularised) Einstein radius, so the elliptical
radius is :math:`\sqrt{q x'^2 + y'^2/q}` in the frame of the major axis.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._validate import to_float_array
from ._ellipse import check, check_ellipticity, coordinates, phi_q, rotate

Coordinate = Float[Array, "..."]


class AbstractMassProfile(eqx.Module):
    """A lens mass distribution: deflection, convergence and potential at ``(x, y)`` (arcsec)."""

    @abc.abstractmethod
    def deflection(self, x: Coordinate, y: Coordinate) -> tuple[Coordinate, Coordinate]:
        r"""Deflection angles :math:`(\alpha_x, \alpha_y) = \nabla\psi` in arcsec."""

    @abc.abstractmethod
    def convergence(self, x: Coordinate, y: Coordinate) -> Coordinate:
        r"""Convergence :math:`\kappa = \nabla^2\psi/2` (dimensionless)."""

    @abc.abstractmethod
    def potential(self, x: Coordinate, y: Coordinate) -> Coordinate:
        r"""Lensing potential :math:`\psi` in arcsec² (defined up to a constant)."""

    def ray_shoot(self, x: Coordinate, y: Coordinate) -> tuple[Coordinate, Coordinate]:
        r"""Source-plane positions :math:`\beta = \theta - \alpha(\theta)` of image positions ``(x, y)``."""
        x, y = coordinates(x, y)
        ax, ay = self.deflection(x, y)
        return x - ax, y - ay


def _safe_ratio(num, den):
    """num / den, and 0 where den == 0 (with finite derivatives)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _arctan_over(eps2, u):
    r""":math:`\arctan(\varepsilon u)/\varepsilon` with :math:`\varepsilon^2` = ``eps2`` >= 0, smooth at 0."""
    small = eps2 < 1e-8
    eps = jnp.sqrt(jnp.where(small, 1.0, eps2))
    z2 = eps2 * u * u
    return jnp.where(small, u * (1 - z2 / 3 + z2 * z2 / 5), jnp.arctan(eps * u) / eps)


def _arctanh_over(eps2, u):
    r""":math:`\mathrm{artanh}(\varepsilon u)/\varepsilon` with :math:`\varepsilon^2` = ``eps2`` >= 0,
    smooth at 0."""
    small = eps2 < 1e-8
    eps = jnp.sqrt(jnp.where(small, 1.0, eps2))
    z2 = eps2 * u * u
    return jnp.where(small, u * (1 + z2 / 3 + z2 * z2 / 5), jnp.arctanh(eps * u) / eps)


class _Elliptical(AbstractMassProfile):
    """Shared frame of the elliptical profiles: shift to the centre, rotate onto the major axis."""

    e1: eqx.AbstractVar[Array]
    e2: eqx.AbstractVar[Array]
    center_x: eqx.AbstractVar[Array]
    center_y: eqx.AbstractVar[Array]

    def _frame(self, x, y):
        x, y = coordinates(x, y)
        phi, q = phi_q(self.e1, self.e2)
        xr, yr = rotate(x - self.center_x, y - self.center_y, phi)
        return xr, yr, phi, q

    def potential(self, x, y):
        xr, yr, _, q = self._frame(x, y)
        return self._potential_major(xr, yr, q)

    def deflection(self, x, y):
        xr, yr, phi, q = self._frame(x, y)
        ax, ay = self._deflection_major(xr, yr, q)
        return rotate(ax, ay, -phi)

    def convergence(self, x, y):
        xr, yr, _, q = self._frame(x, y)
        return self._convergence_major(xr, yr, q)


class SIE(_Elliptical):
    r"""Singular isothermal ellipsoid, with an optional core: lenstronomy's ``'SIE'`` and ``'NIE'``.

    .. math::

        \kappa = \frac{\theta_E}{2\sqrt{q x'^2 + y'^2/q + s^2}} , \qquad
        \text{i.e. } \kappa = \frac{b}{2\sqrt{q^2 (s'^2 + x'^2) + y'^2}},\;
        b = \theta_E\sqrt q,\; s' = s/\sqrt q

    in the major-axis frame :math:`(x', y')`, with the closed-form deflection of Keeton &
    Kochanek (1998), :math:`\varepsilon = \sqrt{1 - q^2}`,
    :math:`\psi_s = \sqrt{q^2(s'^2 + x'^2) + y'^2}`:

    .. math::

        \alpha_{x'} = \frac{b}{\varepsilon}\arctan\frac{\varepsilon x'}{\psi_s + s'}, \quad
        \alpha_{y'} = \frac{b}{\varepsilon}\,\mathrm{artanh}\frac{\varepsilon y'}{\psi_s + q^2 s'}, \quad
        \psi = x'\alpha_{x'} + y'\alpha_{y'} - \frac{b s'}{2}\log\left[(\psi_s + s')^2 + \varepsilon^2 x'^2\right].

    ``theta_E`` (arcsec, >= 0) is lenstronomy's product-averaged Einstein radius, ``e1``,
    ``e2`` its ellipticity (:math:`|e| < 1`), ``center_x``, ``center_y`` (arcsec) the centre
    and ``s_scale`` (arcsec, >= 0) the core radius: ``s_scale = 0`` is lenstronomy's ``'SIE'``
    (which is its NIE with ``s_scale = 1e-10``, equal to this within :math:`10^{-10} / r`
    relative), ``s_scale > 0`` its ``'NIE'``. The round limit :math:`q \to 1` (the SIS) is
    evaluated by series, without lenstronomy's clamp at q = 0.99999999. At the centre of a
    singular profile the deflection is 0 and the convergence infinite.
    """

    theta_E: Array = eqx.field(converter=to_float_array)
    e1: Array = eqx.field(converter=to_float_array, default=0.0)
    e2: Array = eqx.field(converter=to_float_array, default=0.0)
    center_x: Array = eqx.field(converter=to_float_array, default=0.0)
    center_y: Array = eqx.field(converter=to_float_array, default=0.0)
    s_scale: Array = eqx.field(converter=to_float_array, default=0.0)

    def __check_init__(self):
        check("SIE", "theta_E", self.theta_E, 0.0, closed=True)
        check("SIE", "s_scale", self.s_scale, 0.0, closed=True)
        check_ellipticity("SIE", self.e1, self.e2)

    def _major(self, xr, yr, q):
        b = self.theta_E * jnp.sqrt(q)
        s = self.s_scale / jnp.sqrt(q)
        psi = jnp.sqrt(q * q * (s * s + xr * xr) + yr * yr)
        return b, s, psi, (1 - q) * (1 + q)

    def _deflection_major(self, xr, yr, q):
        b, s, psi, eps2 = self._major(xr, yr, q)
        ax = b * _arctan_over(eps2, _safe_ratio(xr, psi + s))
        ay = b * _arctanh_over(eps2, _safe_ratio(yr, psi + q * q * s))
        return ax, ay

    def _convergence_major(self, xr, yr, q):
        _, _, psi, _ = self._major(xr, yr, q)
        return 0.5 * self.theta_E * jnp.sqrt(q) / psi

    def _potential_major(self, xr, yr, q):
        b, s, psi, eps2 = self._major(xr, yr, q)
        ax, ay = self._deflection_major(xr, yr, q)
        arg = (psi + s) ** 2 + eps2 * xr * xr
        core = jnp.where(arg > 0, jnp.log(jnp.where(arg > 0, arg, 1.0)), 0.0)
        return xr * ax + yr * ay - 0.5 * b * s * core


class EPL(_Elliptical):
    r"""Elliptical power law, lenstronomy's ``'EPL'`` (Tessore & Metcalf 2015).

    .. math::

        \kappa = \frac{3 - \gamma}{2}\left(\frac{\theta_E}{\sqrt{q x'^2 + y'^2/q}}\right)^{\gamma - 1}
               = \frac{2 - t}{2}\left(\frac{b}{R}\right)^t ,\quad t = \gamma - 1,\;
               b = \theta_E\sqrt q,\; R = |z|,\; z = q x' + i y'

    with the deflection :math:`\alpha_{x'} + i\alpha_{y'} = \frac{2}{1+q}\left(\frac{b}{R}\right)^t
    z\,{}_2F_1\!\left(1, \frac t2; 2 - \frac t2; -f\frac{z}{\bar z}\right)`, :math:`f = \frac{1-q}{1+q} = |e|`,
    and the potential :math:`\psi = (x'\alpha_{x'} + y'\alpha_{y'})/(2 - t)`. The hypergeometric
    function is summed as its power series to ``n_terms`` terms, each from the previous one
    (the ratio :math:`-f\frac{z}{\bar z}\frac{n - 1 + t/2}{n + 1 - t/2}`); the truncation
    error is below :math:`|e|^{n}/(1-|e|)`, about :math:`10^{-15}` at :math:`|e| = 0.7`
    with the default 100 terms.

    ``gamma`` is the 3-D logarithmic slope, in (1, 3) (2 is isothermal, equal to :class:`SIE`).
    """

    theta_E: Array = eqx.field(converter=to_float_array)
    gamma: Array = eqx.field(converter=to_float_array, default=2.0)
    e1: Array = eqx.field(converter=to_float_array, default=0.0)
    e2: Array = eqx.field(converter=to_float_array, default=0.0)
    center_x: Array = eqx.field(converter=to_float_array, default=0.0)
    center_y: Array = eqx.field(converter=to_float_array, default=0.0)
    n_terms: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        check("EPL", "theta_E", self.theta_E, 0.0, closed=True)
        check("EPL", "gamma", self.gamma, 1.0, 3.0)
        check_ellipticity("EPL", self.e1, self.e2)
        if isinstance(self.n_terms, bool) or not isinstance(self.n_terms, int) or self.n_terms < 1:
            raise ValueError(f"EPL n_terms must be a positive integer, got {self.n_terms!r}")

    def _scaled(self, xr, yr, q):
        t = self.gamma - 1
        R = jnp.sqrt(q * q * xr * xr + yr * yr)
        R_safe = jnp.where(R > 0, R, 1.0)
        return t, R, (self.theta_E * jnp.sqrt(q) / R_safe) ** t

    def _deflection_major(self, xr, yr, q):
        t, R, scale = self._scaled(xr, yr, q)
        z = jax.lax.complex(q * xr, yr)
        unit = _safe_ratio(z, R.astype(z.dtype))
        w = -(1 - q) / (1 + q) * unit * unit
        half = t / 2

        def term(n, carry):
            current, total = carry
            current = current * w * ((n - 1 + half) / (n + 1 - half))
            return current, total + current

        one = jnp.ones_like(w)
        _, hyp = jax.lax.fori_loop(1, self.n_terms, term, (one, one))
        alpha = 2 / (1 + q) * scale * z * hyp
        return jnp.real(alpha), jnp.imag(alpha)

    def _convergence_major(self, xr, yr, q):
        t, R, scale = self._scaled(xr, yr, q)
        return jnp.where(R > 0, (2 - t) / 2 * scale, jnp.inf)

    def _potential_major(self, xr, yr, q):
        ax, ay = self._deflection_major(xr, yr, q)
        return (xr * ax + yr * ay) / (2 - (self.gamma - 1))


class Shear(AbstractMassProfile):
    r"""External shear, lenstronomy's ``'SHEAR'``:
    :math:`\psi = \frac12(\gamma_1 (x^2 - y^2) + 2\gamma_2 x y)` about ``(ra_0, dec_0)``, so
    :math:`\alpha = (\gamma_1 x + \gamma_2 y,\ \gamma_2 x - \gamma_1 y)` and :math:`\kappa = 0`.
    """

    gamma1: Array = eqx.field(converter=to_float_array)
    gamma2: Array = eqx.field(converter=to_float_array)
    ra_0: Array = eqx.field(converter=to_float_array, default=0.0)
    dec_0: Array = eqx.field(converter=to_float_array, default=0.0)

    def __check_init__(self):
        for name in ("gamma1", "gamma2", "ra_0", "dec_0"):
            check("Shear", name, getattr(self, name), -jnp.inf)

    def _shifted(self, x, y):
        x, y = coordinates(x, y)
        return x - self.ra_0, y - self.dec_0

    def deflection(self, x, y):
        dx, dy = self._shifted(x, y)
        return self.gamma1 * dx + self.gamma2 * dy, self.gamma2 * dx - self.gamma1 * dy

    def convergence(self, x, y):
        dx, dy = self._shifted(x, y)
        return jnp.zeros(jnp.broadcast_shapes(dx.shape, jnp.shape(self.gamma1)), dx.dtype)

    def potential(self, x, y):
        dx, dy = self._shifted(x, y)
        return 0.5 * (self.gamma1 * (dx * dx - dy * dy) + 2 * self.gamma2 * dx * dy)


class PointMass(AbstractMassProfile):
    r"""Point mass, lenstronomy's ``'POINT_MASS'``: :math:`\psi = \theta_E^2 \log r`,
    :math:`\alpha = \theta_E^2\,(x, y)/r^2`, :math:`\kappa = 0` for :math:`r > 0` (a delta
    function at the centre, not represented). The radius is floored at :math:`10^{-25}`
    arcsec as in lenstronomy, so nothing is infinite at the centre.
    """

    theta_E: Array = eqx.field(converter=to_float_array)
    center_x: Array = eqx.field(converter=to_float_array, default=0.0)
    center_y: Array = eqx.field(converter=to_float_array, default=0.0)

    def __check_init__(self):
        check("PointMass", "theta_E", self.theta_E, 0.0, closed=True)

    def _polar(self, x, y):
        x, y = coordinates(x, y)
        dx, dy = x - self.center_x, y - self.center_y
        r2 = jnp.maximum(dx * dx + dy * dy, 1e-50)
        return dx, dy, r2

    def deflection(self, x, y):
        dx, dy, r2 = self._polar(x, y)
        scale = self.theta_E**2 / r2
        return scale * dx, scale * dy

    def convergence(self, x, y):
        dx, _, _ = self._polar(x, y)
        return jnp.zeros(jnp.broadcast_shapes(dx.shape, jnp.shape(self.theta_E)), dx.dtype)

    def potential(self, x, y):
        _, _, r2 = self._polar(x, y)
        return 0.5 * self.theta_E**2 * jnp.log(r2)


class MassModel(AbstractMassProfile):
    """The sum of mass profiles (a single lens plane): deflections, convergences and
    potentials add, e.g. ``MassModel((SIE(...), Shear(...)))``."""

    components: tuple[AbstractMassProfile, ...]

    def __init__(self, components):
        self.components = tuple(components)

    def __check_init__(self):
        if not self.components:
            raise ValueError("MassModel needs at least one mass profile")
        for c in self.components:
            if not isinstance(c, AbstractMassProfile):
                raise ValueError(f"MassModel components must be mass profiles, got {type(c).__name__}")

    def deflection(self, x, y):
        ax, ay = self.components[0].deflection(x, y)
        for c in self.components[1:]:
            dx, dy = c.deflection(x, y)
            ax, ay = ax + dx, ay + dy
        return ax, ay

    def convergence(self, x, y):
        return sum((c.convergence(x, y) for c in self.components[1:]), self.components[0].convergence(x, y))

    def potential(self, x, y):
        return sum((c.potential(x, y) for c in self.components[1:]), self.components[0].potential(x, y))
