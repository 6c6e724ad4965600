"""Sharding of the batch axis (particles, walkers, trajectories) over local devices."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(devices=None) -> NamedSharding:
    """Shard the leading axis over a 1-D mesh of ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    return NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))


def shard_batch(arrays, sharding: NamedSharding):
    """Place each array of the pytree ``arrays`` with its leading axis split over the mesh."""
    n_devices = sharding.mesh.size
    for a in jax.tree.leaves(arrays):
        if a.shape[0] % n_devices:
            raise ValueError(
                f"batch axis of length {a.shape[0]} does not split over {n_devices} devices"
            )
    return jax.device_put(arrays, sharding)
