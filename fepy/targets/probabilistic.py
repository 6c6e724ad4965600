r"""A numpyro model as an `Energy`: the negative log joint density in unconstrained coordinates.

A user who writes the physics as a probabilistic program (priors with ``numpyro.sample``, the
data as an observed site) gets the target of every fepy solver from it. With the latent sites
:math:`\theta` mapped to unconstrained :math:`z` by numpyro's bijections
(``biject_to(site.support)``) and flattened into one vector,

.. math::

    U(z) = -\log p(\text{data}, \theta(z)) - \log\left|\det \frac{\partial\theta}{\partial z}\right|
    = -\log p(\theta(z) \mid \text{data}) - \log p(\text{data}),

numpyro's ``potential_energy``: ``beta = 1``, :math:`e^{-U}` integrates to the evidence
:math:`p(\text{data})`, so `fepy.Descent` finds the MAP, `fepy.nuts` and the particle flows sample
the posterior and `fepy.ReverseKL` maximises the ELBO (``-free_energy``). The model's arguments
(e.g. the data) are leaves of the module: `fepy.Independent` batches over them.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .energy import Energy


class ProbabilisticModel(Energy):
    r""":math:`U(z) = -\log p(\text{data}, \theta(z)) - \log|\det\partial\theta/\partial z|` of a numpyro ``model``.

    ``ProbabilisticModel(model, *args, **kwargs)`` traces ``model(*args, **kwargs)`` once to
    find its latent sites; :attr:`names` and :attr:`shapes` give their order and shapes in z
    (numpyro's: sorted by name). :meth:`constrain` maps z to the site values,
    :meth:`unconstrain` back, :meth:`sample_prior` draws starts from the prior.
    """

    model: Callable = eqx.field(static=True)
    args: tuple
    kwargs: dict
    names: tuple[str, ...] = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    beta: float = 1.0

    def __init__(self, model: Callable, *args, **kwargs):
        from numpyro.distributions.transforms import biject_to
        from numpyro.handlers import seed, trace

        if not callable(model):
            raise TypeError(f"ProbabilisticModel needs a numpyro model (a callable), got {type(model).__name__}")
        # one prior draw finds the latent sites and the shapes of their unconstrained values
        sites = trace(seed(model, jax.random.key(0))).get_trace(*args, **kwargs)
        latent = {name: biject_to(site["fn"].support).inv(site["value"]) for name, site in sites.items()
                  if site["type"] == "sample" and not site["is_observed"]}
        if not latent:
            raise ValueError("the numpyro model has no latent sample sites: nothing to infer")
        self.model, self.args, self.kwargs = model, args, kwargs
        self.names = tuple(sorted(latent))
        self.shapes = tuple(tuple(np.shape(latent[n])) for n in self.names)
        self.dim = sum(math.prod(s) for s in self.shapes)

    def _unravel(self, z: Float[Array, " dim"]) -> dict[str, Array]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = z[start:start + size].reshape(shape)
            start += size
        return out

    def _ravel(self, values: dict) -> Float[Array, " dim"]:
        return jnp.concatenate([jnp.ravel(jnp.asarray(values[n], float)) for n in self.names])

    def energy(self, z):
        from numpyro.infer.util import potential_energy

        return potential_energy(self.model, self.args, self.kwargs, self._unravel(z))

    def constrain(self, z: Float[Array, " dim"]) -> dict[str, Array]:
        """The latent site values :math:`\\theta(z)` by name (in the model's units)."""
        from numpyro.infer.util import constrain_fn

        return constrain_fn(self.model, self.args, self.kwargs, self._unravel(z))

    def unconstrain(self, values: dict) -> Float[Array, " dim"]:
        """The z of latent site ``values`` (a dict with every name of :attr:`names`)."""
        from numpyro.infer.util import unconstrain_fn

        missing = set(self.names) - set(values)
        if missing:
            raise ValueError(f"no value for the latent sites {sorted(missing)}")
        return self._ravel(unconstrain_fn(self.model, self.args, self.kwargs, {n: values[n] for n in self.names}))

    def sample_prior(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` draws of the prior, as z (observed sites are not sampled)."""
        from numpyro.infer import Predictive

        draws = Predictive(self.model, num_samples=n, return_sites=list(self.names))(key, *self.args, **self.kwargs)
        return jax.vmap(lambda i: self.unconstrain({k: v[i] for k, v in draws.items()}))(jnp.arange(n))
