"""One place that decides which implementation of an operator runs.

`Impl` (a `typing.Literal`, so configs and command lines keep passing plain strings):
  "scan"             the `lax.scan` reference with a memory-efficient custom VJP (any backend)
  "pallas"           the fused Pallas GPU kernel from `kernels/`, best backend for the GPU:
                     Mosaic GPU on Hopper (sm_90+) where it supports the configuration, else
                     Triton (error if neither does)
  "pallas_interpret" the Triton kernel in Pallas interpret mode (any backend; for tests)
  "triton", "triton_interpret"  the Triton-backend kernel (any NVIDIA GPU) / its interpreter
  "mosaic", "mosaic_interpret"  the Mosaic GPU kernel (Hopper) / Mosaic GPU's CPU interpreter
                     (jax >= 0.11); explicit backends raise if they cannot run the configuration
  "chunked"          delta rule only: the chunkwise-parallel (UT / WY) form, any backend
  "auto"             "pallas" on GPU when a kernel supports the configuration (each fallback
                     is logged once); otherwise "scan", except that the delta rule takes
                     "chunked" where the crossover measured by benchmarks/scan_vs_chunked.py
                     says it is faster (`srwm_jax.ops.delta_rule.CHUNKED_CROSSOVER`; none on
                     CPU so far)

Setting the environment variable SRWM_JAX_AUTO_KERNEL=0 makes "auto" always choose "scan";
SRWM_JAX_MOSAIC=0 makes "auto" and "pallas" skip Mosaic GPU (Triton on every GPU).
"""
import logging
import os
from typing import Literal, get_args

import jax


Impl = Literal["auto", "scan", "pallas", "pallas_interpret", "triton", "triton_interpret",
               "mosaic", "mosaic_interpret", "chunked"]
# what `resolve_impl` returns
ResolvedImpl = Literal["scan", "triton", "triton_interpret", "mosaic", "mosaic_interpret",
                       "chunked"]
IMPLS: tuple[str, ...] = get_args(Impl)

_log = logging.getLogger("srwm_jax")
_logged = set()


def _log_once(msg):
    if msg not in _logged:
        _logged.add(msg)
        _log.warning(msg)


class KernelsUnavailable(ImportError):
    """srwm_jax's own Pallas kernel package (`srwm_jax.kernels`) is missing or fails to import."""


# What srwm_jax.kernels must offer; a folder without it is someone else's `kernels`.
KERNEL_API = ("srwm_pallas", "srwm_supported", "delta_rule_pallas", "delta_rule_supported")


def own_kernels():
    """The `srwm_jax.kernels` package (imported on first use: `import srwm_jax` stays free of
    Pallas). An installed srwm-jax has it from pyproject's package-dir; in a clone it is the
    repository's top-level kernels/ folder (see srwm_jax/__init__.py). Never a top-level
    `kernels` (Hugging Face's has that name).

    Raises:
      KernelsUnavailable: the package is missing, fails to import, or is not ours.
    """
    try:
        import srwm_jax.kernels as kernels  # noqa: PLC0415
    except ImportError as e:
        if getattr(e, "name", None) == "srwm_jax.kernels":
            raise KernelsUnavailable(
                "srwm_jax's Pallas kernels are missing (no srwm_jax.kernels): reinstall srwm-jax "
                "(pip install srwm-jax, or pip install -e . from a clone)") from e
        raise KernelsUnavailable(f"srwm_jax's Pallas kernels fail to import: {e!r}") from e
    missing = [name for name in KERNEL_API if not hasattr(kernels, name)]
    if missing:
        raise KernelsUnavailable(f"{kernels.__file__} is not srwm_jax's kernels (it lacks "
                                 f"{', '.join(missing)}): reinstall srwm-jax")
    return kernels


def _kernel_support(supported_name, args, impl):
    """(ok, reason) from the kernels' own check, or (False, why) when they cannot be imported."""
    try:
        kernels = own_kernels()
    except KernelsUnavailable as e:
        if impl != "auto":  # an explicit kernel request must not silently run something else
            raise
        return False, str(e)
    return getattr(kernels, supported_name)(*args)


def _gpu_is_hopper() -> bool:
    """Whether the first GPU has compute capability 9.0 or newer (Mosaic GPU's target)."""
    capability = getattr(jax.devices()[0], "compute_capability", "0")
    return float(capability) >= 9.0


def resolve_impl(op_name: str, impl: Impl, supported_name: str, *args) -> ResolvedImpl:
    """Returns the implementation that runs operator `op_name` for `impl`.

    Args:
      op_name: the operator, for messages ("srwm", "delta_rule").
      impl: the requested `Impl`.
      supported_name: the function in `kernels` that returns (ok, reason) for `args`.
      (The Mosaic GPU check is the same name with "_supported" -> "_mosaic_supported".)
    Returns:
      "scan", "triton", "triton_interpret", "mosaic", "mosaic_interpret" or "chunked" ("auto"
      never returns "chunked" here: the delta rule decides between scan and chunked itself);
      "scan" for any impl when an argument is empty (B = 0 or H = 0): nothing to compute, and
      the kernels' grids cannot be empty.
    Raises:
      ValueError: for an unknown impl, or an explicit kernel impl that cannot run these
        arguments (the message gives the kernel's reason).
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
        case "chunked" if op_name == "delta_rule":
            return "chunked"
        case "chunked":
            raise ValueError(f"{op_name}: impl='chunked' exists for the delta rule only; "
                             "use impl='scan' or impl='auto'.")
        case "auto" if (jax.default_backend() != "gpu"
                        or os.environ.get("SRWM_JAX_AUTO_KERNEL", "1") == "0"):
            return "scan"
    mosaic_name = supported_name.replace("_supported", "_mosaic_supported")
    if (impl in ("auto", "pallas") and jax.default_backend() == "gpu"
            and os.environ.get("SRWM_JAX_MOSAIC", "1") != "0" and _gpu_is_hopper()):
        ok, reason = _kernel_support(mosaic_name, args, impl)
        if ok:
            return "mosaic"
        _log_once(f"{op_name}: Mosaic GPU kernel unavailable, trying Triton: {reason}")
    if impl.startswith("mosaic"):
        ok, reason = _kernel_support(mosaic_name, args, impl)
    else:
        ok, reason = _kernel_support(supported_name, args, impl)
    match impl, ok:
        case "auto", True:
            return "triton"
        case "auto", False:
            _log_once(f"{op_name}: falling back to the scan reference: {reason}")
            return "scan"
        case "pallas", True:
            return "triton"
        case "pallas_interpret", True:
            return "triton_interpret"
        case _, True:
            return impl
    raise ValueError(f"{op_name}: impl={impl!r} does not support this configuration: {reason}. "
                     "Use impl='scan' or impl='auto'.")
