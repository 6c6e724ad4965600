r"""Training and validation data for (neural) density functionals from 1-D GCMC.

Units: kT, lengths in σ, densities per σ (see `fepy.apps.dft.gcmc`).

- :class:`RandomExternalPotentials` draws random external potentials and chemical potentials
  (sums of sinusoids and Gaussian wells/barriers, optionally hard walls), in the spirit of
  the random inhomogeneous environments of Sammüller, Hermann, de las Heras & Schmidt
  (PNAS 2023) and Dijkman et al. (PRL 2025).
- :func:`generate_profiles` runs GCMC for each (βV_ext, βμ) and returns ρ(x) with its
  standard error; :func:`generate_bulk` gives bulk densities and pair correlations g(x).
- :func:`save` writes an ``.npz``; ``python -m fepy.apps.dft.gcmc_dataset --help`` is the
  command line.

Every draw is reproducible from a seed: system i uses the keys ``fold_in(key, i)``, so a
dataset does not depend on the batch size it was computed with, and the first m systems of
a larger dataset are those of a dataset of m systems (equal up to the round-off of
vectorised arithmetic, about 1e-16 relative, in the potentials).
"""

import argparse
import json
import math
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ...families.grid import Grid
from .gcmc import GrandCanonicalMC, HardRodPair, LennardJonesPair


def _check_range(name: str, value, positive: bool = False) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi and (lo > 0 or not positive)):
        raise ValueError(f"{name} must be a finite range (lo, hi) with lo <= hi{' and lo > 0' if positive else ''}, "
                         f"got {value!r}")
    return lo, hi


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


