r"""Grand-canonical Monte Carlo (GCMC) of 1-D fluids on the DFT grid: simulation data for DFT.

Units: energies in kT (every potential here is :math:`\beta u`), lengths in particle
diameters σ, densities per σ. The thermal wavelength is Λ = σ, the convention of the DFT
ideal term :math:`\int\rho(\ln\rho - 1)\,dx` of `fepy.GrandPotential`, so an ideal gas has
:math:`\beta\mu = \ln\rho` and hard rods (Tonks) :math:`\beta\mu = \ln\rho - \ln(1-\eta) + \eta/(1-\eta)`,
η = ρσ.

**The system.** Particles with centres :math:`x_i` on :math:`[0, L)`, L = ``grid.length``, with

.. math:: \beta U = \sum_i \beta V_{ext}(x_i) + \sum_{i<j} \beta u(|x_i - x_j|),

:math:`\beta V_{ext}` piecewise constant: ``beta_external[k]`` on the cell
:math:`[k\,dx, (k+1)\,dx)` of the `fepy.Grid` (``+inf`` cells are hard walls; no centre
enters them). A ``"periodic"`` grid wraps (minimum-image distances, which needs
:math:`L \ge 2 r_c`); an ``"empty"`` edge is a hard wall for the centres at 0 or L (nothing
beyond it). ``"bulk"`` edges (an open reservoir) are not simulated: use a periodic grid, or
walls inside a larger box.

**The Markov chain** samples :math:`P(N, x^N) \propto \frac{z^N}{N!} e^{-\beta U}`,
:math:`z = e^{\beta\mu}/\Lambda`. Each move is, with probability ``displacement_fraction``,

- a displacement of a uniformly chosen particle by :math:`\delta \sim U(-\Delta, \Delta)`,
  accepted with :math:`\min(1, e^{-\Delta\beta U})`;

and otherwise, with equal probability,

- an insertion at :math:`x \sim U(0, L)`: :math:`\min\!\big(1, \frac{L}{N+1}\,e^{\beta\mu - \Delta\beta U}\big)`;
- a deletion of a uniformly chosen particle: :math:`\min\!\big(1, \frac{N}{L}\,e^{-\beta\mu - \Delta\beta U}\big)`

(Λ = σ = 1 in these units). A sweep is ``moves_per_sweep`` moves; the observables are
sampled after each sweep.

**Fixed capacity.** Positions live in an array of ``capacity`` slots with an occupancy
mask, so every step has static shapes: `jax.jit`, `jax.vmap` over independent systems and
`jax.lax.scan` over moves apply. An insertion into a full array is refused; that biases
the chain, so the refusals are counted (`GCMCResult.capacity_rejections`) and must be 0
(for hard rods ``capacity`` above the close-packed number :math:`\lfloor L/\sigma\rfloor + 1`
makes it impossible).

**Errors** are batch means: the production run is split into ``blocks`` blocks of
``sweeps_per_block`` sweeps; for blocks much longer than the autocorrelation time the
block means are independent, and the standard error of a mean is
:math:`\mathrm{sd}(\text{block means})/\sqrt{B}`. Ratios (the pair correlation) use the
jackknife over blocks.

Distances are hand-written (:math:`d - L\,\mathrm{round}(d/L)` when periodic); in 1-D this
is all jax-md's ``space.periodic`` would add.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ..._validate import concrete
from ...families.grid import Grid


def _check_positive(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class AbstractPairPotential(eqx.Module):
    r"""A pair potential :math:`\beta u(r)` (kT) of two particles a distance r ≥ 0 apart (σ).

    Subclasses return ``+inf`` where the particles overlap and exactly 0 for
    :math:`r \ge r_c` = :attr:`cutoff` (finite: it sets the minimum-image condition).
    """

    @property
    @abc.abstractmethod
    def cutoff(self) -> float:
        """The range :math:`r_c` (σ): :math:`\\beta u(r) = 0` for :math:`r \\ge r_c`."""

    @abc.abstractmethod
    def __call__(self, r: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r""":math:`\beta u(r)` (kT) elementwise, for r ≥ 0."""


class HardRodPair(AbstractPairPotential):
    r"""Hard rods of length σ: :math:`\beta u(r) = +\infty` for :math:`r < \sigma`, else 0 (Tonks gas)."""

    sigma: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _check_positive("HardRodPair sigma", self.sigma)

    @property
    def cutoff(self) -> float:
        return self.sigma

    def __call__(self, r):
        return jnp.where(r < self.sigma, jnp.inf, 0.0)


class LennardJonesPair(AbstractPairPotential):
    r"""The Lennard-Jones potential, truncated at :math:`r_c` and (by default) shifted to 0 there:

    .. math:: \beta u(r) = 4\beta\varepsilon\Big[\Big(\frac{\sigma}{r}\Big)^{12}
              - \Big(\frac{\sigma}{r}\Big)^6\Big] - \beta u_{LJ}(r_c)\ \ (r < r_c),
              \qquad 0\ \ (r \ge r_c).

    ``epsilon`` is βε (the well depth in kT, i.e. 1/T*), ``sigma`` the LJ diameter (σ),
    ``cutoff`` :math:`r_c` (σ), ``shift`` whether :math:`\beta u_{LJ}(r_c)` is subtracted
    (continuous potential; without it u jumps at :math:`r_c`). At r = 0 the potential is
    ``+inf``. With :math:`r_c < 2\,r_{core}`, where :math:`e^{-\beta u}` is negligible below
    :math:`r_{core}` (about 0.85σ at βε = 1), only nearest neighbours interact and the bulk
    fluid is exactly solvable (Takahashi).
    """

    epsilon: float = eqx.field(static=True, default=1.0)
    sigma: float = eqx.field(static=True, default=1.0)
    cutoff: float = eqx.field(static=True, default=2.5)
    shift: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not (math.isfinite(float(self.epsilon)) and self.epsilon >= 0):
            raise ValueError(f"LennardJonesPair epsilon (kT) must be finite and >= 0, got {self.epsilon!r}")
        _check_positive("LennardJonesPair sigma", self.sigma)
        _check_positive("LennardJonesPair cutoff", self.cutoff)

    def _bare(self, r):
        s6 = (self.sigma / r) ** 6
        return 4.0 * self.epsilon * s6 * (s6 - 1.0)

    def __call__(self, r):
        offset = self._bare(self.cutoff) if self.shift else 0.0
        return jnp.where(r < self.cutoff, self._bare(r) - offset, 0.0)


class GCMCState(eqx.Module):
    """Configurations: ``capacity`` slots per system, ``occupied`` marks the particles (σ)."""

    positions: Float[Array, "*batch capacity"]
    occupied: Bool[Array, "*batch capacity"]

    @property
    def number(self) -> Array:
        """Particle number N of each system."""
        return jnp.sum(self.occupied, axis=-1)


class GCMCResult(eqx.Module):
    r"""Block means of a GCMC run (leading axes: the batch of systems).

    Attributes:
        grid: the grid of the density histogram (bin k = cell k).
        density_blocks: block means of :math:`\rho(x_k)` = (particles in cell k)/dx (σ⁻¹),
            shape ``(*batch, blocks, n)``.
        number_blocks: block means of N, ``(*batch, blocks)``.
        number_histogram_blocks: block means of the indicator of N = 0 ... capacity,
            ``(*batch, blocks, capacity + 1)``.
        pair_blocks: block means of the number of ordered pairs (i ≠ j) with minimum-image
            distance :math:`|x_i - x_j|` in bin m = [m, m+1) · ``pair_bin_width``,
            ``(*batch, blocks, bins)``; None when not sampled.
        pair_bin_width: width of the pair-distance bins (σ) (= ``grid.dx``).
        acceptance: accepted / attempted displacements, insertions, deletions, ``(*batch, 3)``
            (production sweeps only).
        capacity_rejections: insertions refused because all slots were full (must be 0).
        state: the final configurations (continue a run with ``run(..., state=result.state)``).
    """

    grid: Grid
    density_blocks: Float[Array, "*batch blocks n"]
    number_blocks: Float[Array, "*batch blocks"]
    number_histogram_blocks: Float[Array, "*batch blocks capacity_plus_1"]
    pair_blocks: Float[Array, "*batch blocks bins"] | None
    pair_bin_width: float = eqx.field(static=True)
    acceptance: Float[Array, "*batch 3"]
    capacity_rejections: Float[Array, "*batch"]
    state: GCMCState

    @staticmethod
    def _mean_and_stderr(blocks, axis: int):
        b = blocks.shape[axis]
        return jnp.mean(blocks, axis=axis), jnp.std(blocks, axis=axis, ddof=1) / math.sqrt(b)

    @property
    def blocks(self) -> int:
        return self.number_blocks.shape[-1]

    @property
    def density(self) -> Float[Array, "*batch n"]:
        r""":math:`\langle\rho(x_k)\rangle`, the cell-averaged density (σ⁻¹)."""
        return self._mean_and_stderr(self.density_blocks, -2)[0]

    @property
    def density_stderr(self) -> Float[Array, "*batch n"]:
        """Standard error of :attr:`density` (batch means)."""
        return self._mean_and_stderr(self.density_blocks, -2)[1]

    @property
    def number(self) -> Float[Array, "*batch"]:
        r""":math:`\langle N\rangle`."""
        return self._mean_and_stderr(self.number_blocks, -1)[0]

    @property
    def number_stderr(self) -> Float[Array, "*batch"]:
        return self._mean_and_stderr(self.number_blocks, -1)[1]

    @property
    def number_distribution(self) -> Float[Array, "*batch capacity_plus_1"]:
        """P(N) for N = 0 ... capacity."""
        return self._mean_and_stderr(self.number_histogram_blocks, -2)[0]

    @property
    def number_distribution_stderr(self) -> Float[Array, "*batch capacity_plus_1"]:
        return self._mean_and_stderr(self.number_histogram_blocks, -2)[1]

    def pair_correlation(
        self,
    ) -> tuple[Float[Array, " bins"], Float[Array, "*batch bins"], Float[Array, "*batch bins"]]:
        r"""Bin centres r (σ), the bulk pair correlation g(r) and its jackknife standard error.

        For a homogeneous periodic system the ordered-pair count in a bin of width Δr at
        distance r is :math:`\langle C\rangle = 2\Delta r\,L\,\rho^{(2)}(r)` (both sides of each
        particle), and :math:`g = \rho^{(2)}/\rho^2` with :math:`\rho = \langle N\rangle/L`:

        .. math:: g(r) = \frac{L\,\langle C(r)\rangle}{2\,\Delta r\,\langle N\rangle^2}

        (grand canonical: no 1/N correction). The error is the jackknife over blocks.
        """
        if self.pair_blocks is None:
            raise ValueError("this run did not sample pair distances: give GrandCanonicalMC a pair_range")
        scale = self.grid.length / (2.0 * self.pair_bin_width)

        def ratio(pairs, number):
            return scale * pairs / number[..., None] ** 2

        g = ratio(jnp.mean(self.pair_blocks, -2), jnp.mean(self.number_blocks, -1))
        b = self.blocks
        pair_sum = jnp.sum(self.pair_blocks, -2, keepdims=True)
        number_sum = jnp.sum(self.number_blocks, -1, keepdims=True)
        leave_one_out = ratio((pair_sum - self.pair_blocks) / (b - 1), (number_sum - self.number_blocks) / (b - 1))
        jack_mean = jnp.mean(leave_one_out, -2, keepdims=True)
        stderr = jnp.sqrt((b - 1) / b * jnp.sum((leave_one_out - jack_mean) ** 2, -2))
        r = (jnp.arange(self.pair_blocks.shape[-1]) + 0.5) * self.pair_bin_width
        return r, g, stderr


class GrandCanonicalMC(eqx.Module):
    r"""GCMC of 1-D particles with a pair potential on the cells of a `fepy.Grid` (module docstring).

    Attributes:
        grid: the box :math:`[0, L)` and its edges (``"periodic"`` or ``"empty"``), and the
            cells of :math:`\beta V_{ext}` and of the density histogram.
        pair: the pair potential (`HardRodPair`, `LennardJonesPair`, ...), or None for an ideal gas.
        capacity: slots per system (the largest N).
        max_displacement: Δ (σ), displacements are uniform in (-Δ, Δ).
        displacement_fraction: probability of a displacement move; insertions and
            deletions share the rest equally.
        moves_per_sweep: moves per sweep (observables are sampled once a sweep).
        pair_range: sample pair distances up to this range (σ, at most L/2, periodic grids
            only) for `GCMCResult.pair_correlation`; None: not sampled (it costs
            :math:`O(\text{capacity}^2)` per sweep).
    """

    grid: Grid
    pair: AbstractPairPotential | None
    capacity: int = eqx.field(static=True)
    max_displacement: float = eqx.field(static=True)
    displacement_fraction: float = eqx.field(static=True)
    moves_per_sweep: int = eqx.field(static=True)
    pair_range: float | None = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid,
        pair: AbstractPairPotential | None,
        capacity: int,
        *,
        max_displacement: float = 0.5,
        displacement_fraction: float = 0.5,
        moves_per_sweep: int | None = None,
        pair_range: float | None = None,
    ):
        if not isinstance(grid, Grid):
            raise ValueError(f"GrandCanonicalMC grid must be a fepy.Grid, got {type(grid).__name__}")
        if "bulk" in (grid.left, grid.right):
            raise ValueError(
                "GrandCanonicalMC simulates closed boxes: grid edges must be 'periodic' or 'empty' (a 'bulk' "
                "reservoir is not simulated; use a periodic grid or walls inside a larger box)"
            )
        if pair is not None and not isinstance(pair, AbstractPairPotential):
            raise ValueError(f"GrandCanonicalMC pair must be an AbstractPairPotential or None, got {pair!r}")
        if pair is not None and grid.periodic and grid.length < 2 * pair.cutoff:
            raise ValueError(
                f"a periodic box of length {grid.length} is shorter than twice the pair cutoff {pair.cutoff} "
                "(the minimum-image convention would miss interactions)"
            )
        self.grid = grid
        self.pair = pair
        self.capacity = _check_int("GrandCanonicalMC capacity", capacity, 1)
        self.max_displacement = _check_positive("GrandCanonicalMC max_displacement", max_displacement)
        if not 0.0 <= float(displacement_fraction) < 1.0:
            raise ValueError(f"displacement_fraction must be in [0, 1), got {displacement_fraction!r}")
        self.displacement_fraction = float(displacement_fraction)
        self.moves_per_sweep = _check_int(
            "GrandCanonicalMC moves_per_sweep", self.capacity if moves_per_sweep is None else moves_per_sweep, 1
        )
        if pair_range is not None:
            if not grid.periodic:
                raise ValueError("pair_range (bulk pair correlation) needs a periodic grid")
            pair_range = _check_positive("GrandCanonicalMC pair_range", pair_range)
            if pair_range > grid.length / 2 + 1e-12 * grid.length:
                raise ValueError(f"pair_range must be <= L/2 = {grid.length / 2}, got {pair_range}")
        self.pair_range = pair_range

    @property
    def pair_bins(self) -> int:
        """Number of pair-distance bins of width dx up to :attr:`pair_range`."""
        return 0 if self.pair_range is None else max(1, int(math.floor(self.pair_range / self.grid.dx + 1e-9)))

    def init(self, batch_shape: tuple[int, ...] = ()) -> GCMCState:
        """Empty systems (N = 0), a valid start for any external potential."""
        shape = (*batch_shape, self.capacity)
        return GCMCState(jnp.zeros(shape, jnp.result_type(float)), jnp.zeros(shape, bool))

    # ---- one system -------------------------------------------------------------------

    def _external(self, beta_external, x):
        """:math:`\\beta V_{ext}(x)` of the cell holding x; +inf outside [0, L) without wrap."""
        index = jnp.clip(jnp.floor(x / self.grid.dx).astype(jnp.int32), 0, self.grid.n - 1)
        value = beta_external[index]
        if self.grid.periodic:
            return value
        return jnp.where((x >= 0) & (x < self.grid.length), value, jnp.inf)

    def _separation(self, d):
        if self.grid.periodic:
            d = d - self.grid.length * jnp.round(d / self.grid.length)
        return jnp.abs(d)

    def _slot_energy(self, beta_external, positions, occupied, slot, x, present):
        r""":math:`\beta V(x) + \sum_{j \ne slot} \beta u(|x - x_j|)` for a particle at x in ``slot`` (0 if absent)."""
        energy = self._external(beta_external, x)
        if self.pair is not None:
            others = occupied & (jnp.arange(self.capacity) != slot)
            u = self.pair(self._separation(x - positions))
            energy = energy + jnp.sum(jnp.where(others, u, 0.0))
        return jnp.where(present, energy, 0.0)

    def _move(self, beta_external, beta_mu, state: GCMCState, u: Float[Array, " 4"]):
        """One Metropolis move from the uniforms ``u``: returns the new state, the move kind and acceptance."""
        positions, occupied = state.positions, state.occupied
        length = self.grid.length
        n = jnp.sum(occupied)
        p_d = self.displacement_fraction
        is_disp = u[0] < p_d
        is_ins = ~is_disp & (u[0] < p_d + 0.5 * (1.0 - p_d))
        is_del = ~is_disp & ~is_ins

        # a uniformly chosen particle: the k-th occupied slot, k ~ U{0..N-1}
        k = jnp.minimum(jnp.floor(u[1] * n), jnp.maximum(n - 1, 0)).astype(jnp.int32)
        rank = jnp.cumsum(occupied) - 1
        chosen = jnp.argmax(occupied & (rank == k))
        free = jnp.argmin(occupied)  # the first free slot (0 when full: refused below)
        slot = jnp.where(is_ins, free, chosen)

        x_old = positions[slot]
        present_old = occupied[slot]
        x_disp = x_old + self.max_displacement * (2.0 * u[2] - 1.0)
        if self.grid.periodic:
            x_disp = jnp.mod(x_disp, length)
        x_new = jnp.where(is_ins, u[2] * length, jnp.where(is_disp, x_disp, x_old))
        present_new = ~is_del

        full = n >= self.capacity
        possible = jnp.where(is_ins, ~full, n > 0)
        energies = jax.vmap(
            lambda x, present: self._slot_energy(beta_external, positions, occupied, slot, x, present)
        )(jnp.stack([x_old, x_new]), jnp.stack([present_old & ~is_ins, present_new]))
        n_f = n.astype(positions.dtype)
        log_prefactor = jnp.where(
            is_ins,
            jnp.log(length / (n_f + 1.0)) + beta_mu,
            jnp.where(is_del, jnp.log(n_f / length) - beta_mu, 0.0),
        )
        log_ratio = log_prefactor - (energies[1] - energies[0])
        accept = possible & (jnp.log(u[3]) < log_ratio)

        positions = positions.at[slot].set(jnp.where(accept, x_new, x_old))
        occupied = occupied.at[slot].set(jnp.where(accept, present_new, present_old))
        kind = jnp.stack([is_disp, is_ins, is_del])
        return GCMCState(positions, occupied), kind, kind & accept, is_ins & full

    def _sweep(self, beta_external, beta_mu, state, key):
        uniforms = jax.random.uniform(key, (self.moves_per_sweep, 4), dtype=state.positions.dtype)

        def step(carry, u):
            state, counts = carry
            state, attempted, accepted, refused = self._move(beta_external, beta_mu, state, u)
            counts = counts + jnp.concatenate([attempted, accepted, refused[None]]).astype(counts.dtype)
            return (state, counts), None

        counts = jnp.zeros(7, state.positions.dtype)
        (state, counts), _ = jax.lax.scan(step, (state, counts), uniforms)
        return state, counts

    def _observe(self, state: GCMCState):
        """Cell counts, N, one-hot N and the ordered-pair distance histogram of one configuration."""
        dtype = state.positions.dtype
        weight = state.occupied.astype(dtype)
        cells = jnp.clip(jnp.floor(state.positions / self.grid.dx).astype(jnp.int32), 0, self.grid.n - 1)
        counts = jnp.zeros(self.grid.n, dtype).at[cells].add(weight)
        n = jnp.sum(state.occupied)
        one_hot = jnp.zeros(self.capacity + 1, dtype).at[n].set(1.0)
        if self.pair_range is None:
            return counts, n.astype(dtype), one_hot, None
        r = self._separation(state.positions[:, None] - state.positions[None, :])
        bins = jnp.floor(r / self.grid.dx).astype(jnp.int32)
        mask = state.occupied[:, None] & state.occupied[None, :] & ~jnp.eye(self.capacity, dtype=bool)
        mask = mask & (bins < self.pair_bins)
        pairs = jnp.zeros(self.pair_bins, dtype).at[jnp.where(mask, bins, 0)].add(mask.astype(dtype))
        return counts, n.astype(dtype), one_hot, pairs

    def _run_one(self, beta_external, beta_mu, key, state, blocks: int, sweeps_per_block, equilibration):
        """``equilibration`` sweeps, then ``blocks`` x ``sweeps_per_block`` measured sweeps, in one loop.

        Sweep t uses the key ``fold_in(key, t)``; the two sweep counts are traced (no
        recompilation when they change), the number of blocks sets the output shape.
        """
        dtype = state.positions.dtype

        def body(t, carry):
            state, totals, moves = carry
            state, counts = self._sweep(beta_external, beta_mu, state, jax.random.fold_in(key, t))
            measured = t >= equilibration
            block = jnp.maximum(t - equilibration, 0) // sweeps_per_block
            weight = measured.astype(dtype)
            totals = jax.tree.map(lambda a, o: a.at[block].add(weight * o), totals, self._observe(state))
            return state, totals, moves + weight * counts

        shapes = jax.eval_shape(self._observe, state)
        totals = jax.tree.map(lambda o: jnp.zeros((blocks, *o.shape), o.dtype), shapes)
        carry = (state, totals, jnp.zeros(7, dtype))
        state, totals, moves = jax.lax.fori_loop(0, equilibration + blocks * sweeps_per_block, body, carry)
        counts, number, one_hot, pairs = jax.tree.map(lambda a: a / sweeps_per_block, totals)
        acceptance = moves[3:6] / jnp.maximum(moves[:3], 1.0)
        return counts / self.grid.dx, number, one_hot, pairs, acceptance, moves[6], state

    @eqx.filter_jit
    def _run_batch(self, beta_external, beta_mu, keys, state, blocks, sweeps_per_block, equilibration):
        def run(v, m, k, s):
            return self._run_one(v, m, k, s, blocks, sweeps_per_block, equilibration)

        return jax.vmap(run)(beta_external, beta_mu, keys, state)

    # ---- public -------------------------------------------------------------------------

    def run(
        self,
        beta_external: Float[Array, "*batch n"],
        beta_mu: Float[Array, "*batch"],
        key: PRNGKeyArray,
        *,
        blocks: int = 32,
        sweeps_per_block: int = 100,
        equilibration: int = 200,
        state: GCMCState | None = None,
    ) -> GCMCResult:
        r"""Simulate a batch of independent systems and return their block means.

        Args:
            beta_external: :math:`\beta V_{ext}` on the grid cells (kT; ``+inf`` = wall),
                shape ``(*batch, n)`` or ``(n,)``.
            beta_mu: βμ (kT; Λ = σ), shape ``(*batch,)`` or scalar; broadcast with the above.
            key: a `jax.random.key`, split into one key per system, or keys of the
                batch shape (then system i uses ``key[i]`` alone: results do not depend on
                which other systems share the call).
            blocks: number of production blocks (≥ 2; the error estimate).
            sweeps_per_block: sweeps per block, each followed by a measurement.
            equilibration: sweeps discarded before the blocks.
            state: valid configurations (no overlaps, no centre behind a wall) to start
                from, e.g. a previous ``result.state`` (default: empty systems).

        Systems run in lockstep under `jax.vmap` in one jitted call (the batch axis is the
        parallel axis on a GPU). Costs :math:`O(\text{capacity})` per move and system.
        """
        blocks = _check_int("blocks", blocks, 2)
        sweeps_per_block = _check_int("sweeps_per_block", sweeps_per_block, 1)
        equilibration = _check_int("equilibration", equilibration, 0)
        dtype = jnp.result_type(float)
        beta_external = jnp.asarray(beta_external, dtype)
        beta_mu = jnp.asarray(beta_mu, dtype)
        if beta_external.ndim < 1 or beta_external.shape[-1] != self.grid.n:
            raise ValueError(f"beta_external must have shape (*batch, {self.grid.n}), got {beta_external.shape}")
        values = concrete(beta_external)
        if values is not None and (np.any(np.isnan(values)) or np.any(values == -np.inf)):
            raise ValueError("beta_external must not hold NaN or -inf (use +inf for walls)")
        values = concrete(beta_mu)
        if values is not None and not np.all(np.isfinite(values)):
            raise ValueError("beta_mu must be finite")
        batch_shape = jnp.broadcast_shapes(beta_external.shape[:-1], beta_mu.shape)
        beta_external = jnp.broadcast_to(beta_external, (*batch_shape, self.grid.n))
        beta_mu = jnp.broadcast_to(beta_mu, batch_shape)
        if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            raise ValueError("key must be a typed key from jax.random.key (not a raw uint32 PRNGKey)")
        if key.shape == ():
            keys = jax.random.split(key, math.prod(batch_shape)).reshape(batch_shape)
        elif key.shape == batch_shape:
            keys = key
        else:
            raise ValueError(f"key must be a single key or have the batch shape {batch_shape}, got {key.shape}")
        if state is None:
            state = self.init(batch_shape)
        elif state.positions.shape != (*batch_shape, self.capacity):
            raise ValueError(f"state must have shape {(*batch_shape, self.capacity)}, got {state.positions.shape}")

        size = math.prod(batch_shape)
        flat = lambda a: a.reshape(size, *a.shape[len(batch_shape):])  # noqa: E731
        counts, number, one_hot, pairs, acceptance, refused, final = self._run_batch(
            flat(beta_external), flat(beta_mu), flat(keys), jax.tree.map(flat, state),
            blocks, jnp.asarray(sweeps_per_block, jnp.int32), jnp.asarray(equilibration, jnp.int32),
        )
        unflat = lambda a: None if a is None else a.reshape(*batch_shape, *a.shape[1:])  # noqa: E731
        return GCMCResult(
            grid=self.grid,
            density_blocks=unflat(counts),
            number_blocks=unflat(number),
            number_histogram_blocks=unflat(one_hot),
            pair_blocks=unflat(pairs),
            pair_bin_width=self.grid.dx,
            acceptance=unflat(acceptance),
            capacity_rejections=unflat(refused),
            state=jax.tree.map(unflat, final),
        )
