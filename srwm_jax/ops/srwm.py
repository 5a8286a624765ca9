"""The public SRWM op: argument checks, then the `lax.scan` path (`srwm_jax.ops.srwm_scan`, the
math and its custom VJP) or a Pallas kernel (`srwm_jax.kernels`), as `impl` and
`srwm_jax.dispatch` choose.

Legend: B batch, T time, H heads, d head dim, dy output dim of W_y (normally d).
"""
from srwm_jax.dispatch import Impl, resolve_impl
from srwm_jax.ops._validate import check_float, check_reset, check_shape
from srwm_jax.ops.srwm_scan import SRWMWeights, srwm_scan, srwm_step

__all__ = ["SRWMWeights", "srwm", "srwm_scan", "srwm_step"]


def _validate(x, W, reset, reset_weights):
    check_float("x", x)
    if x.ndim != 4:
        raise ValueError(f"x has shape {list(x.shape)}, expected [B, T, H, d] (4 dims).")
    if not isinstance(W, tuple) or len(W) != 4:
        raise ValueError("W must be srwm_jax.SRWMWeights(y=..., q=..., k=..., b=...).")
    W = SRWMWeights(*W)
    B, T, H, d = x.shape
    legend = "B batch, H heads, d head dim of x"
    check_shape("W.y", W.y, (B, H, d, None), legend)
    check_shape("W.q", W.q, (B, H, d, d), legend)
    check_shape("W.k", W.k, (B, H, d, d), legend)
    check_shape("W.b", W.b, (B, H, d, 4), legend)
    for name, w in zip(W._fields, W):
        check_float(f"W.{name}", w)
    if T < 1:
        raise ValueError("x must have at least one time step (T >= 1).")
    check_reset(reset, B, T)
    if reset_weights is not None:
        if reset is None:
            raise ValueError("reset_weights given without reset: pass reset [B, T] bool too.")
        if not isinstance(reset_weights, tuple) or len(reset_weights) != 4:
            raise ValueError("reset_weights must be "
                             "srwm_jax.SRWMWeights(y=..., q=..., k=..., b=...).")
        reset_weights = SRWMWeights(*reset_weights)
        for name, w, w0 in zip(W._fields, reset_weights, W):
            check_shape(f"reset_weights.{name}", w, w0.shape, "the shape of W." + name)
            check_float(f"reset_weights.{name}", w)
    return W, reset_weights


def srwm(x, W, *, input_softmax=False, reset=None, reset_weights=None, impl: Impl = "auto"):
    """Runs a self-referential weight matrix over a sequence.

    Args:
      x: [B, T, H, d] inputs (float32 or bf16; computation in float32).
      W: SRWMWeights with y [B, H, d, dy], q, k [B, H, d, d], b [B, H, d, 4] (W_0).
      input_softmax: apply a softmax over each head's d inputs first (RL agents use it).
      reset: optional bool [B, T]. Where reset[b, t] is True, the weights of sequence b are
        replaced by reset_weights[b] *before* step t (episode boundaries packed in one call).
        None (default) = no resets (the same computation as before resets existed).
      reset_weights: SRWMWeights shaped like W, the weights a reset restores (a layer passes
        its slow weights); default W itself. Gradients flow to it from every reset point.
      impl: "auto" | "scan" | "pallas" | "triton" | "mosaic" | "*_interpret"
        (srwm_jax.dispatch).

    Returns:
      y: [B, T, H, dy] in x's dtype, and W_T (float32 SRWMWeights) to carry into the next call.

    Raises:
      ValueError: on a bad shape or dtype of x, W, reset or reset_weights, or an unknown impl.

    Reference: `srwm_jax.reference.srwm_reference` (plain step-by-step definition).

    Example:
      >>> B, T, H, d = 2, 5, 4, 16
      >>> W = SRWMWeights(*(jnp.zeros((B, H, d, n)) for n in (d, d, d, 4)))
      >>> y, W_T = srwm(jnp.ones((B, T, H, d)), W)
    """
    W, reset_weights = _validate(x, W, reset, reset_weights)
    which = resolve_impl("srwm", impl, "srwm_supported", x, W, reset)
    if which == "scan":
        return srwm_scan(x, W, input_softmax=input_softmax, reset=reset,
                         reset_weights=reset_weights)
    # Imported here, not at the top: `import srwm_jax` stays free of Pallas.
    from srwm_jax.kernels import srwm_mosaic, srwm_pallas  # noqa: PLC0415
    if which.startswith("mosaic"):
        return srwm_mosaic(x, W, input_softmax=bool(input_softmax), reset=reset,
                           reset_weights=reset_weights, interpret=which == "mosaic_interpret")
    return srwm_pallas(x, W, input_softmax=bool(input_softmax), reset=reset,
                       reset_weights=reset_weights, interpret=which == "triton_interpret")
