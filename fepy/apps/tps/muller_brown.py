r"""The Müller-Brown surface (Müller & Brown, Theor. Chim. Acta 53, 75 (1979)).

.. math::  U(x, y) = \sum_{i=1}^4 A_i \exp\big(a_i (x - x_i)^2 + b_i (x - x_i)(y - y_i) + c_i (y - y_i)^2\big)

with A = (-200, -100, -170, 15), a = (-1, -1, -6.5, 0.7), b = (0, 0, 11, 0.6),
c = (-10, -10, -6.5, 0.7), x0 = (1, 0, -0.5, -1), y0 = (0, 0.5, 1.5, 1), in the surface's own
energy and length units. Three minima (the deepest A ~ (-0.558, 1.442), U ~ -146.70; an
intermediate one ~ (-0.050, 0.467), U ~ -80.77; B ~ (0.623, 0.028), U ~ -108.17) and two
saddles on the minimum-energy path from A to B: ~ (-0.822, 0.624), U ~ -40.66 (the highest)
and ~ (0.212, 0.293), U ~ -72.25. `stationary_point` refines any of them by Newton's method.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

A = (-200.0, -100.0, -170.0, 15.0)
a = (-1.0, -1.0, -6.5, 0.7)
b = (0.0, 0.0, 11.0, 0.6)
c = (-10.0, -10.0, -6.5, 0.7)
x0 = (1.0, 0.0, -0.5, -1.0)
y0 = (0.0, 0.5, 1.5, 1.0)

MINIMUM_A = (-0.558, 1.442)
MINIMUM_INTERMEDIATE = (-0.050, 0.467)
MINIMUM_B = (0.623, 0.028)
SADDLE_HIGH = (-0.822, 0.624)
SADDLE_LOW = (0.212, 0.293)


class MullerBrown(eqx.Module):
    """The Müller-Brown potential of one point ``x = (x, y)``."""

    def __call__(self, x: Float[Array, " 2"]) -> Float[Array, ""]:
        dx, dy = x[0] - jnp.asarray(x0), x[1] - jnp.asarray(y0)
        return jnp.sum(jnp.asarray(A) * jnp.exp(jnp.asarray(a) * dx**2 + jnp.asarray(b) * dx * dy
                                                 + jnp.asarray(c) * dy**2))


def stationary_point(potential, guess, iterations: int = 50) -> Float[Array, " 2"]:
    """The stationary point (minimum or saddle) of ``potential`` nearest ``guess``, by Newton's
    method on the gradient (quadratic convergence; 50 iterations reach round-off)."""
    grad, hess = jax.grad(potential), jax.hessian(potential)

    def newton(x, _):
        return x - jnp.linalg.solve(hess(x), grad(x)), None

    x, _ = jax.lax.scan(newton, jnp.asarray(guess, dtype=jnp.result_type(float)), None, length=iterations)
    return x
