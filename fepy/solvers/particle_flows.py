r"""Particle gradient flows of the free energy: Wasserstein, Fisher-Rao and both.

All three carry weighted particles along the geometric path
:math:`\gamma_\lambda \propto q_0^{1-\lambda} p^\lambda`, :math:`p \propto e^{-\beta U}`,
with :math:`\lambda_k` from a schedule. One step from :math:`\lambda_k` to
:math:`\lambda_{k+1}` is

1. **reweight** (Fisher-Rao): :math:`\log w_i \mathrel{+}= (\lambda_{k+1}-\lambda_k)
   (\log p(x_i) - \log q_0(x_i))`, the Jarzynski / AIS work increment;
2. **resample** (Fisher-Rao, birth-death): within each island whose Kish ESS fell
   below ``resample_threshold`` of its size, systematic resampling, and the island's
   :math:`\log\hat Z` collects :math:`\log\frac1m\sum_i w_i`;
3. **move** (Wasserstein): ``moves_per_step`` steps of a :math:`\gamma_{\lambda_{k+1}}`-invariant
   (MALA) or Langevin-like (ULA, SVGD) move.

`Wasserstein` does 1 and 3 (annealed importance sampling / Jarzynski), `FisherRao` does
1 and 2 (sequential importance resampling with fixed positions), and
`WassersteinFisherRao` does all three (an SMC sampler). The particles are split into
``islands`` independent populations: resampling never crosses islands, so each island
gives an independent unbiased :math:`\hat Z`, their spread gives the standard error, and
an island never spans devices when the particle axis is sharded.

The variational free energy of the weighted ensemble, which represents
:math:`\gamma_\lambda`, is
:math:`F[\gamma_\lambda] = T(1-\lambda)\,E_{\gamma_\lambda}[\log q_0 + \beta U] - T\log Z_\lambda
\ge -T \log Z`, with equality at :math:`\lambda = 1`.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._estimators import kish_ess, log_mean_exp, log_z_and_stderr
from ..families.particles import Particles
from ..targets.energy import Energy
from ._base import AbstractSolver, check_target_and_family
from .moves import MALA, AbstractMove, Point
from .schedules import AbstractSchedule, Constant


class ParticleState(eqx.Module):
    """State of a particle flow between steps."""

    step: Int[Array, ""]
    lam: Float[Array, ""]
    points: Point  # cached log densities and gradients at the positions
    log_z_islands: Float[Array, " islands"]  # log Z collected at resampling events
    step_size: Float[Array, " islands"]
    energy_evals: Float[Array, ""]  # energy-and-gradient evaluations so far, all particles (float: no int32 overflow)


def _evaluator(target: Energy, base):
    """Vectorised evaluation of the two log densities of the path and their gradients."""

    def one(x):
        log_base, grad_base = jax.value_and_grad(base.log_prob)(x)
        log_target, grad_target = jax.value_and_grad(target.log_density)(x)
        return Point(x, log_base, log_target, grad_base, grad_target)

    return jax.vmap(one)


def _split(tree, islands: int):
    """Leading particle axis n -> (islands, n // islands)."""
    return jax.tree.map(lambda a: a.reshape((islands, -1) + a.shape[1:]), tree)


def _merge(tree):
    """Leading axes (islands, m) -> n = islands * m."""
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def _systematic_resample(key, log_w: Float[Array, " m"]) -> Int[Array, " m"]:
    m = log_w.shape[0]
    u = (jax.random.uniform(key, dtype=log_w.dtype) + jnp.arange(m)) / m
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    return jnp.minimum(jnp.searchsorted(cdf, u), m - 1)


def _where(mask, new, old):
    """Per-particle select between two pytrees with a leading particle axis."""
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old
    )


