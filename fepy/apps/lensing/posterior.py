r"""Lens modelling as free-energy minimisation: the negative log posterior of a lens system as an `fepy.Energy`.

A lens system (mass, source light, optional lens light) is built from named scalar
parameters by a user function ``system(params) -> LensSystem``; each parameter has a numpyro
prior. The sampler-facing coordinates are unconstrained: :math:`\theta_k = t_k(z_k)` with
:math:`t_k` = ``numpyro.distributions.transforms.biject_to(prior.support)`` (identity for a
real support, exp for a positive one, a scaled sigmoid for an interval), so that

.. math::

    U(z) = -\log L(d \mid \theta(z)) - \sum_k \left[\log \pi_k(\theta_k) + \log|t_k'(z_k)|\right]

is the negative log posterior density of :math:`z` (``beta = 1``, dimensionless), and
`fepy.Descent` gives its MAP, `fepy.laplace` its Gaussian approximation, `fepy.nuts` and the
particle flows samples and `fepy.ReverseKL` the variational fit (the ELBO as a free energy).

:class:`LensPosterior` has the Gaussian pixel likelihood of the data under the model image,
with the `NoiseModel` variance of that image. :class:`SourceMarginalPosterior` integrates a
pixelated source out exactly (:func:`linear_inversion`), so its :math:`-\log L` is the negative
log evidence of the lens parameters.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.distributions.transforms import biject_to

from ...targets.energy import Energy
from .imaging import Image, ImageModel, PixelGrid, _check_image
from .light import AbstractLightProfile
from .mass import AbstractMassProfile
from .pixelated import REGULARIZATIONS, Inversion, linear_inversion


class LensSystem(eqx.Module):
    """What an image is made of: the ``lens`` mass, the ``source`` light (None for a pixelated
    source that is solved for) and the ``lens_light`` (None: none, or already subtracted)."""

    lens: AbstractMassProfile
    source: AbstractLightProfile | None = None
    lens_light: AbstractLightProfile | None = None


class Parameters(eqx.Module):
    r"""Named scalar parameters with numpyro priors, packed into an unconstrained vector z.

    ``Parameters(priors)`` takes a dict from each name to a scalar numpyro distribution; the
    order of the dict is the order of z (kept as a static tuple of names: JAX would sort the
    keys of a dict leaf). :meth:`constrain` maps z to the parameter values (in the units of
    the profiles' fields: arcsec, flux per arcsec², dimensionless), :meth:`unconstrain` back.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    priors: tuple[dist.Distribution, ...]

    def __init__(self, priors: dict):
        if not isinstance(priors, dict) or not priors:
            raise ValueError("Parameters needs a non-empty dict of priors by name")
        for name, prior in priors.items():
            if not isinstance(name, str):
                raise ValueError(f"parameter names must be strings, got {name!r}")
            if not isinstance(prior, dist.Distribution) or prior.batch_shape or prior.event_shape:
                raise ValueError(f"the prior of {name!r} must be a scalar numpyro distribution, got {prior!r}")
        self.names, self.priors = tuple(priors), tuple(priors.values())

    @property
    def dim(self) -> int:
        return len(self.names)

    def constrain(self, z: Float[Array, " dim"]) -> dict[str, Array]:
        """Parameter values by name at unconstrained coordinates ``z``."""
        return {n: biject_to(p.support)(z[i]) for i, (n, p) in enumerate(zip(self.names, self.priors))}

    def unconstrain(self, values: dict) -> Float[Array, " dim"]:
        """The unconstrained z of parameter ``values`` (a dict with every name)."""
        missing = set(self.names) - set(values)
        if missing:
            raise ValueError(f"no value for the parameters {sorted(missing)}")
        return jnp.stack([
            jnp.asarray(biject_to(p.support).inv(jnp.asarray(values[n], float)), float)
            for n, p in zip(self.names, self.priors)
        ])

    def values(self, z: Float[Array, " dim"]) -> Float[Array, " dim"]:
        """:meth:`constrain` as a vector in the order of :attr:`names` (e.g. for the
        delta-method covariance :math:`J \\Sigma_z J^\\top`, :math:`J` = ``jax.jacfwd(values)``)."""
        return jnp.stack(list(self.constrain(z).values()))

    def log_prior(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        r""":math:`\sum_k \log\pi_k(\theta_k) + \log|t_k'(z_k)|`, the log prior density of z."""
        total = jnp.zeros((), z.dtype)
        for i, prior in enumerate(self.priors):
            t = biject_to(prior.support)
            theta = t(z[i])
            total = total + prior.log_prob(theta) + t.log_abs_det_jacobian(z[i], theta)
        return total


class _AbstractLensPosterior(Energy):
    """Shared fields and parameter handling of the lens posteriors."""

    image_model: eqx.AbstractVar[ImageModel]
    data: eqx.AbstractVar[Image]
    parameters: eqx.AbstractVar[Parameters]
    system: eqx.AbstractVar[Callable[[dict], LensSystem]]

    def __check_init__(self):
        if self.image_model.noise is None:
            raise ValueError(f"{type(self).__name__} needs an ImageModel with a NoiseModel (the likelihood)")
        _check_image("data", self.data, self.image_model.grid.shape)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in the order of the coordinates."""
        return self.parameters.names

    def lens_system(self, z: Float[Array, " dim"]) -> LensSystem:
        """The lens system at unconstrained coordinates ``z``."""
        system = self.system(self.parameters.constrain(z))
        if not isinstance(system, LensSystem):
            raise TypeError(f"system(params) must return a LensSystem, got {type(system).__name__}")
        return system

    def degrees_of_freedom(self) -> int:
        """Data pixels minus the :attr:`dim` fitted parameters."""
        return math.prod(self.image_model.grid.shape) - self.dim


class LensPosterior(_AbstractLensPosterior):
    r"""Negative log posterior :math:`U(z)` of the parameters of a parametric lens system.

    The likelihood is :meth:`NoiseModel.log_likelihood`: independent Gaussian pixels with the
    model image's variance :math:`\sigma^2 = \max(m, 0)/t + \sigma_{bkg}^2`, including the
    normalisation :math:`-\frac12\sum\log 2\pi\sigma^2` (the variance depends on the model).
    ``U`` is in nats (kT units, ``beta = 1``).
    """

    image_model: ImageModel
    data: Image
    parameters: Parameters
    system: Callable[[dict], LensSystem] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def __init__(self, image_model: ImageModel, data, parameters: Parameters, system):
        """``system(params)`` builds the `LensSystem` from a dict of parameter values (every
        name of ``parameters``); it must be traceable by JAX."""
        self.image_model, self.data, self.parameters, self.system = image_model, jnp.asarray(data), parameters, system
        self.dim = parameters.dim

    def model_image(self, z: Float[Array, " dim"]) -> Image:
        """The noise-free model image at ``z`` (flux per pixel)."""
        s = self.lens_system(z)
        return self.image_model.image(s.lens, s.source, s.lens_light)

    def chi2(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        r""":math:`\chi^2 = \sum (d - m)^2 / \sigma^2(m)`."""
        m = self.model_image(z)
        return jnp.sum((self.data - m) ** 2 / self.image_model.noise.variance(m))

    def energy(self, z):
        m = self.model_image(z)
        return -self.image_model.noise.log_likelihood(self.data, m) - self.parameters.log_prior(z)


class SourceMarginalPosterior(_AbstractLensPosterior):
    r"""Negative log posterior of the lens parameters with a pixelated source integrated out:
    :math:`-\log p(d \mid \lambda, \text{lens}(z)) - \log\pi(z)`, the evidence of
    :func:`linear_inversion` on ``source_grid`` with prior strength ``strength``.

    The noise variance is fixed, ``variance`` per pixel (e.g. :meth:`NoiseModel.variance` of
    the data), so that the source posterior is exactly Gaussian. ``system(params)`` returns a
    `LensSystem` whose ``source`` is None (``lens_light``, if any, is subtracted first).
    """

    image_model: ImageModel
    data: Image
    parameters: Parameters
    system: Callable[[dict], LensSystem] = eqx.field(static=True)
    source_grid: PixelGrid
    variance: Image
    strength: Array
    regularization: str = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def __init__(
        self, image_model: ImageModel, data, parameters: Parameters, system, source_grid: PixelGrid,
        variance, strength: float, regularization: str = "curvature",
    ):
        if regularization not in REGULARIZATIONS:
            raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got {regularization!r}")
        self.image_model, self.data, self.parameters, self.system = image_model, jnp.asarray(data), parameters, system
        self.source_grid, self.variance = source_grid, _check_image("variance", variance, image_model.grid.shape)
        self.strength, self.regularization = jnp.asarray(strength, float), regularization
        self.dim = parameters.dim

    def inversion(self, z: Float[Array, " dim"], strength=None) -> Inversion:
        """The linear inversion at ``z``, with ``strength`` (default: this posterior's)."""
        s = self.lens_system(z)
        return linear_inversion(
            self.image_model, s.lens, self.source_grid, self.data, self.variance,
            self.strength if strength is None else strength, self.regularization, s.lens_light,
        )

    def energy(self, z):
        return -self.inversion(z).log_evidence - self.parameters.log_prior(z)


def evidence_scan(
    posterior: SourceMarginalPosterior, z: Float[Array, " dim"], strengths
) -> tuple[Float[Array, " k"], Inversion]:
    """Log evidences of the inversion at ``z`` for each regularisation strength in
    ``strengths``, and the inversion at the strength with the largest evidence."""
    inversion = eqx.filter_jit(lambda p, z, s: p.inversion(z, s))  # one compilation for the scan
    log_evidence = jnp.stack([inversion(posterior, z, jnp.asarray(s, z.dtype)).log_evidence for s in strengths])
    best = int(jnp.argmax(log_evidence))
    return log_evidence, inversion(posterior, z, jnp.asarray(strengths[best], z.dtype))
