"""Physics of the particle flows against closed forms.

Every tolerance is a Monte Carlo standard error (SE) computed from the sample (n, the
weights) times a stated number of SEs, plus, where the discretisation is not exact, an
explicitly stated O(h) allowance. All runs are float64 (see conftest).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.linalg
from conftest import C_0, C_PI, M_0, M_PI, gaussian_energy, gaussian_kl, mvn, weighted_moments
from scipy.integrate import quad

import fepy

Z_SE = 5.0  # number of standard errors allowed in a moment check (p ~ 6e-7 per entry)


class Snapshots(fepy.Callback):
    """Record the family and state at every multiple of ``every`` steps."""

    def __init__(self, every):
        self.every = every
        self.families, self.states = {}, {}

    def __call__(self, step, steps, family, state, key, trace):
        if step % self.every == 0:
            self.families[step] = family
            self.states[step] = state


def gaussian_sample_se(cov, n):
    """SEs of the sample mean and sample covariance of n iid draws of N(., cov)."""
    var = np.diag(cov)
    return np.sqrt(var / n), np.sqrt((np.outer(var, var) + cov**2) / n)


def assert_moments(x, mean, cov, n_se=Z_SE, extra_mean=0.0, extra_cov=0.0, what=""):
    """Unweighted sample moments of iid particles x against (mean, cov)."""
    x = np.asarray(x)
    se_m, se_c = gaussian_sample_se(cov, x.shape[0])
    dm = np.abs(x.mean(0) - mean)
    dc = np.abs(np.cov(x.T, bias=True) - cov)
    assert np.all(dm <= n_se * se_m + extra_mean), f"{what} mean off: {dm} vs SE {se_m}"
    assert np.all(dc <= n_se * se_c + extra_cov), f"{what} cov off: {dc} vs SE {se_c}"


# ---------------------------------------------------------------------------------------
# Wasserstein: the Langevin / Fokker-Planck flow on a Gaussian (an Ornstein-Uhlenbeck process)
# ---------------------------------------------------------------------------------------


def ou_exact(t):
    """Law at time t of dX = -P (X - m_pi) dt + sqrt 2 dW from N(m0, C0), P = C_pi^-1."""
    m_mat = scipy.linalg.expm(-t * np.linalg.inv(C_PI))
    mean = m_mat @ M_0 + (np.eye(2) - m_mat) @ M_PI
    cov = C_PI + m_mat @ (C_0 - C_PI) @ m_mat.T
    return mean, cov


def ula_recursion(h, steps):
    """Exact law of ULA after each step: m += h P (m_pi - m); C = A C A^T + 2h I, A = I - hP."""
    p = np.linalg.inv(C_PI)
    a = np.eye(2) - h * p
    m, c, out = M_0.copy(), C_0.copy(), {}
    for k in range(1, steps + 1):
        m = m + h * p @ (M_PI - m)
        c = a @ c @ a.T + 2 * h * np.eye(2)
        out[k] = (m.copy(), c.copy())
    return out


def test_wasserstein_ula_equals_discrete_gaussian_recursion(gauss2d, base2d):
    """ULA particles are iid N(m_k, C_k) of the exact discrete recursion: the tight oracle.

    n = 20000 and h = 0.05 resolve the O(h) gap between the discrete and continuous laws
    (asserted below), so a sampler with the wrong drift or noise scale fails here.
    """
    n, h, steps = 20000, 0.05, 30
    fam = fepy.Particles.from_base(base2d, n, key=jax.random.key(0))
    snaps = Snapshots(every=10)
    sol = fepy.minimize(
        gauss2d, fam, fepy.Wasserstein(move=fepy.ULA(h)), steps=steps, key=jax.random.key(1),
        callbacks=[snaps],
    )
    oracle = ula_recursion(h, steps)
    for k in (10, 30):
        m, c = oracle[k]
        assert_moments(snaps.families[k].positions, m, c, what=f"ULA step {k}")
    # weights stay uniform (no annealing: Constant(1) has no work), nothing dropped
    assert np.all(np.asarray(sol.family.log_weights) == 0.0)
    assert np.all(sol.trace["dropped"] == 0)
    # the oracle is sharper than the continuous solution at this h: the check has teeth
    se_m, se_c = gaussian_sample_se(oracle[10][1], n)
    mc, cc = ou_exact(10 * h)
    gap = max(np.max(np.abs(oracle[10][0] - mc) / se_m), np.max(np.abs(oracle[10][1] - cc) / se_c))
    assert gap > Z_SE


def test_wasserstein_ula_tracks_continuous_fokker_planck(gauss2d, base2d):
    """At small h the ULA law is the Fokker-Planck (OU) solution up to O(h) + MC error.

    Euler-Maruyama on a linear SDE has moment error <= C h; for this OU the stationary
    covariance bias is (1 - h lambda/2)^-1 - 1 ~ h lambda_max(P)/2 per eigen-direction, and
    the transient error of the mean is at most h ||P|| |m0 - m_pi|. We allow
    h * ||P||_2 * max(|m0 - m_pi|, ||C0 - C_pi||, ||C_pi||), checked to bound the real gap.
    """
    n, h = 10000, 0.005
    fam = fepy.Particles.from_base(base2d, n, key=jax.random.key(2))
    snaps = Snapshots(every=100)
    fepy.minimize(
        gauss2d, fam, fepy.Wasserstein(move=fepy.ULA(h)), steps=300, key=jax.random.key(3),
        callbacks=[snaps],
    )
    p_norm = np.linalg.norm(np.linalg.inv(C_PI), 2)
    scale = max(np.linalg.norm(M_0 - M_PI), np.linalg.norm(C_0 - C_PI, 2), np.linalg.norm(C_PI, 2))
    allowance = h * p_norm * scale
    oracle = ula_recursion(h, 300)
    for k in (100, 300):  # t = 0.5, 1.5
        mean, cov = ou_exact(k * h)
        # the stated O(h) allowance really bounds the discretisation error
        assert np.max(np.abs(oracle[k][0] - mean)) < allowance
        assert np.max(np.abs(oracle[k][1] - cov)) < allowance
        assert_moments(
            snaps.families[k].positions, mean, cov, extra_mean=allowance, extra_cov=allowance,
            what=f"t={k * h}",
        )
    # and the flow moved far from the start: the start law fails the same check
    mean, cov = ou_exact(1.5)
    assert np.max(np.abs(M_0 - mean)) > 10 * allowance


# ---------------------------------------------------------------------------------------
# Fisher-Rao: q_t ∝ q0^{e^-t} p^{1 - e^-t}, integrated exactly by importance weights
# ---------------------------------------------------------------------------------------


# Fisher-Rao moves no mass, so its importance weights need a start that covers the
# target: a broad q0 (the narrow C_0 far from m_pi would leave an ESS of ~30 at t = 1).
M_0F = np.array([0.0, 0.0])
C_0F = np.array([[2.0, -0.5], [-0.5, 1.5]])


def fisher_rao_exact(t, m0=M_0F, c0=C_0F):
    p_pi, p_0 = np.linalg.inv(C_PI), np.linalg.inv(c0)
    cov = np.linalg.inv(p_pi + np.exp(-t) * (p_0 - p_pi))
    mean = M_PI + np.exp(-t) * cov @ p_0 @ (m0 - M_PI)
    return mean, cov


def assert_weighted_moments(family, mean, cov, inflate=1.0, what=""):
    m, c, se_m, se_c = weighted_moments(family.positions, family.log_weights)
    assert np.all(np.abs(m - mean) <= Z_SE * inflate * se_m), f"{what} mean {m} vs {mean}, SE {se_m}"
    assert np.all(np.abs(c - cov) <= Z_SE * inflate * se_c), f"{what} cov {c} vs {cov}, SE {se_c}"


RATE = 0.05
FR_TIMES = {20: 1.0, 60: 3.0}  # step -> t = rate * step


def test_fisher_rao_exact_by_importance_weights(gauss2d):
    base2d = mvn(M_0F, C_0F)
    n = 20000
    fam = fepy.Particles.from_base(base2d, n, key=jax.random.key(4))
    snaps = Snapshots(every=20)
    solver = fepy.FisherRao(schedule=fepy.Exponential(RATE), resample_threshold=0.0)
    sol = fepy.minimize(gauss2d, fam, solver, steps=60, key=jax.random.key(5), callbacks=[snaps])
    np.testing.assert_allclose(sol.trace["lam"], -np.expm1(-RATE * np.arange(1, 61)), rtol=1e-12)
    for k, t in FR_TIMES.items():
        f = snaps.families[k]
        np.testing.assert_array_equal(f.positions, fam.positions)  # mass never moves
        mean, cov = fisher_rao_exact(t)
        assert_weighted_moments(f, mean, cov, what=f"FR t={t}")
    # the weights are exactly lambda (log p - log q0): an exact integrator of the flow
    lam = 1 - np.exp(-3.0)
    x = np.asarray(fam.positions)
    expected = lam * (np.asarray(jax.vmap(gauss2d.log_density)(x)) - np.asarray(base2d.log_prob(x)))
    np.testing.assert_allclose(sol.family.log_weights, expected, rtol=1e-10, atol=1e-10)
    # the check has power: the target's moments are many SEs away at t = 1
    mean1, _ = fisher_rao_exact(1.0)
    _, _, se_m, _ = weighted_moments(snaps.families[20].positions, snaps.families[20].log_weights)
    assert np.max(np.abs(mean1 - M_PI) / se_m) > 2 * Z_SE


def test_fisher_rao_with_resampling(gauss2d):
    """Birth-death resampling (threshold 0.5) keeps the law q_t.

    Same start positions as the unresampled run (same from_base key). The SE is that of
    plain importance sampling, sqrt(sum w^2 (f - fbar)^2), plus Var_q(f)/n for each
    resampling event (the multinomial bound; systematic resampling adds less).
    """
    base2d = mvn(M_0F, C_0F)
    n = 20000
    fam = fepy.Particles.from_base(base2d, n, key=jax.random.key(4))
    plain, snaps = Snapshots(every=20), Snapshots(every=20)
    fepy.minimize(
        gauss2d, fam, fepy.FisherRao(schedule=fepy.Exponential(RATE), resample_threshold=0.0),
        steps=60, key=jax.random.key(5), callbacks=[plain],
    )
    sol = fepy.minimize(
        gauss2d, fam, fepy.FisherRao(schedule=fepy.Exponential(RATE), resample_threshold=0.5),
        steps=60, key=jax.random.key(6), callbacks=[snaps],
    )
    events = np.cumsum(sol.trace["resampled"] > 0)
    assert events[-1] >= 1, "the test needs at least one resampling event"
    for k, t in FR_TIMES.items():
        mean, cov = fisher_rao_exact(t)
        _, _, se_m, se_c = weighted_moments(plain.families[k].positions, plain.families[k].log_weights)
        r = events[k - 1]
        se_m = np.sqrt(se_m**2 + r * np.diag(cov) / n)
        se_c = np.sqrt(se_c**2 + r * (np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        m, c, _, _ = weighted_moments(snaps.families[k].positions, snaps.families[k].log_weights)
        assert np.all(np.abs(m - mean) <= Z_SE * se_m), f"t={t}: mean {m} vs {mean}"
        assert np.all(np.abs(c - cov) <= Z_SE * se_c), f"t={t}: cov {c} vs {cov}"
        # resampled particles are copies of the start positions (mass is never moved)
        x0 = {tuple(p) for p in np.asarray(fam.positions)}
        assert all(tuple(p) in x0 for p in np.asarray(snaps.families[k].positions)[:200])
    # after every step each island's Kish ESS is >= threshold * m (else it was resampled)
    lw = np.asarray(sol.family.log_weights).reshape(16, -1)
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    ess = w.sum(axis=1) ** 2 / (w**2).sum(axis=1)
    assert np.all(ess >= 0.5 * lw.shape[1] - 1e-9)


# ---------------------------------------------------------------------------------------
# MALA invariance, and the same check failing for a biased sampler
# ---------------------------------------------------------------------------------------


def _run_at_target(move, n=10000, steps=100, seed=7):
    target = gaussian_energy(M_PI, C_PI)
    fam = fepy.Particles.from_base(mvn(M_PI, C_PI), n, key=jax.random.key(seed))
    sol = fepy.minimize(target, fam, fepy.Wasserstein(move=move, islands=16), steps=steps,
                        key=jax.random.key(seed + 1))
    return fam, sol


def _moment_zscores(x):
    """Max |z| of mean, covariance and 4th central moments of iid N(m_pi, C_pi) draws."""
    x = np.asarray(x)
    n = x.shape[0]
    se_m, se_c = gaussian_sample_se(C_PI, n)
    r = x - M_PI  # about the exact mean
    z_mean = np.abs(x.mean(0) - M_PI) / se_m
    z_cov = np.abs(r.T @ r / n - C_PI) / se_c
    var = np.diag(C_PI)
    # E r^4 = 3 s^4, Var r^4 = E r^8 - (E r^4)^2 = (105 - 9) s^8
    z_4 = np.abs((r**4).mean(0) - 3 * var**2) / np.sqrt(96 * var**4 / n)
    return max(z_mean.max(), z_cov.max(), z_4.max())


def test_mala_leaves_target_invariant():
    fam, sol = _run_at_target(fepy.MALA(0.25, adapt=False))
    assert _moment_zscores(sol.family.positions) <= Z_SE
    acc = sol.trace["acceptance"]
    assert 0.3 < acc.mean() < 1.0  # the chain really moves ...
    x0, x1 = np.asarray(fam.positions), np.asarray(sol.family.positions)
    corr = [np.corrcoef(x0[:, i], x1[:, i])[0, 1] for i in range(2)]
    assert max(corr) < 0.2, f"particles barely moved: corr {corr}"  # ... and decorrelates


def test_moment_check_rejects_biased_ula():
    """Negative control: ULA at the same h has an O(h) stationary bias (the covariance of
    the stiff direction is inflated by (1 - h lambda_max / 2)^-1 = 1.75), which the same
    moment check detects."""
    _, sol = _run_at_target(fepy.ULA(0.25))
    assert _moment_zscores(sol.family.positions) > 3 * Z_SE


# ---------------------------------------------------------------------------------------
# SVGD
# ---------------------------------------------------------------------------------------


def test_svgd_approaches_target(gauss2d, base2d):
    """SVGD with 200 particles reaches the target mean and covariance loosely.

    SVGD is deterministic and with finitely many particles its fixed point is not the
    target exactly (the RBF kernel underestimates variance, worse in high d); in 2-D with
    m = 200 we allow 0.1 on the mean (prior offset |m0 - m_pi| = 2.5) and 25% on the
    covariance entries.
    """
    fam = fepy.Particles.from_base(base2d, 200, key=jax.random.key(8))
    sol = fepy.minimize(
        gauss2d, fam, fepy.Wasserstein(move=fepy.SVGD(0.1), islands=1), steps=400,
        key=jax.random.key(9),
    )
    x = np.asarray(sol.family.positions)
    np.testing.assert_allclose(x.mean(0), M_PI, atol=0.1)
    np.testing.assert_allclose(np.cov(x.T), C_PI, atol=0.25 * np.abs(C_PI).max())
    assert np.max(np.abs(x.mean(0) - M_0)) > 1.0  # it moved from the start


# ---------------------------------------------------------------------------------------
# log Z and the free energy
# ---------------------------------------------------------------------------------------


def assert_log_z(sol, exact, max_stderr):
    """|log Zhat - log Z| <= 4 SE + SE^2/2 + 0.01.

    The island estimates average Z (unbiased), so log Zhat has a Jensen bias ~ -SE^2/2;
    0.01 covers the error of the delta-method SE itself with 16 islands.
    """
    lz, se = sol.summary["log_z"], sol.summary["log_z_stderr"]
    assert np.isfinite(lz) and 0 < se < max_stderr, (lz, se)
    assert abs(lz - exact) <= 4 * se + se**2 / 2 + 0.01, f"log Z {lz} ± {se} vs exact {exact}"


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_wfr_power_schedule_gaussian_log_z(beta):
    target = gaussian_energy(M_PI, C_PI, beta=beta)
    base = dist.Normal(jnp.zeros(2), 2.5).to_event(1)
    fam = fepy.Particles.from_base(base, 2048, key=jax.random.key(10))
    solver = fepy.WassersteinFisherRao(schedule=fepy.Power(60, 4.0), move=fepy.MALA(0.3))
    sol = fepy.minimize(target, fam, solver, steps=60, key=jax.random.key(11))
    assert_log_z(sol, target.log_z(), max_stderr=0.05)
    # F = -T log Z at lambda = 1, with its SE
    np.testing.assert_allclose(sol.summary["free_energy"], -sol.summary["log_z"] / beta, rtol=1e-12)
    # the energy is E_p[U] = d / (2 beta) for a Gaussian; 0.1 T covers SE ~ 1/sqrt(ESS)
    assert abs(sol.summary["energy"] - 1.0 / beta) < 0.1 / beta


class DoubleWell(fepy.Energy):
    """U(x) = x^4 - 3 x^2 + 0.3 x: wells near -1.26 and +1.18, barrier ~2.2 kT."""

    beta: float = 1.0
    dim: int = 1

    def energy(self, x):
        x = x[0]
        return x**4 - 3 * x**2 + 0.3 * x


def double_well_log_z(beta=1.0):
    u = lambda x: x**4 - 3 * x**2 + 0.3 * x  # noqa: E731
    val, _ = quad(lambda x: np.exp(-beta * u(x)), -np.inf, np.inf, epsabs=0, epsrel=1e-12)
    return float(np.log(val))


@pytest.mark.parametrize(
    "geometry",
    [
        ("fisher_rao", 16384, 40),
        ("wasserstein", 2048, 150),
        ("wfr", 2048, 60),
    ],
    ids=lambda g: g[0],
)
def test_double_well_log_z_each_geometry(geometry):
    name, n, steps = geometry
    target = DoubleWell()
    base = dist.Normal(jnp.zeros(1), 2.0).to_event(1)
    fam = fepy.Particles.from_base(base, n, key=jax.random.key(12))
    schedule = fepy.Power(steps, 2.0 if name == "fisher_rao" else 4.0)
    solver = {
        "fisher_rao": lambda: fepy.FisherRao(schedule=schedule),
        "wasserstein": lambda: fepy.Wasserstein(move=fepy.MALA(0.3), schedule=schedule),
        "wfr": lambda: fepy.WassersteinFisherRao(schedule=schedule, move=fepy.MALA(0.3)),
    }[name]()
    sol = fepy.minimize(target, fam, solver, steps=steps, key=jax.random.key(13))
    assert_log_z(sol, double_well_log_z(), max_stderr=0.05)
    # the weighted ensemble has the right well populations: P(x > 0) by quadrature
    u = lambda x: x**4 - 3 * x**2 + 0.3 * x  # noqa: E731
    p_right = quad(lambda x: np.exp(-u(x)), 0, np.inf)[0] / np.exp(double_well_log_z())
    w = np.asarray(sol.family.weights)
    right = np.asarray(sol.family.positions[:, 0] > 0, float)
    se = np.sqrt(np.sum(w**2 * (right - w @ right) ** 2))
    # resampling / moves correlate particles within an island: allow 2x the iid SE
    assert abs(w @ right - p_right) <= Z_SE * 2 * se + 0.01, (w @ right, p_right)


def test_free_energy_trace_is_variational_bound_and_decreases(gauss2d, base2d):
    """Fisher-Rao along a Linear schedule: the trace of F[gamma_lambda] = T KL(gamma_lambda || p)
    - T log Z decreases to -T log Z and stays above it.

    With fixed positions and exact weights the estimator itself is monotone: dF/dlambda =
    -(1 - lambda) Var_w(log p - log q0) <= 0, so the decrease is checked to round-off;
    the bound and the values are checked against the closed form within 5 SEs, the SE
    from the spread of the 16 independent islands.
    """
    steps, islands, n = 40, 16, 16384
    fam = fepy.Particles.from_base(base2d, n, key=jax.random.key(14))
    solver = fepy.FisherRao(schedule=fepy.Linear(steps), resample_threshold=0.0, islands=islands)
    sol = fepy.minimize(gauss2d, fam, solver, steps=steps, key=jax.random.key(15))
    f_trace = sol.trace["free_energy"]
    lam = sol.trace["lam"]
    minus_t_log_z = -gauss2d.log_z()
    assert np.all(np.diff(f_trace) <= 1e-12 * np.abs(f_trace[:-1]).max()), "F must decrease"

    # recompute the estimator island by island from the (fixed) positions
    x = np.asarray(fam.positions)
    g = np.asarray(jax.vmap(gauss2d.log_density)(x)) - np.asarray(base2d.log_prob(x))
    g = g.reshape(islands, -1)
    p_pi, p_0 = np.linalg.inv(C_PI), np.linalg.inv(C_0)
    for k in range(steps):
        lw = lam[k] * g
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        log_z_isl = np.log(np.mean(np.exp(lw - lw.max(axis=1, keepdims=True)), axis=1)) + lw.max(axis=1)
        f_isl = -(1 - lam[k]) * np.sum(w * g, axis=1) - log_z_isl
        se = f_isl.std(ddof=1) / np.sqrt(islands)
        # closed form: gamma_lambda = N(m_l, C_l), precision (1 - l) P0 + l P
        c_l = np.linalg.inv((1 - lam[k]) * p_0 + lam[k] * p_pi)
        m_l = c_l @ ((1 - lam[k]) * p_0 @ M_0 + lam[k] * p_pi @ M_PI)
        f_exact = gaussian_kl(m_l, c_l, M_PI, C_PI) + minus_t_log_z
        assert f_trace[k] >= minus_t_log_z - Z_SE * se, f"bound violated at step {k + 1}"
        assert abs(f_trace[k] - f_exact) <= Z_SE * se + 1e-3 * abs(f_exact - minus_t_log_z), (
            f"step {k + 1}: F {f_trace[k]} vs exact {f_exact} (SE {se})"
        )
    # it starts well above the bound (KL(q0 || p) > 0) and ends on it
    assert f_trace[0] - minus_t_log_z > 1.0
    assert abs(sol.summary["free_energy"] - minus_t_log_z) <= 4 * sol.summary["log_z_stderr"] + 0.01


def test_log_z_stderr_is_calibrated():
    """Over R = 24 seeds, sum_r ((log Zhat_r - log Z) / SE_r)^2 ~ chi^2_24 if the reported
    SE is right: it must lie in the central 99.8% interval [8.1, 51.2] (the lower end
    catches an SE that is far too large, the upper one an SE too small or a bias)."""
    from scipy.stats import chi2

    target = gaussian_energy(M_PI, C_PI)
    base = dist.Normal(jnp.zeros(2), 2.5).to_event(1)
    solver = fepy.WassersteinFisherRao(schedule=fepy.Power(30, 4.0), move=fepy.MALA(0.3))
    z = []
    for seed in range(24):
        fam = fepy.Particles.from_base(base, 512, key=jax.random.key(100 + seed))
        sol = fepy.minimize(target, fam, solver, steps=30, key=jax.random.key(200 + seed))
        z.append((sol.summary["log_z"] - target.log_z()) / sol.summary["log_z_stderr"])
    stat = float(np.sum(np.square(z)))
    print(f"sum z^2 = {stat:.2f} over 24 seeds, mean z = {np.mean(z):.2f}")
    assert chi2.ppf(0.001, 24) <= stat <= chi2.ppf(0.999, 24), (stat, z)