class _AbstractParticleFlow(AbstractSolver):
    move: eqx.AbstractVar[AbstractMove | None]
    schedule: eqx.AbstractVar[AbstractSchedule]
    islands: eqx.AbstractVar[int]
    resample_threshold: eqx.AbstractVar[float]
    moves_per_step: eqx.AbstractVar[int]

    def __check_init__(self):
        if not isinstance(self.islands, int) or self.islands < 1:
            raise ValueError(f"islands must be a positive integer, got {self.islands!r}")
        if not 0.0 <= self.resample_threshold <= 1.0:
            raise ValueError(f"resample_threshold must be in [0, 1], got {self.resample_threshold}")
        if not isinstance(self.moves_per_step, int) or self.moves_per_step < 0:
            raise ValueError(f"moves_per_step must be an integer >= 0, got {self.moves_per_step!r}")

    def init(self, target: Energy, family: Particles, key) -> ParticleState:
        check_target_and_family(self, target, family, Energy, Particles, "particles")
        if family.n % self.islands:
            raise ValueError(
                f"number of particles {family.n} is not divisible by islands={self.islands}"
            )
        points = _evaluator(target, family.base)(family.positions)
        dtype = family.positions.dtype
        step_size = 0.0 if self.move is None else self.move.step_size
        return ParticleState(
            step=jnp.zeros((), jnp.int32),
            lam=self.schedule.initial().astype(dtype),
            points=points,
            log_z_islands=jnp.zeros(self.islands, dtype),
            step_size=jnp.full(self.islands, step_size, dtype),
            energy_evals=jnp.asarray(family.n, dtype),
        )

    def step(self, target: Energy, family: Particles, state: ParticleState, key):
        evaluate = _evaluator(target, family.base)
        key_resample, key_move = jax.random.split(key)
        points = state.points
        work = points.log_target - points.log_base
        lam_next = self.schedule.next(
            state.step, state.lam, *_split((family.log_weights, work), self.islands)
        ).astype(state.lam.dtype)

        # 1. reweight along the path (Fisher-Rao part; the Jarzynski work of the move part)
        log_w = family.log_weights + (lam_next - state.lam) * work
        log_w = jnp.where(points.is_finite(), log_w, -jnp.inf)
        island_ess = jnp.nan_to_num(kish_ess(_split(log_w, self.islands)))  # dead island: 0
        ess_fraction = jnp.mean(island_ess) * self.islands / family.n

        # 2. resample islands whose ESS fell below the threshold (birth-death of mass)
        resampled = jnp.zeros(self.islands, bool)
        log_z_islands = state.log_z_islands
        if self.resample_threshold > 0:
            def resample_island(k, lw, pts):
                m = lw.shape[0]
                do = kish_ess(lw) < self.resample_threshold * m
                idx = _systematic_resample(k, lw)
                pts = jax.tree.map(lambda a: jnp.where(do, a[idx], a), pts)
                return jnp.where(do, 0.0, lw), pts, do, jnp.where(do, log_mean_exp(lw), 0.0)

            keys = jax.random.split(key_resample, self.islands)
            log_w, points, resampled, collected = jax.vmap(resample_island)(
                keys, *_split((log_w, points), self.islands)
            )
            log_w, points = _merge((log_w, points))
            log_z_islands = log_z_islands + collected

        # 3. move towards gamma_{lambda_{k+1}} (Wasserstein part)
        step_size = state.step_size
        acceptance = jnp.ones(())
        evals = state.energy_evals
        if self.move is not None and self.moves_per_step > 0:
            def one_move(pts, k):
                keys = jax.random.split(k, self.islands)
                island = lambda p, h, kk: self.move(evaluate, p, lam_next, h, kk)  # noqa: E731
                return _merge(jax.vmap(island)(_split(pts, self.islands), step_size, keys))

            accept_sum = jnp.zeros(family.n, points.log_base.dtype)
            for k in jax.random.split(key_move, self.moves_per_step):
                moved, accept = one_move(points, k)
                ok = moved.is_finite()
                log_w = jnp.where(ok, log_w, -jnp.inf)  # drop particles the move sent to NaN/Inf
                points = _where(ok, moved, points)
                accept_sum = accept_sum + jnp.where(ok, accept, 0.0)
            accept_rate = accept_sum / self.moves_per_step
            island_accept = accept_rate.reshape(self.islands, -1).mean(axis=1)
            acceptance = jnp.mean(island_accept)
            if self.move.target_acceptance is not None:
                step_size = step_size * jnp.exp(0.5 * (island_accept - self.move.target_acceptance))
            evals = evals + family.n * self.moves_per_step * self.move.evaluations

        new_family = eqx.tree_at(lambda f: (f.positions, f.log_weights), family, (points.x, log_w))
        new_state = ParticleState(
            step=state.step + 1,
            lam=lam_next,
            points=points,
            log_z_islands=log_z_islands,
            step_size=step_size,
            energy_evals=evals,
        )
        stats = self._observables(target, new_family, new_state)
        if self.islands == 1:  # one island: no spread to take a standard error from
            del stats["log_z_stderr"]
        stats.update(
            ess_fraction=ess_fraction,
            resampled=jnp.mean(resampled.astype(ess_fraction.dtype)),
            acceptance=acceptance,
            step_size=jnp.mean(step_size),
            dropped=jnp.sum(~jnp.isfinite(log_w)),
            energy_evals=evals,
        )
        return new_family, new_state, stats

    def _global_log_weights(self, family: Particles, state: ParticleState):
        """Island log Z estimates and every particle's log-weight in the pooled ensemble."""
        log_w = family.log_weights.reshape(self.islands, -1)
        log_z_islands = state.log_z_islands + log_mean_exp(log_w)
        # = log_z_islands + log_softmax(log_w), but finite where an island lost every particle
        pooled = state.log_z_islands[:, None] + log_w - jnp.log(log_w.shape[1])
        return log_z_islands, pooled.reshape(-1)

    def _observables(self, target: Energy, family: Particles, state: ParticleState):
        """Estimates at the current level: ``log_z`` estimates log(Z_lambda / Z_lambda0), so
        it is 0 throughout a run without annealing (``Constant``), and log Z once an
        annealing from 0 reaches 1; ``free_energy`` is F[gamma_lambda]; ``energy`` is E[U]."""
        log_z_islands, pooled = self._global_log_weights(family, state)
        log_z, log_z_stderr = log_z_and_stderr(log_z_islands)
        w = jax.nn.softmax(pooled)
        pts = state.points
        safe = lambda a: jnp.where(w > 0, a, 0.0)  # noqa: E731  dropped particles carry w = 0
        energy = jnp.sum(w * safe(-pts.log_target)) / target.beta
        work = jnp.sum(w * safe(pts.log_base - pts.log_target))
        temperature = 1.0 / target.beta
        free_energy = temperature * ((1 - state.lam) * work - log_z)
        return dict(
            lam=state.lam,
            log_z=log_z,
            log_z_stderr=log_z_stderr,
            free_energy=free_energy,
            energy=energy,
            ess=kish_ess(pooled),
        )

    def summary(self, target: Energy, family: Particles, state: ParticleState):
        obs = self._observables(target, family, state)
        annealed = (self.schedule.initial() == 0) & (state.lam == 1)
        for name in ("log_z", "log_z_stderr", "free_energy"):
            obs[name] = jnp.where(annealed, obs[name], jnp.nan)
        obs["free_energy_stderr"] = obs["log_z_stderr"] / target.beta
        obs["ess_fraction"] = obs["ess"] / family.n
        obs["energy_evals"] = state.energy_evals
        obs["steps"] = state.step
        return obs


