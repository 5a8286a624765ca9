"""The public delta-rule op: argument checks, then the `lax.scan` path
(`srwm_jax.ops.delta_rule_scan`, the math and its custom VJP), the chunkwise-parallel form
(`srwm_jax.ops.delta_chunked`) or a Pallas kernel (`srwm_jax.kernels`), as `impl` and
`srwm_jax.dispatch` choose.

Legend: B batch, T time, H heads, dk key dim, dv value dim.
"""
from srwm_jax.dispatch import Impl, resolve_impl
from srwm_jax.ops._validate import check_float, check_reset, check_shape
from srwm_jax.ops.delta_chunked import delta_rule_chunked
from srwm_jax.ops.delta_rule_scan import delta_rule_scan, delta_rule_step

__all__ = ["delta_rule", "delta_rule_scan", "delta_rule_step", "auto_prefers_chunked"]


def _validate(q, k, v, beta, S0, reset, reset_state):
    for name, a in (("q", q), ("k", k), ("v", v), ("beta", beta), ("S0", S0)):
        check_float(name, a)
    if q.ndim != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected [B, T, H, dk] (4 dims).")
    B, T, H, dk = q.shape
    if v.ndim != 4:
        raise ValueError(f"v has shape {list(v.shape)}, expected [B, T, H, dv] (4 dims).")
    dv = v.shape[-1]
    legend = "B batch, T time, H heads, dk key dim from q, dv value dim from v"
    check_shape("k", k, (B, T, H, dk), legend)
    check_shape("v", v, (B, T, H, dv), legend)
    check_shape("beta", beta, (B, T, H), legend)
    check_shape("S0", S0, (B, H, dk, dv), legend)
    if T < 1:
        raise ValueError("the sequence must have at least one time step (T >= 1).")
    check_reset(reset, B, T)
    if reset_state is not None:
        if reset is None:
            raise ValueError("reset_state given without reset: pass reset [B, T] bool too.")
        check_float("reset_state", reset_state)
        check_shape("reset_state", reset_state, (B, H, dk, dv), legend)


# Where "auto" takes the chunked form on a backend without the kernel: (min T, min max(dk, dv),
# min B*H), or None. Measured on the 2-core CPU by `python -m benchmarks.scan_vs_chunked
# --crossover` (benchmarks/RESULTS.md, "Scan vs chunked delta rule"): with the hand-derived scan
# backward, chunked (L = 32 or 64) was slower for fwd+bwd at every point of the grid
# (d 16/64/128, B*H 4/32, T 256/1024), so "auto" keeps the scan there.
CHUNKED_CROSSOVER = None


def auto_prefers_chunked(T, dk, dv, n_seq):
    """Whether impl="auto" runs the chunked form when the GPU kernel is not used."""
    if CHUNKED_CROSSOVER is None:
        return False
    min_T, min_d, min_n = CHUNKED_CROSSOVER
    return T >= min_T and max(dk, dv) >= min_d and n_seq >= min_n


def delta_rule(q, k, v, beta, S0, *, reset=None, reset_state=None, impl: Impl = "auto",
               chunk_size: int = 64):
    """Runs the delta rule over a sequence.

    Args:
      q, k: [B, T, H, dk] activated queries and keys.
      v: [B, T, H, dv] values.   beta: [B, T, H] learning rates (after sigmoid).
      S0: [B, H, dk, dv] initial fast weights (zeros for a fresh sequence).
      reset: optional bool [B, T]. Where reset[b, t] is True, the state of sequence b is
        replaced by reset_state[b] *before* step t. None (default) = no resets.
      reset_state: [B, H, dk, dv] state a reset restores; default zeros. Gradients flow to it
        from every reset point.
      impl: "auto" | "scan" | "chunked" | "pallas" | "triton" | "mosaic" | "*_interpret" (see
        srwm_jax.dispatch; "auto" without a kernel picks scan or chunked by
        `auto_prefers_chunked`).
      chunk_size: steps per chunk of impl="chunked" (a positive int; 64 by default).

    Returns:
      y: [B, T, H, dv] in v's dtype, and S_T [B, H, dk, dv] float32.

    Raises:
      ValueError: on a bad shape or dtype of any argument, a chunk_size that is not a positive
        int, or an unknown impl.

    Reference: `srwm_jax.reference.delta_rule_reference` (plain step-by-step definition).

    Example:
      >>> q = k = jnp.full((1, 3, 2, 4), 0.25); v = jnp.ones((1, 3, 2, 8))
      >>> y, S = delta_rule(q, k, v, jnp.ones((1, 3, 2)), jnp.zeros((1, 2, 4, 8)))
    """
    _validate(q, k, v, beta, S0, reset, reset_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: pass a positive int (steps per chunk).")
    which = resolve_impl("delta_rule", impl, "delta_rule_supported", q, k, v, beta, S0, reset)
    if which == "scan" and impl == "auto" and auto_prefers_chunked(
            q.shape[1], q.shape[-1], v.shape[-1], q.shape[0] * q.shape[2]):
        which = "chunked"
    if which == "chunked":
        return delta_rule_chunked(q, k, v, beta, S0, reset=reset, reset_state=reset_state,
                                  chunk_size=chunk_size)
    if which == "scan":
        return delta_rule_scan(q, k, v, beta, S0, reset=reset, reset_state=reset_state)
    # Imported here, not at the top: `import srwm_jax` stays free of Pallas.
    from srwm_jax.kernels import delta_rule_mosaic, delta_rule_pallas  # noqa: PLC0415
    if which.startswith("mosaic"):
        return delta_rule_mosaic(q, k, v, beta, S0, reset=reset, reset_state=reset_state,
                                 interpret=which == "mosaic_interpret")
    return delta_rule_pallas(q, k, v, beta, S0, reset=reset, reset_state=reset_state,
                             interpret=which == "triton_interpret")
