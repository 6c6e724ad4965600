"""Input validation shared by the public modules."""

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


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer), so it can be checked in Python."""
    try:
        np.asarray(x)
    except Exception:  # jax tracers refuse conversion
        return False
    return True
