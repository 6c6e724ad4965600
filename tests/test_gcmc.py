"""GCMC of 1-D fluids against exact statistical mechanics (float64 via conftest).

Every comparison is a z-score: (simulation - exact) / standard error, with the batch-means
(or jackknife) error of the run over B blocks. For a correct sampler each z follows a
Student t with B - 1 degrees of freedom. The tests require every |z| below
max(5, the t quantile that one of the compared values exceeds with probability 1e-4), and a
mean z^2 within 5 standard deviations (sqrt(2 / count)) plus 0.1 of 1 (chi^2 / count: a bias
spread over many bins, or a wrong error bar, fails it); a correct sampler fails with a
probability of order 1e-4 per check, and the runs are seeded.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from fepy import Grid
from fepy.apps.dft import gcmc_dataset
from fepy.apps.dft.gcmc import GCMCState, GrandCanonicalMC, HardRodPair, LennardJonesPair
from fepy.apps.dft.gcmc_dataset import RandomExternalPotentials, generate_profiles


def assert_z_scores(simulated, exact, stderr, what: str, blocks: int = 32):
    simulated, exact, stderr = (np.ravel(np.asarray(a, np.float64)) for a in (simulated, exact, stderr))
    assert np.all(stderr > 0), f"{what}: zero standard error where a fluctuation is expected"
    z = (simulated - exact) / stderr
    limit = max(5.0, stats.t.ppf(1 - 1e-4 / z.size, blocks - 1))
    chi2 = np.mean(z**2)
    assert np.max(np.abs(z)) < limit, f"{what}: max |z| = {np.max(np.abs(z)):.2f} > {limit:.2f} (z = {np.round(z, 2)})"
    assert abs(chi2 - 1) < 5 * math.sqrt(2 / z.size) + 0.1, f"{what}: chi2/dof = {chi2:.3f} over {z.size} values"
    return z


# ---- exact results -------------------------------------------------------------------------


def tonks_density(beta_mu: float, sigma: float = 1.0) -> float:
    """Bulk hard-rod density at βμ (Λ = σ): βμ = ln ρ - ln(1 - η) + η / (1 - η), η = ρσ."""

    def f(eta):
        return np.log(eta / sigma) - np.log1p(-eta) + eta / (1 - eta) - beta_mu

    return optimize.brentq(f, 1e-14, 1 - 1e-14, xtol=1e-15) / sigma


def tonks_pair_correlation(edges, rho: float, sigma: float = 1.0):
    """Bin averages of the exact hard-rod g(x) (Salsburg, Zwanzig & Kirkwood 1953).

    The k-th neighbour sits at kσ plus a Gamma(k, l) distributed free length, l = 1/ρ - σ, so
    ρ g(x) = sum_k Gamma(k, l).pdf(x - kσ); the bin average uses the Gamma CDFs.
    """
    free = 1 / rho - sigma
    total = np.zeros(len(edges) - 1)
    for k in range(1, int(edges[-1] / sigma) + 1):
        cdf = stats.gamma.cdf(np.clip(edges - k * sigma, 0, None), a=k, scale=free)
        total += np.diff(cdf)
    return total / (rho * np.diff(edges))


def slit_hard_rods(z: float, a: float, x):
    """Exact density of hard rods (σ = 1) with centres in [0, a] (hard walls), activity z.

    With j rods left of a rod at x (centres in [0, x - 1], configuration integral
    (x - j)_+^j / j!) and k right of it, rho(x) = sum_jk z^(1+j+k) (x-j)_+^j/j! (a-x-k)_+^k/k! / Xi,
    Xi = sum_N z^N (a - N + 1)_+^N / N!.
    """
    m = int(a) + 2

    def volume(length, j):
        return np.where(length - j >= 0, np.maximum(length - j, 0.0) ** j, 0.0) / math.factorial(j)

    left = sum(z**j * volume(x, j) for j in range(m))
    right = sum(z**k * volume(a - x, k) for k in range(m))
    xi = 1 + sum(z**n * volume(a + 1, n) for n in range(1, m + 1))
    mean_n = sum(n * z**n * volume(a + 1, n) for n in range(1, m + 1)) / xi
    return z * left * right / xi, mean_n


def cell_average(f, edges, points: int = 12):
    """Cell averages of f by Gauss-Legendre (exact for the piecewise polynomials here)."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    lo, hi = edges[:-1, None], edges[1:, None]
    x = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    return 0.5 * np.sum(weights * f(x), axis=-1)