class RandomExternalPotentials(eqx.Module):
    r"""Random external potentials on a grid and random chemical potentials (kT, σ).

    .. math::

        \beta V_{ext}(x) = \sum_{m=1}^{M} A_m \sin\!\Big(\frac{2\pi k_m x}{L} + \phi_m\Big)
          + \sum_{g=1}^{G} \varepsilon_g\, e^{-d(x, c_g)^2 / 2 w_g^2}
          + \begin{cases} +\infty & x < w_l \text{ or } x \ge L - w_r \text{ (walls)} \\ 0 \end{cases}

    with :math:`A_m \sim U(-A, A)`, integer :math:`k_m \sim U\{1..k_{max}\}` (every term
    is periodic on the box), :math:`\phi_m \sim U(0, 2\pi)`, :math:`\varepsilon_g \sim U(-a, a)`
    (wells and barriers), centres :math:`c_g \sim U(0, L)`, widths :math:`w_g \sim U(w_{min}, w_{max})`,
    d the (periodic, if the grid is) distance, and with probability ``wall_probability``
    hard walls of widths :math:`w_l, w_r \sim U(\text{wall\_width})`. The potential is
    evaluated at the cell centres; βμ ~ U(``beta_mu``).
    """

    grid: Grid
    beta_mu: tuple[float, float] = eqx.field(static=True, default=(-1.0, 2.0))
    fourier_modes: int = eqx.field(static=True, default=4)
    fourier_amplitude: float = eqx.field(static=True, default=1.0)
    max_wavenumber: int = eqx.field(static=True, default=6)
    gaussians: int = eqx.field(static=True, default=3)
    gaussian_amplitude: float = eqx.field(static=True, default=3.0)
    gaussian_width: tuple[float, float] = eqx.field(static=True, default=(0.1, 1.0))
    wall_probability: float = eqx.field(static=True, default=0.5)
    wall_width: tuple[float, float] = eqx.field(static=True, default=(0.0, 2.0))

    def __check_init__(self):
        if not isinstance(self.grid, Grid):
            raise ValueError(f"RandomExternalPotentials grid must be a fepy.Grid, got {type(self.grid).__name__}")
        _check_range("beta_mu", self.beta_mu)
        _check_count("fourier_modes", self.fourier_modes)
        _check_count("gaussians", self.gaussians)
        if _check_count("max_wavenumber", self.max_wavenumber) < 1:
            raise ValueError("max_wavenumber must be >= 1")
        for name in ("fourier_amplitude", "gaussian_amplitude"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} (kT) must be finite and >= 0, got {value!r}")
        _check_range("gaussian_width", self.gaussian_width, positive=True)
        lo, hi = _check_range("wall_width", self.wall_width)
        if lo < 0 or 2 * hi >= self.grid.length:
            raise ValueError(f"wall_width must lie in [0, L/2) = [0, {self.grid.length / 2}), got {self.wall_width}")
        if not 0.0 <= float(self.wall_probability) <= 1.0:
            raise ValueError(f"wall_probability must be in [0, 1], got {self.wall_probability!r}")

    def _one(self, key: PRNGKeyArray) -> tuple[Float[Array, " n"], Float[Array, ""]]:
        x = self.grid.points
        length = self.grid.length
        m, g = self.fourier_modes, self.gaussians
        u = iter(jnp.split(jax.random.uniform(key, (3 * m + 3 * g + 4,)), np.cumsum([m, m, m, g, g, g, 1, 2])))

        def between(lo, hi):
            return lo + (hi - lo) * next(u)

        amplitude = between(-self.fourier_amplitude, self.fourier_amplitude)
        wavenumber = 1 + jnp.floor(next(u) * self.max_wavenumber)
        phase = between(0.0, 2 * jnp.pi)
        fourier = amplitude[:, None] * jnp.sin(2 * jnp.pi * wavenumber[:, None] * x / length + phase[:, None])
        depth = between(-self.gaussian_amplitude, self.gaussian_amplitude)
        centre = between(0.0, length)
        width = between(*self.gaussian_width)
        d = x - centre[:, None]
        if self.grid.periodic:
            d = d - length * jnp.round(d / length)
        gauss = depth[:, None] * jnp.exp(-(d**2) / (2 * width[:, None] ** 2))
        beta_v = jnp.sum(fourier, axis=0) + jnp.sum(gauss, axis=0)
        walls = next(u)[0] < self.wall_probability
        left, right = between(*self.wall_width)
        beta_v = jnp.where(walls & ((x < left) | (x >= length - right)), jnp.inf, beta_v)
        beta_mu = between(*self.beta_mu)[0]
        return beta_v, beta_mu

    def sample(self, key: PRNGKeyArray, count: int) -> tuple[Float[Array, "count n"], Float[Array, " count"]]:
        """``count`` pairs (βV_ext on the grid cells, βμ); pair i is drawn from ``fold_in(key, i)``."""
        return self._sample(key, _check_count("count", count))

    @eqx.filter_jit
    def _sample(self, key, count):
        return jax.vmap(self._one)(_system_keys(key, 0, count))


def _system_keys(key: PRNGKeyArray, start: int, stop: int) -> PRNGKeyArray:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, stop))


def _chunks(count: int, batch_size: int):
    for start in range(0, count, batch_size):
        yield start, min(start + batch_size, count)


def _pad(a: Array, size: int) -> Array:
    """``a`` with its leading axis padded to ``size`` by repeating the last entry (fixed shapes: one compilation)."""
    missing = size - a.shape[0]
    return a if missing == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], missing, axis=0)])


def _check_run(result, what: str) -> None:
    refused = int(np.max(np.asarray(result.capacity_rejections)))
    if refused:
        raise RuntimeError(
            f"{what}: {refused} insertions were refused because all slots were full, which biases the "
            "ensemble; use a larger capacity"
        )


