"""One place that decides which implementation of an operator runs.

`Impl` (a `typing.Literal`, so configs and command lines keep passing plain strings):
  "scan"             the `lax.scan` reference with a memory-efficient custom VJP (any backend)
  "pallas"           the fused Pallas GPU kernel from `kernels/` (error if unsupported)
  "pallas_interpret" the same kernel in Pallas interpret mode (any backend; for tests)
  "auto"             "pallas" on GPU when the kernel supports the configuration, else "scan"

Setting the environment variable SRWM_JAX_AUTO_KERNEL=0 makes "auto" always choose "scan".
"""
import logging
import os
from typing import Literal, get_args

import jax

from srwm_jax.own_kernels import KernelsUnavailable, own_kernels

Impl = Literal["auto", "scan", "pallas", "pallas_interpret"]
ResolvedImpl = Literal["scan", "pallas", "pallas_interpret"]  # what `resolve_impl` returns
IMPLS: tuple[str, ...] = get_args(Impl)

_log = logging.getLogger("srwm_jax")
_logged = set()


def _log_once(msg):
    if msg not in _logged:
        _logged.add(msg)
        _log.warning(msg)


def _kernel_support(supported_name, args, impl):
    """(ok, reason) from the kernels' own check, or (False, why) when they cannot be imported."""
    try:
        kernels = own_kernels()
    except KernelsUnavailable as e:
        if impl != "auto":  # an explicit kernel request must not silently run something else
            raise
        return False, str(e)
    return getattr(kernels, supported_name)(*args)


def resolve_impl(op_name: str, impl: Impl, supported_name: str, *args) -> ResolvedImpl:
    """Returns the implementation that runs operator `op_name` for `impl`.

    Args:
      op_name: the operator, for messages ("srwm", "delta_rule").
      impl: the requested `Impl`.
      supported_name: the function in `kernels` that returns (ok, reason) for `args`.
    Returns:
      "scan", "pallas" or "pallas_interpret"; "scan" for any impl when an argument is empty
      (B = 0 or H = 0): nothing to compute, and the kernels' grids cannot be empty.
    Raises:
      ValueError: for an unknown impl, or an explicit "pallas"/"pallas_interpret" the kernel
        does not support for these arguments (the message gives the kernel's reason).
    """
    if impl not in IMPLS:
        raise ValueError(f"{op_name}: unknown impl={impl!r}; choose one of {IMPLS}.")
    if any(getattr(a, "size", 1) == 0 for a in jax.tree.leaves(args)):
        # An empty batch or no heads: nothing to compute, and a kernel's grid cannot be empty.
        # The scan returns the correctly shaped empty outputs (and gradients) for every impl.
        return "scan"
    match impl:
        case "scan":
            return "scan"
        case "auto" if (jax.default_backend() != "gpu"
                        or os.environ.get("SRWM_JAX_AUTO_KERNEL", "1") == "0"):
            return "scan"
    ok, reason = _kernel_support(supported_name, args, impl)
    match impl, ok:
        case "auto", True:
            return "pallas"
        case "auto", False:
            _log_once(f"{op_name}: falling back to the scan reference: {reason}")
            return "scan"
        case _, True:
            return impl
    raise ValueError(f"{op_name}: impl={impl!r} does not support this configuration: {reason}. "
                     "Use impl='scan' or impl='auto'.")
