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
import numpy as np
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from .._estimators import kish_ess, log_z_and_stderr
from .._validate import as_float_array, concrete
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
    """free energy T E[beta U + log q] with its standard error, E[U], log Z (IS) with its
    standard error, and the ESS."""
    n = log_w.shape[0]
    temperature = 1.0 / target.beta
    log_w_safe = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    ess = kish_ess(log_w_safe)
    log_z, log_z_stderr = log_z_and_stderr(log_w_safe)
    return dict(
        free_energy=-temperature * jnp.mean(log_w),
        free_energy_stderr=temperature * jnp.std(log_w, ddof=1) / jnp.sqrt(n),
        energy=jnp.mean(energy),
        log_z=log_z,
        log_z_stderr=log_z_stderr,
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
    ``log_z`` with its ``log_z_stderr`` (delta method, :math:`\mathrm{sd}(w)/(\sqrt n \bar w)`)
    and its Kish ``ess`` / ``ess_fraction``. The summary evaluates the same figures
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


class ForwardKLState(eqx.Module):
    """State of `ForwardKL` between steps."""

    step: Int[Array, ""]
    opt_state: optax.OptState
    summary_key: Array


class ForwardKL(AbstractSolver):
    r"""Maximum likelihood on samples of the target: minimise the forward KL
    :math:`\mathrm{KL}(p\,\|\,q_\theta) = -E_p[\log q_\theta] + \text{const}`, optionally mixed
    with the reverse KL of `ReverseKL`.

    The loss of a step is

    .. math::

        L(\theta) = -\frac1b \sum_{j=1}^{b} \log q_\theta(x_{i_j})
        + \lambda\, \frac1m \sum_{k=1}^m \left[\beta U(y_k) + \log q_\theta(y_k)\right],
        \qquad y_k \sim q_\theta ,

    with a minibatch of ``batch`` indices :math:`i_j` drawn with replacement from ``data``,
    uniformly, or with probability :math:`\propto e^{\ell_i}` for weighted samples
    (``log_weights`` :math:`\ell_i`, e.g. SMC particles), so that the first term is an unbiased
    estimate of :math:`-E_p[\log q_\theta]`. The second term (``reverse`` :math:`= \lambda \ge 0`,
    ``samples`` = m) is the dimensionless free energy of `ReverseKL`: the forward term covers
    every mode the data visit (it is mass-covering), the reverse term sharpens :math:`q` where
    the data are few. Both KLs vanish only at :math:`q_\theta = p`.

    Needs a family with a ``log_prob`` (e.g. `fepy.Flow`). Statistics per step: ``nll``, the
    minibatch mean of :math:`-\log q_\theta(x_i)`, and when :math:`\lambda > 0` the importance
    figures of `ReverseKL` (``free_energy``, ``log_z``, ``log_z_stderr``, ``ess``, ...) of the
    reverse samples. The summary: ``nll`` over all data and the importance figures of
    ``summary_samples`` fresh samples of the final :math:`q`.
    """

    optimizer: optax.GradientTransformation
    data: Float[Array, "n dim"]
    batch: int = 256
    log_weights: Float[Array, " n"] | None = None
    reverse: float = 0.0
    samples: int = 256
    summary_samples: int = 4096

    def __init__(self, optimizer, data, batch=256, *, log_weights=None, reverse=0.0, samples=256,
                 summary_samples=4096):
        """``data`` of shape (n, dim) (samples of the target, or particles with ``log_weights``)."""
        self.optimizer = optimizer
        self.data = as_float_array(data, "ForwardKL data", ndim=2)
        self.batch = batch
        self.log_weights = None if log_weights is None else as_float_array(log_weights, "ForwardKL log_weights", ndim=1)
        self.reverse = reverse
        self.samples = samples
        self.summary_samples = summary_samples

    def __check_init__(self):
        for name in ("batch", "samples", "summary_samples"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f"ForwardKL {name} must be an integer >= 2, got {n!r}")
        if self.data.shape[0] < 1:
            raise ValueError("ForwardKL data is empty")
        values = concrete(self.data)
        if values is not None and not np.all(np.isfinite(values)):
            raise ValueError("ForwardKL data contain NaN or Inf")
        if self.log_weights is not None:
            if self.log_weights.shape != self.data.shape[:1]:
                raise ValueError(
                    f"ForwardKL log_weights must have shape {self.data.shape[:1]} (one per data row), "
                    f"got {self.log_weights.shape}"
                )
            lw = concrete(self.log_weights)
            if lw is not None and (np.any(np.isnan(lw)) or np.any(lw == np.inf) or not np.any(np.isfinite(lw))):
                raise ValueError("ForwardKL log_weights must be finite or -inf, with at least one finite")
        if isinstance(self.reverse, bool) or not isinstance(self.reverse, (int, float)) or not (
            self.reverse >= 0 and np.isfinite(self.reverse)
        ):
            raise ValueError(f"ForwardKL reverse must be a finite number >= 0, got {self.reverse!r}")

    def init(self, target: Energy, family: AbstractDensity, key) -> ForwardKLState:
        check_target_and_family(self, target, family, Energy, AbstractDensity, "density")
        if not callable(getattr(family, "log_prob", None)):
            raise TypeError(f"ForwardKL needs a family with a log_prob, got {type(family).__name__}")
        if self.data.shape[1] != family.dim:
            raise ValueError(f"ForwardKL data have dim {self.data.shape[1]}, the family has dim {family.dim}")
        params = eqx.filter(family, eqx.is_inexact_array)
        return ForwardKLState(jnp.zeros((), jnp.int32), self.optimizer.init(params), jax.random.key_data(key))

    def _minibatch(self, key):
        n = self.data.shape[0]
        if self.log_weights is None:
            index = jax.random.randint(key, (self.batch,), 0, n)
        else:
            index = jax.random.categorical(key, self.log_weights, shape=(self.batch,))
        return self.data[index]

    def step(self, target: Energy, family: AbstractDensity, state: ForwardKLState, key):
        params, static = eqx.partition(family, eqx.is_inexact_array)
        data_key, sample_key = jax.random.split(key)
        x = self._minibatch(data_key)
        use_reverse = self.reverse > 0

        def loss(p):
            q = eqx.combine(p, static)
            nll = -jnp.mean(q.log_prob(x))
            if not use_reverse:
                return nll, (nll, None, None)
            log_w, energy = _estimates(target, q, sample_key, self.samples)
            return nll - self.reverse * jnp.mean(log_w), (nll, log_w, energy)

        gradient, (nll, log_w, energy) = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(gradient, state.opt_state, params)
        new_family = eqx.apply_updates(family, updates)
        stats = dict(nll=nll)
        if use_reverse:
            stats.update(_figures(target, log_w, energy))
        return new_family, ForwardKLState(state.step + 1, opt_state, state.summary_key), stats

    def summary(self, target: Energy, family: AbstractDensity, state: ForwardKLState):
        log_q = family.log_prob(self.data)
        if self.log_weights is None:
            nll = -jnp.mean(log_q)
        else:
            w = jax.nn.softmax(self.log_weights)
            nll = -jnp.sum(jnp.where(w > 0, w * log_q, 0.0))
        key = jax.random.wrap_key_data(state.summary_key)
        log_w, energy = _estimates(target, family, key, self.summary_samples)
        return dict(nll=nll, **_figures(target, log_w, energy), steps=state.step)
