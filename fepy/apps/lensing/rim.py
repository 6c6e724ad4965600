r"""Recurrent Inference Machine (RIM) for strong-lens reconstruction, and its MAP baselines.

The RIM of Putzky & Welling (2017), as applied to lensing by Morningstar et al. (ApJ 2019):
the unknowns :math:`x = (s, u)` are the source surface brightness :math:`s` on a pixelated
source grid (in units of ``source_scale`` flux/arcsec², so that a typical source peaks at
about 1) and the SIE + external-shear lens parameters :math:`u` (7 numbers in
*standardised unconstrained* coordinates, see :class:`LensPrior`). Starting from
:math:`x_0` (a blank source, the prior's central lens), a learned update is iterated
:math:`T` times,

.. math::

    x_{t+1} = x_t + g_\phi\big(x_t, \nabla_x \log p(y \mid x_t), y, h_t\big), \qquad
    h_{t+1} = \text{the recurrent state after the step},

where the log-likelihood is the Gaussian one of :class:`LensLikelihood`,
:math:`\log p(y\mid x) = -\tfrac12\sum_k (y_k - m_k(x))^2/\sigma_k^2` (fixed variances,
constant dropped), and its gradient is computed exactly by ``jax.grad`` through the fepy
forward model (:class:`ImageModel` of a :class:`PixelatedSource` behind a
:class:`MassModel`). The network :math:`g_\phi` (:class:`RIM`) has a ConvGRU branch on the
source grid and a GRU branch for the lens vector, coupled by pooled features; it is trained
on lenses simulated on the fly (:class:`LensSimulator`) by minimising the mean over the
:math:`T` iterations of the source MSE plus a lens-parameter MSE (:func:`rim_loss`,
:func:`train_rim`).

The baselines are the maximum a posteriori reconstructions of the same unknowns by Adam
(:func:`map_joint`: source pixels with a curvature prior and lens parameters jointly;
:func:`map_inversion`: lens parameters only, the source solved exactly for each lens by
:func:`linear_inversion`), started at the same :math:`x_0`.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .imaging import ImageModel, PixelGrid
from .light import SersicElliptic
from .mass import SIE, MassModel, Shear
from .pixelated import PixelatedSource, linear_inversion, regularization_matrix
from .posterior import Parameters

LENS_NAMES = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")

# a default prior of the lenses (arcsec; dimensionless ellipticity and shear)
DEFAULT_LENS_PRIORS = dict(
    theta_E=dist.Uniform(0.6, 1.2),
    e1=dist.Normal(0.0, 0.1),
    e2=dist.Normal(0.0, 0.1),
    center_x=dist.Normal(0.0, 0.05),
    center_y=dist.Normal(0.0, 0.05),
    gamma1=dist.Normal(0.0, 0.03),
    gamma2=dist.Normal(0.0, 0.03),
)

# the initial lens ellipticity of the RIM and of MAP: at exactly e = 0 the derivatives of the
# SIE in (e1, e2) are not the true ones (see fepy.apps.lensing._ellipse.phi_q), so start just off it
INITIAL_ELLIPTICITY = 0.01


def _positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} {name} must be a positive integer, got {value!r}")


def _positive_float(owner: str, name: str, value) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{owner} {name} must be a finite number > 0, got {value!r}")


class LensPrior(eqx.Module):
    r"""The prior of the SIE + shear parameters and their standardised unconstrained coordinates.

    ``priors`` maps each of :data:`LENS_NAMES` (SIE ``theta_E``, ``e1``, ``e2``, ``center_x``,
    ``center_y`` in arcsec / dimensionless; ``Shear`` ``gamma1``, ``gamma2`` about the SIE
    centre) to a numpyro ``Normal`` or ``Uniform``. The unconstrained coordinate of a value
    :math:`\theta_k` is :math:`z_k = t_k^{-1}(\theta_k)` (identity for a Normal, the logit of
    :math:`(\theta - a)/(b - a)` for a Uniform(a, b), as in :class:`Parameters`), and the
    standardised coordinate is :math:`u_k = (z_k - \mu_k)/\tau_k` with the prior mean and
    standard deviation of :math:`z_k` (Normal: its loc and scale; Uniform: :math:`z` is
    standard logistic, :math:`\mu = 0`, :math:`\tau = \pi/\sqrt3`), so that every
    :math:`u_k` has prior mean 0 and variance 1: the scale the RIM's lens branch works in.
    """

    parameters: Parameters
    loc: tuple[float, ...] = eqx.field(static=True)
    scale: tuple[float, ...] = eqx.field(static=True)
    initial_u: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, priors: dict | None = None):
        priors = dict(DEFAULT_LENS_PRIORS if priors is None else priors)
        if tuple(priors) != LENS_NAMES:
            raise ValueError(f"LensPrior needs priors for exactly {LENS_NAMES} in that order, got {tuple(priors)}")
        loc, scale, median = [], [], {}
        for name, prior in priors.items():
            if type(prior) is dist.Normal:
                loc.append(float(prior.loc))
                scale.append(float(prior.scale))
                median[name] = float(prior.loc)
            elif type(prior) is dist.Uniform:
                if not float(prior.high) > float(prior.low):
                    raise ValueError(f"LensPrior {name}: Uniform needs high > low")
                loc.append(0.0)
                scale.append(math.pi / math.sqrt(3.0))
                median[name] = 0.5 * (float(prior.low) + float(prior.high))
            else:
                raise ValueError(f"LensPrior {name}: the prior must be a numpyro Normal or Uniform, got {prior!r}")
        self.parameters = Parameters(priors)
        self.loc, self.scale = tuple(loc), tuple(scale)
        median.update(e1=INITIAL_ELLIPTICITY, e2=INITIAL_ELLIPTICITY)
        z = np.asarray(self.parameters.unconstrain(median))
        self.initial_u = tuple(float(v) for v in (z - np.asarray(loc)) / np.asarray(scale))

    @property
    def dim(self) -> int:
        return len(LENS_NAMES)

    def to_z(self, u: Float[Array, " 7"]) -> Float[Array, " 7"]:
        """Unconstrained :math:`z = \\mu + \\tau u`."""
        return jnp.asarray(self.loc, u.dtype) + jnp.asarray(self.scale, u.dtype) * u

    def from_z(self, z: Float[Array, " 7"]) -> Float[Array, " 7"]:
        return (z - jnp.asarray(self.loc, z.dtype)) / jnp.asarray(self.scale, z.dtype)

    def values(self, u: Float[Array, " 7"]) -> Float[Array, " 7"]:
        """The parameter values (order :data:`LENS_NAMES`) at standardised coordinates ``u``."""
        return self.parameters.values(self.to_z(u))

    def from_values(self, values: dict) -> Float[Array, " 7"]:
        """The standardised coordinates of a dict of parameter values."""
        return self.from_z(self.parameters.unconstrain(values))

    def lens(self, u: Float[Array, " 7"]) -> MassModel:
        """The SIE + shear (shear centred on the SIE) at ``u``."""
        p = self.parameters.constrain(self.to_z(u))
        return MassModel((
            SIE(p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"]),
            Shear(p["gamma1"], p["gamma2"], p["center_x"], p["center_y"]),
        ))

    def log_prior(self, u: Float[Array, " 7"]) -> Float[Array, ""]:
        r"""Log prior density of ``u``: that of :math:`z` plus :math:`\sum\log\tau_k` (a constant)."""
        return self.parameters.log_prior(self.to_z(u)) + float(np.sum(np.log(self.scale)))

    def sample(self, key: PRNGKeyArray) -> Float[Array, " 7"]:
        """One draw of ``u`` from the prior."""
        keys = jax.random.split(key, self.dim)
        draws = {n: p.sample(k) for n, p, k in zip(LENS_NAMES, self.parameters.priors, keys)}
        return self.from_values(draws)

    def initial(self) -> Float[Array, " 7"]:
        """The starting lens :math:`u_0`: the prior median of every parameter, except
        ``e1 = e2 =`` :data:`INITIAL_ELLIPTICITY` (just off the round case)."""
        return jnp.asarray(self.initial_u)


class LensLikelihood(eqx.Module):
    r"""The Gaussian log-likelihood of an image given a pixelated source and an SIE + shear lens.

    The model image (flux per pixel) of the state :math:`(s, u)` is
    ``image_model.image(prior.lens(u), PixelatedSource(source_grid, source_scale * s))``
    (``source_scale`` in flux/arcsec²; :math:`s` dimensionless), and

    .. math:: \log p(y \mid s, u) = -\frac12\sum_k \frac{(y_k - m_k(s, u))^2}{\sigma_k^2}

    with fixed per-pixel variances :math:`\sigma_k^2` (e.g. :meth:`NoiseModel.variance` of the
    data), the constant :math:`-\frac12\sum\log 2\pi\sigma_k^2` dropped (it has no gradient).
    """

    image_model: ImageModel
    source_grid: PixelGrid
    prior: LensPrior
    source_scale: float = eqx.field(static=True, converter=float)

    def __check_init__(self):
        _positive_float("LensLikelihood", "source_scale", self.source_scale)

    def check(self, data, variance) -> tuple[Array, Array]:
        """``data`` and ``variance`` as arrays of the image grid's shape (ValueError otherwise;
        concrete variances must be finite and > 0)."""
        data, variance = jnp.asarray(data), jnp.asarray(variance)
        shape = self.image_model.grid.shape
        for name, a in (("data", data), ("variance", variance)):
            if a.shape != shape:
                raise ValueError(f"{name} must have the image grid's shape {shape} (ny, nx), got {a.shape}")
        try:
            v = np.asarray(variance)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            v = None
        if v is not None and not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError("variance must be finite and > 0 in every pixel")
        return data, variance

    def source(self, s: Float[Array, "sy sx"]) -> PixelatedSource:
        return PixelatedSource(self.source_grid, self.source_scale * s)

    def model_image(self, s: Float[Array, "sy sx"], u: Float[Array, " 7"]) -> Float[Array, "ny nx"]:
        return self.image_model.image(self.prior.lens(u), self.source(s))

    def log_likelihood(self, data, variance, s, u) -> Float[Array, ""]:
        return -0.5 * jnp.sum((data - self.model_image(s, u)) ** 2 / variance)

    def gradient(self, data, variance, s, u) -> tuple[Float[Array, ""], Float[Array, "sy sx"], Float[Array, " 7"]]:
        r"""``(log p, d log p / d s, d log p / d u)``, exact (reverse-mode autodiff)."""
        value, (gs, gu) = jax.value_and_grad(self.log_likelihood, argnums=(2, 3))(data, variance, s, u)
        return value, gs, gu


class LensBatch(NamedTuple):
    """Simulated lenses (a leading batch axis under :func:`simulate_batch`)."""

    data: Float[Array, "... ny nx"]
    """The noisy image (flux per pixel)."""
    variance: Float[Array, "... ny nx"]
    """The per-pixel variance of the likelihood: the noise model's variance of the data."""
    source: Float[Array, "... sy sx"]
    """The true source in units of ``source_scale`` (the RIM's :math:`s`)."""
    lens: Float[Array, "... 7"]
    """The true lens in standardised coordinates :math:`u`."""


