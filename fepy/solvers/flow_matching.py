r"""Flow matching: train a `fepy.CNF`'s vector field by regression on straight paths, no ODE solves.

With data :math:`x_1 \sim p` (e.g. MD samples), base samples :math:`x_0 \sim q_0`, a coupling
:math:`\pi(x_0, x_1)` with these marginals and :math:`t \sim U(0, 1)`, the conditional path
:math:`x_t = (1-t)x_0 + t x_1 + \sigma\varepsilon` has the velocity :math:`u = x_1 - x_0`, and
the loss

.. math:: L(\theta) = E_{t, (x_0, x_1)\sim\pi, \varepsilon}\,|v_\theta(t, x_t) - (x_1 - x_0)|^2

is minimised by the marginal field :math:`v^*(t, x) = E[x_1 - x_0 \mid x_t = x]`, whose flow
carries :math:`q_0` to :math:`p` (Lipman et al. 2023; Liu et al. 2023; Albergo &
Vanden-Eijnden 2023). The coupling shapes the paths, not the endpoint: `IndependentCoupling`
(:math:`q_0 \otimes p`), `OTCoupling` (minibatch optimal transport, Tong et al. 2024;
Pooladian et al. 2023) and, for particles, `fepy.apps.bg.OrbitAlignment` (equivariant flow
matching, Klein, Krämer & Noé 2023). Straighter paths need fewer ODE steps for the same
accuracy of samples and :math:`\log q`.
"""

import abc
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray
from scipy.optimize import linear_sum_assignment

from .._validate import as_float_array, concrete
from ..families.cnf import CNF
from ..targets.energy import Energy
from ._base import AbstractSolver, check_target_and_family


def assignment(cost: Float[Array, "*batch n n"]) -> Int[Array, "*batch n"]:
    r"""The permutation :math:`\sigma` minimising :math:`\sum_i C_{i\sigma(i)}` of each square cost
    matrix. Up to ``n = 6`` (720 permutations) by enumeration in JAX; beyond, by the Hungarian /
    Jonker-Volgenant algorithm of ``scipy.optimize.linear_sum_assignment``, called through
    ``jax.pure_callback`` so that it runs inside ``jit`` and ``scan``. No gradient flows through
    the result."""
    cost = jax.lax.stop_gradient(cost)
    n = cost.shape[-1]
    if n <= 6:
        perms = jnp.asarray(list(itertools.permutations(range(n))), jnp.int32)  # (n!, n)
        totals = jnp.sum(cost[..., jnp.arange(n)[None, :], perms], axis=-1)  # (*batch, n!)
        return perms[jnp.argmin(totals, axis=-1)]

    def host(c):
        c = np.asarray(c)
        flat = c.reshape(-1, c.shape[-2], c.shape[-1])
        out = np.stack([linear_sum_assignment(m)[1] for m in flat]).astype(np.int32)
        return out.reshape(c.shape[:-1])

    shape = jax.ShapeDtypeStruct(cost.shape[:-1], jnp.int32)
    return jax.pure_callback(host, shape, cost, vmap_method="legacy_vectorized")


class AbstractCoupling(eqx.Module):
    r"""Pairs a batch of base samples with a batch of data: returns :math:`(x_0, x_1')` whose
    rows are the coupled pairs, with the marginals of the inputs."""

    @abc.abstractmethod
    def __call__(
        self, x0: Float[Array, "b dim"], x1: Float[Array, "b dim"], key: PRNGKeyArray
    ) -> tuple[Float[Array, "b dim"], Float[Array, "b dim"]]:
        """The coupled batches."""


class IndependentCoupling(AbstractCoupling):
    r""":math:`\pi = q_0 \otimes p`: the rows as drawn."""

    def __call__(self, x0, x1, key):
        return x0, x1


class OTCoupling(AbstractCoupling):
    r"""Minibatch optimal transport: the data rows permuted to minimise
    :math:`\sum_i |x_0^{(i)} - x_1^{(\sigma(i))}|^2` over the batch (exact assignment, `assignment`).
    The marginals are kept exactly (a permutation of an i.i.d. batch)."""

    def __call__(self, x0, x1, key):
        cost = jnp.sum((x0[:, None, :] - x1[None, :, :]) ** 2, axis=-1)
        return x0, x1[assignment(cost)]


