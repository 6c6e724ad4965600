r"""Solvers of classical DFT: gradient flows of the grand potential βΩ[ρ] on a `fepy.GridDensity`.

Both descend the same functional (`fepy.GrandPotential`, kT units) with the local
chemical potential :math:`\mu_{loc}(x) = \delta\beta\Omega/\delta\rho = \ln\rho + \beta V_{ext}
+ \delta\beta F_{exc}/\delta\rho - \beta\mu` as the force, in two geometries:

- **Fisher-Rao** (`Picard`): :math:`\partial_t \ln\rho = -\mu_{loc}`, mass is created and
  destroyed where it is wrong. One explicit Euler step of length a in :math:`\ln\rho` is
  the mixed Picard iteration :math:`\rho \leftarrow \rho^{1-a}\rho_{EL}^{a}` with
  :math:`\rho_{EL} = \exp(\beta\mu - \beta V_{ext} - \delta\beta F_{exc}/\delta\rho)`.
- **Wasserstein** (`DynamicDFT`): :math:`\partial_t\rho = \gamma\nabla\cdot(\rho\nabla\mu_{loc})`,
  mass flows (dynamic DFT); particles enter or leave only through ``"bulk"`` edges.

Both stop at :math:`\mu_{loc} = 0` where particles can reach the reservoir, i.e. at
:math:`\rho = \rho_{EL}`, the grand-canonical equilibrium. Every profile of a batch
``(*batch, n)`` is solved independently.

Per-step statistics describe the density the step started from (its βΩ, residual and
number come with the functional derivative the step needs, at no extra cost); the
step's own change is ``change``. They are reduced over the batch as documented in
`Picard`; ``summary`` gives the same figures for the final density.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..families.grid import GridDensity
from ..targets.functional import GrandPotential
from ._base import AbstractSolver, check_target_and_family


def _check_problem(solver, target, family) -> None:
    check_target_and_family(solver, target, family, GrandPotential, GridDensity, "density")
    if family.grid != target.grid:
        raise ValueError(f"{type(solver).__name__}: the density's grid {family.grid} differs from the target's {target.grid}")
    batch = family.rho.shape[:-1]
    try:
        joint = jnp.broadcast_shapes(target.batch_shape, batch)
    except ValueError:
        joint = None
    if joint != batch:
        raise ValueError(
            f"{type(solver).__name__}: the density's batch shape {batch} must hold the target's "
            f"batch shape {target.batch_shape} (one profile per problem)"
        )


def _log_floor(dtype) -> float:
    """ln of the smallest normal number: the log density of an empty (underflowed) point."""
    return float(np.log(np.finfo(dtype).tiny))


def _density_stats(target: GrandPotential, rho, rho_el) -> dict[str, Array]:
    r"""βΩ (mean over the batch, kT), the Euler-Lagrange residual :math:`\max|\rho_{EL} - \rho|`
    (over the batch and grid, σ⁻¹) and the number N = ∫ρ (mean over the batch)."""
    return dict(
        grand_potential=jnp.mean(target.omega(rho)),
        residual=jnp.max(jnp.abs(rho_el - rho)),
        number=jnp.mean(target.grid.integrate(rho)),
    )


def _summary(target: GrandPotential, family: GridDensity) -> dict[str, Array]:
    stats = _density_stats(target, family.rho, target.euler_lagrange_density(family.rho))
    return dict(stats, free_energy=stats["grand_potential"])


class PicardState(eqx.Module):
    """History of one `Picard` solve, per profile: past iterates and residuals in ln ρ, newest last.

    The history holds ``max(anderson, 1)`` entries: the newest is the iterate a failed step
    returns to, all ``count`` valid ones enter the Anderson step.
    """

    log_rho: Float[Array, "*batch m n"]  # past iterates u_k = ln rho_k (allowed points; 0 elsewhere)
    residual: Float[Array, "*batch m n"]  # their residuals ln rho_EL - u_k
    omega: Float[Array, "*batch m"]  # their beta Omega
    error: Float[Array, "*batch m"]  # their max |rho_EL - rho|
    count: Int[Array, " *batch"]  # valid entries of the history
    accelerated: Bool[Array, " *batch"]  # whether the current iterate came from an Anderson step
    trust: Float[Array, " *batch"]  # the largest change of ln rho at any point in the next step


class Picard(AbstractSolver):
    r"""The Fisher-Rao flow of βΩ: mixed Picard iteration in ln ρ, with optional Anderson mixing.

    With :math:`u = \ln\rho` and :math:`f(u) = \ln\rho_{EL}(u) - u = -\mu_{loc}` on the points
    where :math:`\beta V_{ext}` is finite (ρ = 0 elsewhere), a plain step is
    :math:`u \leftarrow u + a f(u)`, i.e. :math:`\rho \leftarrow \rho^{1-a}\rho_{EL}^a`
    (``mixing`` a): an explicit Euler step of the Fisher-Rao flow
    :math:`\partial_t\ln\rho = -\mu_{loc}`, which lowers βΩ at the rate :math:`\int\rho\,\mu_{loc}^2`.

    With ``anderson = m > 0`` it is Anderson's type-II mixing of the residuals
    :math:`r = f` over the last m iterates: :math:`\gamma = \arg\min\|r_k - \Delta R\gamma\|_2`
    and :math:`u \leftarrow u_k + a r_k - (\Delta U + a\Delta R)\gamma`, with columns
    :math:`\Delta U_j = u_k - u_{k-j}`, :math:`\Delta R_j = r_k - r_{k-j}` (solved by the
    normal equations with a relative Tikhonov shift of 1e-12).

    Safeguards, per profile (a trust region in ln ρ): no step changes ln ρ at any point
    by more than the trust radius (the step is scaled down to it), which starts at
    ``max_step``. An iterate whose residual or βΩ is NaN/Inf (e.g. a packing fraction
    beyond 1) or whose residual norm exceeds ``restart`` times that of the iterate before
    it is discarded: the solve returns to the previous iterate, forgets the Anderson
    history, and the trust radius becomes half the discarded step. After a step that
    lowers the residual norm the radius doubles, up to ``max_step``. ln ρ is floored at
    the log of the smallest normal float, so underflowed points (deep in a steep but
    finite potential) stay finite, and a point where ρ = 0 but the potential is finite is
    filled in from that floor. A non-finite start (or target) cannot be recovered from: it
    shows as NaN/Inf statistics and stops `fepy.minimize` at that step.

    Per-step statistics, of the iterate the step starts from (after a discard: the one it
    returned to): ``grand_potential`` (βΩ in kT, mean over the batch), ``residual``
    (:math:`\max|\rho_{EL} - \rho|` over batch and grid, σ⁻¹), ``number`` (N = ∫ρ, mean over
    the batch), ``change`` (:math:`\max|\rho_{new} - \rho|`), ``anderson`` (fraction of
    profiles whose step was an Anderson step) and ``trust`` (mean trust radius).
    """

    mixing: float = 0.1
    anderson: int = 0
    max_step: float = 1.0
    restart: float = 10.0

    def __check_init__(self):
        if not (isinstance(self.mixing, (int, float)) and 0.0 < self.mixing <= 1.0):
            raise ValueError(f"Picard mixing must be in (0, 1], got {self.mixing!r}")
        if isinstance(self.anderson, bool) or not isinstance(self.anderson, (int, np.integer)) or self.anderson < 0:
            raise ValueError(f"Picard anderson (history length) must be an integer >= 0, got {self.anderson!r}")
        if not (isinstance(self.max_step, (int, float)) and self.max_step > 0 and np.isfinite(self.max_step)):
            raise ValueError(f"Picard max_step (largest change of ln rho per step) must be finite and > 0, got {self.max_step!r}")
        if not (isinstance(self.restart, (int, float)) and self.restart > 1.0):
            raise ValueError(f"Picard restart (residual growth that discards a step) must be > 1, got {self.restart!r}")

    def init(self, target: GrandPotential, family: GridDensity, key) -> PicardState:
        _check_problem(self, target, family)
        batch, n = family.rho.shape[:-1], family.rho.shape[-1]
        dtype, m = family.rho.dtype, max(self.anderson, 1)
        return PicardState(
            log_rho=jnp.zeros((*batch, m, n), dtype),
            residual=jnp.zeros((*batch, m, n), dtype),
            omega=jnp.zeros((*batch, m), dtype),
            error=jnp.zeros((*batch, m), dtype),
            count=jnp.zeros(batch, jnp.int32),
            accelerated=jnp.zeros(batch, bool),
            trust=jnp.full(batch, self.max_step, dtype),
        )

    def _mix(self, u, r, omega, error, state: PicardState, allowed):
        """One profile: discard a failed iterate, then the plain or Anderson update; returns the new state."""
        points = jnp.maximum(jnp.sum(allowed), 1)
        norm = lambda v: jnp.sqrt(jnp.sum(v**2) / points)  # noqa: E731
        previous = state.count > 0
        finite = jnp.all(jnp.isfinite(r)) & jnp.isfinite(omega)
        undo = previous & ~(finite & (norm(r) <= self.restart * norm(state.residual[-1])))
        better = previous & (norm(r) < norm(state.residual[-1]))
        failed_step = jnp.max(jnp.abs(u - state.log_rho[-1]))
        trust = jnp.where(
            undo,
            0.5 * jnp.minimum(state.trust, failed_step),
            jnp.where(better, jnp.minimum(2 * state.trust, self.max_step), state.trust),
        )
        u, r, omega, error = (
            jnp.where(undo, past[-1], now)
            for now, past in ((u, state.log_rho), (r, state.residual), (omega, state.omega), (error, state.error))
        )
        count = jnp.where(undo, 0, state.count)

        delta = self.mixing * r
        use = jnp.asarray(False)
        if self.anderson > 0:
            valid = jnp.arange(self.anderson) >= self.anderson - count
            d_u = jnp.where(valid[:, None], u - state.log_rho, 0.0)
            d_r = jnp.where(valid[:, None], r - state.residual, 0.0)
            gram = d_r @ d_r.T
            shift = 1e-12 * jnp.trace(gram) + jnp.finfo(u.dtype).tiny
            gram = gram + jnp.diag(jnp.where(valid, shift, 1.0))
            gamma = jnp.where(valid, jnp.linalg.solve(gram, d_r @ r), 0.0)
            accelerated = delta - (d_u + self.mixing * d_r).T @ gamma
            use = (count > 0) & jnp.all(jnp.isfinite(accelerated))
            delta = jnp.where(use, accelerated, delta)
        largest = jnp.max(jnp.abs(delta))
        delta = delta * jnp.minimum(1.0, trust / jnp.where(largest > 0, largest, 1.0))
        push = lambda history, value: jnp.roll(history, -1, axis=0).at[-1].set(value)  # noqa: E731
        new_state = PicardState(
            log_rho=push(state.log_rho, u),
            residual=push(state.residual, r),
            omega=push(state.omega, omega),
            error=push(state.error, error),
            count=jnp.minimum(count + 1, state.log_rho.shape[0]),
            accelerated=use,
            trust=trust,
        )
        return u, omega, error, u + delta, new_state

    def step(self, target: GrandPotential, family: GridDensity, state: PicardState, key):
        rho = family.rho
        allowed = jnp.broadcast_to(target.allowed, rho.shape)
        floor = _log_floor(rho.dtype)
        log_el = jnp.maximum(target.euler_lagrange_exponent(target.excess_derivative(rho)), floor)
        u = jnp.where(allowed, jnp.log(jnp.maximum(rho, np.exp(floor))), 0.0)
        r = jnp.where(allowed, log_el - u, 0.0)
        omega = jnp.broadcast_to(target.omega(rho), rho.shape[:-1])
        error = jnp.max(jnp.abs(jnp.where(allowed, jnp.exp(log_el), 0.0) - rho), axis=-1)

        batch = rho.shape[:-1]
        size = int(np.prod(batch))
        flat = lambda x: x.reshape(size, *x.shape[len(batch):])  # noqa: E731
        out = jax.vmap(self._mix)(flat(u), flat(r), flat(omega), flat(error), jax.tree.map(flat, state), flat(allowed))
        u, omega, error, new_u, new_state = jax.tree.map(lambda x: x.reshape(*batch, *x.shape[1:]), out)
        current = jnp.where(allowed, jnp.exp(u), 0.0)
        new_rho = jnp.where(allowed, jnp.exp(new_u), 0.0)
        stats = dict(
            grand_potential=jnp.mean(omega),
            residual=jnp.max(error),
            number=jnp.mean(target.grid.integrate(current)),
            change=jnp.max(jnp.abs(new_rho - current)),
            anderson=jnp.mean(new_state.accelerated.astype(rho.dtype)),
            trust=jnp.mean(new_state.trust),
        )
        return GridDensity(new_rho, family.grid), new_state, stats

    def summary(self, target: GrandPotential, family: GridDensity, state: PicardState):
        return _summary(target, family)
