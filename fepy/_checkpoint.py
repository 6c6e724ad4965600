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

_LEAVES, _TRACE, _META = "checkpoint.eqx", "checkpoint.npz", "checkpoint.json"


def _replace(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def save_checkpoint(directory, step: int, family, state, key, trace: dict[str, np.ndarray]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree = (family, state, jax.random.key_data(key))
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
    like = (family_like, state_like, jax.random.key_data(key_like))
    family, state, key_data = eqx.tree_deserialise_leaves(directory / _LEAVES, like)
    with np.load(directory / _TRACE) as npz:
        trace = {name: npz[name] for name in npz.files}
    return step, family, state, jax.random.wrap_key_data(key_data), trace
