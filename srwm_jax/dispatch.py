"""One place that decides which implementation of an operator runs.

`Impl` (a `typing.Literal`, so configs and command lines keep passing plain strings):
  "scan"             the `lax.scan` reference with a memory-efficient custom VJP (any backend)
  "pallas"           the fused Pallas GPU kernel from `kernels/` (error if unsupported)
  "pallas_interpret" the same kernel in Pallas interpret mode (any backend; for tests)
  "chunked"          delta rule only: the chunkwise-parallel (UT / WY) form, any backend
  "auto"             "pallas" on GPU when the kernel supports the configuration; otherwise
                     "scan", except that the delta rule takes "chunked" where the crossover
                     measured by benchmarks/scan_vs_chunked.py says it is faster
                     (`srwm_jax.ops.delta_rule.CHUNKED_CROSSOVER`; none on CPU so far)

Setting the environment variable SRWM_JAX_AUTO_KERNEL=0 makes "auto" always choose "scan".
"""
import logging
import os
from typing import Literal, get_args

import jax

from srwm_jax.own_kernels import KernelsUnavailable, own_kernels

Impl = Literal["auto", "scan", "pallas", "pallas_interpret", "chunked"]
ResolvedImpl = Literal["scan", "pallas", "pallas_interpret", "chunked"]  # what `resolve_impl` returns
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
      "scan", "pallas", "pallas_interpret" or "chunked" ("auto" never returns "chunked" here:
      the delta rule decides between scan and chunked itself).
    Raises:
      ValueError: for an unknown impl, or an explicit "pallas"/"pallas_interpret" the kernel
        does not support for these arguments (the message gives the kernel's reason).
    """
    if impl not in IMPLS:
        raise ValueError(f"{op_name}: unknown impl={impl!r}; choose one of {IMPLS}.")
    match impl:
        case "scan":
            return "scan"
        case "chunked" if op_name == "delta_rule":
            return "chunked"
        case "chunked":
            raise ValueError(f"{op_name}: impl='chunked' exists for the delta rule only; "
                             "use impl='scan' or impl='auto'.")
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
