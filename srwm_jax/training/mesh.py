"""Data parallelism: one mesh axis "data" over a list of devices (jit + NamedSharding).

The batch axis (leading axis of every batch leaf) is split over "data"; parameters and
optimiser state are replicated, and jit inserts the gradient all-reduce.

Several processes (srwm_jax.training.distributed): the mesh spans every process's devices and
each process holds the batch rows of its own devices, `process_rows(B)` of the global batch.
`put_batch` takes the global host batch and keeps those rows; `put_process_batch` takes only
them (a process that samples just its share).
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

    def process_rows(self, batch_size: int) -> slice:
        """Rows of a global batch of `batch_size` that this process's devices hold.

        Raises:
          ValueError: they are not one contiguous block (a mesh whose devices of one process
            are not adjacent) or `batch_size` does not split over the devices."""
        self.check_batch_size(batch_size)
        if jax.process_count() == 1:
            return slice(0, batch_size)
        index = self.batch.addressable_devices_indices_map((batch_size,))
        starts = sorted({i[0].start or 0 for i in index.values()})
        stops = sorted({batch_size if i[0].stop is None else i[0].stop for i in index.values()})
        rows = slice(starts[0], stops[-1])
        per_device = batch_size // self.num_devices
        if (rows.stop - rows.start) != per_device * len(starts):
            raise ValueError(f"this process's devices hold rows {sorted(starts)} (step "
                             f"{per_device}) of the batch, not one contiguous block.")
        return rows

    def put_batch(self, batch):
        """Pytree of host arrays [B, ...] (the global batch, the same in every process) -> the
        same, split over the devices along B (each process puts only its own rows)."""
        if jax.process_count() == 1:
            return jax.device_put(batch, self.batch)
        rows = self.process_rows(len(jax.tree.leaves(batch)[0]))
        return self.put_process_batch(jax.tree.map(lambda a: a[rows], batch))

    def put_process_batch(self, batch):
        """Pytree of host arrays [B / P, ...], this process's rows `process_rows(B)` of a global
        batch of B (P processes with the same device count) -> the global batch [B, ...] split
        over all devices along B. One process: the same as `put_batch`."""
        if jax.process_count() == 1:
            return jax.device_put(batch, self.batch)
        local = len(jax.tree.leaves(batch)[0])
        size = local * self.num_devices // len(self.mesh.local_devices)

        def put(a):
            return jax.make_array_from_process_local_data(self.batch, a, (size, *a.shape[1:]))
        return jax.tree.map(put, batch)

    def pad_batch(self, batch):
        """Pads a host batch along B to a multiple of the device count by repeating its rows
        cyclically (the padding may exceed B, e.g. B = 1 on 3 devices). Returns (padded batch,
        original B); keep the first B rows of the outputs."""
        size = len(jax.tree.leaves(batch)[0])
        pad = (-size) % self.num_devices
        if pad:
            wrap = np.arange(size + pad) % size
            batch = jax.tree.map(lambda a: a[wrap], batch)
        return batch, size

    def put_replicated(self, tree):
        """Pytree -> the same, a full copy on every device."""
        return jax.device_put(tree, self.replicated)


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
