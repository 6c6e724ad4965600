r"""Coupling flows on a cylinder :math:`\mathbb{R}^a \times T^p`: bounded and circular
rational-quadratic splines, for internal coordinates whose torsions are periodic.

Each coordinate is either *real* (a bond, an angle, a narrow torsion after standardisation) or
*periodic* (an angle on the circle :math:`[-\pi, \pi)`). The base `NormalUniform` is
:math:`N(0, 1)` on the real and uniform on the periodic coordinates. A `MixedSplineCoupling`
keeps the coordinates outside its ``transformed`` mask and maps each transformed one by a
monotone rational-quadratic spline (Durkan et al. 2019; the spline arithmetic is flowjax's
`RationalQuadraticSpline`) whose K bin widths, heights and knot slopes are outputs of an MLP
of the kept coordinates, a periodic one entering the MLP as :math:`(\cos\phi, \sin\phi)` so
that the layer is continuous on the circle:

* a real coordinate: a spline on :math:`[-B, B]` with slope 1 at both ends and the identity
  outside, so the map and its derivative are continuous on :math:`\mathbb{R}`;
* a periodic coordinate: a spline of :math:`[-\pi, \pi]` onto itself whose end slopes are equal
  (:math:`d_0 = d_K`), so it is a :math:`C^1` diffeomorphism of the circle fixing
  :math:`-\pi \equiv \pi`, followed by a learnt rotation :math:`\phi \mapsto \phi + s` (mod
  :math:`2\pi`), which moves that fixed point: the circular spline flow of Rezende et al.
  (ICML 2020, "Normalizing flows on tori and spheres").

The Jacobian is triangular: :math:`\log|\det|` is the sum of the transformed coordinates'
:math:`\log s'(x)` (a rotation has slope 1), exact, and each layer inverts in closed form (the
spline's quadratic; the rotation by :math:`-s`).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
from flowjax.bijections import AbstractBijection, RationalQuadraticSpline, Scan
from jaxtyping import Array, Bool, Float, PRNGKeyArray
from paramax.utils import inv_softplus

from ...families.density import AbstractDensity
from ..tps.metrics import wrap_angle

MIN_WIDTH = 1e-3  # of a bin, as a fraction of the interval [-1, 1] of the unit spline
MIN_SLOPE = 1e-3


class NormalUniform(AbstractDensity):
    r"""The base of a flow on :math:`\mathbb{R}^a \times T^p`: independent :math:`N(0, 1)` real
    coordinates and uniform periodic ones on :math:`[-\pi, \pi)` (density :math:`1/2\pi`;
    :math:`\log q = -\infty` for a periodic coordinate outside :math:`[-\pi, \pi]`). No parameters."""

    periodic: tuple[bool, ...] = eqx.field(static=True)

    def __init__(self, periodic: Bool[np.ndarray, " dim"]):
        periodic = np.asarray(periodic)
        if periodic.ndim != 1 or periodic.size < 1 or periodic.dtype != bool:
            raise ValueError(f"NormalUniform periodic must be a non-empty 1-D boolean mask, got {periodic!r}")
        self.periodic = tuple(bool(p) for p in periodic)

    @property
    def dim(self) -> int:
        return len(self.periodic)

    def sample_and_log_prob(self, key, n):
        dtype = jnp.result_type(float)
        normal_key, uniform_key = jax.random.split(key)
        periodic = np.asarray(self.periodic)
        z = jax.random.normal(normal_key, (n, self.dim), dtype)
        u = jax.random.uniform(uniform_key, (n, self.dim), dtype, -jnp.pi, jnp.pi)
        x = jnp.where(periodic, u, z)
        return x, self.log_prob(x)

    def log_prob(self, x: Float[Array, "... dim"]) -> Float[Array, "..."]:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"NormalUniform log_prob expects points of shape (..., {self.dim}), got {x.shape}")
        periodic = np.asarray(self.periodic)
        normal = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
        uniform = jnp.where(jnp.abs(x) <= jnp.pi, -math.log(2 * math.pi), -jnp.inf)
        return jnp.sum(jnp.where(periodic, uniform, normal), axis=-1)


def _unit_spline(raw, periodic, knots):
    """The flowjax spline on [-1, 1] with ``knots`` bins from one coordinate's 3 K raw outputs:
    K widths, K heights (softmax with a minimum), K slopes (softplus; the slope 1 at raw 0). The
    end slopes are 1 for a real coordinate, the first learnt slope at both ends for a periodic one."""
    widths, heights, slopes = raw[:knots], raw[knots : 2 * knots], raw[2 * knots : 3 * knots]
    positions = lambda r: paramax.RealToIncreasingOnInterval(r, (-1.0, 1.0), min_width=MIN_WIDTH,
                                                             include_endpoints="both").unwrap()
    slope = jax.nn.softplus(slopes + inv_softplus(1 - MIN_SLOPE)) + MIN_SLOPE
    end = jnp.where(periodic, slope[0], 1.0)
    derivatives = jnp.concatenate([end[None], slope[1:], end[None]])
    template = RationalQuadraticSpline(knots=knots - 1, interval=1.0)
    return eqx.tree_at(lambda s: (s.x_pos, s.y_pos, s.derivatives), template,
                       (positions(widths), positions(heights), derivatives))


def spline_transform(x, raw, periodic, knots, half_width, inverse: bool):
    """One coordinate through its rational-quadratic spline: y and log|dy/dx|.

    ``raw`` holds the 3K unconstrained knot parameters (widths, heights, derivatives) and, for a
    periodic (circular) coordinate, a rotation angle at index 3K; the spline maps
    [-half_width, half_width] (bounded) or [-π, π) (periodic, followed by the rotation) onto itself,
    ``inverse`` runs it backwards."""
    spline = _unit_spline(raw, periodic, knots)
    shift = jnp.where(periodic, raw[3 * knots], 0.0)
    h = jnp.where(periodic, jnp.pi, half_width)
    if inverse:
        x = jnp.where(periodic, wrap_angle(x - shift), x)
        y, log_det = spline.inverse_and_log_det(x / h)
        return h * y, log_det
    y, log_det = spline.transform_and_log_det(x / h)
    y = h * y
    return jnp.where(periodic, wrap_angle(y + shift), y), log_det


class MixedSplineCoupling(AbstractBijection):
    r"""One coupling layer on :math:`\mathbb{R}^a \times T^p` (module docstring): the coordinates in
    ``transformed`` go through splines conditioned on the others. Its ``conditioner`` maps the
    3 d features (real kept coordinates, cos and sin of periodic kept ones, zeros elsewhere) to
    3 K + 1 raw parameters per coordinate (widths, heights, slopes, rotation; a real coordinate
    ignores the last, the first slope being its fixed end slope 1). Build the layers with
    `coupling_flow`."""

    transformed: Bool[Array, " dim"]
    periodic: Bool[Array, " dim"]
    conditioner: eqx.nn.MLP
    knots: int = eqx.field(static=True)
    interval: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    cond_shape: None = eqx.field(static=True, default=None)

    def __init__(self, key: PRNGKeyArray, transformed, periodic, *, knots: int, interval: float, width: int,
                 depth: int):
        transformed, periodic = jnp.asarray(transformed, bool), jnp.asarray(periodic, bool)
        dim = transformed.shape[-1]
        self.transformed, self.periodic = transformed, periodic
        self.knots, self.interval, self.shape = knots, interval, (dim,)
        self.conditioner = eqx.nn.MLP(3 * dim, dim * (3 * knots + 1), width, depth, jax.nn.relu, key=key)

    def __check_init__(self):
        if self.transformed.shape != self.periodic.shape or self.transformed.shape[-1:] != self.shape:
            raise ValueError(f"MixedSplineCoupling transformed and periodic must be masks of shape {self.shape}, got "
                             f"{self.transformed.shape} and {self.periodic.shape}")
        if self.knots < 2 or not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"MixedSplineCoupling needs knots >= 2 and a positive finite interval, got "
                             f"{self.knots}, {self.interval}")

    def _parameters(self, x):
        kept = ~self.transformed
        features = jnp.concatenate([jnp.where(kept & ~self.periodic, x, 0.0),
                                    jnp.where(kept & self.periodic, jnp.cos(x), 0.0),
                                    jnp.where(kept & self.periodic, jnp.sin(x), 0.0)])
        return self.conditioner(features).reshape(self.shape[0], 3 * self.knots + 1)

    def _apply(self, x, inverse):
        raw = self._parameters(x)
        y, log_det = jax.vmap(lambda xi, ri, pi: spline_transform(xi, ri, pi, self.knots, self.interval, inverse))(
            x, raw, self.periodic)
        y = jnp.where(self.transformed, y, x)
        return y, jnp.sum(jnp.where(self.transformed, log_det, 0.0))

    def transform_and_log_det(self, x, condition=None):
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y, condition=None):
        return self._apply(y, inverse=True)


def coupling_flow(
    key: PRNGKeyArray,
    periodic: Bool[np.ndarray, " dim"],
    *,
    layers: int = 8,
    knots: int = 8,
    interval: float = 5.0,
    width: int = 128,
    depth: int = 2,
) -> Scan:
    r"""``layers`` `MixedSplineCoupling` layers (a flowjax ``Scan``): layers 2m and 2m + 1 transform
    the two halves of a random split of the coordinates (drawn per pair), so each pair transforms
    every coordinate once. ``interval`` is B of the real coordinates' splines, ``knots`` the bins
    K, the conditioners have ``depth`` hidden layers of ``width`` ReLU units. Every conditioner's
    last layer is zero: each layer starts as the identity, the flow as its base."""
    periodic = np.asarray(periodic, bool)
    dim = periodic.size
    for name, value, minimum in (("layers", layers, 1), ("knots", knots, 2), ("width", width, 1), ("depth", depth, 0),
                                 ("dim", dim, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"coupling_flow {name} must be an integer >= {minimum}, got {value!r}")
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"coupling_flow interval must be a positive finite number, got {interval!r}")
    mask_key, layer_key = jax.random.split(key)
    masks = []
    for pair in range(-(-layers // 2)):
        first = np.zeros(dim, bool)
        first[np.asarray(jax.random.permutation(jax.random.fold_in(mask_key, pair), dim))[: dim // 2]] = True
        masks += [first, ~first]
    masks = jnp.asarray(np.stack(masks[:layers]))

    def layer(k, transformed):
        coupling = MixedSplineCoupling(k, transformed, periodic, knots=knots, interval=float(interval),
                                       width=width, depth=depth)
        last = coupling.conditioner.layers[-1]
        return eqx.tree_at(lambda c: (c.conditioner.layers[-1].weight, c.conditioner.layers[-1].bias), coupling,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))

    return Scan(eqx.filter_vmap(layer)(jax.random.split(layer_key, layers), masks))
