"""Input validation shared by the public modules."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def as_float_array(x, name: str, ndim: int | None = None) -> Array:
    """``x`` as a floating JAX array of rank ``ndim``, with a clear error otherwise."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {x.shape}")
    return x


def to_float_array(x) -> Array:
    """``x`` as a JAX array of the default float dtype (a field converter)."""
    return jnp.asarray(x, dtype=jnp.result_type(float))


def concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or None when it is traced (then it is checked where it is used)."""
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer), so it can be checked in Python."""
    return concrete(x) is not None
