"""Checkpoint files: the family, the solver state, the key and the trace so far.

A checkpoint directory holds ``checkpoint.eqx`` (the array leaves, via
``equinox.tree_serialise_leaves``), ``checkpoint.npz`` (the per-step trace) and
``checkpoint.json`` (the step reached). Files are written to temporaries and renamed,
so an interrupted write never leaves a half checkpoint.
"""

import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import numpyro.distributions as dist

_LEAVES, _TRACE, _META = "checkpoint.eqx", "checkpoint.npz", "checkpoint.json"


def _replace(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _is_distribution(x) -> bool:
    return isinstance(x, dist.Distribution)


def _without_distributions(tree):
    """``tree`` with its numpyro distributions (e.g. ``Particles.base``) split off.

    numpyro orders a distribution's pytree leaves by iterating over a ``set`` of field
    names, so the order changes from one Python process to the next (string hash
    randomisation) and serialised leaves could not be read back in another process (or,
    with equal shapes, would come back swapped: ``loc`` as ``scale``). Distributions are
    configuration from the model, not state, so they are not saved; a resumed run takes
    them from the family and state it was built with.
    """
    return eqx.partition(tree, lambda x: not _is_distribution(x), is_leaf=_is_distribution)


def save_checkpoint(directory, step: int, family, state, key, trace: dict[str, np.ndarray]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree, _ = _without_distributions((family, state, jax.random.key_data(key)))
    _replace(directory / _LEAVES, lambda f: eqx.tree_serialise_leaves(f, tree))
    _replace(directory / _TRACE, lambda f: np.savez(f, **trace))
    _replace(directory / _META, lambda f: f.write(json.dumps({"step": step}).encode()))


def has_checkpoint(directory) -> bool:
    return (Path(directory) / _META).is_file()


def load_checkpoint(directory, family_like, state_like, key_like):
    """Read a checkpoint into pytrees shaped like the given ones; returns (step, family, state, key, trace)."""
    directory = Path(directory)
    if not has_checkpoint(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}")
    step = json.loads((directory / _META).read_text())["step"]
    like, distributions = _without_distributions(
        (family_like, state_like, jax.random.key_data(key_like))
    )
    saved = eqx.tree_deserialise_leaves(directory / _LEAVES, like)
    family, state, key_data = eqx.combine(saved, distributions, is_leaf=_is_distribution)
    with np.load(directory / _TRACE) as npz:
        trace = {name: npz[name] for name in npz.files}
    return step, family, state, jax.random.wrap_key_data(key_data), trace
