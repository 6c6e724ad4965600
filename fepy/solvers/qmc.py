r"""Quantum Monte Carlo solvers: the Fisher-Rao (VMC) and Wasserstein (WQMC) geometries on wavefunctions.

The energy :math:`E[\theta] = E_{|\psi_\theta|^2}[E_{loc}]` is the T = 0 free energy of a
`fepy.Hamiltonian`. Its gradient is the REINFORCE / score-function form

.. math:: g = 2\,E[(E_{loc} - E[E_{loc}])\,\nabla_\theta \log|\psi_\theta|],

and the Fisher-Rao (natural-gradient) direction is stochastic reconfiguration,
:math:`(S + \epsilon I)\,\delta = g` with :math:`S = \mathrm{Cov}[\nabla_\theta\log|\psi|]` the
(quantum) Fisher information: the metric in which a step reweights :math:`|\psi|^2`
rather than moving its mass. With n walkers and P parameters the system is solved
in the n x n (Woodbury / minSR) form, :math:`\delta = \bar O^\top(\bar O\bar O^\top/n +
\epsilon I)^{-1}\,2\bar E/n`, cheap when n << P.

The Wasserstein gradient flow of the same energy moves mass instead,
:math:`\partial_t q = \nabla\cdot(q\,\nabla_x E_{loc})` (Neklyudov, Nys, Thiede, Carrasquilla &
Welling, NeurIPS 2023): walkers move along :math:`-\nabla_x E_{loc}` and the ansatz is refit
to the moved density. To first order in the move, maximising the likelihood of the
moved walkers :math:`x - \eta\nabla_x E_{loc}` has the parameter gradient

.. math:: g_W = E_{|\psi|^2}[\nabla_x E_{loc}(x) \cdot \nabla_x \nabla_\theta \log|\psi_\theta(x)|^2],

with :math:`E_{loc}` held fixed (the move length :math:`\eta` is absorbed in the optimizer's
learning rate); the Wasserstein-Fisher-Rao flow adds both directions.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from .._estimators import blocking_mean_and_stderr
from ..families.wavefunction import Wavefunction
from ..targets.hamiltonian import Hamiltonian
from ._base import AbstractSolver, check_target_and_family
from .moves import AbstractMove, Point, RandomWalk


class StochasticReconfiguration(eqx.Module):
    r"""Natural-gradient preconditioner :math:`(S + \epsilon I)^{-1}`, solved in walker space.

    ``damping`` is :math:`\epsilon` (dimensionless, relative to the scale of S).
    """

    damping: float = 1e-3

    def __check_init__(self):
        if not self.damping > 0:
            raise ValueError(f"StochasticReconfiguration damping must be > 0, got {self.damping}")

    def __call__(self, jacobian: Float[Array, "n p"], weights: Float[Array, " n"], centered_energy):
        """The direction delta for per-walker log-derivatives ``jacobian`` and centred local energies."""
        n_eff = jnp.sum(weights > 0)
        mean = jnp.sum(weights[:, None] * jacobian, axis=0)
        o = jnp.where(weights[:, None] > 0, jacobian - mean, 0.0)
        t = o @ o.T / n_eff + self.damping * jnp.eye(o.shape[0], dtype=o.dtype)
        return o.T @ jnp.linalg.solve(t, 2 * centered_energy / n_eff)


class QMCState(eqx.Module):
    step: Int[Array, ""]
    opt_state: optax.OptState
    step_size: Float[Array, ""]  # MCMC step size, adapted
    recent_energies: Float[Array, " window"]  # per-step mean local energy, oldest first


def _walker_evaluator(ansatz, with_gradient: bool):
    r"""Walkers as `Point` caches of :math:`\log|\psi|^2` for the particle moves (lambda = 1)."""

    def one(x):
        log_prob = lambda y: 2 * ansatz(y)  # noqa: E731
        if with_gradient:
            value, grad = jax.value_and_grad(log_prob)(x)
        else:
            value, grad = log_prob(x), jnp.zeros_like(x)
        zero = jnp.zeros((), value.dtype)
        return Point(x, zero, value, jnp.zeros_like(x), grad)

    return jax.vmap(one)


def _clip(local_energy, finite, width: float):
    """Local energies clipped to median +- width * mean absolute deviation (FermiNet)."""
    values = jnp.where(finite, local_energy, jnp.nan)
    median = jnp.nanmedian(values)
    spread = jnp.nanmean(jnp.abs(values - median))
    return jnp.clip(local_energy, median - width * spread, median + width * spread)


def _split_params(ansatz):
    params, static = eqx.partition(ansatz, eqx.is_inexact_array)
    return params, lambda p, x: eqx.combine(p, static)(x)


def _fisher_rao_direction(ansatz, walkers, local_energy, finite, clip, sr):
    """REINFORCE gradient 2 E[(E_loc - E) grad log|psi|] of clipped local energies, SR-preconditioned if ``sr``."""
    weights = finite / jnp.sum(finite)
    clipped = jnp.where(finite, _clip(local_energy, finite, clip), 0.0)
    centered = jnp.where(finite, clipped - jnp.sum(weights * clipped), 0.0)
    params, log_psi = _split_params(ansatz)
    if sr is None:
        _, pullback = jax.vjp(lambda p: jax.vmap(lambda x: log_psi(p, x))(walkers), params)
        return pullback(2 * centered / jnp.sum(finite))[0]
    flat, unravel = ravel_pytree(params)
    jacobian = jax.vmap(jax.grad(lambda f, x: log_psi(unravel(f), x)), in_axes=(None, 0))(flat, walkers)
    jacobian = jnp.where(finite[:, None], jacobian, 0.0)
    return unravel(sr(jacobian, weights, centered))


class _AbstractQMC(AbstractSolver):
    """Shared loop of the wavefunction solvers: MCMC, local energies, broken-walker restarts,
    the optax update and the final blocking estimate. Subclasses give the parameter direction."""

    optimizer: eqx.AbstractVar[optax.GradientTransformation]
    sampler: eqx.AbstractVar[AbstractMove]
    mcmc_steps: eqx.AbstractVar[int]
    clip: eqx.AbstractVar[float]
    window: eqx.AbstractVar[int]
    hutchinson_samples: eqx.AbstractVar[int]
    needs_force: ClassVar[bool] = False  # the direction uses grad_x E_loc of each walker

    @abc.abstractmethod
    def direction(self, ansatz, walkers, local_energy, force, finite):
        """The parameter gradient (a pytree like the ansatz's parameters) for the optimizer.

        ``walkers`` whose ``local_energy`` was not finite (``~finite``) have already been
        replaced by copies of healthy ones, so every derivative is finite; they must be
        given zero weight. ``force`` is :math:`\\nabla_x E_{loc}` at the walkers before the
        replacement when ``needs_force``, else None."""

    def __check_init__(self):
        for name in ("mcmc_steps", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__} {name} must be a positive integer, got {value!r}")
        if not self.clip > 0:
            raise ValueError(f"{type(self).__name__} clip must be > 0, got {self.clip}")

    def init(self, target: Hamiltonian, family: Wavefunction, key) -> QMCState:
        check_target_and_family(self, target, family, Hamiltonian, Wavefunction, "walkers")
        params = eqx.filter(family.ansatz, eqx.is_inexact_array)
        dtype = family.walkers.dtype
        return QMCState(
            step=jnp.zeros((), jnp.int32),
            opt_state=self.optimizer.init(params),
            step_size=jnp.asarray(self.sampler.step_size, dtype),
            recent_energies=jnp.full(self.window, jnp.nan, dtype),
        )

    def step(self, target: Hamiltonian, family: Wavefunction, state: QMCState, key):
        # four keys, the third unused since WQMC's force shares the energy's keys: the
        # streams of the other three stay those of earlier releases (same runs, same numbers)
        key_mcmc, key_energy, _, key_reset = jax.random.split(key, 4)
        evaluate = _walker_evaluator(family.ansatz, self.sampler.needs_gradient)

        def mcmc(points, k):
            points, accept = self.sampler(evaluate, points, 1.0, state.step_size, k)
            return points, jnp.mean(accept)

        points, accept = jax.lax.scan(
            mcmc, evaluate(family.walkers), jax.random.split(key_mcmc, self.mcmc_steps)
        )
        acceptance = jnp.mean(accept)
        step_size = state.step_size
        if self.sampler.target_acceptance is not None:
            step_size = step_size * jnp.exp(0.5 * (acceptance - self.sampler.target_acceptance))

        walkers = points.x
        keys = jax.random.split(key_energy, family.n)
        energy_of_x = lambda x, k: target.local_energy(family.ansatz, x, k, self.hutchinson_samples)  # noqa: E731
        if self.needs_force:  # value and gradient in one pass
            local_energy, force = jax.vmap(jax.value_and_grad(energy_of_x))(walkers, keys)
        else:
            local_energy, force = jax.vmap(energy_of_x)(walkers, keys), None
        finite = jnp.isfinite(local_energy) & jnp.isfinite(points.log_target)
        weights = finite / jnp.sum(finite)
        safe_energy = jnp.where(finite, local_energy, 0.0)
        energy = jnp.sum(weights * safe_energy)
        variance = jnp.sum(weights * (safe_energy - energy) ** 2)

        # restart broken walkers from copies of healthy ones, before any derivative is taken:
        # they carry zero weight, but a NaN gradient times zero is still NaN
        donors = jax.random.choice(key_reset, family.n, (family.n,), p=weights)
        walkers = jnp.where(finite[:, None], walkers, walkers[donors])

        params = eqx.filter(family.ansatz, eqx.is_inexact_array)
        direction = self.direction(family.ansatz, walkers, local_energy, force, finite)
        updates, opt_state = self.optimizer.update(direction, state.opt_state, params)
        ansatz = eqx.apply_updates(family.ansatz, updates)

        new_family = Wavefunction(ansatz, walkers)
        new_state = QMCState(
            step=state.step + 1,
            opt_state=opt_state,
            step_size=step_size,
            recent_energies=jnp.roll(state.recent_energies, -1).at[-1].set(energy),
        )
        stats = dict(
            energy=energy,
            variance=variance,
            energy_stderr=jnp.sqrt(variance / jnp.sum(finite)),
            acceptance=acceptance,
            step_size=step_size,
            bad_walkers=jnp.sum(~finite),
        )
        return new_family, new_state, stats

    def summary(self, target: Hamiltonian, family: Wavefunction, state: QMCState):
        energy, stderr = blocking_mean_and_stderr(state.recent_energies)
        full = state.step >= self.window
        return dict(
            energy=jnp.where(full, energy, jnp.nanmean(state.recent_energies)),
            energy_stderr=jnp.where(full, stderr, jnp.nan),
            free_energy=jnp.where(full, energy, jnp.nan),
            steps=state.step,
        )


class VMC(_AbstractQMC):
    r"""Standard VMC, the Fisher-Rao geometry: sample :math:`|\psi|^2` by MCMC, step along the REINFORCE gradient.

    Each step runs ``mcmc_steps`` moves of ``sampler`` on every walker, evaluates the
    local energies, clips outliers beyond ``clip`` mean absolute deviations from the
    median for the gradient only, preconditions with ``sr`` (stochastic
    reconfiguration) when given, and applies ``optimizer`` (optax). A walker whose
    local energy or :math:`\log|\psi|` is NaN/Inf is left out of the averages and
    restarted from a copy of a healthy one. The final energy is the mean over the last
    ``window`` steps with a blocking standard error.
    """

    optimizer: optax.GradientTransformation
    sampler: AbstractMove = RandomWalk(step_size=0.5)
    mcmc_steps: int = 10
    sr: StochasticReconfiguration | None = None
    clip: float = 5.0
    window: int = 100
    hutchinson_samples: int = 0

    def direction(self, ansatz, walkers, local_energy, force, finite):
        return _fisher_rao_direction(ansatz, walkers, local_energy, finite, self.clip, self.sr)


class WQMC(_AbstractQMC):
    r"""Wasserstein QMC: the ansatz follows walkers moved along :math:`-\nabla_x E_{loc}`.

    The direction is :math:`g_W = E[\nabla_x E_{loc}\cdot\nabla_x\nabla_\theta\log|\psi|^2]`
    (module docstring), with each walker's :math:`\nabla_x E_{loc}` clipped to at most
    ``clip`` times the median norm. With ``fisher_rao > 0`` the VMC direction, times
    ``fisher_rao``, is added: the Wasserstein-Fisher-Rao flow. Costs one more
    derivative than VMC (the gradient of the local energy, taken in the same pass as
    its value).
    """

    optimizer: optax.GradientTransformation
    sampler: AbstractMove = RandomWalk(step_size=0.5)
    mcmc_steps: int = 10
    fisher_rao: float = 0.0
    clip: float = 5.0
    window: int = 100
    hutchinson_samples: int = 0
    needs_force: ClassVar[bool] = True

    def direction(self, ansatz, walkers, local_energy, force, finite):
        ok = finite & jnp.all(jnp.isfinite(force), axis=-1)
        norms = jnp.linalg.norm(jnp.where(ok[:, None], force, 0.0), axis=-1)
        cap = self.clip * jnp.nanmedian(jnp.where(ok, norms, jnp.nan))
        force = jnp.where(ok[:, None], force * jnp.minimum(1.0, cap / jnp.maximum(norms, 1e-30))[:, None], 0.0)
        params, log_psi = _split_params(ansatz)

        def surrogate(p):  # E[v . grad_x log|psi_p|^2], v = grad_x E_loc held fixed
            score = jax.vmap(jax.grad(lambda x: 2 * log_psi(p, x)))(walkers)
            return jnp.sum(jnp.where(ok[:, None], force * score, 0.0)) / jnp.sum(ok)

        direction = jax.grad(surrogate)(params)
        if self.fisher_rao > 0:
            fr = _fisher_rao_direction(ansatz, walkers, local_energy, finite, self.clip, None)
            direction = jax.tree.map(lambda w, f: w + self.fisher_rao * f, direction, fr)
        return direction
