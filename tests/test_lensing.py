"""fepy.apps.lensing against lenstronomy 1.14 (float64): profiles, lensed images, inversion."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import cho_factor, cho_solve

lenstronomy = pytest.importorskip("lenstronomy")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import lenstronomy.Util.util as lt_util  # noqa: E402
from lenstronomy.Data.pixel_grid import PixelGrid as LtPixelGrid  # noqa: E402
from lenstronomy.Data.psf import PSF as LtPSF  # noqa: E402
from lenstronomy.ImSim.image_model import ImageModel as LtImageModel  # noqa: E402
from lenstronomy.LensModel.lens_model import LensModel as LtLensModel  # noqa: E402
from lenstronomy.LensModel.Profiles.nie import NIE as LtNIE, NIEMajorAxis  # noqa: E402
from lenstronomy.LightModel.light_model import LightModel as LtLightModel  # noqa: E402

from fepy.apps import lensing as L  # noqa: E402

N_DRAWS = 20
TOL = 1e-6


def _draw_lens(name, rng):
    e1, e2 = rng.uniform(-0.45, 0.45, 2)
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    if name == "SHEAR":
        return dict(gamma1=e1 / 3, gamma2=e2 / 3, ra_0=cx, dec_0=cy)
    kw = dict(theta_E=rng.uniform(0.3, 2.0), center_x=cx, center_y=cy)
    if name != "POINT_MASS":
        kw.update(e1=e1, e2=e2)
    if name == "NIE":
        kw["s_scale"] = rng.uniform(0.01, 0.5)
    if name == "EPL":
        kw["gamma"] = rng.uniform(1.4, 2.6)
    return kw


PROFILES = {"SIE": L.SIE, "NIE": L.SIE, "EPL": L.EPL, "SHEAR": L.Shear, "POINT_MASS": L.PointMass}


def _points(rng, kw, n=64):
    """Random points in [-3, 3]^2 at least 0.02 arcsec from the profile centre."""
    x, y = rng.uniform(-3, 3, (2, 4 * n))
    cx, cy = kw.get("center_x", kw.get("ra_0")), kw.get("center_y", kw.get("dec_0"))
    keep = np.hypot(x - cx, y - cy) > 0.02
    return x[keep][:n], y[keep][:n]


@pytest.mark.parametrize("name", list(PROFILES))
def test_mass_profiles_match_lenstronomy(name):
    rng = np.random.default_rng(list(PROFILES).index(name))
    reference = LtLensModel([name])
    cls = PROFILES[name]
    def fields(kw, x, y):
        profile = cls(**kw)
        return profile.deflection(x, y), profile.convergence(x, y), profile.potential(x, y)

    evaluate = jax.jit(fields)
    worst = dict(alpha=0.0, kappa=0.0, psi=0.0)
    for _ in range(N_DRAWS):
        kw = _draw_lens(name, rng)
        x, y = _points(rng, kw)
        (ax, ay), kappa, psi = jax.tree.map(np.asarray, evaluate(kw, x, y))
        rx, ry = reference.alpha(x, y, [kw])
        worst["alpha"] = max(worst["alpha"], np.max(np.hypot(ax - rx, ay - ry) / np.hypot(rx, ry)))
        ref_psi = reference.potential(x, y, [kw])
        worst["psi"] = max(worst["psi"], np.max(np.abs(psi - ref_psi)) / np.max(np.abs(ref_psi)))
        if name in ("SIE", "NIE"):
            # lenstronomy's NIE Hessian (hence LensModel.kappa) is a finite difference with step
            # 1e-10, good to ~1e-4 only: compare with its analytic NIEMajorAxis.kappa instead.
            b, s, q, phi = LtNIE().param_conv(kw["theta_E"], kw["e1"], kw["e2"], kw.get("s_scale", 1e-10))
            xr, yr = lt_util.rotate(x - kw["center_x"], y - kw["center_y"], phi)
            ref_kappa = NIEMajorAxis.kappa(xr, yr, b, s, q)
            np.testing.assert_allclose(kappa, reference.kappa(x, y, [kw]), rtol=1e-3)
        else:
            ref_kappa = reference.kappa(x, y, [kw])
        if name in ("SHEAR", "POINT_MASS"):
            assert np.all(kappa == 0) and np.all(ref_kappa == 0)
        else:
            worst["kappa"] = max(worst["kappa"], np.max(np.abs(kappa / ref_kappa - 1)))
    assert max(worst.values()) < TOL, worst


def test_sie_round_limit_is_the_sis():
    x, y = np.random.default_rng(0).uniform(-2, 2, (2, 50))
    ax, ay = L.SIE(1.2, 0.0, 0.0, 0.1, -0.2).deflection(x, y)
    rx, ry = LtLensModel(["SIS"]).alpha(x, y, [dict(theta_E=1.2, center_x=0.1, center_y=-0.2)])
    np.testing.assert_allclose(np.hypot(ax - rx, ay - ry) / np.hypot(rx, ry), 0, atol=1e-12)


@pytest.mark.parametrize("name", ["SERSIC_ELLIPSE", "GAUSSIAN"])
def test_light_profiles_match_lenstronomy(name):
    rng = np.random.default_rng(7)
    reference = LtLightModel([name])
    cls = {"SERSIC_ELLIPSE": L.SersicElliptic, "GAUSSIAN": L.Gaussian}[name]
    evaluate = jax.jit(lambda kw, x, y: cls(**kw).surface_brightness(x, y))
    for _ in range(N_DRAWS):
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        kw = dict(amp=rng.uniform(1, 50), center_x=cx, center_y=cy)
        if name == "GAUSSIAN":
            kw["sigma"] = rng.uniform(0.05, 1.0)
        else:
            e1, e2 = rng.uniform(-0.45, 0.45, 2)
            kw.update(R_sersic=rng.uniform(0.05, 1.5), n_sersic=rng.uniform(0.5, 6), e1=e1, e2=e2)
        x, y = rng.uniform(-2, 2, (2, 200))
        ref = reference.surface_brightness(x, y, [kw])
        np.testing.assert_allclose(evaluate(kw, x, y), ref, rtol=TOL, atol=TOL * ref.max())


def _lenstronomy_setup(num_pix, width, psf, supersampling):
    grid = L.PixelGrid.square(num_pix, width)
    lt_grid = LtPixelGrid(
        nx=num_pix, ny=num_pix, transform_pix2angle=np.array(grid.transform_pix2angle),
        ra_at_xy_0=grid.ra_at_xy_0, dec_at_xy_0=grid.dec_at_xy_0,
    )
    if isinstance(psf, L.PixelPSF):
        lt_psf = LtPSF("PIXEL", kernel_point_source=np.array(psf.kernel))
    else:
        lt_psf = LtPSF("GAUSSIAN", fwhm=psf.fwhm, pixel_size=width, truncation=psf.truncation)
    lt_model = LtImageModel(
        lt_grid, lt_psf, LtLensModel(["SIE", "SHEAR"]), LtLightModel(["SERSIC_ELLIPSE"]),
        LtLightModel(["SERSIC_ELLIPSE"]), kwargs_numerics={"supersampling_factor": supersampling},
    )
    return L.ImageModel(grid, psf, supersampling), lt_model


def _draw_system(rng):
    e = rng.uniform(-0.3, 0.3, 6)
    c = rng.uniform(-0.1, 0.1, 4)
    lens = [dict(theta_E=rng.uniform(0.8, 1.4), e1=e[0], e2=e[1], center_x=c[0], center_y=c[1]),
            dict(gamma1=e[2] / 5, gamma2=e[3] / 5, ra_0=0.0, dec_0=0.0)]
    source = [dict(amp=rng.uniform(10, 30), R_sersic=rng.uniform(0.1, 0.3), n_sersic=rng.uniform(0.8, 3),
                   e1=e[4], e2=e[5], center_x=c[2], center_y=c[3])]
    lens_light = [dict(amp=rng.uniform(5, 15), R_sersic=rng.uniform(0.4, 0.8), n_sersic=rng.uniform(2, 5),
                       e1=e[0] / 2, e2=e[1] / 2, center_x=c[0], center_y=c[1])]
    return lens, source, lens_light


def _fepy_system(lens, source, lens_light):
    mass = L.MassModel([L.SIE(**lens[0]), L.Shear(**lens[1])])
    return mass, L.SersicElliptic(**source[0]), L.SersicElliptic(**lens_light[0])


KERNEL = np.exp(-0.5 * (np.arange(-3, 4)[:, None] ** 2 + 1.3 * np.arange(-3, 4)[None, :] ** 2) / 1.5**2) + 0.01


@pytest.mark.parametrize(
    "psf, supersampling",
    [(L.PixelPSF(KERNEL), 1), (L.PixelPSF(KERNEL), 3), (L.GaussianPSF(0.15), 2), (None, 2)],
    ids=["pixel-s1", "pixel-s3", "gaussian-s2", "none-s2"],
)
def test_lensed_image_matches_lenstronomy(psf, supersampling):
    rng = np.random.default_rng(supersampling)
    identity = L.PixelPSF(np.ones((1, 1)))
    model, lt_model = _lenstronomy_setup(40, 0.08, identity if psf is None else psf, supersampling)
    if psf is None:
        model = L.ImageModel(model.grid, None, supersampling)
    render = jax.jit(lambda kws: model.image(*_fepy_system(*kws)))
    for _ in range(3):
        kws = _draw_system(rng)
        ref = lt_model.image(*kws)
        diff = np.max(np.abs(np.asarray(render(kws)) - ref)) / ref.max()
        assert diff < TOL, diff


def test_vmap_over_parameter_batch_equals_loop():
    rng = np.random.default_rng(3)
    model = L.ImageModel(L.PixelGrid.square(24, 0.1), L.PixelPSF(KERNEL), 2)
    systems = [_draw_system(rng) for _ in range(4)]
    batch = jax.tree.map(lambda *leaves: jnp.stack(leaves), *systems)
    render = lambda kws: model.image(*_fepy_system(*kws))  # noqa: E731
    batched = jax.jit(jax.vmap(render))(batch)
    looped = np.stack([render(s) for s in systems])
    np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-12 * looped.max())


def test_gradients_are_finite_including_round_lens():
    model = L.ImageModel(L.PixelGrid.square(10, 0.2), L.GaussianPSF(0.3), 2)
    data = model.image(L.SIE(1.0, 0.1, 0.0), L.SersicElliptic(10.0, 0.2, 1.0))

    def loss(p):
        lens = L.MassModel([L.SIE(p[0], p[1], p[2]), L.Shear(p[3], p[4])])
        return jnp.sum((model.image(lens, L.SersicElliptic(p[5], 0.2, 1.0)) - data) ** 2)

    grad = jax.jit(jax.grad(loss))
    for p in ([1.1, 0.0, 0.0, 0.0, 0.0, 9.0], [0.9, 0.2, -0.1, 0.02, 0.01, 11.0]):
        g = grad(jnp.array(p))
        assert np.all(np.isfinite(g)), g


def test_noise_model_statistics():
    noise = L.NoiseModel(background_rms=0.5, exposure_time=100.0)
    model = jnp.full((120, 120), 40.0)
    expected = np.sqrt(0.25 + 40.0 / 100.0)
    for exact in (False, True):
        residual = np.asarray(noise.sample(jax.random.key(int(exact)), model, exact_poisson=exact) - model)
        assert abs(residual.mean()) < 4 * expected / 120
        assert abs(residual.std() / expected - 1) < 0.025
    assert np.isclose(noise.log_likelihood(model, model), -0.5 * model.size * np.log(2 * np.pi * expected**2))
    im = L.ImageModel(L.PixelGrid.square(8, 0.1), noise=noise)
    assert im.simulate(jax.random.key(0), source=L.Gaussian(1.0, 0.2)).shape == (8, 8)


def test_pixelated_source_interpolates_its_pixels():
    grid = L.PixelGrid.square(5, 0.1)
    values = np.random.default_rng(0).uniform(0, 1, (5, 5))
    source = L.PixelatedSource(grid, values)
    x, y = grid.coordinates()
    np.testing.assert_allclose(source.surface_brightness(x, y), values, atol=1e-14)
    mid = source.surface_brightness((x[0, 0] + x[0, 1]) / 2, y[0, 0])
    np.testing.assert_allclose(mid, (values[0, 0] + values[0, 1]) / 2, rtol=1e-14)
    assert float(source.surface_brightness(10.0, 10.0)) == 0.0


@pytest.fixture(scope="module")
def inversion_setup():
    model = L.ImageModel(L.PixelGrid.square(30, 0.08), L.PixelPSF(KERNEL), 2)
    lens = L.MassModel([L.SIE(1.0, 0.1, -0.05), L.Shear(0.02, -0.01)])
    source_grid = L.PixelGrid.square(8, 0.06)
    truth = np.random.default_rng(1).uniform(0.5, 2.0, source_grid.shape)
    M = np.asarray(L.lensing_matrix(model, lens, source_grid))
    return model, lens, source_grid, truth, M


def test_lensing_matrix_is_the_forward_model(inversion_setup):
    model, lens, source_grid, truth, M = inversion_setup
    direct = model.image(lens, L.PixelatedSource(source_grid, truth))
    np.testing.assert_allclose((M @ truth.ravel()).reshape(model.grid.shape), direct, atol=1e-13 * direct.max())


def test_inversion_recovers_noiseless_source_and_matches_numpy(inversion_setup):
    model, lens, source_grid, truth, M = inversion_setup
    data = (M @ truth.ravel()).reshape(model.grid.shape)
    variance = np.full(model.grid.shape, 1e-4)
    assert np.linalg.matrix_rank(M) == truth.size  # well conditioned: every source pixel is seen
    invert = eqx.filter_jit(L.linear_inversion)
    exact = invert(model, lens, source_grid, data, variance, jnp.asarray(1e-9), "gaussian")
    np.testing.assert_allclose(exact.source.values, truth, rtol=1e-6)
    for kind, strength in (("gaussian", 3.0), ("curvature", 0.7)):
        result = invert(model, lens, source_grid, data, variance, jnp.asarray(strength), kind)
        R = L.regularization_matrix(source_grid, kind)
        A = M.T @ M / 1e-4 + strength * R
        solve = np.linalg.solve(A, M.T @ data.ravel() / 1e-4)
        np.testing.assert_allclose(result.source.values.ravel(), solve, rtol=1e-9, atol=1e-12)
        # the evidence is the Gaussian marginal likelihood N(d; 0, C + M (lambda R)^-1 M^T)
        cov = np.diag(variance.ravel()) + M @ np.linalg.solve(strength * R, M.T)
        factor = cho_factor(cov)
        d = data.ravel()
        logdet = 2 * np.sum(np.log(np.diag(factor[0])))
        direct = -0.5 * (d @ cho_solve(factor, d) + logdet + d.size * np.log(2 * np.pi))
        np.testing.assert_allclose(float(result.log_evidence), direct, rtol=1e-9)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="ellipticity"):
        L.SIE(1.0, 0.8, 0.7)
    with pytest.raises(ValueError, match="theta_E"):
        L.SIE(-1.0)
    with pytest.raises(ValueError, match="gamma"):
        L.EPL(1.0, gamma=3.5)
    with pytest.raises(ValueError, match="R_sersic"):
        L.SersicElliptic(1.0, -0.2, 1.0)
    with pytest.raises(ValueError, match="odd"):
        L.PixelPSF(np.ones((4, 4)))
    with pytest.raises(ValueError, match="same shape"):
        L.SIE(1.0).deflection(np.zeros(3), np.zeros(4))
    grid = L.PixelGrid.square(6, 0.1)
    with pytest.raises(ValueError, match="grid's shape"):
        L.PixelatedSource(grid, np.zeros((5, 6)))
    with pytest.raises(ValueError, match="data must have shape"):
        source_grid = L.PixelGrid.square(3, 0.1)
        L.linear_inversion(L.ImageModel(grid), L.SIE(1.0), source_grid, np.zeros((5, 5)), np.ones((6, 6)), 1.0)
    with pytest.raises(ValueError, match="regularization must be"):
        L.regularization_matrix(grid, "laplace")
    with pytest.raises(ValueError, match="supersampling_factor"):
        L.ImageModel(grid, supersampling_factor=0)
    with pytest.raises(ValueError, match="noise model"):
        L.ImageModel(grid).simulate(jax.random.key(0), source=L.Gaussian(1.0, 0.1))


def test_isothermal_epl_is_the_sie():
    x, y = np.random.default_rng(4).uniform(-2, 2, (2, 100))
    kw = dict(theta_E=1.3, e1=0.25, e2=-0.15, center_x=0.1, center_y=0.05)
    epl, sie = L.EPL(gamma=2.0, **kw), L.SIE(**kw)
    for a, b in zip(epl.deflection(x, y), sie.deflection(x, y)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(epl.convergence(x, y), sie.convergence(x, y), rtol=1e-12)


def test_log_evidence_is_differentiable_in_the_lens(inversion_setup):
    model, lens, source_grid, truth, M = inversion_setup
    data = (M @ truth.ravel()).reshape(model.grid.shape)
    variance = np.full(model.grid.shape, 1e-2)

    def log_evidence(theta_E):
        mass = L.MassModel([L.SIE(theta_E, 0.1, -0.05), L.Shear(0.02, -0.01)])
        return L.linear_inversion(model, mass, source_grid, data, variance, 1.0).log_evidence

    value, slope = jax.jit(jax.value_and_grad(log_evidence))(1.02)
    assert np.isfinite(value) and np.isfinite(slope) and slope < 0  # the truth, 1.0, is below