def takahashi(beta_u, cutoff: float, beta_mu: float, edges):
    """Exact bulk density and bin-averaged g of a 1-D fluid with nearest-neighbour interactions.

    ``beta_u(r)`` (NumPy) vanishes beyond ``cutoff`` and is huge below 0.5σ. The gap to the
    next particle has the density p1(r) = exp(βμ - βu(r) - βp r) (Λ = 1), with βp from
    z K(βp) = 1, K(s) = int exp(-βu(r) - s r) dr; ρ = 1 / <r> and ρ g = sum_k p1^{*k}
    (Takahashi 1942).
    """
    lo, rc = 0.5, cutoff

    def boltzmann(r):
        with np.errstate(over="ignore", divide="ignore"):
            return np.exp(-beta_u(r))

    def moments(s):
        k0 = integrate.quad(lambda r: boltzmann(r) * np.exp(-s * r), lo, rc, epsabs=0, epsrel=1e-13)[0]
        k1 = integrate.quad(lambda r: r * boltzmann(r) * np.exp(-s * r), lo, rc, epsabs=0, epsrel=1e-13)[0]
        tail = np.exp(-s * rc)
        return k0 + tail / s, k1 + tail * (rc / s + 1 / s**2)

    s = optimize.brentq(lambda s: -np.log(moments(s)[0]) - beta_mu, 1e-6, 100.0, xtol=1e-14)
    k0, k1 = moments(s)
    rho = k0 / k1
    h = 5e-4
    r = np.arange(int(edges[-1] / h) + 1) * h
    p1 = np.exp(beta_mu - s * r) * boltzmann(np.maximum(r, 1e-3))
    total, term = np.zeros_like(r), p1
    while term.max() > 1e-14:
        total += term
        term = np.convolve(term, p1)[: r.size] * h
    g = total / rho
    centres = 0.5 * (edges[:-1] + edges[1:])
    bins = np.minimum((r / (edges[1] - edges[0])).astype(int), len(centres) - 1)
    inner = (r > 0) & (r < edges[-1])
    averaged = np.bincount(bins[inner], weights=g[inner], minlength=len(centres))
    averaged /= np.bincount(bins[inner], minlength=len(centres))
    return rho, averaged


# ---- the oracles themselves --------------------------------------------------------------


def test_exact_references_are_consistent():
    """The slit formula integrates to <N> = z dln Xi/dz; Takahashi for hard rods is Tonks/SZK."""
    z, a = math.exp(1.5), 4.5
    rho, mean_n = slit_hard_rods(z, a, np.linspace(0, a, 4001))
    assert integrate.simpson(rho, x=np.linspace(0, a, 4001)) == pytest.approx(mean_n, rel=1e-5)
    edges = np.arange(0, 41) * 0.1
    rho_t, g_t = takahashi(lambda r: np.where(r < 1, np.inf, 0.0), 1.0, 0.5, edges)
    assert rho_t == pytest.approx(tonks_density(0.5), rel=1e-9)
    np.testing.assert_allclose(g_t, tonks_pair_correlation(edges, rho_t), atol=2e-3)


# ---- physics -------------------------------------------------------------------------------


def test_ideal_gas_in_external_potential_and_poisson_numbers():
    """No interaction: rho_k = exp(βμ - βV_k) in every cell and N ~ Poisson(e^βμ int e^-βV)."""
    grid = Grid(40, 0.25, "empty", "empty")
    x = np.asarray(grid.points)
    walls = np.where(x < 0.75, np.inf, 0.0)
    beta_v = np.stack([
        1.5 * np.sin(2 * np.pi * x / grid.length) + walls,
        np.where(x > 6.0, 1.0, -0.5),
        -2.0 * np.exp(-((x - 4.0) ** 2)) + walls[::-1],
    ])
    beta_mu = np.array([0.0, 0.0, -0.5])
    sim = GrandCanonicalMC(grid, None, 48, moves_per_sweep=24)
    result = sim.run(beta_v, beta_mu, jax.random.key(0), blocks=32, sweeps_per_block=100, equilibration=50)
    exact = np.exp(beta_mu[:, None] - beta_v)
    allowed = np.isfinite(beta_v)
    assert np.all(np.asarray(result.density)[~allowed] == 0)
    assert_z_scores(result.density[allowed], exact[allowed], result.density_stderr[allowed], "ideal rho(x)")
    assert np.all(np.asarray(result.capacity_rejections) == 0)

    mean = np.sum(exact, axis=1) * grid.dx
    assert_z_scores(result.number, mean, result.number_stderr, "ideal <N>")
    n = np.arange(sim.capacity + 1)
    poisson = stats.poisson.pmf(n[None, :], mean[:, None])
    likely = poisson > 0.01
    assert_z_scores(
        result.number_distribution[likely], poisson[likely], result.number_distribution_stderr[likely], "P(N)"
    )


