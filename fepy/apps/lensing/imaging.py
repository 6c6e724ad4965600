r"""The imaging forward model: pixel grid, ray shooting, PSF, noise (lenstronomy's conventions).

An image is in flux per pixel (e.g. counts/s): the surface brightness (flux per arcsec²) of
the lens light and of the source at the ray-shot positions :math:`\beta = \theta -
\alpha(\theta)` is evaluated on a grid supersampled ``supersampling_factor`` times per axis,
averaged over each pixel, multiplied by the pixel area and convolved with the PSF on the
pixel grid, as lenstronomy's ``ImageModel`` does with its default numerics (``'regular'``
compute mode, ``supersampling_convolution=False``). Images are arrays of shape ``(ny, nx)``,
row ``j`` and column ``i`` holding pixel ``(x, y) = (i, j)``.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..._validate import concrete, to_float_array
from .light import AbstractLightProfile
from .mass import AbstractMassProfile

Image = Float[Array, "ny nx"]


def _static_matrix(value) -> tuple[tuple[float, float], tuple[float, float]]:
    m = np.asarray(value, dtype=float)
    if m.shape != (2, 2) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) == 0:
        raise ValueError(f"transform_pix2angle must be a finite invertible 2x2 matrix, got {value!r}")
    return tuple(tuple(float(v) for v in row) for row in m)


class PixelGrid(eqx.Module):
    r"""A regular pixel grid with lenstronomy's ``PixelGrid`` coordinates (fixed geometry: static).

    Pixel :math:`(i, j)` (column, row) is centred at
    :math:`(x, y) = T\,(i, j)^\top + (x_0, y_0)` with ``transform_pix2angle`` :math:`T`
    (arcsec per pixel) and ``(ra_at_xy_0, dec_at_xy_0)`` :math:`(x_0, y_0)` (arcsec). The
    pixel width is :math:`\sqrt{|\det T|}`. :meth:`square` builds lenstronomy's
    ``make_grid_with_coordtransform`` grid centred on the origin.
    """

    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    transform_pix2angle: tuple[tuple[float, float], tuple[float, float]] = eqx.field(
        static=True, converter=_static_matrix
    )
    ra_at_xy_0: float = eqx.field(static=True, converter=float)
    dec_at_xy_0: float = eqx.field(static=True, converter=float)

    def __check_init__(self):
        for name in ("nx", "ny"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"PixelGrid {name} must be a positive integer, got {n!r}")
        if not (math.isfinite(self.ra_at_xy_0) and math.isfinite(self.dec_at_xy_0)):
            raise ValueError("PixelGrid ra_at_xy_0 and dec_at_xy_0 must be finite")

    @classmethod
    def square(cls, num_pix: int, pixel_width: float, inverse: bool = True) -> "PixelGrid":
        """``num_pix`` x ``num_pix`` pixels of ``pixel_width`` arcsec centred on (0, 0); with
        ``inverse`` (the astronomical convention) x (RA) grows to the left, T = diag(-d, d)."""
        if not (math.isfinite(pixel_width) and pixel_width > 0):
            raise ValueError(f"pixel_width must be finite and > 0, got {pixel_width!r}")
        half = (num_pix - 1) / 2 * pixel_width
        sign = -1.0 if inverse else 1.0
        return cls(num_pix, num_pix, [[sign * pixel_width, 0.0], [0.0, pixel_width]], -sign * half, -half)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``, the shape of an image."""
        return (self.ny, self.nx)

    @property
    def pixel_width(self) -> float:
        """:math:`\\sqrt{|\\det T|}` in arcsec."""
        return math.sqrt(abs(np.linalg.det(np.asarray(self.transform_pix2angle))))

    def coordinates(self, supersampling_factor: int = 1) -> tuple[Image, Image]:
        """Angular positions (arcsec) of the pixel centres, or of the ``s`` x ``s`` sub-pixel
        centres of each pixel (shape ``(s ny, s nx)``, lenstronomy's ``make_subgrid``)."""
        s = supersampling_factor
        i = (np.arange(self.nx * s) + 0.5) / s - 0.5
        j = (np.arange(self.ny * s) + 0.5) / s - 0.5
        ii, jj = np.meshgrid(i, j)
        (a, b), (c, d) = self.transform_pix2angle
        return jnp.asarray(a * ii + b * jj + self.ra_at_xy_0), jnp.asarray(c * ii + d * jj + self.dec_at_xy_0)

    def to_pixel(self, x, y) -> tuple[Array, Array]:
        """Pixel coordinates ``(i, j)`` (fractional) of angular positions ``(x, y)``."""
        inv = np.linalg.inv(np.asarray(self.transform_pix2angle))
        dx, dy = x - self.ra_at_xy_0, y - self.dec_at_xy_0
        return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy


