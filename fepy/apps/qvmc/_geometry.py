r"""Cusp-safe electron geometry shared by the Hamiltonians and the ansätze.

Coulomb systems are singular where an electron sits on a nucleus or two electrons
coincide. A plain ``jnp.linalg.norm`` there returns 0 with a NaN gradient
(:math:`\partial\sqrt{s}/\partial s = \infty` times a zero displacement), which poisons
a whole batch of walkers. :func:`safe_norm` floors the squared distance instead:

.. math:: r = \sqrt{\max(|d|^2, r_{min}^2)}, \qquad r_{min} = \varepsilon_{dtype}

(about :math:`2\times10^{-16}` bohr in float64, :math:`10^{-7}` bohr in float32). For
:math:`|d| > r_{min}` it is the exact norm with the exact derivatives of every order;
below the floor it is the constant :math:`r_{min}`, so its gradient and Hessian are 0
(finite) and :math:`1/r \le 1/r_{min}` (about :math:`4.5\times10^{15}` per bohr in float64)
stays finite, as does its square. A walker lands inside the floor with probability of
order :math:`r_{min}^3`, i.e. never in practice; the floor exists for the exact
coincidences (an electron initialised on a nucleus, the diagonal of the
electron-electron matrix).

All lengths are in bohr. A configuration ``x`` is the flat vector of the electron
coordinates, shape ``(3 * n_electrons,)``, spin-up electrons first.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._validate import concrete


def min_distance(dtype) -> float:
    """The distance floor :math:`r_{min}` of :func:`safe_norm` for ``dtype``, in bohr."""
    return float(jnp.finfo(dtype).eps)


def safe_norm(
    d: Float[Array, "... 3"], axis: int = -1, keepdims: bool = False
) -> Float[Array, "..."]:
    r"""Cusp-safe Euclidean norm :math:`\sqrt{\max(|d|^2, r_{min}^2)}` along ``axis``.

    Exact (value and all derivatives) for :math:`|d| > r_{min}`; the constant
    :math:`r_{min}` with zero derivatives below it, so never NaN (see the module docstring).
    """
    d = jnp.asarray(d)
    dtype = d.dtype if jnp.issubdtype(d.dtype, jnp.floating) else jnp.result_type(float)
    floor = min_distance(dtype) ** 2
    return jnp.sqrt(jnp.maximum(jnp.sum(d * d, axis=axis, keepdims=keepdims), floor))


def check_molecule(name: str, nuclei, charges, n_up, n_down) -> None:
    """ValueError unless the molecule is well formed: ``n_up``, ``n_down`` integers >= 0 with at
    least one electron; ``charges`` of shape (n_atoms,), finite and > 0; ``nuclei`` of shape
    (n_atoms, 3), finite and at distinct positions. Traced arrays have their shapes checked only."""
    for label, n in (("n_up", n_up), ("n_down", n_down)):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"{name} {label} must be an integer >= 0, got {n!r}")
    if n_up + n_down < 1:
        raise ValueError(f"{name} needs at least one electron")
    if charges.ndim != 1 or charges.shape[0] < 1:
        raise ValueError(f"{name} charges must have shape (n_atoms,) with n_atoms >= 1, got {charges.shape}")
    if nuclei.shape != (charges.shape[0], 3):
        raise ValueError(
            f"{name} nuclei must have shape (n_atoms, 3) = ({charges.shape[0]}, 3) to match the charges, "
            f"got {nuclei.shape}"
        )
    charges, nuclei = concrete(charges), concrete(nuclei)
    if charges is not None and not np.all(np.isfinite(charges) & (charges > 0)):
        raise ValueError(f"{name} charges must be finite and > 0, got {charges}")
    if nuclei is not None:
        if not np.all(np.isfinite(nuclei)):
            raise ValueError(f"{name} nuclei positions must be finite, got {nuclei}")
        gaps = np.linalg.norm(nuclei[:, None, :] - nuclei[None, :, :], axis=-1)[np.triu_indices(len(nuclei), k=1)]
        if np.any(gaps <= min_distance(nuclei.dtype)):
            raise ValueError(f"{name} nuclei must be at distinct positions")


def electron_positions(x: Float[Array, " dim"]) -> Float[Array, "n_el 3"]:
    """The flat configuration ``x`` (``3 * n_el``,) as electron positions (``n_el``, 3)."""
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] % 3 != 0:
        raise ValueError(
            f"an electron configuration is a flat vector of 3 * n_electrons coordinates, "
            f"got shape {x.shape}"
        )
    return x.reshape(-1, 3)


class ElectronGeometry(NamedTuple):
    r"""Distances and displacements of one configuration (bohr).

    ``r_ae[i, A] = |r_i - R_A|``, ``r_ee[i, j] = |r_i - r_j|`` (cusp-safe: the diagonal
    is the floor :math:`r_{min}`, not 0), ``ae[i, A] = r_i - R_A``, ``ee[i, j] = r_i - r_j``.
    """

    r_ae: Float[Array, "n_el n_atoms"]
    r_ee: Float[Array, "n_el n_el"]
    ae: Float[Array, "n_el n_atoms 3"]
    ee: Float[Array, "n_el n_el 3"]


def electron_distances(
    x: Float[Array, " dim"], nuclei: Float[Array, "n_atoms 3"]
) -> ElectronGeometry:
    r"""Electron-nucleus and electron-electron displacements and cusp-safe distances.

    ``x`` is the flat configuration (``3 * n_el``,), ``nuclei`` the nuclear positions
    (``n_atoms``, 3), both in bohr. Returns an :class:`ElectronGeometry`
    ``(r_ae, r_ee, ae, ee)`` (a NamedTuple, so it unpacks). Only the pairs ``i < j`` of
    ``r_ee`` are physical; its diagonal is :math:`r_{min}` with zero gradient.
    """
    r = electron_positions(x)
    ae = r[:, None, :] - jnp.asarray(nuclei)[None, :, :]
    ee = r[:, None, :] - r[None, :, :]
    return ElectronGeometry(r_ae=safe_norm(ae), r_ee=safe_norm(ee), ae=ae, ee=ee)


def pair_sum(values: Float[Array, "n n"]) -> Float[Array, ""]:
    r""":math:`\sum_{i<j} v_{ij}` of a square matrix (the diagonal and lower triangle are masked out).

    Masked with ``jnp.where`` (not a product), so a large diagonal never leaks in.
    """
    n = values.shape[0]
    mask = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)
    return jnp.sum(jnp.where(mask, values, 0.0))