def test_bulk_hard_rods_tonks_density_and_szk_pair_correlation():
    """Periodic hard rods: <N>/L = Tonks density; g(x) = Salsburg-Zwanzig-Kirkwood; var N / <N> = (1 - η)^2."""
    grid = Grid(200, 0.1)  # L = 20σ: finite-size corrections below 1e-8 (exact periodic Xi)
    sim = GrandCanonicalMC(grid, HardRodPair(), 24, pair_range=4.0)
    beta_mu = np.array([-1.0, 0.5, 1.5])
    result = sim.run(jnp.zeros(grid.n), beta_mu, jax.random.key(1), blocks=32, sweeps_per_block=150)
    rho = np.array([tonks_density(m) for m in beta_mu])
    assert_z_scores(result.number / grid.length, rho, result.number_stderr / grid.length, "Tonks density")
    assert_z_scores(result.density, np.broadcast_to(rho[:, None], (3, grid.n)), result.density_stderr, "flat rho")

    r, g, g_err = result.pair_correlation()
    inside = np.asarray(r) < 1.0
    assert np.all(np.asarray(g)[:, inside] == 0)  # no overlaps, ever
    edges = np.arange(sim.pair_bins + 1) * grid.dx
    exact = np.stack([tonks_pair_correlation(edges, p) for p in rho])
    assert_z_scores(g[:, ~inside], exact[:, ~inside], g_err[:, ~inside], "SZK g(x)")

    p = np.asarray(result.number_distribution)
    n = np.arange(sim.capacity + 1)
    fano = (p @ n**2 - (p @ n) ** 2) / (p @ n)
    np.testing.assert_allclose(fano, (1 - rho) ** 2, rtol=0.15)  # compressibility (no error bar: a sanity check)
    assert np.all(np.asarray(result.capacity_rejections) == 0)


def test_hard_rods_between_hard_walls_exact_profile():
    """Hard rods in slits ('empty' edges; +inf cells) against the exact (Percus) slit profile."""
    grid = Grid(60, 0.1, "empty", "empty")
    x = np.asarray(grid.points)
    narrow = np.where((x < 1.0) | (x > 5.5), np.inf, 0.0)  # centres in [1.0, 5.5)
    beta_v = np.stack([np.zeros(grid.n), narrow])
    beta_mu = np.array([1.0, 2.0])
    sim = GrandCanonicalMC(grid, HardRodPair(), 8, max_displacement=0.3)
    result = sim.run(beta_v, beta_mu, jax.random.key(2), blocks=32, sweeps_per_block=300)
    edges = np.arange(grid.n + 1) * grid.dx
    for i, (offset, a) in enumerate([(0.0, 6.0), (1.0, 4.5)]):
        z = math.exp(beta_mu[i])
        exact_rho = cell_average(lambda y: slit_hard_rods(z, a, y - offset)[0], edges)
        allowed = np.isfinite(beta_v[i])
        sim_rho = np.asarray(result.density[i])
        assert np.all(sim_rho[~allowed] == 0)
        assert_z_scores(sim_rho[allowed], exact_rho[allowed], result.density_stderr[i][allowed], f"slit {i} rho(x)")
        mean_n = slit_hard_rods(z, a, np.zeros(1))[1]
        assert_z_scores(result.number[i], mean_n, result.number_stderr[i], f"slit {i} <N>")


def test_bulk_lennard_jones_against_exact_nearest_neighbour_solution():
    """Truncated, shifted LJ (βε = 1, r_c = 1.5σ: nearest neighbours only) against Takahashi's exact solution."""
    pair = LennardJonesPair(epsilon=1.0, cutoff=1.5)
    grid = Grid(200, 0.1)
    sim = GrandCanonicalMC(grid, pair, 32, max_displacement=0.3, pair_range=3.0)
    beta_mu = np.array([-0.5, 1.0])
    result = sim.run(jnp.zeros(grid.n), beta_mu, jax.random.key(3), blocks=32, sweeps_per_block=150)
    assert np.all(np.asarray(result.capacity_rejections) == 0)
    edges = np.arange(sim.pair_bins + 1) * grid.dx

    def beta_u(r):  # the truncated, shifted LJ potential, written out independently of the library
        def bare(r):
            return 4 * (r**-12 - r**-6)

        return np.where(r < 1.5, bare(r) - bare(1.5), 0.0)

    exact = [takahashi(beta_u, 1.5, m, edges) for m in beta_mu]
    rho = np.array([e[0] for e in exact])
    assert_z_scores(result.number / grid.length, rho, result.number_stderr / grid.length, "LJ density")
    _, g, g_err = result.pair_correlation()
    g_exact = np.stack([e[1] for e in exact])
    core = np.all(g_exact < 0.01, axis=0)  # r < 0.9σ: rare, skewed counts
    np.testing.assert_allclose(g[:, core], g_exact[:, core], atol=5e-3)
    assert_z_scores(g[:, ~core], g_exact[:, ~core], g_err[:, ~core], "LJ g(x)")


