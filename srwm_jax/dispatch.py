"""One place that decides which implementation of an operator runs.

impl values:
  "scan"             the `lax.scan` reference with a memory-efficient custom VJP (any backend)
  "pallas"           the fused Pallas GPU kernel from `kernels/` (error if unsupported)
  "pallas_interpret" the same kernel in Pallas interpret mode (any backend; for tests)
  "auto"             "pallas" on GPU when the kernel supports the configuration, else "scan"

Setting the environment variable SRWM_JAX_AUTO_KERNEL=0 makes "auto" always choose "scan".
"""
import logging
import os

import jax

from srwm_jax.own_kernels import KernelsUnavailable, own_kernels

IMPLS = ("auto", "scan", "pallas", "pallas_interpret")
_log = logging.getLogger("srwm_jax")
_logged = set()


def _log_once(msg):
    if msg not in _logged:
        _logged.add(msg)
        _log.warning(msg)


def resolve_impl(op_name, impl, supported_name, *args):
    """Returns "scan", "pallas" or "pallas_interpret" for operator `op_name`.

    `supported_name` names the function in `kernels` that returns (ok, reason) for `args`.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op_name}: unknown impl={impl!r}; choose one of {IMPLS}.")
    if impl == "scan":
        return "scan"
    if impl == "auto":
        if jax.default_backend() != "gpu" or os.environ.get("SRWM_JAX_AUTO_KERNEL", "1") == "0":
            return "scan"
    try:
        kernels = own_kernels()
    except KernelsUnavailable as e:
        if impl != "auto":
            raise
        ok, reason = False, str(e)
    else:
        ok, reason = getattr(kernels, supported_name)(*args)
    if ok:
        return impl if impl != "auto" else "pallas"
    if impl == "auto":
        _log_once(f"{op_name}: falling back to the scan reference: {reason}")
        return "scan"
    raise ValueError(f"{op_name}: impl={impl!r} does not support this configuration: {reason}. "
                     "Use impl='scan' or impl='auto'.")