class Wasserstein(_AbstractParticleFlow):
    r"""Mass moves: Langevin-type particle moves, weights carry the Jarzynski work only.

    With ``schedule=Constant(1.0)`` (the default) the particles follow the Wasserstein
    gradient flow of KL(q || p) itself (Fokker-Planck in time ``step_size`` per step);
    with an annealing schedule from 0 to 1 this is annealed importance sampling
    (Neal 2001), i.e. Jarzynski's equality, and log Z is estimated.
    """

    move: AbstractMove = MALA(step_size=0.1)
    schedule: AbstractSchedule = Constant(1.0)
    islands: int = 16
    moves_per_step: int = 1
    resample_threshold: ClassVar[float] = 0.0


class FisherRao(_AbstractParticleFlow):
    r"""Mass is reweighted, never moved: importance reweighting with birth-death resampling.

    With ``schedule=Exponential(rate)`` the weighted ensemble follows the Fisher-Rao
    gradient flow of KL(q || p) exactly, :math:`q_t \propto q_0^{e^{-t}} p^{1 - e^{-t}}` at
    ``t = rate * k``; particles whose weight collapses are replaced by copies of heavy
    ones when an island's ESS falls below ``resample_threshold``.
    """

    schedule: AbstractSchedule
    islands: int = 16
    resample_threshold: float = 0.5
    move: ClassVar[None] = None
    moves_per_step: ClassVar[int] = 0


class WassersteinFisherRao(_AbstractParticleFlow):
    r"""Both geometries in one step: reweight, resample, then move (an SMC sampler).

    The Wasserstein-Fisher-Rao (Hellinger-Kantorovich) flow lets mass both move and
    be created/destroyed; with an annealing schedule this is the sequential Monte Carlo
    sampler of Del Moral, Doucet & Jasra (2006) with MALA moves.
    """

    schedule: AbstractSchedule
    move: AbstractMove = MALA(step_size=0.1)
    islands: int = 16
    resample_threshold: float = 0.5
    moves_per_step: int = 1


PARTICLE_SOLVERS = ("wfr", "wasserstein", "fisher_rao")


def particle_solver(
    name: str, *, schedule: AbstractSchedule, move: AbstractMove, islands: int = 16, moves_per_step: int = 1
) -> _AbstractParticleFlow:
    """A particle solver by its config name: ``wfr``, ``wasserstein`` or ``fisher_rao`` (which ignores ``move``)."""
    if name == "wfr":
        return WassersteinFisherRao(schedule=schedule, move=move, islands=islands, moves_per_step=moves_per_step)
    if name == "wasserstein":
        return Wasserstein(schedule=schedule, move=move, islands=islands, moves_per_step=moves_per_step)
    if name == "fisher_rao":
        return FisherRao(schedule=schedule, islands=islands)
    raise ValueError(f"solver must be one of {PARTICLE_SOLVERS}, got {name!r}")
