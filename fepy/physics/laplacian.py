r"""Laplacians of scalar functions and the local kinetic energy of a wavefunction.

For :math:`\psi = e^{f}` with :math:`f = \log|\psi|`,
:math:`\frac{-\frac12\nabla^2\psi}{\psi} = -\frac12(\nabla^2 f + |\nabla f|^2)`
(hartree when lengths are in bohr and the mass is the electron's).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

Scalar = Callable[[Float[Array, " dim"]], Float[Array, ""]]


def grad_and_laplacian(f: Scalar, x: Float[Array, " dim"]) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
    r"""Exact :math:`\nabla f(x)` and :math:`\nabla^2 f(x) = \sum_i \partial_i^2 f`.

    Forward-over-reverse: one ``jvp`` of the gradient per coordinate direction
    (``dim`` Hessian-vector products, never the full Hessian in memory at once).
    """
    grad_f = jax.grad(f)

    def directional(e):
        return jax.jvp(grad_f, (x,), (e,))

    grads, hessian_columns = jax.vmap(directional)(jnp.eye(x.shape[0], dtype=x.dtype))
    return grads[0], jnp.trace(hessian_columns)


def hutchinson_laplacian(
    f: Scalar, x: Float[Array, " dim"], key: PRNGKeyArray, samples: int = 1
) -> tuple[Float[Array, " dim"], Float[Array, ""]]:
    r"""Unbiased estimate :math:`\nabla^2 f \approx \frac1S \sum_s v_s^\top H v_s`, Rademacher :math:`v_s`.

    ``samples`` Hessian-vector products instead of ``dim``; the variance is
    :math:`\frac2S \sum_{i \ne j} H_{ij}^2`. Returns the exact gradient too.
    """
    grad_f = jax.grad(f)
    v = jax.random.rademacher(key, (samples, x.shape[0]), dtype=x.dtype)
    grads, hv = jax.vmap(lambda e: jax.jvp(grad_f, (x,), (e,)))(v)
    return grads[0], jnp.mean(jnp.sum(v * hv, axis=-1))


def local_kinetic_energy(
    log_psi: Scalar,
    x: Float[Array, " dim"],
    key: PRNGKeyArray | None = None,
    hutchinson_samples: int = 0,
) -> Float[Array, ""]:
    r"""Local kinetic energy :math:`-\frac12(\nabla^2 \log|\psi| + |\nabla \log|\psi||^2)` at ``x``.

    Exact by default; with ``hutchinson_samples > 0`` (and a ``key``) the Laplacian is a
    Hutchinson estimate, which keeps the energy estimator unbiased.
    """
    if hutchinson_samples > 0:
        if key is None:
            raise ValueError("a key is needed for the Hutchinson Laplacian")
        g, lap = hutchinson_laplacian(log_psi, x, key, hutchinson_samples)
    else:
        g, lap = grad_and_laplacian(log_psi, x)
    return -0.5 * (lap + jnp.sum(g**2))