def _check_image(name: str, image, shape) -> Array:
    image = jnp.asarray(image)
    if image.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (ny, nx), got {image.shape}")
    return image


class PixelPSF(eqx.Module):
    """A PSF given as an odd-sized pixel kernel (lenstronomy's ``'PIXEL'`` PSF), normalised to
    sum 1 and applied by FFT convolution with zero padding, output the size of the image
    (``scipy.signal.fftconvolve(image, kernel, mode='same')``, lenstronomy's ``'fft_static'``)."""

    kernel: Float[Array, "k k"] = eqx.field(converter=to_float_array)

    def __check_init__(self):
        k = self.kernel
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"PixelPSF kernel must be 2-D with odd sizes, got shape {k.shape}")
        v = concrete(k)
        if v is not None and not (np.all(np.isfinite(v)) and np.sum(v) > 0):
            raise ValueError("PixelPSF kernel must be finite with a positive sum")

    def convolve(self, image: Image, pixel_width: float) -> Image:
        """``image`` convolved with the normalised kernel (``pixel_width`` is unused)."""
        del pixel_width
        kernel = self.kernel / jnp.sum(self.kernel)
        return jax.scipy.signal.fftconvolve(image, kernel, mode="same")


class GaussianPSF(eqx.Module):
    r"""A Gaussian PSF of full width at half maximum ``fwhm`` (arcsec), lenstronomy's
    ``'GAUSSIAN'`` PSF: ``scipy.ndimage.gaussian_filter`` with :math:`\sigma = \mathrm{fwhm} /
    (2\sqrt{2\ln 2})` in pixels, truncated at ``truncation`` sigma (the kernel radius is
    ``int(truncation * sigma + 0.5)`` pixels, weights normalised to sum 1) and boundary mode
    ``'nearest'`` (the image edge is extended, not zero-padded). ``fwhm`` is static."""

    fwhm: float = eqx.field(static=True, converter=float)
    truncation: float = eqx.field(static=True, converter=float, default=5.0)

    def __check_init__(self):
        if not (math.isfinite(self.fwhm) and self.fwhm > 0):
            raise ValueError(f"GaussianPSF fwhm must be finite and > 0 arcsec, got {self.fwhm}")
        if not (math.isfinite(self.truncation) and self.truncation > 0):
            raise ValueError(f"GaussianPSF truncation must be finite and > 0, got {self.truncation}")

    def kernel_1d(self, pixel_width: float) -> np.ndarray:
        """The normalised 1-D kernel on the pixel grid (``ndimage``'s ``_gaussian_kernel1d``)."""
        sigma = self.fwhm / (2 * math.sqrt(2 * math.log(2))) / pixel_width
        radius = int(self.truncation * sigma + 0.5)
        offsets = np.arange(-radius, radius + 1)
        weights = np.exp(-0.5 * offsets**2 / sigma**2)
        return weights / weights.sum()

    def convolve(self, image: Image, pixel_width: float) -> Image:
        """``image`` convolved with the truncated Gaussian, edges extended."""
        k = self.kernel_1d(pixel_width)
        r = k.size // 2
        padded = jnp.pad(image, r, mode="edge")
        return jax.scipy.signal.fftconvolve(padded, jnp.asarray(np.outer(k, k)), mode="valid")


