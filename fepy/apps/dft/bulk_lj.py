r"""Bulk 3-D Lennard-Jones fluid: molecular dynamics with jax-md, g(r), pressure, energy, Widom μ, OZ → planar c2.

Units: lengths in σ, energies in ε, temperature :math:`T^* = kT/\varepsilon`, densities in σ⁻³,
pressures in ε σ⁻³, time in :math:`\tau = \sigma\sqrt{m/\varepsilon}` (mass m = 1).

**The simulated fluid** is the Lennard-Jones potential cut and shifted at :math:`r_c`,

.. math:: u(r) = \begin{cases} u_{LJ}(r) - u_{LJ}(r_c) & r < r_c \\ 0 & r \ge r_c \end{cases},
          \qquad u_{LJ}(r) = 4\varepsilon\left[(\sigma/r)^{12} - (\sigma/r)^6\right],

continuous, so molecular dynamics samples exactly its Boltzmann distribution (a truncated,
unshifted potential would need impulsive forces at r_c). Everything computed from the
simulation (g, c, c2, βμ_exc, p) belongs to this fluid. Comparisons with the full
(untruncated) Lennard-Jones fluid add the standard corrections (M. P. Allen & D. J.
Tildesley, *Computer Simulation of Liquids*, 2nd ed., §2.8): the shift, undone to first
order in :math:`u_{LJ}(r_c)` with the simulated g(r) (energy and μ; the virial has the
same forces), and the tails beyond r_c with g = 1,

.. math:: \frac{U_{tail}}{N} = \frac{8\pi\rho}{3}\left[\frac{1}{3r_c^9} - \frac{1}{r_c^3}\right],\quad
          p_{tail} = \frac{16\pi\rho^2}{3}\left[\frac{2}{3r_c^9} - \frac{1}{r_c^3}\right],\quad
          \mu_{tail} = \frac{16\pi\rho}{3}\left[\frac{1}{3r_c^9} - \frac{1}{r_c^3}\right]

(ε, σ = 1), and are compared with the equation of state of J. K. Johnson, J. A. Zollweg
and K. E. Gubbins, Mol. Phys. 78, 591 (1993) (`JohnsonZollwegGubbins`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jax_md import energy, simulate, smap, space

from ..._validate import concrete
from ...families.grid import Grid
from .ornstein_zernike import RadialGrid, direct_correlation_continued, planar_direct_correlation

# Table 10 of Johnson, Zollweg & Gubbins (1993): x_1 .. x_32 of the modified Benedict-Webb-Rubin fit.
_JZG_X = (
    0.8623085097507421, 2.976218765822098, -8.402230115796038, 0.1054136629203555,
    -0.8564583828174598, 1.582759470107601, 0.7639421948305453, 1.753173414312048,
    2.798291772190376e3, -4.8394220260857657e-2, 0.9963265197721935, -3.698000291272493e1,
    2.084012299434647e1, 8.305402124717285e1, -9.574799715203068e2, -1.477746229234994e2,
    6.398607852471505e1, 1.603993673294834e1, 6.805916615864377e1, -2.791293578795945e3,
    -6.245128304568454, -8.116836104958410e3, 1.488735559561229e1, -1.059346754655084e4,
    -1.131607632802822e2, -8.867771540418822e3, -3.986982844450543e1, -4.689270299917261e3,
    2.593535277438717e2, -2.694523589434903e3, -7.218487631550215e2, 1.721802063863269e2,
)  # fmt: skip


def _positive(value, name):
    value = jnp.asarray(value, float)
    v = concrete(value)
    if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return value


class JohnsonZollwegGubbins(eqx.Module):
    r"""The modified Benedict-Webb-Rubin equation of state of the full Lennard-Jones fluid (JZG 1993).

    The excess Helmholtz energy per particle (ε) is

    .. math:: \frac{A_{exc}}{N} = \sum_{i=1}^{8} \frac{a_i(T)\,\rho^i}{i} + \sum_{i=1}^{6} b_i(T)\,G_i(\rho),
              \qquad G_1 = \frac{1 - F}{2\gamma},\quad
              G_i = -\frac{F\rho^{2(i-1)} - 2(i-1)\,G_{i-1}}{2\gamma},\quad F = e^{-\gamma\rho^2},

    γ = 3, with :math:`a_i, b_i` the polynomials in T and :math:`\sqrt T` of their Table 5 and
    the 32 coefficients of their Table 10. Pressure, energy and chemical potential follow by
    automatic differentiation: :math:`p = \rho k T + \rho^2\,\partial(A_{exc}/N)/\partial\rho`,
    :math:`U_{exc}/N = \partial(\beta A_{exc}/N)/\partial\beta`,
    :math:`\mu_{exc} = A_{exc}/N + (p - \rho kT)/\rho`. Fitted to simulations for
    0.7 ≤ T* ≤ 6 and ρ ≤ 1.2 (their stated accuracy: pressures to about 1-2 %, less near
    the critical point, T_c* ≈ 1.31, ρ_c ≈ 0.31).
    """

    def excess_free_energy(self, density: ArrayLike, temperature: ArrayLike) -> Array:
        """:math:`A_{exc}/N` (ε) at density ρ (σ⁻³) and temperature T* (broadcasting)."""
        rho = jnp.asarray(density, float)
        t = _positive(temperature, "temperature")
        x = (None, *_JZG_X)
        a = (
            x[1] * t + x[2] * jnp.sqrt(t) + x[3] + x[4] / t + x[5] / t**2,
            x[6] * t + x[7] + x[8] / t + x[9] / t**2,
            x[10] * t + x[11] + x[12] / t,
            x[13] + 0 * t,
            x[14] / t + x[15] / t**2,
            x[16] / t,
            x[17] / t + x[18] / t**2,
            x[19] / t**2,
        )
        b = (
            x[20] / t**2 + x[21] / t**3,
            x[22] / t**2 + x[23] / t**4,
            x[24] / t**2 + x[25] / t**3,
            x[26] / t**2 + x[27] / t**4,
            x[28] / t**2 + x[29] / t**3,
            x[30] / t**2 + x[31] / t**3 + x[32] / t**4,
        )
        gamma = 3.0
        f = jnp.exp(-gamma * rho**2)
        total = sum(a[i - 1] * rho**i / i for i in range(1, 9))
        g = (1 - f) / (2 * gamma)
        total = total + b[0] * g
        for i in range(2, 7):
            g = -(f * rho ** (2 * (i - 1)) - 2 * (i - 1) * g) / (2 * gamma)
            total = total + b[i - 1] * g
        return total

    def _grad(self, argnum, density, temperature):
        fn = jnp.vectorize(jax.grad(self.excess_free_energy, argnum))
        rho, t = jnp.broadcast_arrays(jnp.asarray(density, float), jnp.asarray(temperature, float))
        return fn(rho, t)

    def pressure(self, density: ArrayLike, temperature: ArrayLike) -> Array:
        r""":math:`p = \rho T + \rho^2\,\partial(A_{exc}/N)/\partial\rho` (ε σ⁻³)."""
        rho = jnp.asarray(density, float)
        return rho * temperature + rho**2 * self._grad(0, density, temperature)

    def excess_energy(self, density: ArrayLike, temperature: ArrayLike) -> Array:
        r""":math:`U_{exc}/N = A_{exc}/N - T\,\partial(A_{exc}/N)/\partial T` (ε per particle)."""
        t = jnp.asarray(temperature, float)
        return self.excess_free_energy(density, t) - t * self._grad(1, density, t)

    def excess_chemical_potential(self, density: ArrayLike, temperature: ArrayLike) -> Array:
        r""":math:`\mu_{exc} = A_{exc}/N + \rho\,\partial(A_{exc}/N)/\partial\rho` (ε)."""
        rho = jnp.asarray(density, float)
        return self.excess_free_energy(rho, temperature) + rho * self._grad(0, rho, temperature)

    def inverse_compressibility(self, density: ArrayLike, temperature: ArrayLike) -> Array:
        r""":math:`\beta\,\partial p/\partial\rho` (dimensionless), the right side of the compressibility sum rule."""
        t = jnp.asarray(temperature, float)
        fn = jnp.vectorize(jax.grad(self.pressure, 0))
        rho, t = jnp.broadcast_arrays(jnp.asarray(density, float), t)
        return fn(rho, t) / t


class CutShiftedLennardJones(eqx.Module):
    r"""The Lennard-Jones pair potential cut and shifted at ``r_cut`` (σ), in ε (σ = ε = 1); see the module docstring.

    Calling it on distances gives u(r); it is 0 at r = 0 (the diagonal of a distance
    matrix) and beyond the cut, with NaN-free derivatives everywhere.
    """

    r_cut: float = eqx.field(static=True, default=2.5)

    def __check_init__(self):
        if not (np.isfinite(self.r_cut) and self.r_cut > 2 ** (1 / 6)):
            raise ValueError(f"r_cut must be finite and beyond the minimum 2^(1/6) sigma, got {self.r_cut!r}")

    @property
    def shift(self) -> float:
        r""":math:`u_{LJ}(r_c)` (ε), subtracted inside the cut."""
        return 4.0 * (self.r_cut**-12 - self.r_cut**-6)

    def __call__(self, r: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        r = jnp.asarray(r, float)
        inside = (r > 0) & (r < self.r_cut)
        s = jnp.where(inside, r, self.r_cut)
        return jnp.where(inside, energy.lennard_jones(s) - self.shift, 0.0)

    def tail_energy(self, density: ArrayLike) -> Array:
        r""":math:`U_{tail}/N = \frac{8\pi\rho}{3}[\frac{1}{3r_c^9} - \frac{1}{r_c^3}]` (ε): the full LJ beyond r_c, g = 1."""
        rc = self.r_cut
        return 8 * np.pi / 3 * jnp.asarray(density, float) * (rc**-9 / 3 - rc**-3)

    def tail_pressure(self, density: ArrayLike) -> Array:
        r""":math:`p_{tail} = \frac{16\pi\rho^2}{3}[\frac{2}{3r_c^9} - \frac{1}{r_c^3}]` (ε σ⁻³)."""
        rc = self.r_cut
        return 16 * np.pi / 3 * jnp.asarray(density, float) ** 2 * (2 * rc**-9 / 3 - rc**-3)

    def tail_chemical_potential(self, density: ArrayLike) -> Array:
        r""":math:`\mu_{tail} = 2\,U_{tail}/N` (ε)."""
        return 2 * self.tail_energy(density)


def ganguly_van_der_vegt(
    g: Float[ArrayLike, "*batch bins"], r: Float[ArrayLike, " bins"], density: ArrayLike, n_particles: int
) -> Float[Array, "*batch bins"]:
    r"""Finite-size correction of a canonical g(r) (S. Ganguly & N. F. A. van der Vegt, J. Chem. Theory Comput. 9, 1347 (2013)).

    In a closed box of N particles the particles outside a sphere of radius r around one
    number :math:`N - 1 - n(r)`, not :math:`\rho(V - V_r)`, so g tends to 1 − S(0)/N instead of
    1, an error that the volume integral in :math:`\hat h(0)` multiplies by ~N. The
    correction rescales by the density outside the sphere:

    .. math:: g_{GV}(r) = g(r)\,\frac{N(1 - V_r/V)}{N(1 - V_r/V) - \Delta N(r) - 1},
              \qquad \Delta N(r) = \rho\int_0^r 4\pi r'^2\,[g(r') - 1]\,dr'.

    ``g`` is normalised with ρ = N/V on histogram bins centred at ``r`` = i Δr (as in
    `BulkSample`); :math:`V_r` and ΔN are accumulated over the bins (half of the current one),
    so an ideal gas, g = (N − 1)/N, comes out exactly 1.
    """
    g = jnp.asarray(g, float)
    r = jnp.asarray(r, float)
    dr = r[1] - r[0]
    lo = jnp.clip(r - dr / 2, 0.0)
    shells = 4 * np.pi / 3 * ((r + dr / 2) ** 3 - lo**3)
    volume_r = jnp.cumsum(shells) - shells / 2
    rho = jnp.asarray(density, float)[..., None]
    excess = rho * (jnp.cumsum(shells * (g - 1), axis=-1) - shells * (g - 1) / 2)
    outside = n_particles - rho * volume_r  # N (1 - V_r / V)
    return g * outside / (outside - excess - 1)


class BulkSample(eqx.Module):
    r"""Block averages of one bulk simulation (or a batch of them: leading axes of the arrays).

    ``g_blocks`` is the pair distribution at the radii ``r`` = i Δr (histogram bins
    [(i − ½)Δr, (i + ½)Δr), normalised with ρ = N/V, no finite-size correction: see
    `ganguly_van_der_vegt`); ``pressure_blocks`` the virial pressure
    :math:`p = \rho T + \langle\sum_{i<j} r_{ij}\,u'(r_{ij})\rangle(-1/3V)` (ε σ⁻³, ideal part
    with the thermostat's T); ``energy_blocks`` the potential energy per particle (ε);
    ``temperature_blocks`` the kinetic temperature :math:`2K/3N`; ``widom_blocks`` the Widom
    insertion average :math:`\langle e^{-\beta\Delta U}\rangle` (B. Widom, J. Chem. Phys. 39,
    2808 (1963)). All with the cut-and-shifted ``potential``. Errors are standard errors of
    the block means (blocks assumed independent).
    """

    density: Float[Array, "*batch"]
    temperature: Float[Array, "*batch"]
    r: Float[Array, " bins"]
    g_blocks: Float[Array, "*batch blocks bins"]
    pressure_blocks: Float[Array, "*batch blocks"]
    energy_blocks: Float[Array, "*batch blocks"]
    temperature_blocks: Float[Array, "*batch blocks"]
    widom_blocks: Float[Array, "*batch blocks"]
    n_particles: int = eqx.field(static=True)
    potential: CutShiftedLennardJones

    @staticmethod
    def _stderr(x, axis):
        return jnp.std(x, axis=axis, ddof=1) / np.sqrt(x.shape[axis])

    @property
    def g(self) -> Float[Array, "*batch bins"]:
        return jnp.mean(self.g_blocks, axis=-2)

    @property
    def g_stderr(self) -> Float[Array, "*batch bins"]:
        return self._stderr(self.g_blocks, -2)

    @property
    def pressure(self) -> Float[Array, "*batch"]:
        return jnp.mean(self.pressure_blocks, axis=-1)

    @property
    def pressure_stderr(self) -> Float[Array, "*batch"]:
        return self._stderr(self.pressure_blocks, -1)

    @property
    def energy(self) -> Float[Array, "*batch"]:
        """Potential energy per particle (ε) of the cut-and-shifted fluid."""
        return jnp.mean(self.energy_blocks, axis=-1)

    @property
    def energy_stderr(self) -> Float[Array, "*batch"]:
        return self._stderr(self.energy_blocks, -1)

    @property
    def kinetic_temperature(self) -> Float[Array, "*batch"]:
        return jnp.mean(self.temperature_blocks, axis=-1)

    @property
    def kinetic_temperature_stderr(self) -> Float[Array, "*batch"]:
        return self._stderr(self.temperature_blocks, -1)

    @property
    def beta_mu_exc(self) -> Float[Array, "*batch"]:
        r""":math:`\beta\mu_{exc} = -\ln\langle e^{-\beta\Delta U}\rangle` (Widom) of the cut-and-shifted fluid."""
        return -jnp.log(jnp.mean(self.widom_blocks, axis=-1))

    @property
    def beta_mu_exc_stderr(self) -> Float[Array, "*batch"]:
        """Delta-method error: stderr of the insertion average over its mean."""
        return self._stderr(self.widom_blocks, -1) / jnp.mean(self.widom_blocks, axis=-1)

    @property
    def g_corrected(self) -> Float[Array, "*batch bins"]:
        """g(r) with the finite-size correction of `ganguly_van_der_vegt`."""
        return ganguly_van_der_vegt(self.g, self.r, self.density, self.n_particles)

    def _neighbours_inside_cut(self) -> Float[Array, "*batch"]:
        r""":math:`\rho\int_0^{r_c} 4\pi r^2 g(r)\,dr`, the mean number of neighbours inside the cut (from the histogram)."""
        r = self.r
        dr = r[1] - r[0]
        lo, hi = jnp.clip(r - dr / 2, 0, self.potential.r_cut), jnp.clip(r + dr / 2, 0, self.potential.r_cut)
        shells = 4 * np.pi / 3 * (hi**3 - lo**3)
        return self.density * jnp.sum(self.g * shells, axis=-1)

    def full_lj_energy(self) -> Float[Array, "*batch"]:
        r"""Energy per particle of the full LJ fluid: :math:`U/N + \tfrac12 u_{LJ}(r_c)\,n_c + U_{tail}/N` (ε).

        :math:`n_c = \rho\int_0^{r_c}4\pi r^2 g\,dr` from the simulated g; first order in the shift.
        """
        p = self.potential
        return self.energy + 0.5 * p.shift * self._neighbours_inside_cut() + p.tail_energy(self.density)

    def full_lj_pressure(self) -> Float[Array, "*batch"]:
        r"""Pressure of the full LJ fluid: :math:`p + p_{tail}` (ε σ⁻³).

        The virial inside r_c is the same for the cut-and-shifted and the full potential
        (same forces), and :math:`p_{tail} = -\tfrac{2\pi}{3}\rho^2\int_{r_c}^\infty r^3 u_{LJ}'\,dr`
        (g = 1) adds the rest. (Thermodynamically: the shift's first-order free energy gives
        the impulsive :math:`\tfrac{2\pi}{3}\rho^2 r_c^3 u_{LJ}(r_c)`, which with the tail energy's
        :math:`2\pi\rho^2\int_{r_c}^\infty r^2 u_{LJ}\,dr` sums to the same :math:`p_{tail}` by parts.)
        """
        return self.pressure + self.potential.tail_pressure(self.density)

    def full_lj_beta_mu_exc(self) -> Float[Array, "*batch"]:
        r"""Excess chemical potential of the full LJ fluid over kT: :math:`\beta\mu_{exc} + \beta u_{LJ}(r_c)\,n_c + \beta\mu_{tail}`."""
        p = self.potential
        extra = p.shift * self._neighbours_inside_cut() + p.tail_chemical_potential(self.density)
        return self.beta_mu_exc + extra / self.temperature


class LangevinMD(eqx.Module):
    r"""NVT molecular dynamics of the bulk cut-and-shifted LJ fluid with jax-md, and what it measures.

    N particles in a periodic cube of side :math:`L = (N/\rho)^{1/3}` (`jax_md.space.periodic`),
    all-pair energies (`jax_md.smap.pair`), the BAOAB Langevin integrator
    (`jax_md.simulate.nvt_langevin`, time step ``dt`` τ, friction ``friction`` τ⁻¹). The run
    starts from a simple-cubic lattice with Maxwell-Boltzmann momenta, equilibrates for
    ``equilibration_steps``, then records ``blocks`` blocks of ``samples_per_block``
    samples, one every ``steps_per_sample`` steps. Each sample histograms all pair distances
    up to ``r_max`` (≤ L/2, bin width ``bin_width``) and inserts ``insertions`` Widom test
    particles. Everything is one jitted program, reproducible from the key; `run_batch`
    vmaps it over state points (the GPU use: many state points at once).

    The pair sums cost O(N²) per step: fine for N ≲ 2000 (and on a GPU); larger systems
    would want jax-md's neighbour lists.
    """

    n_particles: int = eqx.field(static=True, default=500)
    potential: CutShiftedLennardJones = CutShiftedLennardJones()
    dt: float = eqx.field(static=True, default=0.005)
    friction: float = eqx.field(static=True, default=1.0)
    equilibration_steps: int = eqx.field(static=True, default=5000)
    blocks: int = eqx.field(static=True, default=10)
    samples_per_block: int = eqx.field(static=True, default=100)
    steps_per_sample: int = eqx.field(static=True, default=10)
    bin_width: float = eqx.field(static=True, default=0.01)
    insertions: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        for name in ("n_particles", "equilibration_steps", "blocks", "samples_per_block", "steps_per_sample", "insertions"):
            value = getattr(self, name)
            low = 2 if name in ("n_particles", "blocks") else (0 if name == "equilibration_steps" else 1)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"LangevinMD {name} must be an integer >= {low}, got {value!r}")
        for name in ("dt", "friction", "bin_width"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"LangevinMD {name} must be finite and > 0, got {value!r}")

    def box(self, density: ArrayLike) -> Array:
        """The side L = (N/ρ)^(1/3) of the periodic cube (σ)."""
        return (self.n_particles / jnp.asarray(density, float)) ** (1 / 3)

    def _bins(self, densities, r_max):
        half = 0.5 * float(np.min(np.asarray(self.box(densities))))
        r_max = half if r_max is None else float(r_max)
        if not 0 < r_max <= half * (1 + 1e-12):
            raise ValueError(f"r_max must lie in (0, L/2 = {half:.6g}], got {r_max!r}")
        if r_max < self.potential.r_cut:
            raise ValueError(
                f"half the box ({half:.4g} sigma) or r_max is below r_cut = {self.potential.r_cut}: "
                "use more particles or a lower density"
            )
        return int(np.floor(r_max / self.bin_width + 0.5))

    def run(self, key: Array, density: float, temperature: float, r_max: float | None = None) -> BulkSample:
        r"""Simulate one state point (ρ in σ⁻³, T* = kT/ε); g(r) up to ``r_max`` (default L/2)."""
        b = self.run_batch(key, jnp.asarray(density, float).reshape(1), jnp.reshape(temperature, 1), r_max)
        first = (b.density, b.temperature, b.g_blocks, b.pressure_blocks, b.energy_blocks, b.temperature_blocks, b.widom_blocks)
        return BulkSample(*(x[0] for x in first[:2]), b.r, *(x[0] for x in first[2:]), b.n_particles, b.potential)

    def run_batch(
        self, key: Array, densities: Float[ArrayLike, " B"], temperature, r_max: float | None = None
    ) -> BulkSample:
        r"""Simulate B state points at once (vmapped; independent keys); ``temperature`` scalar or shape (B,).

        g(r) is histogrammed up to ``r_max`` (default: half the smallest box), the same
        bins for all state points.
        """
        densities = jnp.asarray(densities, float)
        if densities.ndim != 1 or densities.shape[0] < 1:
            raise ValueError(f"densities must be a non-empty 1-D array, got shape {densities.shape}")
        densities = _positive(densities, "densities")
        temperatures = jnp.broadcast_to(_positive(temperature, "temperature"), densities.shape)
        n_bins = self._bins(densities, r_max)
        keys = jax.random.split(key, densities.shape[0])
        out = _simulate(self, keys, densities, temperatures, n_bins)
        return BulkSample(
            densities, temperatures, jnp.arange(n_bins) * self.bin_width, *out, self.n_particles, self.potential
        )


def _lattice(n: int, box: Array) -> Array:
    """The first n sites of a simple-cubic lattice filling the box (cell centres)."""
    side = int(np.ceil(n ** (1 / 3) - 1e-9))
    sites = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    return (jnp.asarray(sites, float) + 0.5) * (box / side)


@eqx.filter_jit
def _simulate(md: LangevinMD, keys, densities, temperatures, n_bins: int):
    return jax.vmap(lambda k, rho, t: _simulate_one(md, k, rho, t, n_bins))(keys, densities, temperatures)


def _simulate_one(md: LangevinMD, key, density, temperature, n_bins: int):
    n = md.n_particles
    box = md.box(density)
    volume = box**3
    displacement, shift = space.periodic(box)
    metric = space.metric(displacement)
    pair_distances = space.map_product(metric)
    potential = md.potential
    init, step = simulate.nvt_langevin(
        smap.pair(potential, metric), shift, md.dt, kT=temperature, gamma=md.friction
    )
    dr = md.bin_width
    edges_lo = jnp.clip((jnp.arange(n_bins) - 0.5) * dr, 0.0)
    shells = 4 * np.pi / 3 * ((jnp.arange(n_bins) + 0.5) ** 3 * dr**3 - edges_lo**3)
    k_init, k_run = jax.random.split(key)
    state = init(k_init, _lattice(n, box))
    state = jax.lax.fori_loop(0, md.equilibration_steps, lambda _, s: step(s), state)

    def measure(position, key):
        r = pair_distances(position, position)  # (N, N), 0 on the diagonal where u = u' = 0
        u, du = jax.jvp(potential, (r,), (jnp.ones_like(r),))
        upper = jnp.triu(jnp.ones(r.shape, bool), 1)  # each pair once
        index = jnp.where(upper, jnp.minimum(jnp.floor(r / dr + 0.5).astype(int), n_bins), n_bins)
        counts = jnp.bincount(index.ravel(), length=n_bins + 1)[:n_bins]
        g = 2 * counts / (n * (n / volume) * shells)
        pressure = density * temperature - jnp.sum(r * du) / (6 * volume)
        test = jax.random.uniform(key, (md.insertions, 3), float) * box
        insertion = jnp.sum(potential(pair_distances(position, test)), axis=-1)  # (insertions, N)
        widom = jnp.mean(jnp.exp(-insertion / temperature))
        return g, pressure, jnp.sum(u) / (2 * n), widom

    def sample(state, key):
        state = jax.lax.fori_loop(0, md.steps_per_sample, lambda _, s: step(s), state)
        g, pressure, u, widom = measure(state.position, key)
        t_kin = 2 * simulate.kinetic_energy(state) / (3 * n)
        return state, (g, pressure, u, t_kin, widom)

    def block(state, key):
        state, values = jax.lax.scan(sample, state, jax.random.split(key, md.samples_per_block))
        return state, jax.tree.map(lambda v: jnp.mean(v, axis=0), values)

    _, (g, pressure, u, t_kin, widom) = jax.lax.scan(block, state, jax.random.split(k_run, md.blocks))
    return g, pressure, u, t_kin, widom


class BulkCorrelationData(eqx.Module):
    r"""What pair-correlation matching trains on, for B bulk densities at one temperature (see `bulk_correlation_data`).

    - ``density`` ρ_b (σ⁻³), ``temperature`` T* = kT/ε, ``r_cut`` (σ) of the simulated
      cut-and-shifted LJ fluid, ``n_particles``, ``seed``;
    - ``beta_mu_exc`` (± ``beta_mu_exc_stderr``): :math:`\beta\mu_{exc}(\rho_b)` by Widom insertion
      in the same simulations (kT), the target of the first functional derivative;
    - ``beta_pressure`` (± ``beta_pressure_stderr``): the virial βp (σ⁻³);
    - ``r``, ``g``, ``g_stderr``: g(r) up to half the box, finite-size corrected;
    - ``c``: the direct correlation on the OZ grid :math:`r_i = i\,\Delta r` (Δr = the bin width);
    - ``z``, ``c2`` (± ``c2_stderr``): the planar :math:`c_2(z)` (σ²) at :math:`z_m = m\,dz`,
      m = 0..M, the kernel with :math:`\delta^2\beta F_{exc}/\delta\rho(z)\,\delta\rho(z') = -c_2(|z - z'|)`;
    - ``inverse_compressibility`` (± ``inverse_compressibility_stderr``):
      :math:`1 - \rho\hat c(0) = \beta\,\partial p/\partial\rho`.

    The errors are standard errors over the simulation blocks (jackknife for c2 and the
    compressibility).
    """

    density: Float[Array, " B"]
    temperature: Float[Array, ""]
    beta_mu_exc: Float[Array, " B"]
    beta_mu_exc_stderr: Float[Array, " B"]
    beta_pressure: Float[Array, " B"]
    beta_pressure_stderr: Float[Array, " B"]
    r: Float[Array, " bins"]
    g: Float[Array, "B bins"]
    g_stderr: Float[Array, "B bins"]
    c: Float[Array, "B n"]
    z: Float[Array, " M"]
    c2: Float[Array, "B M"]
    c2_stderr: Float[Array, "B M"]
    inverse_compressibility: Float[Array, " B"]
    inverse_compressibility_stderr: Float[Array, " B"]
    r_cut: float = eqx.field(static=True)
    n_particles: int = eqx.field(static=True)
    seed: int = eqx.field(static=True)

    def periodic_kernel(self, grid: Grid) -> Float[Array, "B n"]:
        r"""c2 laid out on the offsets :math:`x_i - x_0` of a periodic planar ``grid``, images summed (σ²).

        :math:`K_i = \sum_m c_2(|i\,dx + mL|)` over the periodic images within ``z_max``: the
        bulk Hessian column :math:`-\delta^2\beta F_{exc}/\delta\rho(x_i)\,\delta\rho(x_0)` of the
        functional on that grid (the ``direct_correlation`` target of
        `fepy.apps.dft.neural.pair_correlation_loss`). Needs ``grid.dx`` equal to the data's dz.
        """
        if not grid.periodic:
            raise ValueError("periodic_kernel needs a periodic grid")
        dz = float(self.z[1] - self.z[0])
        if not np.isclose(grid.dx, dz, rtol=1e-9):
            raise ValueError(f"grid.dx must equal the data's dz = {dz}, got {grid.dx}")
        m = self.z.shape[0] - 1
        offsets = np.arange(grid.n)
        images = range(-(m // grid.n) - 1, m // grid.n + 2)
        kernel = jnp.zeros((self.c2.shape[0], grid.n), self.c2.dtype)
        for image in images:
            j = np.abs(offsets + image * grid.n)
            inside = j <= m
            kernel = kernel.at[:, offsets[inside]].add(self.c2[:, j[inside]])
        return kernel

    def save(self, path) -> None:
        """Write every field to an ``.npz`` file (`load` reads it back)."""
        arrays = {name: np.asarray(getattr(self, name)) for name in self.__dataclass_fields__}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "BulkCorrelationData":
        with np.load(path) as data:
            missing = set(cls.__dataclass_fields__) - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks {sorted(missing)}: not written by BulkCorrelationData.save")
            static = {"r_cut": float, "n_particles": int, "seed": int}
            return cls(
                **{
                    name: static[name](data[name]) if name in static else jnp.asarray(data[name])
                    for name in cls.__dataclass_fields__
                }
            )


def bulk_correlation_data(
    densities: Float[ArrayLike, " B"],
    temperature: float,
    seed: int,
    md: LangevinMD = LangevinMD(),
    dz: float = 0.01,
    z_max: float = 5.0,
    oz_points: int = 4096,
    r_match: float | None = None,
    path=None,
) -> BulkCorrelationData:
    r"""Simulate the bulk fluid at each density and turn g(r) into βμ_exc and the planar c2(z) (σ, kT units).

    1. `LangevinMD.run_batch` at all densities (one vmapped program, key from ``seed``);
    2. g(r) up to half the smallest box, with the `ganguly_van_der_vegt` finite-size correction;
    3. OZ with h taken from the simulation up to ``r_match`` (default: the last bin, half the
       smallest box) and continued beyond by the HNC closure with the simulated potential
       (`direct_correlation_continued`), on ``oz_points`` points of spacing ``md.bin_width``
       (a smaller ``r_match`` trades statistical noise of the outer shells, which the
       volume integral in ĉ(0) weights by r², for reliance on the closure);
    4. :math:`c_2(z)` at z = 0, dz, …, z_max (the DFT grid spacing; pair-correlation matching uses
       dz = 0.01σ) by `planar_direct_correlation`;
    5. βμ_exc by Widom insertion in the same runs (of the cut-and-shifted fluid, consistent
       with c2; the full-LJ value would add `BulkSample.full_lj_beta_mu_exc`'s corrections).

    Errors of c2 and of :math:`1 - \rho\hat c(0)` are block jackknife estimates (steps 2-4 repeated
    with each block left out), so steps 2-4 cost (blocks + 1) OZ solves per density.
    Writes ``path`` (``.npz``) when given. Raises RuntimeError when an OZ continuation
    does not converge (residual above 1e-8), which signals a g(r) too noisy or a state
    too close to the critical point for the box.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not (np.isfinite(dz) and dz > 0 and np.isfinite(z_max) and z_max >= dz):
        raise ValueError(f"dz must be > 0 and z_max >= dz, got dz={dz!r}, z_max={z_max!r}")
    if np.ndim(temperature) != 0:
        raise ValueError("bulk_correlation_data takes one temperature")
    densities = _positive(densities, "densities")
    bins = md._bins(densities, None)
    if oz_points < 4 * bins:
        raise ValueError(f"oz_points must be at least 4x the {bins} histogram bins, got {oz_points}")
    r_last = (bins - 1) * md.bin_width
    r_match = r_last if r_match is None else float(r_match)
    if not md.potential.r_cut <= r_match <= r_last:
        raise ValueError(f"r_match must lie in [r_cut, {r_last:.4g}] (the histogram), got {r_match!r}")
    sample = md.run_batch(jax.random.key(seed), densities, temperature)
    grid = RadialGrid(oz_points, md.bin_width)
    blocks = sample.g_blocks.shape[-2]
    total = jnp.sum(sample.g_blocks, axis=-2, keepdims=True)
    g_sets = jnp.concatenate([total / blocks, (total - sample.g_blocks) / (blocks - 1)], axis=-2)  # (B, blocks+1, bins)
    g_sets = ganguly_van_der_vegt(g_sets, sample.r, sample.density[:, None], md.n_particles)
    h = jnp.pad(g_sets - 1, ((0, 0), (0, 0), (0, oz_points - bins)))
    beta_u = md.potential(grid.r) / temperature
    z = jnp.arange(int(round(z_max / dz)) + 1) * dz

    c, c2, inverse_compressibility, residual = _correlations(h, sample.density, beta_u, grid, r_match, z)
    if not np.all(np.asarray(residual) < 1e-8):
        raise RuntimeError(f"OZ continuation did not converge (residuals {np.asarray(residual)})")

    def jackknife(x):  # x: (B, blocks + 1, ...), the full estimate first
        loo = x[:, 1:]
        return jnp.sqrt((blocks - 1) / blocks * jnp.sum((loo - jnp.mean(loo, axis=1, keepdims=True)) ** 2, axis=1))

    data = BulkCorrelationData(
        density=sample.density,
        temperature=sample.temperature[0],
        beta_mu_exc=sample.beta_mu_exc,
        beta_mu_exc_stderr=sample.beta_mu_exc_stderr,
        beta_pressure=sample.pressure / sample.temperature,
        beta_pressure_stderr=sample.pressure_stderr / sample.temperature,
        r=sample.r,
        g=g_sets[:, 0],
        g_stderr=sample.g_stderr,
        c=c[:, 0],
        z=z,
        c2=c2[:, 0],
        c2_stderr=jackknife(c2),
        inverse_compressibility=inverse_compressibility[:, 0],
        inverse_compressibility_stderr=jackknife(inverse_compressibility),
        r_cut=md.potential.r_cut,
        n_particles=md.n_particles,
        seed=int(seed),
    )
    if path is not None:
        data.save(path)
    return data


@eqx.filter_jit
def _correlations(h, densities, beta_u, grid: RadialGrid, r_match: float, z):
    """OZ continuation and planar kernel for h of shape (B, sets, n), vmapped over both axes."""

    def solve(h, rho):
        oz = direct_correlation_continued(h, grid, rho, r_match, beta_u)
        return oz.c, planar_direct_correlation(oz.c, grid, z), oz.inverse_compressibility(), oz.residual

    return jax.vmap(jax.vmap(solve, (0, None)), (0, 0))(h, densities)