def generate_profiles(
    simulator: GrandCanonicalMC,
    potentials: RandomExternalPotentials,
    count: int,
    seed: int,
    *,
    blocks: int = 32,
    sweeps_per_block: int = 100,
    equilibration: int = 500,
    batch_size: int = 256,
    log=None,
) -> dict[str, np.ndarray]:
    r"""Draw ``count`` environments and simulate each: the density-profile dataset.

    Returns NumPy arrays: ``x`` (cell centres, σ), ``beta_external`` (count, n; ``inf`` at
    walls), ``beta_mu`` (count,), ``density`` and ``density_stderr`` (count, n; σ⁻¹, cell
    averages, batch-means errors), ``number`` and ``number_stderr`` (⟨N⟩), ``acceptance``
    (count, 3: displacement, insertion, deletion). Systems run ``batch_size`` at a time
    (one compilation; the batch is the parallel axis on a GPU). ``log`` (e.g. ``print``)
    receives one line per batch. Raises RuntimeError if any insertion met a full array.
    """
    count = _check_count("count", count)
    if potentials.grid != simulator.grid:
        raise ValueError("the potentials and the simulator must use the same Grid")
    batch_size = max(1, min(_check_count("batch_size", batch_size), count))
    key_potential, key_run = jax.random.split(jax.random.key(seed))
    beta_external, beta_mu = potentials.sample(key_potential, count)
    outputs = {name: [] for name in ("density", "density_stderr", "number", "number_stderr", "acceptance")}
    for start, stop in _chunks(count, batch_size):
        begin = time.perf_counter()
        result = simulator.run(
            _pad(beta_external[start:stop], batch_size), _pad(beta_mu[start:stop], batch_size),
            _pad(_system_keys(key_run, start, stop), batch_size),
            blocks=blocks, sweeps_per_block=sweeps_per_block, equilibration=equilibration,
        )
        result = jax.tree.map(lambda a: a[: stop - start] if eqx.is_array(a) else a, result)
        _check_run(result, f"systems {start}..{stop - 1}")
        for name in outputs:
            outputs[name].append(np.asarray(getattr(result, name)))
        if log is not None:
            seconds = time.perf_counter() - begin
            moves = batch_size * simulator.moves_per_sweep * (equilibration + blocks * sweeps_per_block)
            log(f"systems {start}..{stop - 1} of {count}: {seconds:.1f} s, {moves / seconds:.3g} moves/s")
    return {
        "x": np.asarray(simulator.grid.points),
        "beta_external": np.asarray(beta_external),
        "beta_mu": np.asarray(beta_mu),
        **{name: np.concatenate(parts) for name, parts in outputs.items()},
    }


def generate_bulk(
    simulator: GrandCanonicalMC,
    beta_mu: Float[Array, " count"],
    seed: int,
    *,
    blocks: int = 32,
    sweeps_per_block: int = 200,
    equilibration: int = 500,
) -> dict[str, np.ndarray]:
    r"""Bulk (V_ext = 0, periodic) simulations at each βμ: density and pair correlation.

    Returns ``beta_mu``, ``density`` and ``density_stderr`` (⟨N⟩/L, σ⁻¹), ``r`` (bin
    centres, σ), ``g`` and ``g_stderr`` (count, bins; jackknife) and ``acceptance``. The
    simulator needs a periodic grid and a ``pair_range``.
    """
    if simulator.pair_range is None:
        raise ValueError("generate_bulk needs a simulator with a pair_range (and a periodic grid)")
    beta_mu = np.atleast_1d(np.asarray(beta_mu, np.float64))
    if beta_mu.ndim != 1:
        raise ValueError(f"beta_mu must be a 1-D array, got shape {beta_mu.shape}")
    key = jax.random.key(seed)
    result = simulator.run(
        jnp.zeros(simulator.grid.n), jnp.asarray(beta_mu), _system_keys(key, 0, beta_mu.size),
        blocks=blocks, sweeps_per_block=sweeps_per_block, equilibration=equilibration,
    )
    _check_run(result, "bulk")
    r, g, g_err = result.pair_correlation()
    length = simulator.grid.length
    return {
        "beta_mu": beta_mu,
        "density": np.asarray(result.number) / length,
        "density_stderr": np.asarray(result.number_stderr) / length,
        "r": np.asarray(r),
        "g": np.asarray(g),
        "g_stderr": np.asarray(g_err),
        "acceptance": np.asarray(result.acceptance),
    }