class NoiseModel(eqx.Module):
    r"""Background and Poisson noise of an image in counts/s per pixel (lenstronomy's
    ``SimAPI``/``ImageNoise`` convention): the variance of pixel :math:`m` is
    :math:`\sigma^2 = \max(m, 0)/t + \sigma_{bkg}^2` with ``exposure_time`` :math:`t` (s) and
    ``background_rms`` :math:`\sigma_{bkg}` (counts/s)."""

    background_rms: Array = eqx.field(converter=to_float_array)
    exposure_time: Array = eqx.field(converter=to_float_array)

    def __check_init__(self):
        for name, low in (("background_rms", 0.0), ("exposure_time", 0.0)):
            v = concrete(getattr(self, name))
            if v is not None and not np.all(np.isfinite(v) & (v > low)):
                raise ValueError(f"NoiseModel {name} must be finite and > 0, got {v}")

    def variance(self, model: Image) -> Image:
        """Per-pixel variance of the noise about ``model``."""
        return jnp.maximum(model, 0.0) / self.exposure_time + self.background_rms**2

    def sample(self, key: PRNGKeyArray, model: Image, exact_poisson: bool = False) -> Image:
        """A noisy image: ``model`` + Gaussian background + Poisson noise. By default the Poisson
        part is lenstronomy's Gaussian approximation, :math:`N(0, \\max(m, 0)/t)`; with
        ``exact_poisson`` the counts :math:`\\max(m, 0)\\,t` are drawn from a Poisson law and
        divided by :math:`t` (not differentiable in ``model``)."""
        k_bkg, k_poisson = jax.random.split(key)
        background = self.background_rms * jax.random.normal(k_bkg, model.shape, model.dtype)
        counts = jnp.maximum(model, 0.0) * self.exposure_time
        if exact_poisson:
            shot = jax.random.poisson(k_poisson, counts, model.shape).astype(model.dtype) / self.exposure_time
            return jnp.where(model > 0, shot, model) + background
        return model + background + jnp.sqrt(counts) / self.exposure_time * jax.random.normal(
            k_poisson, model.shape, model.dtype
        )

    def log_likelihood(self, data: Image, model: Image) -> Float[Array, ""]:
        r"""Gaussian log-likelihood :math:`-\frac12\sum[(d - m)^2/\sigma^2 + \log 2\pi\sigma^2]`
        with the variance :math:`\sigma^2` of ``model``."""
        var = self.variance(model)
        return -0.5 * jnp.sum((data - model) ** 2 / var + jnp.log(2 * jnp.pi * var))


class ImageModel(eqx.Module):
    """Lensed images on ``grid``: ray shooting on the grid supersampled ``supersampling_factor``
    times per axis, pixel averaging, PSF convolution (``psf=None``: none) and ``noise`` for
    :meth:`simulate`. Static geometry; the lens and light models are arguments, so one
    ``ImageModel`` serves a whole batch of parameters under ``jax.vmap``."""

    grid: PixelGrid
    psf: PixelPSF | GaussianPSF | None = None
    supersampling_factor: int = eqx.field(static=True, default=1)
    noise: NoiseModel | None = None

    def __check_init__(self):
        s = self.supersampling_factor
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"ImageModel supersampling_factor must be a positive integer, got {s!r}")

    def coordinates(self) -> tuple[Array, Array]:
        """The supersampled image-plane positions, shape ``(s ny, s nx)``."""
        return self.grid.coordinates(self.supersampling_factor)

    def pixelate(self, surface_brightness: Float[Array, "sny snx"], convolve: bool = True) -> Image:
        """Flux per pixel from the surface brightness on the supersampled grid: the mean over
        each pixel's sub-pixels times the pixel area, then the PSF."""
        s = self.supersampling_factor
        ny, nx = self.grid.shape
        image = surface_brightness.reshape(ny, s, nx, s).mean(axis=(1, 3)) * self.grid.pixel_width**2
        if convolve and self.psf is not None:
            image = self.psf.convolve(image, self.grid.pixel_width)
        return image

    def image(
        self,
        lens: AbstractMassProfile | None = None,
        source: AbstractLightProfile | None = None,
        lens_light: AbstractLightProfile | None = None,
        convolve: bool = True,
    ) -> Image:
        """The model image (flux per pixel): ``source`` seen through ``lens`` (unlensed if
        ``lens`` is None) plus ``lens_light``, PSF-convolved unless ``convolve=False``."""
        x, y = self.coordinates()
        sb = jnp.zeros_like(x)
        if source is not None:
            bx, by = (x, y) if lens is None else lens.ray_shoot(x, y)
            sb = sb + source.surface_brightness(bx, by)
        if lens_light is not None:
            sb = sb + lens_light.surface_brightness(x, y)
        return self.pixelate(sb, convolve)

    def simulate(
        self,
        key: PRNGKeyArray,
        lens: AbstractMassProfile | None = None,
        source: AbstractLightProfile | None = None,
        lens_light: AbstractLightProfile | None = None,
        exact_poisson: bool = False,
    ) -> Image:
        """A noisy observation: :meth:`image` plus a draw of :attr:`noise` (see :meth:`NoiseModel.sample`)."""
        if self.noise is None:
            raise ValueError("ImageModel.simulate needs a noise model: ImageModel(..., noise=NoiseModel(...))")
        return self.noise.sample(key, self.image(lens, source, lens_light), exact_poisson)
