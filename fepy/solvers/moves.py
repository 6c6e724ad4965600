r"""Particle moves of the Wasserstein geometry: discretisations of the Fokker-Planck flow.

The Wasserstein gradient flow of :math:`\mathrm{KL}(q \| \gamma)` is the Fokker-Planck
equation :math:`\partial_t q = \nabla\cdot(q \nabla \log(q/\gamma))`, whose particles follow
Langevin dynamics :math:`dX = \nabla \log\gamma(X)\,dt + \sqrt2\,dW`. A move advances one
island of particles (shape ``(m, dim)``) by one time step ``step_size`` towards the
current annealed density :math:`\gamma_\lambda`.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class Point(eqx.Module):
    r"""A batch of positions with the two log densities of the path and their gradients.

    :math:`\log\gamma_\lambda = (1-\lambda)\,\mathtt{log\_base} + \lambda\,\mathtt{log\_target}`
    is assembled from the cache for any :math:`\lambda` without new energy evaluations.
    """

    x: Float[Array, "*batch dim"]
    log_base: Float[Array, "*batch"]
    log_target: Float[Array, "*batch"]
    grad_base: Float[Array, "*batch dim"]
    grad_target: Float[Array, "*batch dim"]

    def log_density(self, lam) -> Float[Array, "*batch"]:
        return (1 - lam) * self.log_base + lam * self.log_target

    def grad(self, lam) -> Float[Array, "*batch dim"]:
        return (1 - lam) * self.grad_base + lam * self.grad_target

    def is_finite(self) -> Float[Array, "*batch"]:
        return (
            jnp.isfinite(self.log_base)
            & jnp.isfinite(self.log_target)
            & jnp.all(jnp.isfinite(self.x), axis=-1)
            & jnp.all(jnp.isfinite(self.grad_base), axis=-1)
            & jnp.all(jnp.isfinite(self.grad_target), axis=-1)
        )


Evaluate = Callable[[Float[Array, "m dim"]], Point]


class AbstractMove(eqx.Module):
    """One step of a particle discretisation of the Wasserstein flow, on one island."""

    step_size: eqx.AbstractVar[float]

    @abc.abstractmethod
    def __call__(
        self, evaluate: Evaluate, points: Point, lam, step_size, key: PRNGKeyArray
    ) -> tuple[Point, Float[Array, " m"]]:
        """Return the moved points and the per-particle acceptance probability."""

    @property
    def target_acceptance(self) -> float | None:
        """Acceptance rate the step size is adapted to, or None for no adaptation."""
        return None

    @property
    def evaluations(self) -> int:
        """Energy-and-gradient evaluations per particle and move."""
        return 1

    @property
    def needs_gradient(self) -> bool:
        """Whether the move reads the gradients of the points (else ``evaluate`` may leave them 0)."""
        return True

    def __check_init__(self):
        if not self.step_size > 0:
            raise ValueError(f"{type(self).__name__} step_size must be > 0, got {self.step_size}")


def _langevin_proposal(points: Point, lam, h, key):
    noise = jax.random.normal(key, points.x.shape, points.x.dtype)
    return points.x + h * points.grad(lam) + jnp.sqrt(2 * h) * noise


def _metropolis(proposed: Point, current: Point, log_ratio, key) -> tuple[Point, Array]:
    """Accept each proposal with probability min(1, e^log_ratio); returns the points and that probability."""
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    # a broken (NaN/Inf) current point takes any healthy proposal
    accept_prob = jnp.where(current.is_finite(), accept_prob, proposed.is_finite().astype(accept_prob.dtype))
    accept = jax.random.uniform(key, accept_prob.shape, accept_prob.dtype) < accept_prob
    moved = jax.tree.map(
        lambda new, old: jnp.where(accept.reshape(accept.shape + (1,) * (new.ndim - 1)), new, old),
        proposed,
        current,
    )
    return moved, accept_prob


class RandomWalk(AbstractMove):
    r"""Random-walk Metropolis: :math:`x' = x + h\,\xi`, :math:`\xi \sim N(0, I)`, Metropolis test.

    Needs no gradients. With ``adapt=True`` the width ``h`` of each island is tuned
    towards the acceptance rate 0.5 (the usual choice in VMC codes).
    """

    step_size: float
    adapt: bool = True

    @property
    def target_acceptance(self):
        return 0.5 if self.adapt else None

    @property
    def needs_gradient(self) -> bool:
        return False

    def __call__(self, evaluate, points, lam, step_size, key):
        key_prop, key_acc = jax.random.split(key)
        noise = jax.random.normal(key_prop, points.x.shape, points.x.dtype)
        proposed = evaluate(points.x + step_size * noise)
        log_ratio = proposed.log_density(lam) - points.log_density(lam)
        log_ratio = jnp.where(proposed.is_finite(), log_ratio, -jnp.inf)
        return _metropolis(proposed, points, log_ratio, key_acc)


class ULA(AbstractMove):
    r"""Unadjusted Langevin: :math:`x \leftarrow x + h\nabla\log\gamma(x) + \sqrt{2h}\,\xi`.

    First-order accurate in time: the stationary law is biased by O(h).
    """

    step_size: float

    def __call__(self, evaluate, points, lam, step_size, key):
        moved = evaluate(_langevin_proposal(points, lam, step_size, key))
        return moved, jnp.ones(points.x.shape[0], points.x.dtype)


class MALA(AbstractMove):
    r"""Metropolis-adjusted Langevin: the ULA proposal accepted with the Metropolis-Hastings ratio.

    Leaves :math:`\gamma_\lambda` exactly invariant. With ``adapt=True`` the step size
    of each island is tuned towards the acceptance rate 0.574 (Roberts & Rosenthal 1998).
    """

    step_size: float
    adapt: bool = True

    @property
    def target_acceptance(self):
        return 0.574 if self.adapt else None

    def __call__(self, evaluate, points, lam, step_size, key):
        key_prop, key_acc = jax.random.split(key)
        h = step_size
        proposed = evaluate(_langevin_proposal(points, lam, h, key_prop))

        def log_transition(dst, src):  # log N(dst; src + h grad(src), 2h I), up to a constant
            return -jnp.sum((dst.x - src.x - h * src.grad(lam)) ** 2, axis=-1) / (4 * h)

        log_ratio = (
            proposed.log_density(lam)
            - points.log_density(lam)
            + log_transition(points, proposed)
            - log_transition(proposed, points)
        )
        log_ratio = jnp.where(proposed.is_finite(), log_ratio, -jnp.inf)
        return _metropolis(proposed, points, log_ratio, key_acc)


class SVGD(AbstractMove):
    r"""Stein variational gradient descent (Liu & Wang 2016), deterministic interacting particles.

    :math:`x_i \leftarrow x_i + \frac hm \sum_j [k(x_j, x_i)\nabla\log\gamma(x_j) + \nabla_{x_j}k(x_j, x_i)]`
    with the RBF kernel :math:`k = e^{-|x-y|^2 / 2\ell^2}`; ``bandwidth`` :math:`\ell`
    defaults to the median heuristic :math:`\ell^2 = \mathrm{med}|x_i-x_j|^2 / (2\log(m+1))`.
    The particles are a sample, not an importance-weighted ensemble: the AIS log Z
    estimate is not valid with this move. Costs O(m^2) per island.
    """

    step_size: float
    bandwidth: float | None = None

    def __call__(self, evaluate, points, lam, step_size, key):
        x = points.x
        m = x.shape[0]
        diff = x[:, None, :] - x[None, :, :]  # x_i - x_j
        sq = jnp.sum(diff**2, axis=-1)
        if self.bandwidth is None:
            ell2 = jax.lax.stop_gradient(jnp.median(sq) / (2 * jnp.log(m + 1.0)))
        else:
            ell2 = self.bandwidth**2
        k = jnp.exp(-sq / (2 * ell2))
        drive = k @ points.grad(lam)
        repulse = jnp.einsum("ij,ijd->id", k, diff) / ell2
        moved = evaluate(x + step_size * (drive + repulse) / m)
        return moved, jnp.ones(m, x.dtype)


class HMC(AbstractMove):
    r"""Hamiltonian Monte Carlo: ``num_steps`` leapfrog steps of size ``step_size`` and a Metropolis test.

    Momenta :math:`p \sim N(0, I)`, Hamiltonian :math:`H = -\log\gamma_\lambda(x) + |p|^2/2`;
    leaves :math:`\gamma_\lambda` exactly invariant and travels ballistically, about
    ``num_steps * step_size`` per move, where MALA diffuses. Costs ``num_steps``
    gradient evaluations per particle. With ``adapt=True`` the step size of each island
    is tuned towards the acceptance rate 0.65 (Beskos et al. 2013).
    """

    step_size: float
    num_steps: int = 10
    adapt: bool = True

    def __check_init__(self):
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"HMC num_steps must be a positive integer, got {self.num_steps!r}")

    @property
    def target_acceptance(self):
        return 0.65 if self.adapt else None

    @property
    def evaluations(self) -> int:
        return self.num_steps

    def __call__(self, evaluate, points, lam, step_size, key):
        key_momentum, key_acc = jax.random.split(key)
        eps = step_size
        p0 = jax.random.normal(key_momentum, points.x.shape, points.x.dtype)

        def leapfrog(carry, _):
            pts, p = carry
            p = p + 0.5 * eps * pts.grad(lam)
            pts = evaluate(pts.x + eps * p)
            p = p + 0.5 * eps * pts.grad(lam)
            return (pts, p), None

        (proposed, p1), _ = jax.lax.scan(leapfrog, (points, p0), None, length=self.num_steps)
        log_ratio = (
            proposed.log_density(lam)
            - points.log_density(lam)
            - 0.5 * jnp.sum(p1**2, axis=-1)
            + 0.5 * jnp.sum(p0**2, axis=-1)
        )
        log_ratio = jnp.where(proposed.is_finite() & jnp.all(jnp.isfinite(p1), axis=-1), log_ratio, -jnp.inf)
        return _metropolis(proposed, points, log_ratio, key_acc)
