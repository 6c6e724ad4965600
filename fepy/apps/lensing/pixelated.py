r"""A pixelated source and the exact linear inversion for it (Warren & Dye 2003; Suyu et al. 2006).

For fixed lens and PSF the image is linear in the source pixel values :math:`s`,
:math:`m = M s` (:func:`lensing_matrix`: bilinear interpolation of the source grid at the
ray-shot sub-pixel positions, pixel averaging, pixel area, PSF). With Gaussian noise of
per-pixel variance :math:`C = \mathrm{diag}(\sigma^2)` and the Gaussian prior
:math:`p(s) \propto \exp(-\lambda s^\top R s/2)`, the posterior of :math:`s` is Gaussian with
its maximum at

.. math:: (M^\top C^{-1} M + \lambda R)\, s = M^\top C^{-1} d ,

solved densely by :func:`linear_inversion`, which also returns the log evidence
:math:`\log p(d \mid \lambda, \text{lens})` (Suyu et al. 2006, eq. 19), the marginal
likelihood of the data with the source integrated out.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._validate import concrete, to_float_array
from .imaging import Image, ImageModel, PixelGrid, _check_image
from .light import AbstractLightProfile
from .mass import AbstractMassProfile

REGULARIZATIONS = ("gaussian", "curvature")


def bilinear_weights(grid: PixelGrid, x, y) -> tuple[Array, Array]:
    """Flat indices ``(..., 4)`` of the four source pixels around each position and their
    bilinear weights ``(..., 4)``; pixels off the grid get weight 0 (the source is 0 there)."""
    i, j = grid.to_pixel(jnp.asarray(x), jnp.asarray(y))
    i0, j0 = jnp.floor(i), jnp.floor(j)
    fx, fy = i - i0, j - j0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    index, weight = [], []
    for di, dj, w in corners:
        ci, cj = (i0 + di).astype(int), (j0 + dj).astype(int)
        inside = (ci >= 0) & (ci < grid.nx) & (cj >= 0) & (cj < grid.ny)
        index.append(jnp.where(inside, cj * grid.nx + ci, 0))
        weight.append(jnp.where(inside, w, 0.0))
    return jnp.stack(index, axis=-1), jnp.stack(weight, axis=-1)


class PixelatedSource(AbstractLightProfile):
    """Surface brightness ``values`` (flux per arcsec², shape ``grid.shape``) at the pixel
    centres of a source-plane ``grid``, bilinearly interpolated between them; beyond the
    outer pixel centres it falls linearly to 0 over one pixel (the grid is padded with 0)."""

    grid: PixelGrid
    values: Float[Array, "ny nx"] = eqx.field(converter=to_float_array)

    def __check_init__(self):
        if self.values.shape != self.grid.shape:
            raise ValueError(
                f"PixelatedSource values must have the grid's shape {self.grid.shape} (ny, nx), "
                f"got {self.values.shape}"
            )

    def surface_brightness(self, x, y):
        index, weight = bilinear_weights(self.grid, x, y)
        return jnp.sum(self.values.reshape(-1)[index] * weight, axis=-1)


def lensing_matrix(
    model: ImageModel, lens: AbstractMassProfile, source_grid: PixelGrid
) -> Float[Array, "n_data n_source"]:
    """The linear map :math:`M` from source pixel values to the model image (flattened
    row-major), ``image = (M @ values.ravel()).reshape(ny, nx)``."""
    x, y = model.coordinates()
    index, weight = bilinear_weights(source_grid, *lens.ray_shoot(x, y))
    n_sub, n_source = x.size, source_grid.nx * source_grid.ny
    rows = jnp.broadcast_to(jnp.arange(n_sub)[:, None], index.reshape(n_sub, 4).shape)
    interp = jnp.zeros((n_sub, n_source), x.dtype).at[rows, index.reshape(n_sub, 4)].add(weight.reshape(n_sub, 4))
    columns = jax.vmap(lambda c: model.pixelate(c.reshape(x.shape)))(interp.T)
    return columns.reshape(n_source, -1).T


def regularization_matrix(grid: PixelGrid, kind: str = "curvature") -> np.ndarray:
    r"""The prior precision :math:`R` on a source grid (dimensionless, positive definite):
    ``'gaussian'`` the identity (zeroth order); ``'curvature'``
    :math:`D_{xx}^\top D_{xx} + D_{yy}^\top D_{yy}` with the second differences
    :math:`s_{i-1} - 2 s_i + s_{i+1}` along rows and columns, zero beyond the grid."""
    if kind not in REGULARIZATIONS:
        raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got {kind!r}")
    n = grid.nx * grid.ny
    if kind == "gaussian":
        return np.eye(n)

    def second_difference(m):
        return -2 * np.eye(m) + np.eye(m, k=1) + np.eye(m, k=-1)

    dxx = np.kron(np.eye(grid.ny), second_difference(grid.nx))
    dyy = np.kron(second_difference(grid.ny), np.eye(grid.nx))
    return dxx.T @ dxx + dyy.T @ dyy


class Inversion(NamedTuple):
    """The result of :func:`linear_inversion`."""

    source: PixelatedSource
    """The maximum a posteriori source."""
    model: Image
    """The model image of that source (plus the lens light, if any)."""
    log_evidence: Float[Array, ""]
    r""":math:`\log p(d \mid \lambda, \text{lens})` (natural log, data in its flux unit)."""
    chi2: Float[Array, ""]
    r""":math:`\sum (d - m)^2/\sigma^2`."""


def linear_inversion(
    model: ImageModel,
    lens: AbstractMassProfile,
    source_grid: PixelGrid,
    data: Image,
    variance: Image,
    strength: float,
    regularization: str = "curvature",
    lens_light: AbstractLightProfile | None = None,
) -> Inversion:
    r"""The MAP pixelated source for fixed ``lens`` (and ``lens_light``, subtracted first) and
    its log evidence, with noise ``variance`` per pixel and prior strength ``strength``
    :math:`\lambda > 0` on :func:`regularization_matrix`:

    .. math::

        \log p(d\mid\lambda) = -E_D(s) - \lambda E_S(s) - \tfrac12\log\det A
        + \tfrac{N_s}2\log\lambda + \tfrac12\log\det R - \tfrac12\sum\log 2\pi\sigma^2,

    :math:`A = M^\top C^{-1} M + \lambda R`, :math:`E_D = \frac12 (Ms - d)^\top C^{-1}(Ms - d)`,
    :math:`E_S = \frac12 s^\top R s`, at the solution :math:`s` of :math:`A s = M^\top C^{-1} d`
    (Cholesky). Dense: memory :math:`O(N_d N_s)`, time :math:`O(N_s^3 + N_d N_s^2)`.
    """
    data = _check_image("data", data, model.grid.shape)
    variance = _check_image("variance", variance, model.grid.shape)
    v = concrete(strength)
    if v is not None and not (np.ndim(v) == 0 and np.isfinite(v) and v > 0):
        raise ValueError(f"regularization strength must be a finite scalar > 0, got {strength!r}")
    R = regularization_matrix(source_grid, regularization)
    logdet_R = float(np.linalg.slogdet(R)[1])
    M = lensing_matrix(model, lens, source_grid)
    target = data if lens_light is None else data - model.image(source=lens_light)
    d, inv_var = target.reshape(-1), 1.0 / variance.reshape(-1)
    A = M.T @ (M * inv_var[:, None]) + strength * jnp.asarray(R)
    factor = jax.scipy.linalg.cho_factor(A, lower=True)
    s = jax.scipy.linalg.cho_solve(factor, M.T @ (inv_var * d))
    residual = M @ s - d
    chi2 = jnp.sum(residual**2 * inv_var)
    logdet_A = 2 * jnp.sum(jnp.log(jnp.diag(factor[0])))
    n_source = s.size
    log_evidence = (
        -0.5 * chi2
        - 0.5 * strength * s @ (jnp.asarray(R) @ s)
        - 0.5 * logdet_A
        + 0.5 * n_source * jnp.log(strength)
        + 0.5 * logdet_R
        - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * variance))
    )
    image = (M @ s).reshape(model.grid.shape)
    if lens_light is not None:
        image = image + model.image(source=lens_light)
    return Inversion(PixelatedSource(source_grid, s.reshape(source_grid.shape)), image, log_evidence, chi2)
