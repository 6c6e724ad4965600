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

Per-step statistics describe the density a step ends at (the functional derivative a
step needs is that of its starting density, computed and cached by the step before, or
by ``init``: one derivative per step); ``summary`` gives the same figures for the final
density. Batch reductions are documented in `Picard`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..families.grid import GridDensity
from ..targets.functional import GrandPotential
from ._base import AbstractSolver, check_target_and_family


def _check_problem(solver, target, family) -> None:
    check_target_and_family(solver, target, family, GrandPotential, GridDensity, "density")
    if family.grid != target.grid:
        raise ValueError(
            f"{type(solver).__name__}: the density's grid {family.grid} differs from the target's {target.grid}"
        )
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


def _euler_lagrange(target: GrandPotential, rho, derivative) -> tuple[Array, Array]:
    r"""(:math:`\ln\rho_{EL}` floored at the log of the smallest normal float, per-profile
    :math:`\max_x|\rho_{EL} - \rho|`) for the excess ``derivative`` at ``rho``."""
    log_el = jnp.maximum(target.euler_lagrange_exponent(derivative), _log_floor(rho.dtype))
    el = jnp.where(target.allowed, jnp.exp(log_el), 0.0)
    return log_el, jnp.max(jnp.abs(el - rho), axis=-1)


def _stats(target: GrandPotential, rho, omega, error) -> dict[str, Array]:
    r"""βΩ (mean over the batch, kT), the Euler-Lagrange residual :math:`\max|\rho_{EL} - \rho|`
    (over the batch and grid, σ⁻¹) and N = ∫ρ (mean over the batch)."""
    return dict(grand_potential=jnp.mean(omega), residual=jnp.max(error), number=jnp.mean(target.grid.integrate(rho)))


def _summary(target: GrandPotential, family: GridDensity) -> dict[str, Array]:
    rho = family.rho
    _, error = _euler_lagrange(target, rho, target.excess_derivative(rho))
    stats = _stats(target, rho, target.omega(rho), error)
    return dict(stats, free_energy=stats["grand_potential"])


def _batched(fn, batch: tuple[int, ...], *args):
    """``fn`` of one profile, mapped over the leading ``batch`` axes of every leaf of ``args``."""
    size = int(np.prod(batch))
    flat = jax.tree.map(lambda x: x.reshape(size, *x.shape[len(batch):]), args)
    return jax.tree.map(lambda x: x.reshape(*batch, *x.shape[1:]), jax.vmap(fn)(*flat))


class PicardState(eqx.Module):
    """Per profile: the last iterates and residuals in ln ρ (newest last: the current density),
    its βΩ and Euler-Lagrange error, and the trust radius."""

    log_rho: Float[Array, "*batch m n"]  # u_k = ln rho_k on allowed points (0 elsewhere), newest last
    residual: Float[Array, "*batch m n"]  # f_k = ln rho_EL(u_k) - u_k
    count: Int[Array, " *batch"]  # valid (newest) entries, >= 1
    omega: Float[Array, " *batch"]  # beta Omega of the current density
    error: Float[Array, " *batch"]  # max |rho_EL - rho| of the current density
    trust: Float[Array, " *batch"]  # the largest change of ln rho at any point in the next step


