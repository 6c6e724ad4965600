r"""Annealing schedules :math:`\lambda_k \in [0, 1]` of the geometric path :math:`\gamma_\lambda \propto q_0^{1-\lambda} p^\lambda`.

Step ``k`` of a particle solver targets :math:`\gamma_{\lambda_k}`; :math:`\log Z` is
estimated when the schedule starts at 0 and reaches 1.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class AbstractSchedule(eqx.Module):
    r"""Chooses the annealing levels :math:`\lambda_0, \lambda_1, \dots` of a particle solver."""

    @abc.abstractmethod
    def initial(self) -> Float[Array, ""]:
        """lambda_0."""

    @abc.abstractmethod
    def next(
        self,
        k: Int[Array, ""],
        lam: Float[Array, ""],
        log_weights: Float[Array, "islands m"],
        work: Float[Array, "islands m"],
    ) -> Float[Array, ""]:
        r"""lambda_{k+1}, given lambda_k, the particles' log-weights and their work
        :math:`\log p(x_i) - \log q_0(x_i)` (the next reweighting adds
        :math:`(\lambda_{k+1}-\lambda_k)` times it)."""


class AbstractFixedSchedule(AbstractSchedule):
    """A schedule fixed in advance, lambda_k = self(k), blind to the particles."""

    @abc.abstractmethod
    def __call__(self, k: Int[Array, ""]) -> Float[Array, ""]:
        """lambda_k."""

    def initial(self):
        return self(jnp.zeros((), jnp.int32))

    def next(self, k, lam, log_weights, work):
        return self(k + 1)


def _check_steps(steps):
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"schedule steps must be a positive integer, got {steps!r}")


class Constant(AbstractFixedSchedule):
    """No annealing: every step targets ``gamma_value`` (1 = the target itself)."""

    value: float = 1.0

    def __check_init__(self):
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"Constant schedule value must be in [0, 1], got {self.value}")

    def __call__(self, k):
        return jnp.full((), self.value)


class Linear(AbstractFixedSchedule):
    """lambda_k = min(k / steps, 1)."""

    steps: int

    def __check_init__(self):
        _check_steps(self.steps)

    def __call__(self, k):
        return jnp.clip(k / self.steps, 0.0, 1.0)


class Power(AbstractFixedSchedule):
    """lambda_k = min(k / steps, 1) ** exponent: small increments early, where q_0 and p differ most."""

    steps: int
    exponent: float = 4.0

    def __check_init__(self):
        _check_steps(self.steps)
        if not self.exponent > 0:
            raise ValueError(f"Power schedule exponent must be > 0, got {self.exponent}")

    def __call__(self, k):
        return jnp.clip(k / self.steps, 0.0, 1.0) ** self.exponent


class Exponential(AbstractFixedSchedule):
    r"""lambda_k = 1 - exp(-rate k): the natural clock of the Fisher-Rao gradient flow of KL(q || p).

    The Fisher-Rao flow :math:`\partial_t q = -q(\log\frac qp - E_q\log\frac qp)` started at
    :math:`q_0` is exactly :math:`q_t \propto q_0^{e^{-t}} p^{1-e^{-t}}`, so reweighting along
    this schedule integrates it with time step ``rate``. It approaches but never reaches
    :math:`\lambda = 1`, so no log Z is reported.
    """

    rate: float

    def __check_init__(self):
        if not self.rate > 0:
            raise ValueError(f"Exponential schedule rate must be > 0, got {self.rate}")

    def __call__(self, k):
        return -jnp.expm1(-self.rate * k)


class AdaptiveCESS(AbstractSchedule):
    r"""Adaptive tempering: each increment keeps the conditional ESS at ``cess`` (a fraction).

    :math:`\lambda_{k+1} = \lambda_k + \delta` with :math:`\delta` solving
    :math:`\mathrm{CESS}(\delta) = \frac{(\sum_i W_i e^{\delta w_i})^2}{\sum_i W_i e^{2\delta w_i}} = c`,
    :math:`W_i` the normalised weights and :math:`w_i` the work, averaged over islands
    (Zhou, Johansen & Aston, J. Comput. Graph. Stat. 2016), found by bisection. Steps are
    spent where :math:`\gamma_\lambda` changes fastest; once :math:`\lambda = 1` further
    steps only move the particles. The random schedule makes :math:`\hat Z` biased by
    O(1/n), far below its standard error.
    """

    cess: float = 0.95
    bisections: int = 50

    def __check_init__(self):
        if not 0.0 < self.cess < 1.0:
            raise ValueError(f"AdaptiveCESS cess must be in (0, 1), got {self.cess}")

    def initial(self):
        return jnp.zeros(())

    def next(self, k, lam, log_weights, work):
        log_w = jax.nn.log_softmax(log_weights, axis=-1)
        work = jnp.where(jnp.isfinite(log_w) & jnp.isfinite(work), work, 0.0)

        def cess(delta):
            a = jax.nn.logsumexp(log_w + delta * work, axis=-1)
            b = jax.nn.logsumexp(log_w + 2 * delta * work, axis=-1)
            return jnp.mean(jnp.exp(2 * a - b))

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            ok = cess(mid) >= self.cess
            return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

        remaining = 1.0 - lam
        lo, _ = jax.lax.fori_loop(0, self.bisections, bisect, (jnp.zeros_like(lam), remaining))
        delta = jnp.where(cess(remaining) >= self.cess, remaining, lo)
        return jnp.minimum(lam + delta, 1.0)