class FlowMatchingState(eqx.Module):
    """State of `FlowMatching` between steps."""

    step: Int[Array, ""]
    opt_state: optax.OptState
    summary_key: Array


class FlowMatching(AbstractSolver):
    r"""Train the field of a `fepy.CNF` by (conditional) flow matching on ``data``.

    Each step draws ``batch`` data rows (with replacement) and as many base samples, couples
    them (``coupling``), draws :math:`t \sim U(0,1)` and :math:`\varepsilon \sim N(0, I)` per row
    and applies ``optimizer`` to the gradient of the loss of the module docstring with respect
    to the field's inexact-array leaves (the base is not trained). The target enters only
    through the data. Statistic per step: ``loss``. Summary: the loss on a fixed batch of
    ``summary_batch`` rows (no ODE solves; evaluate likelihoods and importance weights with the
    trained CNF itself).
    """

    optimizer: optax.GradientTransformation
    data: Float[Array, "n dim"]
    batch: int = 256
    sigma: float = 0.0
    coupling: AbstractCoupling = IndependentCoupling()
    summary_batch: int = 1024

    def __init__(self, optimizer, data, batch=256, *, sigma=0.0, coupling=None, summary_batch=1024):
        """``data`` of shape (n, dim): samples of the target (for particles: centre-of-mass free)."""
        self.optimizer = optimizer
        self.data = as_float_array(data, "FlowMatching data", ndim=2)
        self.batch = batch
        self.sigma = sigma
        self.coupling = IndependentCoupling() if coupling is None else coupling
        self.summary_batch = summary_batch

    def __check_init__(self):
        for name in ("batch", "summary_batch"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f"FlowMatching {name} must be an integer >= 2, got {n!r}")
        if self.data.shape[0] < 1:
            raise ValueError("FlowMatching data is empty")
        values = concrete(self.data)
        if values is not None and not np.all(np.isfinite(values)):
            raise ValueError("FlowMatching data contain NaN or Inf")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not (
            self.sigma >= 0 and np.isfinite(self.sigma)
        ):
            raise ValueError(f"FlowMatching sigma must be a finite number >= 0, got {self.sigma!r}")
        if not isinstance(self.coupling, AbstractCoupling):
            raise TypeError(f"FlowMatching coupling must be an AbstractCoupling, got {type(self.coupling).__name__}")

    def init(self, target: Energy, family: CNF, key) -> FlowMatchingState:
        check_target_and_family(self, target, family, Energy, CNF, "CNF")
        if self.data.shape[1] != family.dim:
            raise ValueError(f"FlowMatching data have dim {self.data.shape[1]}, the CNF has dim {family.dim}")
        params = eqx.filter(family.field, eqx.is_inexact_array)
        return FlowMatchingState(jnp.zeros((), jnp.int32), self.optimizer.init(params), jax.random.key_data(key))

    def _loss(self, field, family: CNF, n: int, key):
        k_data, k_base, k_couple, k_t, k_noise = jax.random.split(key, 5)
        x1 = self.data[jax.random.randint(k_data, (n,), 0, self.data.shape[0])]
        x0 = family.base.sample(k_base, n).astype(x1.dtype)
        x0, x1 = self.coupling(x0, x1, k_couple)
        t = jax.random.uniform(k_t, (n,), x1.dtype)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        if self.sigma > 0:
            xt = xt + self.sigma * jax.random.normal(k_noise, xt.shape, xt.dtype)
        v = jax.vmap(field)(t, xt)
        return jnp.mean(jnp.sum((v - (x1 - x0)) ** 2, axis=-1))

    def step(self, target: Energy, family: CNF, state: FlowMatchingState, key):
        params, static = eqx.partition(family.field, eqx.is_inexact_array)
        loss, gradient = jax.value_and_grad(
            lambda p: self._loss(eqx.combine(p, static), family, self.batch, key))(params)
        updates, opt_state = self.optimizer.update(gradient, state.opt_state, params)
        new_family = eqx.tree_at(lambda f: f.field, family, eqx.apply_updates(family.field, updates))
        return new_family, FlowMatchingState(state.step + 1, opt_state, state.summary_key), dict(loss=loss)

    def summary(self, target: Energy, family: CNF, state: FlowMatchingState):
        key = jax.random.wrap_key_data(state.summary_key)
        return dict(loss=self._loss(family.field, family, self.summary_batch, key), steps=state.step)
