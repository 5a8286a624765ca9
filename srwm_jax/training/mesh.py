"""Data parallelism: one mesh axis "data" over a list of devices (jit + NamedSharding).

The batch axis (leading axis of every batch leaf) is split over "data"; parameters and
optimiser state are replicated, and jit inserts the gradient all-reduce.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


class DataParallel:
    """Mesh and shardings for data parallelism over `devices` (default: all devices).

    Attributes:
      mesh: `jax.sharding.Mesh` with one axis "data" of len(devices) devices.
      replicated: sharding for parameters / optimiser state (a full copy on every device).
      batch: sharding that splits the leading (batch) axis over the devices.
    """

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        devices = list(devices or jax.devices())
        # Auto axes: shardings stay out of the array types (make_mesh defaults to Explicit axes
        # on new jax), so XLA propagates them and params handed to a single-device jit (the RL
        # actors) carry no mesh.
        self.mesh = jax.make_mesh((len(devices),), ("data",),
                                  axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch = NamedSharding(self.mesh, P("data"))

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def check_batch_size(self, batch_size: int, name: str = "batch_size") -> None:
        """Raises:
          ValueError: `batch_size` does not split evenly over the mesh's devices."""
        if batch_size % self.num_devices:
            raise ValueError(f"{name}={batch_size} is not divisible by the {self.num_devices} "
                             "devices; choose a multiple of the device count.")

    def put_batch(self, batch):
        """Pytree of host arrays [B, ...] -> the same, split over the devices along B."""
        return jax.device_put(batch, self.batch)

    def pad_batch(self, batch):
        """Pads a host batch along B to a multiple of the device count by repeating its first
        rows. Returns (padded batch, original B); keep the first B rows of the outputs."""
        size = len(jax.tree.leaves(batch)[0])
        pad = (-size) % self.num_devices
        if pad:
            batch = jax.tree.map(lambda a: np.concatenate([a, a[:pad]]), batch)
        return batch, size

    def put_replicated(self, tree):
        """Pytree -> the same, a full copy on every device."""
        return jax.device_put(tree, self.replicated)


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
