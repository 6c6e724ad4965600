r"""Variational inference: a parametric density :math:`q_\theta` descends the reverse KL.

For an `Energy` at inverse temperature :math:`\beta`, the variational free energy of
:math:`q_\theta` is

.. math::

    F[q_\theta] = E_q[U] - T S[q] = T\, E_q[\beta U + \log q_\theta]
    = -T \log Z + T\,\mathrm{KL}(q_\theta \,\|\, p) \ge -T\log Z ,

i.e. :math:`-T` times the evidence lower bound (ELBO) of :math:`\log Z`: for a negative log
posterior (:math:`\beta = 1`, :math:`Z` the evidence), :math:`F = -\mathrm{ELBO}`. `ReverseKL`
lowers it by the reparametrised Monte Carlo gradient with an optax optimizer (Kingma &
Welling 2014; Rezende & Mohamed 2015 for normalizing flows). The same samples give the
importance-sampling estimate :math:`\hat Z = \frac1n\sum_i e^{-\beta U(x_i)}/q(x_i)`, unbiased
in :math:`Z` (so :math:`\log\hat Z` is biased low, less so as :math:`q \to p`), and its Kish
effective sample size.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int

from .._estimators import kish_ess, log_mean_exp
from ..families.density import AbstractDensity
from ..targets.energy import Energy
from ._base import AbstractSolver, check_target_and_family


class ReverseKLState(eqx.Module):
    """State of `ReverseKL` between steps."""

    step: Int[Array, ""]
    opt_state: optax.OptState
    summary_key: Array  # key data of the final estimates' samples: fixed, so the summary is deterministic


def _estimates(target: Energy, family: AbstractDensity, key, n: int):
    r"""Per-sample :math:`\log w_i = -\beta U(x_i) - \log q(x_i)` of ``n`` fresh samples and the
    energies :math:`U(x_i)`."""
    x, log_q = family.sample_and_log_prob(key, n)
    energy = jax.vmap(target.energy)(x)
    return -target.beta * energy - log_q, energy


def _figures(target: Energy, log_w, energy) -> dict[str, Array]:
    """free energy T E[beta U + log q] with its standard error, E[U], log Z (IS) and the ESS."""
    n = log_w.shape[0]
    temperature = 1.0 / target.beta
    log_w_safe = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    ess = kish_ess(log_w_safe)
    return dict(
        free_energy=-temperature * jnp.mean(log_w),
        free_energy_stderr=temperature * jnp.std(log_w, ddof=1) / jnp.sqrt(n),
        energy=jnp.mean(energy),
        log_z=log_mean_exp(log_w_safe),
        ess=ess,
        ess_fraction=ess / n,
    )


class ReverseKL(AbstractSolver):
    r"""Minimise :math:`F[q_\theta] = T E_{q_\theta}[\beta U + \log q_\theta]` (= -ELBO at
    :math:`\beta = T = 1`) over the parameters of a `fepy.families.AbstractDensity`.

    Each step draws ``samples`` reparametrised samples, takes the gradient of the Monte Carlo
    average of :math:`\beta U + \log q` (dimensionless, so the learning rate does not depend on
    the temperature) with respect to the family's inexact-array leaves and applies
    ``optimizer``. Statistics per step, from the same samples: ``free_energy`` (in the unit of
    U) and its ``free_energy_stderr``, ``energy`` :math:`E_q[U]`, the importance-sampled
    ``log_z`` and its Kish ``ess`` / ``ess_fraction``. The summary evaluates the same figures
    on ``summary_samples`` fresh samples of the final :math:`q` (the ``log_z`` there is a
    lower bound in expectation, tight when the ESS is high). A sample with a NaN energy makes
    the step's free energy NaN, and `fepy.minimize` stops with `fepy.NonFiniteError`.
    """

    optimizer: optax.GradientTransformation
    samples: int = 256
    summary_samples: int = 4096

    def __check_init__(self):
        for name in ("samples", "summary_samples"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f"ReverseKL {name} must be an integer >= 2, got {n!r}")

    def init(self, target: Energy, family: AbstractDensity, key) -> ReverseKLState:
        check_target_and_family(self, target, family, Energy, AbstractDensity, "density")
        params = eqx.filter(family, eqx.is_inexact_array)
        return ReverseKLState(jnp.zeros((), jnp.int32), self.optimizer.init(params), jax.random.key_data(key))

    def step(self, target: Energy, family: AbstractDensity, state: ReverseKLState, key):
        params, static = eqx.partition(family, eqx.is_inexact_array)

        def loss(p):
            log_w, energy = _estimates(target, eqx.combine(p, static), key, self.samples)
            return -jnp.mean(log_w), (log_w, energy)

        gradient, (log_w, energy) = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(gradient, state.opt_state, params)
        new_family = eqx.apply_updates(family, updates)
        new_state = ReverseKLState(state.step + 1, opt_state, state.summary_key)
        return new_family, new_state, _figures(target, log_w, energy)

    def summary(self, target: Energy, family: AbstractDensity, state: ReverseKLState):
        key = jax.random.wrap_key_data(state.summary_key)
        log_w, energy = _estimates(target, family, key, self.summary_samples)
        return dict(**_figures(target, log_w, energy), steps=state.step)