def save(path, data: dict[str, np.ndarray], config: dict) -> None:
    """Write ``data`` and ``config`` (as the JSON string ``config``) to a compressed ``.npz``."""
    np.savez_compressed(path, config=np.asarray(json.dumps(config, sort_keys=True)), **data)


def _pair_potential(args) -> HardRodPair | LennardJonesPair | None:
    if args.pair == "hard-rods":
        return HardRodPair()
    if args.pair == "lj":
        return LennardJonesPair(epsilon=args.epsilon, cutoff=args.cutoff)
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line: write a profile or bulk dataset (``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m fepy.apps.dft.gcmc_dataset",
        description="1-D GCMC data for density functionals (kT, sigma units; thermal wavelength = sigma).",
    )
    parser.add_argument("kind", choices=("profiles", "bulk"))
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pair", choices=("hard-rods", "lj", "ideal"), default="hard-rods")
    parser.add_argument("--epsilon", type=float, default=1.0, help="LJ well depth (kT)")
    parser.add_argument("--cutoff", type=float, default=2.5, help="LJ cutoff (sigma), truncated and shifted")
    parser.add_argument("--length", type=float, default=20.0, help="box length L (sigma)")
    parser.add_argument("--dx", type=float, default=0.05, help="grid spacing (sigma)")
    parser.add_argument("--edges", choices=("periodic", "empty"), default="periodic")
    parser.add_argument("--capacity", type=int, help="slots per system (default for hard rods: floor(L) + 2)")
    parser.add_argument("--max-displacement", type=float, default=0.5)
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--sweeps-per-block", type=int, default=100)
    parser.add_argument("--equilibration", type=int, default=500)
    parser.add_argument("--count", type=int, default=256, help="profiles: number of random environments")
    parser.add_argument("--batch-size", type=int, default=256, help="profiles: systems per vmapped call")
    parser.add_argument("--beta-mu", type=float, nargs="+", default=[-1.0, 2.0],
                        help="profiles: range lo hi of the random beta mu; bulk: the list of beta mu")
    parser.add_argument("--pair-range", type=float, default=5.0, help="bulk: range of g(x) (sigma)")
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    try:
        n = round(args.length / args.dx)
        if not math.isclose(n * args.dx, args.length, rel_tol=1e-9):
            raise ValueError(f"--length {args.length} is not a multiple of --dx {args.dx}")
        grid = Grid(n, args.dx, args.edges, args.edges)
        pair = _pair_potential(args)
        capacity = args.capacity
        if capacity is None:
            if args.pair != "hard-rods":
                raise ValueError(f"--capacity is required for --pair {args.pair}")
            capacity = math.floor(args.length) + 2
        simulator = GrandCanonicalMC(
            grid, pair, capacity, max_displacement=args.max_displacement,
            pair_range=args.pair_range if args.kind == "bulk" else None,
        )
        runs = dict(blocks=args.blocks, sweeps_per_block=args.sweeps_per_block, equilibration=args.equilibration)
        config = {**vars(args), "capacity": capacity, "moves_per_sweep": simulator.moves_per_sweep,
                  "pair_potential": repr(pair), "jax": jax.__version__, "device": str(jax.devices()[0])}
        begin = time.perf_counter()
        if args.kind == "profiles":
            if len(args.beta_mu) != 2:
                raise ValueError("profiles: --beta-mu takes the range lo hi")
            potentials = RandomExternalPotentials(grid, beta_mu=tuple(args.beta_mu))
            config["potentials"] = repr(potentials)
            log = lambda line: print(line, file=sys.stderr)  # noqa: E731
            data = generate_profiles(simulator, potentials, args.count, args.seed,
                                     batch_size=args.batch_size, log=log, **runs)
        else:
            data = generate_bulk(simulator, np.asarray(args.beta_mu), args.seed, **runs)
    except (ValueError, RuntimeError) as error:
        print(f"gcmc_dataset: error: {error}", file=sys.stderr)
        return 2
    config["wall_time_s"] = time.perf_counter() - begin
    save(args.out, data, config)
    print(f"wrote {args.out} ({config['wall_time_s']:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
