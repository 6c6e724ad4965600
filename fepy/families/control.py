r"""A control of a stochastic process: the bias force :math:`b_\theta(x, s)` added to the reference dynamics."""

from collections.abc import Callable
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class Control(eqx.Module):
    r"""The family :math:`Q_\theta` of path measures made by adding the force :math:`b_\theta` to a
    reference dynamics (see `fepy.PathMeasure`).

    Attributes:
        network: an Equinox module on one input vector: the configuration ``x`` (shape ``(dim,)``),
            followed by the reduced time :math:`s = t/T \in [0, 1]` when ``time_dependent``.
            It returns the force (shape ``(dim,)``) when ``kind == "force"`` or a bias potential
            :math:`V_\theta` (a scalar) when ``kind == "potential"``, and then
            :math:`b = -\nabla_x V_\theta`. Its floating-point array leaves are the parameters.
        kind: ``"force"`` or ``"potential"``.
        time_dependent: whether :math:`b` depends on :math:`s` (underdamped dynamics need False).
        scale: the force unit: :math:`b = \text{scale} \times` the network's output (energy/length).
        features: an optional map from ``x`` to the network's input (e.g. alignment to a
            reference frame for molecules); it must be differentiable and returns a vector.
    """

    network: Callable[[Float[Array, " n_in"]], Array]
    kind: Literal["force", "potential"] = eqx.field(static=True, default="force")
    time_dependent: bool = eqx.field(static=True, default=True)
    scale: float = 1.0
    features: Callable[[Float[Array, " dim"]], Float[Array, " n_features"]] | None = None

    KINDS: ClassVar[tuple[str, ...]] = ("force", "potential")

    def __check_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"Control kind must be one of {self.KINDS}, got {self.kind!r}")

    def _output(self, x, s):
        z = x if self.features is None else self.features(x)
        if self.time_dependent:
            z = jnp.concatenate([z, jnp.reshape(s, (1,)).astype(z.dtype)])
        return self.network(z)

    def force(self, x: Float[Array, " dim"], s: Float[Array, ""]) -> Float[Array, " dim"]:
        r"""The bias force :math:`b_\theta(x, s)` at configuration ``x`` and reduced time ``s``."""
        if self.kind == "force":
            return self.scale * self._output(x, s)
        return -self.scale * jax.grad(lambda y: self._output(y, s))(x)

    @classmethod
    def mlp(
        cls,
        dim: int,
        *,
        key: PRNGKeyArray,
        width: int = 64,
        depth: int = 2,
        kind: Literal["force", "potential"] = "force",
        time_dependent: bool = True,
        scale: float = 1.0,
        n_features: int | None = None,
        features=None,
        activation=jax.nn.silu,
        steer: tuple | None = None,
    ) -> "Control":
        """An MLP control whose last layer starts at zero, so that training starts from the
        reference dynamics (:math:`b = 0`), or from a steered-MD spring when
        ``steer = (x_A, x_B, kappa)``, kappa in energy/length^2 (see `Steered`; needs ``time_dependent``).
        ``n_features``: the length of ``features(x)``."""
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Control dim must be a positive integer, got {dim!r}")
        n_in = (dim if n_features is None else n_features) + int(time_dependent)
        n_out = dim if kind == "force" else "scalar"
        net = eqx.nn.MLP(n_in, n_out, width, depth, activation=activation, key=key)
        last = net.layers[-1]
        net = eqx.tree_at(lambda n: (n.layers[-1].weight, n.layers[-1].bias), net,
                          (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        if steer is not None:
            if not (time_dependent and kind == "force" and features is None):
                raise ValueError("a steered Control needs kind='force', time_dependent=True and no features")
            start, end, stiffness = steer
            net = Steered(net, jnp.asarray(start), jnp.asarray(end), jnp.asarray(stiffness / scale, float))
        return cls(net, kind=kind, time_dependent=time_dependent, scale=scale, features=features)


class Steered(eqx.Module):
    r"""A network plus a moving harmonic restraint, the steered-MD start of a transition control.

    For input :math:`(x, s)` (configuration, reduced time) the output is

    .. math::  \text{network}(x, s) + k\,\big(x_A + s\,(x_B - x_A) - x\big),

    which the Control multiplies by its ``scale``: a spring of stiffness :math:`\kappa = k\,\text{scale}`
    (energy/length^2) dragging the system along the straight
    line from :math:`x_A` to :math:`x_B` in the time of the path. With :math:`\kappa` large enough
    every path starts out reaching B, so the terminal cost's gradient does not vanish in a stiff
    well of A (through-the-solver gradients decay like :math:`e^{-\lambda t}` there); training then
    lowers the control cost and bends the paths into the valleys. :math:`\kappa` is trained with
    the network. Use it with ``Control(..., time_dependent=True, kind="force")``.
    """

    network: Callable[[Float[Array, " n_in"]], Float[Array, " dim"]]
    start: Float[Array, " dim"]
    end: Float[Array, " dim"]
    stiffness: Float[Array, ""]

    def __call__(self, z: Float[Array, " n_in"]) -> Float[Array, " dim"]:
        x, s = z[:-1], z[-1]
        start, end = jax.lax.stop_gradient((self.start, self.end))
        return self.network(z) + self.stiffness * (start + s * (end - start) - x)
