r"""Annealing schedules :math:`\lambda_k \in [0, 1]` of the geometric path :math:`\gamma_\lambda \propto q_0^{1-\lambda} p^\lambda`.

Step ``k`` of a particle solver targets :math:`\gamma_{\lambda_k}`; :math:`\log Z` is
estimated when the schedule starts at 0 and reaches 1.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class AbstractSchedule(eqx.Module):
    """Maps a step index ``k`` to the annealing level ``lambda_k``."""

    @abc.abstractmethod
    def __call__(self, k: Int[Array, ""]) -> Float[Array, ""]:
        """lambda_k."""


def _check_steps(steps):
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"schedule steps must be a positive integer, got {steps!r}")


class Constant(AbstractSchedule):
    """No annealing: every step targets ``gamma_value`` (1 = the target itself)."""

    value: float = 1.0

    def __check_init__(self):
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"Constant schedule value must be in [0, 1], got {self.value}")

    def __call__(self, k):
        return jnp.full((), self.value)


class Linear(AbstractSchedule):
    """lambda_k = min(k / steps, 1)."""

    steps: int

    def __check_init__(self):
        _check_steps(self.steps)

    def __call__(self, k):
        return jnp.clip(k / self.steps, 0.0, 1.0)


class Power(AbstractSchedule):
    """lambda_k = min(k / steps, 1) ** exponent: small increments early, where q_0 and p differ most."""

    steps: int
    exponent: float = 4.0

    def __check_init__(self):
        _check_steps(self.steps)
        if not self.exponent > 0:
            raise ValueError(f"Power schedule exponent must be > 0, got {self.exponent}")

    def __call__(self, k):
        return jnp.clip(k / self.steps, 0.0, 1.0) ** self.exponent


class Exponential(AbstractSchedule):
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
