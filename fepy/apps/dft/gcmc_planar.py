r"""Grand-canonical Monte Carlo of a 3-D fluid in planar geometry: validation profiles ρ(z) for planar DFT.

Units: energies in kT (every potential here is :math:`\beta u`), lengths in σ, densities
per σ³. The thermal wavelength is Λ = σ, the convention of the DFT ideal term
:math:`\int\rho(\ln\rho - 1)\,dz` of `fepy.GrandPotential` (per unit area), so an ideal gas
has :math:`\beta\mu = \ln\rho` and in an external potential :math:`\rho(z) = e^{\beta\mu - \beta V(z)}`.

**The system.** Particles at :math:`\mathbf r_i = (x_i, y_i, z_i)` in the box
:math:`[0, L_\parallel)^2 \times [0, L_z)`, periodic in all three directions (minimum
image, jax-md's ``space.periodic`` with sides :math:`(L_\parallel, L_\parallel, L_z)`), with

.. math:: \beta U = \sum_i \beta V_{ext}(z_i) + \sum_{i<j} \beta u(|\mathbf r_i - \mathbf r_j|),

:math:`\beta V_{ext}` piecewise constant along z: ``beta_external[k]`` on the cell
:math:`[k\,dz, (k+1)\,dz)` of a periodic `fepy.Grid` (:math:`L_z` = ``grid.length``), the
grid of the planar DFT solved in the same potential. ``+inf`` cells are hard walls (no
centre enters them), so slits and single walls are walls inside the periodic box, the
same geometry as a periodic DFT grid with those cells blocked. The minimum image needs
:math:`L_\parallel, L_z \ge 2r_c`. The pair potential is any
`fepy.apps.dft.gcmc.AbstractPairPotential` (a function of the distance only, so the 1-D
classes serve in 3-D): ``LennardJonesPair(epsilon=1/T*, cutoff=2.5)`` is the cut-and-shifted
Lennard-Jones fluid of `fepy.apps.dft.bulk_lj` (βu = u/T*).

**The Markov chain** samples :math:`P(N, \mathbf r^N) \propto \frac{z^N}{N!}e^{-\beta U}`,
:math:`z = e^{\beta\mu}/\Lambda^3`, with the moves of `fepy.apps.dft.gcmc` in three
dimensions: with probability ``displacement_fraction`` a displacement of a uniformly
chosen particle by :math:`\boldsymbol\delta \sim U(-\Delta, \Delta)^3`, accepted with
:math:`\min(1, e^{-\Delta\beta U})`; otherwise, equally often, an insertion at a uniform point,
:math:`\min\big(1, \frac{V}{N+1}e^{\beta\mu - \Delta\beta U}\big)`, or a deletion,
:math:`\min\big(1, \frac{N}{V}e^{-\beta\mu - \Delta\beta U}\big)`, :math:`V = L_\parallel^2 L_z`
(D. Frenkel & B. Smit, *Understanding Molecular Simulation*, 2nd ed., §5.6). A sweep is
``moves_per_sweep`` moves, followed by one measurement.

**Fixed capacity** (as in `fepy.apps.dft.gcmc`): ``capacity`` position slots and an
occupancy mask give static shapes, so `jax.jit`, `jax.vmap` over systems and replicas and
`jax.lax.fori_loop` over sweeps apply; insertions into a full array are refused and
counted (`PlanarGCMCResult.capacity_rejections`, must be 0).

**Output.** ρ(z) histogrammed in bins of ``bin_cells`` grid cells,
:math:`\rho_b = \langle\text{centres in bin } b\rangle / (L_\parallel^2\,\Delta z_b)`, and N,
as block means: ``blocks`` blocks of ``sweeps_per_block`` sweeps after ``equilibration``
sweeps, for each of ``replicas`` independent chains per system (pooled: their blocks are
independent). The standard error of a mean is :math:`\mathrm{sd}(\text{block means})/\sqrt{B}`
over the B pooled blocks (batch means; valid when a block is much longer than the
autocorrelation time).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray
from jax_md import space

from ..._validate import concrete
from ...families.grid import Grid
from .gcmc import AbstractPairPotential, _check_int, _check_positive


class PlanarGCMCState(eqx.Module):
    """Configurations: ``capacity`` slots of 3-D positions per chain (σ), ``occupied`` marks the particles."""

    positions: Float[Array, "*batch capacity 3"]
    occupied: Bool[Array, "*batch capacity"]

    @property
    def number(self) -> Array:
        """Particle number N of each chain."""
        return jnp.sum(self.occupied, axis=-1)


def _mean_and_stderr(blocks: Array, axis: int) -> tuple[Array, Array]:
    """Mean over ``axis`` and its batch-means standard error sd/√B."""
    count = blocks.shape[axis]
    return jnp.mean(blocks, axis=axis), jnp.std(blocks, axis=axis, ddof=1) / math.sqrt(count)


class PlanarGCMCResult(eqx.Module):
    r"""Block means of a planar GCMC run (leading axes: the batch of systems).

    Attributes:
        bins: the histogram grid along z (``grid.n // bin_cells`` bins of ``bin_cells`` cells).
        area: :math:`L_\parallel^2` (σ²).
        density_blocks: block means of :math:`\rho(z_b)` (σ⁻³), ``(*batch, blocks, bins)``,
            the blocks of all replicas of a system pooled.
        number_blocks: block means of N, ``(*batch, blocks)``.
        acceptance: accepted / attempted displacements, insertions, deletions, ``(*batch, 3)``
            (production sweeps, all replicas).
        capacity_rejections: insertions refused because all slots were full (must be 0).
        state: the final configurations, ``(*batch, replicas, capacity, 3)`` (continue a run
            with ``run(..., state=result.state)``).
    """

    bins: Grid
    area: float = eqx.field(static=True)
    density_blocks: Float[Array, "*batch blocks nbins"]
    number_blocks: Float[Array, "*batch blocks"]
    acceptance: Float[Array, "*batch 3"]
    capacity_rejections: Float[Array, "*batch"]
    state: PlanarGCMCState

    @property
    def blocks(self) -> int:
        return self.number_blocks.shape[-1]

    @property
    def density(self) -> Float[Array, "*batch nbins"]:
        r""":math:`\langle\rho(z_b)\rangle`, the bin-averaged density (σ⁻³)."""
        return _mean_and_stderr(self.density_blocks, -2)[0]

    @property
    def density_stderr(self) -> Float[Array, "*batch nbins"]:
        """Standard error of :attr:`density` (batch means)."""
        return _mean_and_stderr(self.density_blocks, -2)[1]

    @property
    def number(self) -> Float[Array, "*batch"]:
        r""":math:`\langle N\rangle`."""
        return _mean_and_stderr(self.number_blocks, -1)[0]

    @property
    def number_stderr(self) -> Float[Array, "*batch"]:
        return _mean_and_stderr(self.number_blocks, -1)[1]

    @property
    def mean_density(self) -> Float[Array, "*batch"]:
        r""":math:`\langle N\rangle / V` (σ⁻³): the bulk density when the potential vanishes."""
        return self.number / (self.area * self.bins.length)

    @property
    def mean_density_stderr(self) -> Float[Array, "*batch"]:
        return self.number_stderr / (self.area * self.bins.length)


def bin_average(values: Float[Array, "*batch n"], bin_cells: int) -> Float[Array, "*batch nbins"]:
    """Averages of consecutive groups of ``bin_cells`` grid values: a DFT profile on the GCMC histogram bins."""
    bin_cells = _check_int("bin_cells", bin_cells, 1)
    values = jnp.asarray(values)
    if values.shape[-1] % bin_cells:
        raise ValueError(f"bin_cells = {bin_cells} must divide the {values.shape[-1]} grid cells")
    return jnp.mean(values.reshape(*values.shape[:-1], -1, bin_cells), axis=-1)


class PlanarGrandCanonicalMC(eqx.Module):
    r"""GCMC of a 3-D fluid with an external potential βV(z) on the cells of a periodic `fepy.Grid` (module docstring).

    Attributes:
        grid: the periodic grid along z: :math:`L_z` and the cells of :math:`\beta V_{ext}`.
        side: :math:`L_\parallel = L_x = L_y` (σ).
        pair: the pair potential βu(r) (e.g. `LennardJonesPair`), or None for an ideal gas.
        capacity: slots per chain (the largest N).
        bin_cells: grid cells per density-histogram bin (divides ``grid.n``).
        max_displacement: Δ (σ), displacements uniform in :math:`(-\Delta, \Delta)^3`.
        displacement_fraction: probability of a displacement move; insertions and
            deletions share the rest equally.
        moves_per_sweep: moves per sweep (one measurement per sweep).
    """

    grid: Grid
    side: float = eqx.field(static=True)
    pair: AbstractPairPotential | None
    capacity: int = eqx.field(static=True)
    bin_cells: int = eqx.field(static=True)
    max_displacement: float = eqx.field(static=True)
    displacement_fraction: float = eqx.field(static=True)
    moves_per_sweep: int = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid,
        side: float,
        pair: AbstractPairPotential | None,
        capacity: int,
        *,
        bin_cells: int = 1,
        max_displacement: float = 0.3,
        displacement_fraction: float = 0.5,
        moves_per_sweep: int | None = None,
    ):
        if not isinstance(grid, Grid):
            raise ValueError(f"PlanarGrandCanonicalMC grid must be a fepy.Grid, got {type(grid).__name__}")
        if not grid.periodic:
            raise ValueError(
                "PlanarGrandCanonicalMC simulates a periodic box: give a periodic grid and put walls inside "
                "it as +inf cells of beta_external"
            )
        side = _check_positive("PlanarGrandCanonicalMC side", side)
        if pair is not None and not isinstance(pair, AbstractPairPotential):
            raise ValueError(f"PlanarGrandCanonicalMC pair must be an AbstractPairPotential or None, got {pair!r}")
        if pair is not None and min(side, grid.length) < 2 * pair.cutoff:
            raise ValueError(
                f"the box ({side} x {side} x {grid.length}) is shorter than twice the pair cutoff {pair.cutoff} "
                "in some direction (the minimum-image convention would miss interactions)"
            )
        bin_cells = _check_int("PlanarGrandCanonicalMC bin_cells", bin_cells, 1)
        if grid.n % bin_cells:
            raise ValueError(f"bin_cells = {bin_cells} must divide the grid's {grid.n} cells")
        if not 0.0 <= float(displacement_fraction) < 1.0:
            raise ValueError(f"displacement_fraction must be in [0, 1), got {displacement_fraction!r}")
        self.grid, self.side, self.pair = grid, side, pair
        self.capacity = _check_int("PlanarGrandCanonicalMC capacity", capacity, 1)
        self.bin_cells = bin_cells
        self.max_displacement = _check_positive("PlanarGrandCanonicalMC max_displacement", max_displacement)
        self.displacement_fraction = float(displacement_fraction)
        self.moves_per_sweep = _check_int(
            "PlanarGrandCanonicalMC moves_per_sweep", self.capacity if moves_per_sweep is None else moves_per_sweep, 1
        )

    @property
    def bins(self) -> Grid:
        """The histogram grid: ``grid.n // bin_cells`` periodic bins of width ``bin_cells * grid.dx``."""
        return Grid(self.grid.n // self.bin_cells, self.grid.dx * self.bin_cells)

    @property
    def volume(self) -> float:
        r""":math:`V = L_\parallel^2 L_z` (σ³)."""
        return self.side**2 * self.grid.length

    def _box(self, dtype) -> Array:
        return jnp.asarray([self.side, self.side, self.grid.length], dtype)

    def init(self, batch_shape: tuple[int, ...] = ()) -> PlanarGCMCState:
        """Empty chains (N = 0), a valid start for any external potential."""
        dtype = jnp.result_type(float)
        return PlanarGCMCState(
            jnp.zeros((*batch_shape, self.capacity, 3), dtype), jnp.zeros((*batch_shape, self.capacity), bool)
        )

    # ---- one chain ------------------------------------------------------------------------

    def _external(self, beta_external, r):
        """:math:`\\beta V_{ext}(z)` of the cell holding the (wrapped) point r."""
        index = jnp.clip(jnp.floor(r[2] / self.grid.dx).astype(jnp.int32), 0, self.grid.n - 1)
        return beta_external[index]

    def _slot_energy(self, beta_external, positions, occupied, slot, r, present):
        r""":math:`\beta V(z) + \sum_{j \ne slot}\beta u(|\mathbf r - \mathbf r_j|)` of a particle at r in ``slot``
        (0 if absent)."""
        energy = self._external(beta_external, r)
        if self.pair is not None:
            displacement, _ = space.periodic(self._box(positions.dtype))
            distance = space.distance(jax.vmap(displacement, (None, 0))(r, positions))
            others = occupied & (jnp.arange(self.capacity) != slot)
            energy = energy + jnp.sum(jnp.where(others, self.pair(distance), 0.0))
        return jnp.where(present, energy, 0.0)

    def _move(self, beta_external, beta_mu, state: PlanarGCMCState, u: Float[Array, " 6"]):
        """One Metropolis move from six uniforms: the new state, the move kind, acceptance and refusal."""
        positions, occupied = state.positions, state.occupied
        box = self._box(positions.dtype)
        _, shift = space.periodic(box)
        n = jnp.sum(occupied)
        p_d = self.displacement_fraction
        is_disp = u[0] < p_d
        is_ins = ~is_disp & (u[0] < p_d + 0.5 * (1.0 - p_d))
        is_del = ~is_disp & ~is_ins

        # a uniformly chosen particle (the k-th occupied slot) or, to insert, the first free slot
        k = jnp.minimum(jnp.floor(u[1] * n), jnp.maximum(n - 1, 0)).astype(jnp.int32)
        chosen = jnp.argmax(occupied & (jnp.cumsum(occupied) - 1 == k))
        slot = jnp.where(is_ins, jnp.argmin(occupied), chosen)

        r_old, present_old = positions[slot], occupied[slot]
        r_disp = shift(r_old, self.max_displacement * (2.0 * u[2:5] - 1.0))
        r_new = jnp.where(is_ins, u[2:5] * box, jnp.where(is_disp, r_disp, r_old))
        present_new = ~is_del

        full = n >= self.capacity
        possible = jnp.where(is_ins, ~full, n > 0)
        energies = jax.vmap(
            lambda r, present: self._slot_energy(beta_external, positions, occupied, slot, r, present)
        )(jnp.stack([r_old, r_new]), jnp.stack([present_old & ~is_ins, present_new]))
        n_f = n.astype(positions.dtype)
        volume = self.volume
        log_prefactor = jnp.where(
            is_ins,
            jnp.log(volume / (n_f + 1.0)) + beta_mu,
            jnp.where(is_del, jnp.log(n_f / volume) - beta_mu, 0.0),
        )
        accept = possible & (jnp.log(u[5]) < log_prefactor - (energies[1] - energies[0]))

        positions = positions.at[slot].set(jnp.where(accept, r_new, r_old))
        occupied = occupied.at[slot].set(jnp.where(accept, present_new, present_old))
        kind = jnp.stack([is_disp, is_ins, is_del])
        return PlanarGCMCState(positions, occupied), kind, kind & accept, is_ins & full

    def _sweep(self, beta_external, beta_mu, state, key):
        uniforms = jax.random.uniform(key, (self.moves_per_sweep, 6), dtype=state.positions.dtype)

        def step(carry, u):
            state, counts = carry
            state, attempted, accepted, refused = self._move(beta_external, beta_mu, state, u)
            counts = counts + jnp.concatenate([attempted, accepted, refused[None]]).astype(counts.dtype)
            return (state, counts), None

        (state, counts), _ = jax.lax.scan(step, (state, jnp.zeros(7, state.positions.dtype)), uniforms)
        return state, counts

    def _observe(self, state: PlanarGCMCState):
        """Centres per histogram bin and N of one configuration."""
        dtype = state.positions.dtype
        bins = self.bins
        index = jnp.clip(jnp.floor(state.positions[:, 2] / bins.dx).astype(jnp.int32), 0, bins.n - 1)
        counts = jnp.zeros(bins.n, dtype).at[index].add(state.occupied.astype(dtype))
        return counts, jnp.sum(state.occupied).astype(dtype)

    def _run_one(self, beta_external, beta_mu, key, state, blocks: int, sweeps_per_block, equilibration):
        """``equilibration`` sweeps, then ``blocks`` x ``sweeps_per_block`` measured (sweep t: ``fold_in(key, t)``)."""
        dtype = state.positions.dtype

        def body(t, carry):
            state, totals, moves = carry
            state, counts = self._sweep(beta_external, beta_mu, state, jax.random.fold_in(key, t))
            weight = (t >= equilibration).astype(dtype)
            block = jnp.maximum(t - equilibration, 0) // sweeps_per_block
            totals = jax.tree.map(lambda a, o: a.at[block].add(weight * o), totals, self._observe(state))
            return state, totals, moves + weight * counts

        totals = (jnp.zeros((blocks, self.bins.n), dtype), jnp.zeros(blocks, dtype))
        carry = (state, totals, jnp.zeros(7, dtype))
        state, (counts, number), moves = jax.lax.fori_loop(0, equilibration + blocks * sweeps_per_block, body, carry)
        density = counts / (sweeps_per_block * self.side**2 * self.bins.dx)
        return density, number / sweeps_per_block, moves, state

    @eqx.filter_jit
    def _run_batch(self, beta_external, beta_mu, keys, state, blocks, sweeps_per_block, equilibration):
        def run(v, m, k, s):
            return self._run_one(v, m, k, s, blocks, sweeps_per_block, equilibration)

        chains = jax.vmap(run, (None, None, 0, 0))  # the replicas of one system
        return jax.vmap(chains)(beta_external, beta_mu, keys, state)

    # ---- public ---------------------------------------------------------------------------

    def run(
        self,
        beta_external: Float[Array, "*batch n"],
        beta_mu: Float[Array, "*batch"],
        key: PRNGKeyArray,
        *,
        replicas: int = 1,
        blocks: int = 16,
        sweeps_per_block: int = 100,
        equilibration: int = 200,
        state: PlanarGCMCState | None = None,
    ) -> PlanarGCMCResult:
        r"""Simulate a batch of independent systems, ``replicas`` chains each, and return their pooled block means.

        Args:
            beta_external: :math:`\beta V_{ext}` on the grid cells along z (kT; ``+inf`` = wall),
                shape ``(*batch, n)`` or ``(n,)``.
            beta_mu: βμ (kT; Λ = σ), shape ``(*batch,)`` or scalar; broadcast with the above.
            key: keys of the batch shape (system i uses ``key[i]`` alone, whatever else
                shares the call; a single system uses ``key``), or one key split into a key
                per system; each system's key is split into its replicas' keys.
            replicas: independent chains per system (vmapped; their blocks are pooled, so a
                system has ``replicas * blocks`` blocks).
            blocks: production blocks per chain (``replicas * blocks`` ≥ 2: the error estimate).
            sweeps_per_block: sweeps per block, each followed by a measurement.
            equilibration: sweeps discarded before the blocks.
            state: valid configurations to start from, shape ``(*batch, replicas, capacity, 3)``,
                e.g. a previous ``result.state`` (default: empty boxes).

        Costs :math:`O(\text{capacity})` per move and chain; all chains run in lockstep in one
        jitted call (the parallel axis on a GPU).
        """
        replicas = _check_int("replicas", replicas, 1)
        blocks = _check_int("blocks", blocks, 1)
        if replicas * blocks < 2:
            raise ValueError(f"replicas * blocks must be >= 2 for an error estimate, got {replicas} * {blocks}")
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
        size = math.prod(batch_shape)
        if key.shape == batch_shape:  # one key per system (a single system: its key)
            keys = key.reshape(size)
        elif key.shape == ():
            keys = jax.random.split(key, size)
        else:
            raise ValueError(f"key must be a single key or have the batch shape {batch_shape}, got {key.shape}")
        keys = jax.vmap(lambda k: jax.random.split(k, replicas))(keys)
        chains = (*batch_shape, replicas)
        if state is None:
            state = self.init(chains)
        elif state.positions.shape != (*chains, self.capacity, 3):
            raise ValueError(f"state must have shape {(*chains, self.capacity, 3)}, got {state.positions.shape}")

        flat = lambda a: a.reshape(size, *a.shape[len(batch_shape):])  # noqa: E731
        density, number, moves, final = self._run_batch(
            flat(beta_external), flat(beta_mu), keys, jax.tree.map(flat, state),
            blocks, jnp.asarray(sweeps_per_block, jnp.int32), jnp.asarray(equilibration, jnp.int32),
        )
        moves = jnp.sum(moves, axis=1)  # (size, 7): over the replicas
        unflat = lambda a: a.reshape(*batch_shape, *a.shape[1:])  # noqa: E731
        return PlanarGCMCResult(
            bins=self.bins,
            area=self.side**2,
            density_blocks=unflat(density.reshape(size, replicas * blocks, -1)),
            number_blocks=unflat(number.reshape(size, replicas * blocks)),
            acceptance=unflat(moves[:, 3:6] / jnp.maximum(moves[:, :3], 1.0)),
            capacity_rejections=unflat(moves[:, 6]),
            state=jax.tree.map(unflat, final),
        )