class LensSimulator(eqx.Module):
    r"""Random lenses: an SIE + shear from ``likelihood.prior`` and a structured source.

    The source is a sum of 1 to ``blobs`` elliptical Sérsic blobs (the first always present,
    each further one with probability 1/2), each with centre uniform in a disc of radius
    ``source_radius`` arcsec, half-light radius log-uniform in ``radius_range`` arcsec, index
    uniform in [0.5, 2.5], ellipticity components uniform in [-0.3, 0.3] and relative weight
    uniform in [0.2, 1]; it is sampled at the source grid's pixel centres and rescaled so that
    its peak is uniform in ``peak_range`` (in units of ``source_scale`` flux/arcsec²). The true
    source *is* that pixelated source, so the simulated images are exactly the likelihood's
    model images (no model mismatch) plus noise drawn from ``image_model.noise`` (background
    + Gaussian-approximated Poisson); the likelihood's variance is the noise model's variance
    of the data.
    """

    likelihood: LensLikelihood
    blobs: int = eqx.field(static=True, default=3)
    source_radius: float = eqx.field(static=True, default=0.25)
    radius_range: tuple[float, float] = eqx.field(static=True, default=(0.06, 0.2))
    peak_range: tuple[float, float] = eqx.field(static=True, default=(0.5, 1.5))

    def __check_init__(self):
        _positive_int("LensSimulator", "blobs", self.blobs)
        _positive_float("LensSimulator", "source_radius", self.source_radius)
        for name in ("radius_range", "peak_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"LensSimulator {name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.likelihood.image_model.noise is None:
            raise ValueError("LensSimulator needs an ImageModel with a NoiseModel")

    def draw_source(self, key: PRNGKeyArray) -> Float[Array, "sy sx"]:
        """A random source in units of ``source_scale`` (see the class docstring)."""
        x, y = self.likelihood.source_grid.coordinates()
        k = jax.random.split(key, 9)
        n = self.blobs
        r = self.source_radius * jnp.sqrt(jax.random.uniform(k[0], (n,)))
        angle = 2 * jnp.pi * jax.random.uniform(k[1], (n,))
        lo, hi = self.radius_range
        radius = jnp.exp(jax.random.uniform(k[2], (n,), minval=math.log(lo), maxval=math.log(hi)))
        index = jax.random.uniform(k[3], (n,), minval=0.5, maxval=2.5)
        e = jax.random.uniform(k[4], (2, n), minval=-0.3, maxval=0.3)
        weight = jax.random.uniform(k[5], (n,), minval=0.2, maxval=1.0)
        present = jnp.concatenate([jnp.ones(1), (jax.random.uniform(k[6], (n - 1,)) < 0.5).astype(float)])

        def blob(i):
            profile = SersicElliptic(1.0, radius[i], index[i], e[0, i], e[1, i], r[i] * jnp.cos(angle[i]),
                                     r[i] * jnp.sin(angle[i]))
            return weight[i] * present[i] * profile.surface_brightness(x, y)

        image = sum(blob(i) for i in range(n))
        peak = jax.random.uniform(k[7], minval=self.peak_range[0], maxval=self.peak_range[1])
        return peak * image / jnp.max(image)

    def __call__(self, key: PRNGKeyArray) -> LensBatch:
        """One simulated lens."""
        k_lens, k_source, k_noise = jax.random.split(key, 3)
        u = self.likelihood.prior.sample(k_lens)
        s = self.draw_source(k_source)
        model = self.likelihood.image_model
        data = model.noise.sample(k_noise, self.likelihood.model_image(s, u))
        return LensBatch(data, model.noise.variance(data), s, u)


def simulate_batch(simulator: LensSimulator, key: PRNGKeyArray, n: int) -> LensBatch:
    """``n`` independent lenses of ``simulator`` (``jax.vmap``)."""
    _positive_int("simulate_batch", "n", n)
    return jax.vmap(simulator)(jax.random.split(key, n))


class ConvGRUCell(eqx.Module):
    r"""A convolutional GRU cell (Ballas et al. 2016) on ``(channels, height, width)`` maps:

    .. math::

        z = \sigma(W_z * [x, h]),\; r = \sigma(W_r * [x, h]),\;
        n = \tanh(W_x * x + r \odot (W_h * h)),\; h' = (1 - z)\odot n + z \odot h,

    with ``kernel`` x ``kernel`` same-padded convolutions :math:`*`.
    """

    gates: eqx.nn.Conv2d
    candidate_x: eqx.nn.Conv2d
    candidate_h: eqx.nn.Conv2d

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        pad = kernel // 2
        self.gates = eqx.nn.Conv2d(in_channels + hidden, 2 * hidden, kernel, padding=pad, key=k1)
        self.candidate_x = eqx.nn.Conv2d(in_channels, hidden, kernel, padding=pad, key=k2)
        self.candidate_h = eqx.nn.Conv2d(hidden, hidden, kernel, padding=pad, use_bias=False, key=k3)

    def __call__(self, x: Float[Array, "c h w"], h: Float[Array, "k h w"]) -> Float[Array, "k h w"]:
        z, r = jnp.split(jax.nn.sigmoid(self.gates(jnp.concatenate([x, h]))), 2)
        n = jnp.tanh(self.candidate_x(x) + r * self.candidate_h(h))
        return (1 - z) * n + z * h


def _scaled(layer, factor: float):
    """``layer`` with its weight multiplied by ``factor`` and its bias set to 0 (small initial updates)."""
    layer = eqx.tree_at(lambda m: m.weight, layer, layer.weight * factor)
    if layer.bias is not None:
        layer = eqx.tree_at(lambda m: m.bias, layer, layer.bias * 0.0)
    return layer


class RIMTrajectory(NamedTuple):
    """The iterates :math:`x_1 .. x_T` of a RIM (a leading time axis)."""

    source: Float[Array, "T sy sx"]
    lens: Float[Array, "T 7"]


class RIM(eqx.Module):
    r"""The recurrent inference machine (see the module docstring) for the unknowns of ``likelihood``.

    One iteration from :math:`x_t = (s_t, u_t)` with hidden states :math:`h^s_t` (``hidden``
    channels on the source grid) and :math:`h^u_t` (``lens_hidden`` numbers):

    1. :math:`\log p`, :math:`g_s = \partial_s\log p`, :math:`g_u = \partial_u\log p` at
       :math:`x_t` (exact, :meth:`LensLikelihood.gradient`; an input: not differentiated
       through in training, ``stop_gradient``, as in Putzky & Welling).
    2. Normalisation per channel and per lens: :math:`\hat g_s = g_s/\mathrm{rms}(g_s)`
       (the root mean square over the source pixels), :math:`\hat g_u = g_u /
       \mathrm{rms}(g_u)` (over the 7 components); the magnitudes, which vary over orders
       of magnitude between lenses and iterations, enter the lens branch only through
       :math:`\log(1 + \mathrm{rms}(g_s))`, :math:`\log(1 + \mathrm{rms}(g_u))` and
       :math:`\log(\chi^2/N)` (the reduced chi-square of :math:`x_t`).
    3. Source branch (ConvGRU): the channels :math:`[s_t, \hat g_s]` go through a 3x3
       convolution (plus a per-channel bias from :math:`h^u_t`: the lens-to-source coupling),
       ELU, a dilated 3x3 convolution, ELU, the :class:`ConvGRUCell` giving
       :math:`h^s_{t+1}`, and a 3x3 convolution to :math:`\Delta s`.
    4. Lens branch (GRU): :math:`[u_t, \hat g_u`, the three log-magnitudes, the mean of
       :math:`h^s_{t+1}` over the source pixels (the source-to-lens coupling), pooled
       features of the image :math:`]` go through a linear layer, ELU, an
       ``eqx.nn.GRUCell`` giving :math:`h^u_{t+1}` and a linear layer to :math:`\Delta u`.
       The image features come from two stride-2 3x3 convolutions (ELU) of the channels
       :math:`[\mathrm{asinh}(y/\sigma), \mathrm{asinh}((y - m(x_t))/\sigma)]` (the data
       and the current normalised residual), averaged and max-pooled over the image.
    5. :math:`x_{t+1} = x_t + (\Delta s, \Delta u)`.

    The output layers start at a tenth of their default initial scale, so the untrained RIM
    makes small updates. ``steps`` is :math:`T`.
    """

    likelihood: LensLikelihood
    steps: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    lens_hidden: int = eqx.field(static=True)
    source_in: eqx.nn.Conv2d
    lens_to_source: eqx.nn.Linear
    source_mid: eqx.nn.Conv2d
    source_gru: ConvGRUCell
    source_out: eqx.nn.Conv2d
    image_1: eqx.nn.Conv2d
    image_2: eqx.nn.Conv2d
    lens_in: eqx.nn.Linear
    lens_gru: eqx.nn.GRUCell
    lens_out: eqx.nn.Linear

    def __init__(self, likelihood: LensLikelihood, steps: int = 8, hidden: int = 16, lens_hidden: int = 64,
                 *, key: PRNGKeyArray):
        if not isinstance(likelihood, LensLikelihood):
            raise ValueError(f"RIM needs a LensLikelihood, got {type(likelihood).__name__}")
        for name, value in (("steps", steps), ("hidden", hidden), ("lens_hidden", lens_hidden)):
            _positive_int("RIM", name, value)
        k = jax.random.split(key, 10)
        f, d = hidden, likelihood.prior.dim
        self.likelihood, self.steps, self.hidden, self.lens_hidden = likelihood, steps, hidden, lens_hidden
        self.source_in = eqx.nn.Conv2d(2, f, 3, padding=1, key=k[0])
        self.lens_to_source = eqx.nn.Linear(lens_hidden, f, key=k[1])
        self.source_mid = eqx.nn.Conv2d(f, f, 3, padding=2, dilation=2, key=k[2])
        self.source_gru = ConvGRUCell(f, f, 3, key=k[3])
        self.source_out = _scaled(eqx.nn.Conv2d(f, 1, 3, padding=1, key=k[4]), 0.1)
        self.image_1 = eqx.nn.Conv2d(2, f, 3, stride=2, padding=1, key=k[5])
        self.image_2 = eqx.nn.Conv2d(f, f, 3, stride=2, padding=1, key=k[6])
        self.lens_in = eqx.nn.Linear(2 * d + 3 + f + 2 * f, lens_hidden, key=k[7])
        self.lens_gru = eqx.nn.GRUCell(lens_hidden, lens_hidden, key=k[8])
        self.lens_out = _scaled(eqx.nn.Linear(lens_hidden, d, key=k[9]), 0.1)

    def initial_state(self, dtype=float) -> tuple[Float[Array, "sy sx"], Float[Array, " 7"]]:
        """:math:`x_0`: a blank source and :meth:`LensPrior.initial`."""
        grid = self.likelihood.source_grid
        return jnp.zeros(grid.shape, dtype), self.likelihood.prior.initial().astype(dtype)

    def _image_features(self, data, residual):
        a = jnp.stack([jnp.arcsinh(data), jnp.arcsinh(residual)])
        a = jax.nn.elu(self.image_2(jax.nn.elu(self.image_1(a))))
        return jnp.concatenate([jnp.mean(a, axis=(1, 2)), jnp.max(a, axis=(1, 2))])

    def features(self, data, variance, s, u) -> tuple[Float[Array, "sy sx"], Float[Array, " 7"], Float[Array, " 3"],
                                                      Float[Array, "ny nx"]]:
        r"""The likelihood inputs of one iteration at :math:`(s, u)` (steps 1-2 of the class
        docstring), held constant in training (``stop_gradient``): :math:`\hat g_s`,
        :math:`\hat g_u`, the three log-magnitudes and the normalised residual
        :math:`(y - m)/\sigma`."""
        tiny = jnp.finfo(data.dtype).tiny ** 0.5
        log_like, g_s, g_u = self.likelihood.gradient(data, variance, s, u)
        residual = (data - self.likelihood.model_image(s, u)) / jnp.sqrt(variance)
        rms_s = jnp.sqrt(jnp.mean(g_s**2))
        rms_u = jnp.sqrt(jnp.mean(g_u**2))
        magnitudes = jnp.stack([jnp.log1p(rms_s), jnp.log1p(rms_u), jnp.log(-2 * log_like / data.size + tiny)])
        return jax.lax.stop_gradient((g_s / (rms_s + tiny), g_u / (rms_u + tiny), magnitudes, residual))

    def __call__(self, data: Float[Array, "ny nx"], variance: Float[Array, "ny nx"]) -> RIMTrajectory:
        """The iterates :math:`x_1, \\dots, x_T` for one image ``data`` with noise ``variance``."""
        data, variance = self.likelihood.check(data, variance)
        sigma = jnp.sqrt(variance)
        s0, u0 = self.initial_state(data.dtype)
        h_s0 = jnp.zeros((self.hidden, *s0.shape), data.dtype)
        h_u0 = jnp.zeros(self.lens_hidden, data.dtype)

        def step(carry, _):
            s, u, h_s, h_u = carry
            g_s, g_u, magnitudes, residual = self.features(data, variance, s, u)
            # source branch
            a = self.source_in(jnp.stack([s, g_s])) + self.lens_to_source(h_u)[:, None, None]
            a = jax.nn.elu(self.source_mid(jax.nn.elu(a)))
            h_s = self.source_gru(a, h_s)
            s = s + self.source_out(h_s)[0]
            # lens branch
            v = jnp.concatenate([u, g_u, magnitudes, jnp.mean(h_s, axis=(1, 2)),
                                 self._image_features(data / sigma, residual)])
            h_u = self.lens_gru(jax.nn.elu(self.lens_in(v)), h_u)
            u = u + self.lens_out(h_u)
            return (s, u, h_s, h_u), (s, u)

        _, (sources, lenses) = jax.lax.scan(step, (s0, u0, h_s0, h_u0), None, length=self.steps)
        return RIMTrajectory(sources, lenses)


def rim_loss(rim: RIM, batch: LensBatch, lens_weight: float = 1.0) -> Float[Array, ""]:
    r"""The training loss, averaged over the lenses of ``batch`` (leading axis):

    .. math:: L = \frac1T\sum_{t=1}^T \Big[\overline{(s_t - s^*)^2} + w\,\overline{(u_t - u^*)^2}\Big]

    (bars: means over the source pixels and over the 7 lens coordinates; :math:`s` in units
    of ``source_scale``, :math:`u` standardised, so both terms are of order 1 at the prior
    and ``lens_weight`` :math:`w` weighs them). The uniform mean over the iterations is
    Morningstar et al.'s choice."""
    trajectory = jax.vmap(rim)(batch.data, batch.variance)
    source = jnp.mean((trajectory.source - batch.source[:, None]) ** 2)
    lens = jnp.mean((trajectory.lens - batch.lens[:, None]) ** 2)
    return source + lens_weight * lens


class TrainingHistory(NamedTuple):
    steps: np.ndarray
    """The training steps at which the held-out loss was evaluated (0: before training)."""
    train_loss: np.ndarray
    """The mean training-batch loss of the steps since the previous evaluation (nan at 0)."""
    heldout_loss: np.ndarray
    """:func:`rim_loss` on the fixed held-out batch."""


def train_rim(
    rim: RIM,
    simulator: LensSimulator,
    key: PRNGKeyArray,
    *,
    steps: int,
    batch: int = 16,
    optimizer: optax.GradientTransformation | None = None,
    lens_weight: float = 1.0,
    heldout: LensBatch | None = None,
    evaluate_every: int = 100,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[RIM, TrainingHistory]:
    """Train ``rim`` for ``steps`` optimizer steps, each on ``batch`` lenses simulated on the
    fly inside the jitted step (``simulator`` under ``jax.vmap``, a fresh key per step), so no
    lens is seen twice. ``optimizer`` defaults to Adam at 1e-3 with global-norm clipping at
    1. Every ``evaluate_every`` steps (and at 0 and at the end) :func:`rim_loss` on
    ``heldout`` (default: 64 lenses from a key not used for training) is recorded. A tqdm
    bar on stderr shows the progress with ``progress``."""
    _positive_int("train_rim", "steps", steps)
    _positive_int("train_rim", "batch", batch)
    _positive_int("train_rim", "evaluate_every", evaluate_every)
    if optimizer is None:
        optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    k_heldout, key = jax.random.split(key)
    if heldout is None:
        heldout = simulate_batch(simulator, k_heldout, 64)
    # the network's weights only: the forward model (noise arrays, prior parameters) is fixed
    trainable = jax.tree_util.tree_map(eqx.is_inexact_array, rim)
    trainable = eqx.tree_at(lambda r: r.likelihood, trainable,
                            replace=jax.tree_util.tree_map(lambda _: False, rim.likelihood))
    params, static = eqx.partition(rim, trainable)
    opt_state = optimizer.init(params)

    @eqx.filter_jit
    def train_step(params, opt_state, key):
        lenses = simulate_batch(simulator, key, batch)

        def loss(p):
            return rim_loss(eqx.combine(p, static), lenses, lens_weight)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    evaluate = eqx.filter_jit(lambda p: rim_loss(eqx.combine(p, static), heldout, lens_weight))
    records = [(0, float("nan"), float(evaluate(params)))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", dynamic_ncols=True, desc="training RIM")
    losses = []
    for i in range(1, steps + 1):
        params, opt_state, value = train_step(params, opt_state, jax.random.fold_in(key, i))
        losses.append(value)
        if i % evaluate_every == 0 or i == steps:
            train = float(np.mean(jax.device_get(losses)))
            losses = []
            held = float(evaluate(params))
            if not math.isfinite(train):
                raise FloatingPointError(f"RIM training loss is not finite at step {i}")
            records.append((i, train, held))
            if bar is not None:
                bar.set_postfix(train=f"{train:.4g}", heldout=f"{held:.4g}", refresh=False)
            if callback is not None:
                callback(i, held)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    steps_, train_, held_ = (np.asarray(v) for v in zip(*records))
    return eqx.combine(params, static), TrainingHistory(steps_, train_, held_)


# ------------------------------------------------------------------------------------ baselines


class MAPResult(NamedTuple):
    source: Float[Array, "... sy sx"]
    """The MAP source (units of ``source_scale``)."""
    lens: Float[Array, "... 7"]
    """The MAP lens (standardised coordinates)."""


def map_joint(
    likelihood: LensLikelihood,
    data: Float[Array, "ny nx"],
    variance: Float[Array, "ny nx"],
    steps,
    *,
    strength: float,
    learning_rate: float,
    regularization: str = "curvature",
) -> MAPResult:
    r"""MAP of source pixels and lens jointly by ``steps`` Adam steps (``steps`` may be traced:
    one compilation serves every budget) from the RIM's :math:`x_0`, minimising

    .. math:: -\log p(y\mid s, u) + \tfrac{\lambda}{2}\,S^\top R\,S - \log\pi(u),
              \quad S = \texttt{source\_scale}\cdot s,

    with the :func:`regularization_matrix` :math:`R` of :func:`linear_inversion` and
    ``strength`` :math:`\lambda`, so that at fixed lens its minimum is
    :func:`linear_inversion`'s source."""
    data, variance = likelihood.check(data, variance)
    R = jnp.asarray(regularization_matrix(likelihood.source_grid, regularization), data.dtype)
    scale = likelihood.source_scale

    def objective(x):
        s, u = x
        S = scale * s.reshape(-1)
        return -likelihood.log_likelihood(data, variance, s, u) + 0.5 * strength * S @ (R @ S) \
            - likelihood.prior.log_prior(u)

    s0 = jnp.zeros(likelihood.source_grid.shape, data.dtype)
    x0 = (s0, likelihood.prior.initial().astype(data.dtype))
    optimizer = optax.adam(learning_rate)

    def body(_, carry):
        x, state = carry
        g = jax.grad(objective)(x)
        updates, state = optimizer.update(g, state, x)
        return optax.apply_updates(x, updates), state

    (s, u), _ = jax.lax.fori_loop(0, steps, body, (x0, optimizer.init(x0)))
    return MAPResult(s, u)


def map_inversion(
    likelihood: LensLikelihood,
    data: Float[Array, "ny nx"],
    variance: Float[Array, "ny nx"],
    steps,
    *,
    strength: float,
    learning_rate: float,
    regularization: str = "curvature",
) -> MAPResult:
    r"""MAP of the lens with the source integrated out exactly: ``steps`` Adam steps (may be
    traced) on :math:`-\log p(y\mid\lambda, u) - \log\pi(u)`, the negative log evidence of
    :func:`linear_inversion` (prior ``strength`` :math:`\lambda` on :math:`S`), from the
    RIM's :math:`u_0`; the source is the inversion's at the final lens. Each step builds the
    dense lensing matrix (one PSF convolution per source pixel) and a Cholesky factor."""
    data, variance = likelihood.check(data, variance)
    model, grid = likelihood.image_model, likelihood.source_grid

    def inversion(u):
        return linear_inversion(model, likelihood.prior.lens(u), grid, data, variance, strength, regularization)

    def objective(u):
        return -inversion(u).log_evidence - likelihood.prior.log_prior(u)

    optimizer = optax.adam(learning_rate)
    u0 = likelihood.prior.initial().astype(data.dtype)

    def body(_, carry):
        u, state = carry
        updates, state = optimizer.update(jax.grad(objective)(u), state, u)
        return optax.apply_updates(u, updates), state

    u, _ = jax.lax.fori_loop(0, steps, body, (u0, optimizer.init(u0)))
    return MAPResult(inversion(u).source.values / likelihood.source_scale, u)


def evidence_strength(likelihood: LensLikelihood, batch: LensBatch, strengths, regularization: str = "curvature"):
    r"""The regularisation strength for the MAP baselines: for each lens of ``batch`` (at its
    true lens), the :func:`linear_inversion` log evidence over ``strengths``; returns the
    geometric mean of the per-lens maximisers and their array. Use training-distribution
    lenses, not the held-out ones."""
    strengths = np.asarray(strengths, float)

    @jax.jit
    def scan(data, variance, u):
        lens = likelihood.prior.lens(u)
        return jax.vmap(lambda lam: linear_inversion(likelihood.image_model, lens, likelihood.source_grid, data,
                                                     variance, lam, regularization).log_evidence)(
            jnp.asarray(strengths, data.dtype))

    best = np.array([strengths[int(np.argmax(scan(d, v, u)))] for d, v, u in zip(batch.data, batch.variance,
                                                                                 batch.lens)])
    return float(np.exp(np.mean(np.log(best)))), best


def source_mse(source: Float[Array, "... sy sx"], truth: Float[Array, "... sy sx"]) -> Float[Array, "..."]:
    """Mean squared error over the source pixels (units of ``source_scale`` squared)."""
    return jnp.mean((source - truth) ** 2, axis=(-2, -1))