# ---- machinery -------------------------------------------------------------------------------


def test_reproducible_and_independent_of_the_batch():
    """Same keys, same numbers; a system with its own key gives the same chain wherever it sits in the batch."""
    grid = Grid(50, 0.2)
    sim = GrandCanonicalMC(grid, HardRodPair(), 12)
    keys = jax.random.split(jax.random.key(5), 3)
    beta_v = jnp.asarray(np.sin(np.arange(3)[:, None] + np.asarray(grid.points)[None, :]))
    beta_mu = jnp.array([0.0, 0.5, 1.0])
    kw = dict(blocks=2, sweeps_per_block=5, equilibration=3)
    batch = sim.run(beta_v, beta_mu, keys, **kw)
    again = sim.run(beta_v, beta_mu, keys, **kw)
    order = np.array([2, 0, 1])
    shuffled = sim.run(beta_v[order], beta_mu[order], keys[order], **kw)
    np.testing.assert_array_equal(batch.density_blocks, again.density_blocks)
    np.testing.assert_array_equal(batch.density_blocks[order], shuffled.density_blocks)
    np.testing.assert_array_equal(batch.state.positions[order], shuffled.state.positions)

    # a continued run starts from the final configurations; rods never overlap
    more = sim.run(beta_v, beta_mu, jax.random.key(6), state=batch.state, **kw)
    for positions, occupied in zip(np.asarray(more.state.positions), np.asarray(more.state.occupied)):
        x = np.sort(positions[occupied])
        gaps = np.diff(np.concatenate([x, x[:1] + grid.length]))
        assert np.all(gaps >= 1.0)
    with pytest.raises(ValueError, match="pair_range"):
        more.pair_correlation()


