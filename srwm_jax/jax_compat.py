"""The jax API differences between the supported versions, in one place.

Supported: jax 0.10.2 (Python 3.11), 0.11.x (the GPU nodes: 0.11.2 with the CUDA 13 plugin)
and 0.12.x (the newest). Code elsewhere calls these helpers instead of checking versions.

- Deviceless GPU lowering: from jax 0.11, Pallas and ``lower(lowering_platforms=("cuda",))``
  read the GPU model from the abstract mesh in context (``jax.sharding.use_abstract_mesh``) and
  fail without one ("No supported GPU devices found, please specify an abstract GPU device
  using AbstractDevice"); 0.10 assumes compute capability 9.0 and needs none.
- ``jax.sharding.SingleDeviceSharding`` is deprecated in 0.12: a ``NamedSharding`` on a
  one-device mesh places an array on one device on every version.
- Pallas's Triton lowering in jax 0.12 gives the SRWM d=64 masked forward more registers than
  0.10/0.11 did; its block config widens there (:func:`pallas_triton_needs_wider_srwm_blocks`).
- jax's CUDA PJRT plugin is ``jax_plugins.xla_cuda12`` (jax-cuda12-plugin) or
  ``jax_plugins.xla_cuda13`` (jax-cuda13-plugin, the GPU nodes' CUDA 13 build).
"""
from __future__ import annotations

import contextlib
import importlib.util

import jax

#: (major, minor, patch) of the installed jax, e.g. (0, 11, 2).
JAX_VERSION = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())

#: The jax versions this project is tested with (pyproject.toml, README, .ci/versions.sh).
SUPPORTED_JAX = ("0.10.2", "0.11.x", "0.12.x")

CUDA_PLUGIN_MODULES = ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")

# The device kind an H100 SXM reports (``jax.devices()[0].device_kind``).
H100_DEVICE_KIND = "NVIDIA H100 80GB HBM3"


def needs_abstract_gpu_mesh() -> bool:
    """Whether lowering for CUDA without a GPU needs an abstract mesh in context (jax >= 0.11)."""
    return JAX_VERSION[:2] >= (0, 11)


def abstract_gpu_mesh(device_kind: str = H100_DEVICE_KIND, axis: str = "x"):
    """A one-device ``jax.sharding.AbstractMesh`` of an absent CUDA GPU (no plugin needed).

    Enough to *lower* for CUDA (``lower(lowering_platforms=("cuda",))``); compiling needs a
    described device (``tests/h100_gate.py`` uses the CUDA plugin's topology mesh instead).
    """
    from jax.sharding import AbstractDevice, AbstractMesh  # noqa: PLC0415 (absent before 0.11)
    device = AbstractDevice(device_kind=device_kind, num_cores=None, platform="cuda")
    return AbstractMesh((1,), (axis,), abstract_device=device)


def gpu_lowering_context(abstract_mesh=None):
    """Context for deviceless CUDA lowering: ``use_abstract_mesh`` on jax >= 0.11, else nothing.

    abstract_mesh: the mesh to enter (e.g. ``topology_mesh.abstract_mesh``); default
    :func:`abstract_gpu_mesh`.
    """
    if not needs_abstract_gpu_mesh():
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(abstract_mesh or abstract_gpu_mesh())


def pallas_triton_needs_wider_srwm_blocks() -> bool:
    """Whether SRWM d=64's masked forward needs 16 warps per block, not 8 (jax >= 0.12).

    Measured (deviceless H100 compiles, ``tests/h100_gate.py``; kernels/README.md, occupancy
    per jax version): jax 0.12.1's Triton gives that kernel 179 registers on 8 warps (128 on jax
    0.10.2 and 0.11.2 with input softmax), so 1 block and 8 warps per SM instead of 2 and 16;
    on 16 warps it takes 123-128 registers, 16 warps per SM, no spill.
    ``kernels.srwm.default_srwm_config`` uses this; on 0.10/0.11 the config stays at 8 warps
    (16 would halve the resident blocks of its input-softmax variant there).
    """
    return JAX_VERSION[:2] >= (0, 12)


def single_device_sharding(device):
    """A sharding that places a whole array on ``device`` (replaces SingleDeviceSharding)."""
    import numpy as np  # noqa: PLC0415
    mesh = jax.sharding.Mesh(np.array([device]), ("_one",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def installed_cuda_plugins() -> list[str]:
    """Importable CUDA PJRT plugin modules, of :data:`CUDA_PLUGIN_MODULES`."""
    found = []
    for name in CUDA_PLUGIN_MODULES:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except ModuleNotFoundError:
            pass
    return found
