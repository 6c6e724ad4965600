r"""An E(n)-equivariant, permutation-equivariant vector field for particle CNFs (an EGNN).

The field :math:`v(t, x)` of :math:`N` identical particles in :math:`D` dimensions is an
E(n) equivariant graph neural network (Garcia Satorras, Hoogeboom & Welling 2021) on the
complete graph, conditioned on the time :math:`t`: every particle starts with the same learnt
feature :math:`h_i^0 = h^0`, and each of ``layers`` layers computes

.. math::

    m_{ij} &= \phi_e\big(h_i, h_j, |x_i - x_j|^2, t\big), \\
    x_i &\leftarrow x_i + \frac{1}{N-1}\sum_{j\ne i}
           \frac{x_i - x_j}{\sqrt{|x_i - x_j|^2 + 1}}\,\phi_x(m_{ij}), \\
    h_i &\leftarrow h_i + \phi_h\Big(h_i, \frac{1}{N-1}\sum_{j\ne i} m_{ij}\Big),

with SiLU MLPs :math:`\phi_e, \phi_x, \phi_h` shared by all particles and pairs. The velocity is
the total displacement :math:`v_i = x_i^{L} - x_i^{0}` minus its mean over particles. Every
update is built from differences :math:`x_i - x_j` times functions of distances, so for any
orthogonal :math:`R`, translation :math:`c` and permutation :math:`\pi`

.. math:: v(t, Rx + c) = R\,v(t, x), \qquad v(t, \pi x) = \pi\, v(t, x),

and :math:`\sum_i v_i = 0`: the field maps into the centre-of-mass-free subspace and is
constant along translations, the two conditions under which `fepy.CNF`'s full Jacobian trace
is the divergence on that subspace. The last layer of :math:`\phi_x` starts at zero, so the
field is 0 and the CNF equals its base at initialisation.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .particles import _check_shape


class _Layer(eqx.Module):
    edge: eqx.nn.MLP
    coordinate: eqx.nn.MLP
    node: eqx.nn.MLP

    def __init__(self, key, width: int):
        k_edge, k_coord, k_node = jax.random.split(key, 3)
        self.edge = eqx.nn.MLP(2 * width + 2, width, width, 1, activation=jax.nn.silu,
                               final_activation=jax.nn.silu, key=k_edge)
        coordinate = eqx.nn.MLP(width, 1, width, 1, activation=jax.nn.silu, key=k_coord)
        last = coordinate.layers[-1]
        self.coordinate = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), coordinate,
                                      (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.node = eqx.nn.MLP(2 * width, width, width, 1, activation=jax.nn.silu, key=k_node)

    def __call__(self, t, x, h):
        n, width = h.shape
        diff = x[:, None, :] - x[None, :, :]  # x_i - x_j
        d2 = jnp.sum(diff**2, axis=-1)
        off_diagonal = 1.0 - jnp.eye(n, dtype=x.dtype)
        features = jnp.concatenate(
            [jnp.broadcast_to(h[:, None, :], (n, n, width)), jnp.broadcast_to(h[None, :, :], (n, n, width)),
             d2[..., None], jnp.broadcast_to(t, (n, n, 1)).astype(x.dtype)], axis=-1)
        m = jax.vmap(jax.vmap(self.edge))(features) * off_diagonal[..., None]
        weight = jax.vmap(jax.vmap(self.coordinate))(m)[..., 0] * off_diagonal
        x = x + jnp.einsum("ij,ijd->id", weight / jnp.sqrt(d2 + 1.0), diff) / (n - 1)
        h = h + jax.vmap(self.node)(jnp.concatenate([h, jnp.sum(m, axis=1) / (n - 1)], axis=-1))
        return x, h


class EGNNField(eqx.Module):
    r"""The time-conditioned EGNN velocity :math:`v(t, x)` of the module docstring, on one flat
    configuration ``x`` of shape ``(n_particles * space_dim,)`` (a `fepy.CNF` field)."""

    layers: list[_Layer]
    embedding: Float[Array, " width"]
    n_particles: int = eqx.field(static=True)
    space_dim: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, n_particles: int, space_dim: int, *, width: int = 32, layers: int = 3):
        """``layers`` EGNN layers of ``width`` features (MLPs with one hidden layer of ``width``)."""
        _check_shape("EGNNField", n_particles, space_dim)
        for name, value in (("width", width), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EGNNField {name} must be a positive integer, got {value!r}")
        k_embed, k_layers = jax.random.split(key)
        self.embedding = jax.random.normal(k_embed, (width,))
        self.layers = [_Layer(k, width) for k in jax.random.split(k_layers, layers)]
        self.n_particles = n_particles
        self.space_dim = space_dim

    def __call__(self, t: Float[Array, ""], x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        x0 = x.reshape(self.n_particles, self.space_dim)
        h = jnp.broadcast_to(self.embedding, (self.n_particles, self.embedding.shape[0])).astype(x.dtype)
        y = x0
        for layer in self.layers:
            y, h = layer(t, y, h)
        v = y - x0
        return (v - jnp.mean(v, axis=0)).reshape(x.shape)