def test_validation():
    periodic = Grid(50, 0.2)
    with pytest.raises(ValueError, match="bulk"):
        GrandCanonicalMC(Grid(50, 0.2, "bulk", "empty"), HardRodPair(), 10)
    with pytest.raises(ValueError, match="capacity"):
        GrandCanonicalMC(periodic, HardRodPair(), 0)
    with pytest.raises(ValueError, match="max_displacement"):
        GrandCanonicalMC(periodic, HardRodPair(), 10, max_displacement=-1.0)
    with pytest.raises(ValueError, match="displacement_fraction"):
        GrandCanonicalMC(periodic, HardRodPair(), 10, displacement_fraction=1.0)
    with pytest.raises(ValueError, match="periodic grid"):
        GrandCanonicalMC(Grid(50, 0.2, "empty", "empty"), HardRodPair(), 10, pair_range=2.0)
    with pytest.raises(ValueError, match="L/2"):
        GrandCanonicalMC(periodic, HardRodPair(), 10, pair_range=6.0)
    with pytest.raises(ValueError, match="cutoff"):
        GrandCanonicalMC(Grid(20, 0.2), LennardJonesPair(cutoff=2.5), 10)
    with pytest.raises(ValueError, match="sigma"):
        HardRodPair(sigma=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        LennardJonesPair(epsilon=float("nan"))
    sim = GrandCanonicalMC(periodic, HardRodPair(), 10)
    with pytest.raises(ValueError, match="shape"):
        sim.run(jnp.zeros(49), 0.0, jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        sim.run(jnp.full(50, jnp.nan), 0.0, jax.random.key(0))
    with pytest.raises(ValueError, match="finite"):
        sim.run(jnp.zeros(50), jnp.inf, jax.random.key(0))
    with pytest.raises(ValueError, match="typed key"):
        sim.run(jnp.zeros(50), 0.0, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="blocks"):
        sim.run(jnp.zeros(50), 0.0, jax.random.key(0), blocks=1)
    with pytest.raises(ValueError, match="state"):
        sim.run(jnp.zeros(50), 0.0, jax.random.key(0), state=GCMCState(jnp.zeros(3), jnp.zeros(3, bool)))


# ---- datasets ----------------------------------------------------------------------------------


def test_random_potentials_are_reproducible_prefixes_with_walls_at_the_ends():
    grid = Grid(100, 0.1, "empty", "empty")
    potentials = RandomExternalPotentials(grid, wall_probability=0.5, wall_width=(0.5, 1.5))
    v5, mu5 = potentials.sample(jax.random.key(3), 64)
    v3, mu3 = potentials.sample(jax.random.key(3), 3)
    np.testing.assert_allclose(v5[:3], v3, rtol=1e-12, atol=1e-12)  # vectorised sin/exp: round-off only
    np.testing.assert_array_equal(mu5[:3], mu3)
    v5, mu5 = np.asarray(v5), np.asarray(mu5)
    assert np.all((mu5 >= -1) & (mu5 <= 2))
    walled = np.isinf(v5).any(axis=1)
    assert 0.25 < walled.mean() < 0.75
    x = np.asarray(grid.points)
    for row in v5[walled]:
        blocked = np.isinf(row)
        assert blocked[0] and blocked[-1] and not blocked[x.size // 2]
        assert np.all(np.diff(blocked[: x.size // 2].astype(int)) <= 0)  # one wall on each side
    assert np.all(np.isfinite(v5[~walled]))
    with pytest.raises(ValueError, match="wall_width"):
        RandomExternalPotentials(grid, wall_width=(0.0, 6.0))
    with pytest.raises(ValueError, match="gaussian_width"):
        RandomExternalPotentials(grid, gaussian_width=(0.0, 1.0))
    with pytest.raises(ValueError, match="beta_mu"):
        RandomExternalPotentials(grid, beta_mu=(1.0, 0.0))


def test_ideal_gas_dataset_is_exact_and_independent_of_the_batch_size():
    """Profiles of random environments (ideal gas: rho = exp(βμ - βV) exactly) do not depend on batch_size."""
    grid = Grid(20, 0.25)
    potentials = RandomExternalPotentials(
        grid, beta_mu=(-2.0, 0.0), fourier_modes=2, fourier_amplitude=0.5, gaussian_amplitude=1.0,
        wall_width=(0.5, 1.0),
    )
    sim = GrandCanonicalMC(grid, None, 48, moves_per_sweep=16)
    kw = dict(blocks=16, sweeps_per_block=200, equilibration=20)
    data = generate_profiles(sim, potentials, 6, seed=7, batch_size=4, **kw)
    other = generate_profiles(sim, potentials, 6, seed=7, batch_size=6, **kw)
    for name in ("beta_external", "beta_mu", "density", "density_stderr", "number"):
        np.testing.assert_array_equal(data[name], other[name], err_msg=name)
    assert data["density"].shape == data["density_stderr"].shape == (6, grid.n)
    exact = np.exp(data["beta_mu"][:, None] - data["beta_external"])
    allowed = np.isfinite(data["beta_external"])
    assert np.all(data["density"][~allowed] == 0)
    assert_z_scores(data["density"][allowed], exact[allowed], data["density_stderr"][allowed], "dataset rho(x)", 16)


def test_command_line_writes_datasets(tmp_path):
    profiles = tmp_path / "rods.npz"
    args = ["--length", "6", "--dx", "0.1", "--blocks", "2", "--sweeps-per-block", "2", "--equilibration", "2"]
    assert gcmc_dataset.main(["profiles", "--out", str(profiles), "--count", "3", "--edges", "empty", *args]) == 0
    with np.load(profiles) as data:
        assert data["density"].shape == data["beta_external"].shape == (3, 60)
        assert np.all(data["density"][np.isinf(data["beta_external"])] == 0)
        config = json.loads(str(data["config"]))
    assert config["pair"] == "hard-rods" and config["capacity"] == 8 and config["seed"] == 0
    bulk = tmp_path / "bulk.npz"
    assert gcmc_dataset.main(["bulk", "--out", str(bulk), "--beta-mu", "0", "1", "--pair-range", "2", *args]) == 0
    with np.load(bulk) as data:
        assert data["g"].shape == (2, 20) and np.all(data["g"][:, :10] == 0)
        assert np.all(data["density"] > 0)
    assert gcmc_dataset.main(["profiles", "--out", str(profiles), "--pair", "lj", *args]) == 2
    assert gcmc_dataset.main(["bulk", "--out", str(bulk), "--length", "4.05", "--dx", "0.1"]) == 2
