r"""`fepy.laplace`: the Gaussian approximation of :math:`p \propto e^{-\beta U}` at a minimum of U."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validate import as_float_array


class Laplace(NamedTuple):
    r"""The result of `fepy.laplace`: :math:`p(x) \approx N(x^*, \Sigma)`,
    :math:`\Sigma^{-1} = \beta \nabla^2 U(x^*)`."""

    mean: Float[Array, " dim"]
    """The expansion point :math:`x^*` (a minimum of U)."""
    covariance: Float[Array, "dim dim"]
    r""":math:`\Sigma = (\beta \nabla^2 U)^{-1}` in the unit of x squared."""
    log_z: Float[Array, ""]
    r"""Laplace's :math:`\log Z \approx -\beta U(x^*) + \frac d2 \log 2\pi - \frac12\log\det(\beta\nabla^2 U)`."""
    gradient: Float[Array, " dim"]
    r""":math:`\nabla U(x^*)`, about 0 at a minimum: check it when :math:`x^*` came from an optimizer."""

    @property
    def std(self) -> Float[Array, " dim"]:
        """Marginal standard deviations, the square roots of the diagonal of the covariance."""
        return jnp.sqrt(jnp.diag(self.covariance))


def _precision(target, derivatives, x, require_minimum: bool = True):
    """U, grad U and the eigen-decomposition of the symmetrised beta * Hessian at x (NumPy);
    ValueError when something is not finite or (``require_minimum``) the Hessian is not
    positive definite."""
    u, gradient, hessian = derivatives(x)
    hessian = np.asarray(hessian, dtype=float)
    if not (np.isfinite(float(u)) and np.all(np.isfinite(hessian))):
        raise ValueError(f"laplace: U or its Hessian is not finite at x = {np.asarray(x)} (U = {float(u)})")
    precision = float(target.beta) * 0.5 * (hessian + hessian.T)
    eigenvalues, eigenvectors = np.linalg.eigh(precision)
    if require_minimum and eigenvalues[0] <= 0:
        raise ValueError(
            "laplace: the Hessian of U is not positive definite at x (not a strict minimum): "
            f"smallest eigenvalue of beta * Hessian {eigenvalues[0]:.3g} along {np.round(eigenvectors[:, 0], 3)}"
        )
    return u, gradient, eigenvalues, eigenvectors


@eqx.filter_jit
def _derivatives(target, x):
    return (*jax.value_and_grad(target.energy)(x), jax.hessian(target.energy)(x))


@eqx.filter_jit
def _energy(target, x):
    return target.energy(x)


def laplace(target, x: Float[Array, " dim"], newton_steps: int = 0) -> Laplace:
    r"""Laplace's approximation of the target :math:`p \propto e^{-\beta U}` of an `fepy.Energy` at ``x``.

    The Hessian :math:`\nabla^2 U(x)` is taken by ``jax.hessian`` (exact, forward over
    reverse), so the covariance of a Gaussian target is exact at its mean. ``x`` should be
    a minimum of U (e.g. the best particle of `fepy.Descent`); the approximation is the
    second-order expansion of U there. With ``newton_steps`` > 0, ``x`` is first refined by up
    to that many Newton steps :math:`x \leftarrow x - (\nabla^2 U)^{-1}\nabla U` (each halved
    until U does not increase, at most 30 times; stopping once the Newton decrement
    :math:`\beta\nabla U^\top(\nabla^2 U)^{-1}\nabla U < 10^{-12}`), which converge
    quadratically from the end point of a first-order optimizer. Where the Hessian is not
    positive definite (a saddle or a ridge left by a short optimisation), a Newton step uses
    the absolute values of its eigenvalues, floored at 1e-8 of the largest (saddle-free
    Newton, Dauphin et al. 2014), so it descends; the end point must be a strict minimum.

    Raises:
        ValueError: ``x`` does not have shape ``(target.dim,)``, U or its Hessian is not
            finite, or the Hessian is not positive definite (``x`` is not a strict
            minimum: a saddle, a flat direction or an unconverged optimisation); the
            message gives the smallest eigenvalue and its direction.
    """
    x = as_float_array(x, "x", ndim=1)
    if x.shape != (target.dim,):
        raise ValueError(f"laplace: x must have shape ({target.dim},), got {x.shape}")
    if isinstance(newton_steps, bool) or not isinstance(newton_steps, int) or newton_steps < 0:
        raise ValueError(f"laplace: newton_steps must be an integer >= 0, got {newton_steps!r}")
    derivatives = lambda x: _derivatives(target, x)  # noqa: E731 (compiled once per kind of target)
    energy = lambda x: _energy(target, x)  # noqa: E731
    u, gradient, eigenvalues, eigenvectors = _precision(target, derivatives, x, require_minimum=newton_steps == 0)
    for _ in range(newton_steps):
        scale = np.maximum(np.abs(eigenvalues), 1e-8 * np.max(np.abs(eigenvalues)))  # saddle-free Newton
        g = np.asarray(gradient)
        step = (eigenvectors / scale) @ (eigenvectors.T @ g)
        if eigenvalues[0] < 0:  # and along the most negative curvature, where the quadratic model drops by 1/beta
            v = eigenvectors[:, 0]
            step = step + np.copysign(np.sqrt(2.0 / -eigenvalues[0]), g @ v) * v
        step = jnp.asarray(step, x.dtype)
        if eigenvalues[0] > 0 and float(target.beta) ** 2 * float(gradient @ step) < 1e-12:  # Newton decrement
            break
        for _ in range(31):
            trial = x - float(target.beta) * step
            if float(energy(trial)) <= float(u):
                break
            step = 0.5 * step
        else:
            break  # no decrease along the Newton direction: x is a minimum to round-off
        x = trial
        u, gradient, eigenvalues, eigenvectors = _precision(target, derivatives, x, require_minimum=False)
    if eigenvalues[0] <= 0:
        _precision(target, derivatives, x)  # raises with the direction
    covariance = (eigenvectors / eigenvalues) @ eigenvectors.T
    log_z = -float(target.beta) * u + 0.5 * x.size * np.log(2 * np.pi) - 0.5 * np.sum(np.log(eigenvalues))
    dtype = x.dtype
    return Laplace(x, jnp.asarray(covariance, dtype), jnp.asarray(log_z, dtype), gradient)