class Picard(AbstractSolver):
    r"""The Fisher-Rao flow of βΩ: mixed Picard iteration in ln ρ, with optional Anderson mixing.

    With :math:`u = \ln\rho` and :math:`f(u) = \ln\rho_{EL}(u) - u = -\mu_{loc}` on the points
    where :math:`\beta V_{ext}` is finite (ρ = 0 elsewhere), a plain step is
    :math:`u \leftarrow u + a f(u)`, i.e. :math:`\rho \leftarrow \rho^{1-a}\rho_{EL}^a`
    (``mixing`` a): an explicit Euler step of the Fisher-Rao flow
    :math:`\partial_t\ln\rho = -\mu_{loc}`, which lowers βΩ at the rate :math:`\int\rho\,\mu_{loc}^2`.
    It is stable while :math:`a < 2/\lambda_{max}`, λ the eigenvalues of
    :math:`1 + \sqrt\rho\,(\delta^2\beta F_{exc})\sqrt\rho` (in bulk :math:`\lambda_{max} = 1/\min_k S(k)`,
    e.g. :math:`1/(1-\eta)^2` for hard rods).

    With ``anderson = m > 0`` a step is Anderson's type-II mixing over the current and the
    last m iterates: :math:`\gamma = \arg\min\|f_k - \Delta F\gamma\|_2` and
    :math:`u \leftarrow u_k + a f_k - (\Delta U + a\Delta F)\gamma`, with columns
    :math:`\Delta U_j = u_k - u_{k-j}`, :math:`\Delta F_j = f_k - f_{k-j}` (normal equations
    with a relative Tikhonov shift of 1e-12).

    Safeguards, per profile (a trust region in ln ρ): a step changes ln ρ at no point by
    more than the trust radius (it is scaled down to it), which starts at ``max_step``.
    A step whose new density has a NaN/Inf residual or βΩ (e.g. a packing fraction beyond
    1) or a residual norm more than ``restart`` times the current one is rejected: the
    density stays, the Anderson history is forgotten and the trust radius becomes half the
    rejected step. After a step that lowers the residual norm the radius doubles, up to
    ``max_step``. So the density a step returns is always an accepted one. ln ρ is floored
    at the log of the smallest normal float, so underflowed points (deep in a steep but
    finite potential) stay finite, and a point where ρ = 0 but the potential is finite is
    filled in from that floor. A start (or target) with a NaN/Inf residual or βΩ cannot be
    recovered from: it shows in the statistics and stops `fepy.minimize` at step 1.

    Per-step statistics, of the density after the step: ``grand_potential`` (βΩ in kT,
    mean over the batch), ``residual`` (:math:`\max|\rho_{EL} - \rho|` over batch and grid,
    σ⁻¹), ``number`` (N = ∫ρ, mean over the batch), ``change`` (:math:`\max|\rho_{new} -
    \rho|`, 0 for a rejected step), ``accepted`` and ``anderson`` (fractions of the profiles
    whose step was accepted, and accepted as an Anderson step) and ``trust`` (mean radius).
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
            raise ValueError(f"Picard max_step (largest change of ln rho per step) must be finite and > 0, "
                             f"got {self.max_step!r}")
        if not (isinstance(self.restart, (int, float)) and self.restart > 1.0):
            raise ValueError(f"Picard restart (residual growth that rejects a step) must be > 1, got {self.restart!r}")

    @staticmethod
    def _evaluate(target: GrandPotential, rho):
        """ln ρ, the log residual f, βΩ and the Euler-Lagrange error of ``rho``."""
        allowed = jnp.broadcast_to(target.allowed, rho.shape)
        log_el, error = _euler_lagrange(target, rho, target.excess_derivative(rho))
        u = jnp.where(allowed, jnp.log(jnp.maximum(rho, np.finfo(rho.dtype).tiny)), 0.0)
        f = jnp.where(allowed, log_el - u, 0.0)
        return u, f, jnp.broadcast_to(target.omega(rho), rho.shape[:-1]), error

    def init(self, target: GrandPotential, family: GridDensity, key) -> PicardState:
        _check_problem(self, target, family)
        u, f, omega, error = self._evaluate(target, family.rho)

        def history(x):  # the current iterate, newest of anderson + 1 slots
            return jnp.zeros((*x.shape[:-1], self.anderson + 1, x.shape[-1]), x.dtype).at[..., -1, :].set(x)

        batch = family.rho.shape[:-1]
        return PicardState(
            log_rho=history(u), residual=history(f), count=jnp.ones(batch, jnp.int32), omega=omega, error=error,
            trust=jnp.full(batch, self.max_step, family.rho.dtype),
        )

    def _direction(self, state: PicardState):
        """One profile: the plain or Anderson step in ln ρ, scaled to the trust radius, and whether it is Anderson."""
        u, f = state.log_rho[-1], state.residual[-1]
        delta = self.mixing * f
        use = jnp.asarray(False)
        if self.anderson > 0:
            m = self.anderson
            valid = jnp.arange(m) >= m + 1 - state.count  # past entries 0..m-1 (m is the current)
            d_u = jnp.where(valid[:, None], u - state.log_rho[:-1], 0.0)
            d_f = jnp.where(valid[:, None], f - state.residual[:-1], 0.0)
            gram = d_f @ d_f.T
            shift = 1e-12 * jnp.trace(gram) + jnp.finfo(u.dtype).tiny
            gram = gram + jnp.diag(jnp.where(valid, shift, 1.0))
            gamma = jnp.where(valid, jnp.linalg.solve(gram, d_f @ f), 0.0)
            accelerated = delta - (d_u + self.mixing * d_f).T @ gamma
            use = (state.count > 1) & jnp.all(jnp.isfinite(accelerated))
            delta = jnp.where(use, accelerated, delta)
        largest = jnp.max(jnp.abs(delta))
        return delta * jnp.minimum(1.0, state.trust / jnp.where(largest > 0, largest, 1.0)), use

    def _accept(self, state: PicardState, delta, u, f, omega, error, points):
        """One profile: accept or reject the new iterate (u, f, ...); returns the new state and whether accepted."""
        norm = lambda v: jnp.sqrt(jnp.sum(v**2) / points)  # noqa: E731
        current = norm(state.residual[-1])
        ok = jnp.all(jnp.isfinite(f)) & jnp.isfinite(omega) & (norm(f) <= self.restart * current)
        better = ok & (norm(f) < current)
        trust = jnp.where(
            ok,
            jnp.where(better, jnp.minimum(2 * state.trust, self.max_step), state.trust),
            0.5 * jnp.minimum(state.trust, jnp.max(jnp.abs(delta))),
        )
        def push(history, value):
            return jnp.where(ok, jnp.roll(history, -1, axis=0).at[-1].set(value), history)

        new_state = PicardState(
            log_rho=push(state.log_rho, u),
            residual=push(state.residual, f),
            count=jnp.where(ok, jnp.minimum(state.count + 1, self.anderson + 1), 1),
            omega=jnp.where(ok, omega, state.omega),
            error=jnp.where(ok, error, state.error),
            trust=trust,
        )
        return new_state, ok

    def step(self, target: GrandPotential, family: GridDensity, state: PicardState, key):
        rho, batch = family.rho, family.rho.shape[:-1]
        allowed = jnp.broadcast_to(target.allowed, rho.shape)
        delta, anderson = _batched(self._direction, batch, state)
        candidate = jnp.where(allowed, jnp.exp(state.log_rho[..., -1, :] + delta), 0.0)
        u, f, omega, error = self._evaluate(target, candidate)
        points = jnp.maximum(jnp.sum(allowed, axis=-1), 1)
        new_state, ok = _batched(self._accept, batch, state, delta, u, f, omega, error, points)
        new_rho = jnp.where(ok[..., None], candidate, rho)
        stats = dict(
            _stats(target, new_rho, new_state.omega, new_state.error),
            change=jnp.max(jnp.abs(new_rho - rho)),
            accepted=jnp.mean(ok.astype(rho.dtype)),
            anderson=jnp.mean((ok & anderson).astype(rho.dtype)),
            trust=jnp.mean(new_state.trust),
        )
        return GridDensity(new_rho, family.grid), new_state, stats

    def summary(self, target: GrandPotential, family: GridDensity, state: PicardState):
        return _summary(target, family)


def _bernoulli(z):
    r""":math:`B(z) = z/(e^z - 1)` (B(0) = 1), the Scharfetter-Gummel weight; finite for every finite z."""
    small = jnp.abs(z) < 1e-6
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 - 0.5 * z, safe / jnp.expm1(safe))


def _solve_cyclic(lower, diag, upper, rhs, periodic: bool):
    r"""Solve the (cyclic, if ``periodic``) tridiagonal systems row by row along the last axis.

    Row i reads ``lower[i] x[i-1] + diag[i] x[i] + upper[i] x[i+1] = rhs[i]``; without
    ``periodic`` ``lower[0]`` and ``upper[-1]`` must be 0, with it they are the corners
    (x[-1] = x[n-1], x[n] = x[0]), removed by the Sherman-Morrison formula.
    """
    if not periodic:
        return jax.lax.linalg.tridiagonal_solve(lower, diag, upper, rhs[..., None])[..., 0]
    top, bottom = lower[..., 0], upper[..., -1]  # A[0, n-1] and A[n-1, 0]
    gamma = -diag[..., 0]
    diag = diag.at[..., 0].add(-gamma).at[..., -1].add(-top * bottom / gamma)
    u = jnp.zeros_like(rhs).at[..., 0].set(gamma).at[..., -1].set(bottom)
    lower, upper = lower.at[..., 0].set(0.0), upper.at[..., -1].set(0.0)
    both = jax.lax.linalg.tridiagonal_solve(lower, diag, upper, jnp.stack([rhs, u], axis=-1))
    y, z = both[..., 0], both[..., 1]
    v_dot = lambda w: w[..., 0] + (top / gamma) * w[..., -1]  # noqa: E731
    return y - (v_dot(y) / (1.0 + v_dot(z)))[..., None] * z


class DynamicDFTState(eqx.Module):
    time: Float[Array, ""]  # elapsed time (units of 1 / mobility)
    derivative: Float[Array, "*batch n"]  # δβF_exc/δρ of the current density (cached from the step before)


class DynamicDFT(AbstractSolver):
    r"""The Wasserstein flow of βΩ (dynamic DFT), :math:`\partial_t\rho = \gamma\partial_x(\rho\partial_x\mu_{loc})`.

    With :math:`\mu_{loc} = \ln\rho + \psi`, :math:`\psi = \beta V_{ext} + \delta\beta F_{exc}/\delta\rho
    - \beta\mu`, the flux :math:`J = -\gamma e^{-\psi}\partial_x(\rho e^{\psi})` is discretised on the
    faces between cells by the Scharfetter-Gummel (exponential fitting) formula

    .. math:: J_{i+1/2} = \frac{\gamma}{dx}\big[B(\Delta\psi)\,\rho_i - B(-\Delta\psi)\,\rho_{i+1}\big],
              \qquad B(z) = \frac{z}{e^z - 1},\ \Delta\psi = \psi_{i+1} - \psi_i,

    which vanishes exactly when :math:`\rho e^{\psi}`, i.e. :math:`\mu_{loc}`, is the same on both
    sides: the stationary states are those of the continuous flow. Each step of length
    ``dt`` is linearly implicit: ψ is taken at the start of the step, ρ at its end, so a
    step is one (cyclic) tridiagonal solve with an M-matrix: for any dt, densities stay
    positive and the fluxes between cells conserve mass to round-off, and the external potential and the ideal
    gas (the stiff, :math:`1/dx^2` part) never limit dt. Only the excess part is lagged; for
    hard cores it is stable while :math:`\gamma\,dt\,k^2(\rho|\hat c(k)| - 1) \le 2` for all
    wave numbers k, independent of the grid (at η = 0.5 with γ = 1, dt = 0.2 is stable and
    dt = 1 is not).

    Edges: no flux through an ``"empty"`` edge or a face next to a point where
    :math:`\beta V_{ext} = +\infty` (hard walls); a ``"bulk"`` edge exchanges particles with a
    ghost cell of the reservoir (:math:`\rho_b`, :math:`\mu_{loc} = 0`), so the stationary
    state is the grand-canonical equilibrium (the `Picard` solution) wherever the fluid
    is connected to a bulk edge; a periodic grid wraps and conserves N (canonical).

    Attributes:
        dt: time per step, in the units of 1/``mobility`` (σ²/D for ``mobility`` = 1).
        mobility: γ = βD, which in kT units is the one-particle diffusion coefficient D
            (σ² per unit time).

    Per-step statistics, of the density after the step: ``grand_potential`` (βΩ, kT, mean
    over the batch), ``residual`` (:math:`\max|\rho_{EL} - \rho|`, σ⁻¹), ``number`` (mean over
    the batch), ``change`` (:math:`\max|\rho_{new} - \rho|`) and ``time``.
    """

    dt: float = 0.05
    mobility: float = 1.0

    def __check_init__(self):
        for name in ("dt", "mobility"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"DynamicDFT {name} must be finite and > 0, got {value!r}")

    def init(self, target: GrandPotential, family: GridDensity, key) -> DynamicDFTState:
        _check_problem(self, target, family)
        return DynamicDFTState(time=jnp.zeros((), family.rho.dtype), derivative=target.excess_derivative(family.rho))

    def _faces(self, target: GrandPotential, psi, allowed):
        r"""Transfer coefficients ``(right, left)`` of the n + 1 faces (left edge, between cells, right
        edge), times dt/dx: face j carries :math:`right_j\,\rho_{j-1} - left_j\,\rho_j` to the right."""
        grid = target.grid
        rho_bulk = jnp.broadcast_to(jnp.asarray(target.rho_bulk, psi.dtype), psi.shape[:-1])[..., None]
        if grid.periodic:
            psi_ext = jnp.concatenate([psi[..., -1:], psi, psi[..., :1]], axis=-1)
            open_ext = jnp.concatenate([allowed[..., -1:], allowed, allowed[..., :1]], axis=-1)
        else:
            ghost = -jnp.log(rho_bulk)  # mu_loc = ln rho_b + psi = 0 in the reservoir
            psi_ext = jnp.concatenate([ghost, psi, ghost], axis=-1)
            bulk = lambda side: jnp.full((*psi.shape[:-1], 1), side == "bulk")  # noqa: E731
            open_ext = jnp.concatenate([bulk(grid.left), allowed, bulk(grid.right)], axis=-1)
        is_open = open_ext[..., :-1] & open_ext[..., 1:]
        d_psi = jnp.where(is_open, psi_ext[..., 1:] - psi_ext[..., :-1], 0.0)
        rate = self.mobility * self.dt / grid.dx**2
        return jnp.where(is_open, rate * _bernoulli(d_psi), 0.0), jnp.where(is_open, rate * _bernoulli(-d_psi), 0.0)

    def step(self, target: GrandPotential, family: GridDensity, state: DynamicDFTState, key):
        rho = family.rho
        grid = target.grid
        allowed = jnp.broadcast_to(target.allowed, rho.shape)
        psi = jnp.where(allowed, -target.euler_lagrange_exponent(state.derivative), 0.0)  # beta V + c - beta mu
        right, left = self._faces(target, psi, allowed)
        # cell i: rho_i (1 + right_{i+1} + left_i) - right_i rho_{i-1} - left_{i+1} rho_{i+1} = rho_i(old)
        diag = 1.0 + right[..., 1:] + left[..., :-1]
        lower, upper = -right[..., :-1], -left[..., 1:]
        rhs = jnp.where(allowed, rho, 0.0)
        if not grid.periodic:  # known reservoir ghosts (zero coefficients at empty edges)
            rho_bulk = jnp.broadcast_to(jnp.asarray(target.rho_bulk, rho.dtype), rho.shape[:-1])
            rhs = rhs.at[..., 0].add(right[..., 0] * rho_bulk).at[..., -1].add(left[..., -1] * rho_bulk)
            lower, upper = lower.at[..., 0].set(0.0), upper.at[..., -1].set(0.0)
        new_rho = _solve_cyclic(lower, diag, upper, rhs, grid.periodic)
        derivative = target.excess_derivative(new_rho)
        _, error = _euler_lagrange(target, new_rho, derivative)
        time = state.time + self.dt
        stats = dict(
            _stats(target, new_rho, target.omega(new_rho), error), change=jnp.max(jnp.abs(new_rho - rho)), time=time
        )
        return GridDensity(new_rho, grid), DynamicDFTState(time, derivative), stats

    def summary(self, target: GrandPotential, family: GridDensity, state: DynamicDFTState):
        return dict(_summary(target, family), time=state.time)
