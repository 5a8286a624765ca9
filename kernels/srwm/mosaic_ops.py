"""Public entry points of the Mosaic GPU SRWM kernels: ``srwm_mosaic`` and
``srwm_mosaic_supported``.

Legend: B batch, T time, H heads, d head dim; N = B*H sequences; R = 4d stacked rows.
Same operator and tolerances as ``srwm_pallas`` (the Triton kernels); the layout and the
warpgroup mapping (one sequence per warpgroup, the four weights as one stacked transposed
[R, d] tile) are in ``mosaic_fwd.py`` and kernels/README.md ("Mosaic GPU").
"""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from .. import _autodiff, _common
from .mosaic_fwd import SEL_COLS, stacked_rows

MOSAIC_HEAD_DIMS = (16, 32, 64)
MAX_RESET_HEAD_DIM = 32  # masked calls: d = 64's backward exceeds SMEM (srwm_mosaic_supported)


@dataclasses.dataclass(frozen=True)
class MosaicSRWMConfig:
    """time_block: steps staged in SMEM per TMA round (>= 4: the reset mask's TMA box is
    time_block float32 values, at least 16 bytes); chunk: checkpoint spacing (a multiple of
    time_block); in_smem: the backward keeps G and dL/dG in SMEM instead of registers."""
    time_block: int
    chunk: int
    in_smem: bool = False


def default_mosaic_srwm_config(d: int) -> MosaicSRWMConfig:
    """TB = 8; chunk = 4d rounded up to TB (as the Triton kernels' 4d: the checkpoints,
    R*d floats per chunk, stay below the per-step residuals, 2R floats per step).
    in_smem from d = 32: in registers G and dL/dG (2 x 32 floats per thread) plus the step's
    temporaries spilled 8 bytes on sm_90a (jax 0.12.1); at d = 16 (8 floats each) they fit."""
    time_block = 8
    return MosaicSRWMConfig(time_block=time_block, chunk=_common.round_up(4 * d, time_block),
                            in_smem=d >= 32)


def srwm_mosaic_supported(x, W, reset=None, *unused_args, **unused_kwargs) -> tuple[bool, str]:
    """(ok, reason): whether the Mosaic GPU SRWM kernels handle these inputs (shapes, dtypes,
    ``reset`` mask or None, and this jax); the Triton kernels' own limits apply too."""
    from ..delta_rule.mosaic_ops import mosaic_available  # noqa: PLC0415
    from .ops import srwm_supported  # noqa: PLC0415
    ok, reason = srwm_supported(x, W)
    if not ok:
        return ok, reason
    ok, reason = mosaic_available()
    if not ok:
        return ok, reason
    d = x.shape[-1]
    if d not in MOSAIC_HEAD_DIMS:
        return False, f"head dim d={d} is not one of {MOSAIC_HEAD_DIMS}"
    if reset is not None and d > MAX_RESET_HEAD_DIM:
        return False, (f"reset masks at d={d}: the masked Mosaic GPU backward needs 321560 bytes "
                       "of shared memory > 232448 (G, dL/dG, the reset weights and their "
                       "gradient are one [4d, d] float32 tile each; kernels/README.md)")
    return True, "ok"


def _selector(d: int):
    """sel [R, 8]: sel[j, m] = 1 where row j of G belongs to weight m (rows of W_y^T -> 0,
    W_q^T -> 1, W_k^T -> 2, W_b^T -> 3; padding rows and columns 4.. are 0)."""
    sel = np.zeros((stacked_rows(d), SEL_COLS), np.float32)
    for j in range(3 * d + 4):
        sel[j, min(j // d, 3)] = 1.0
    return jnp.asarray(sel)


def to_stacked(wy, wq, wk, wb):
    """[N, d, d] x 3 and W_b [N, d, 4] -> G [N, R, d] float32 (transposed, stacked, 0-padded)."""
    d = wy.shape[-1]
    g = jnp.concatenate([jnp.swapaxes(w.astype(jnp.float32), 1, 2) for w in (wy, wq, wk, wb)], 1)
    return _common.pad_rows(g, 1, stacked_rows(d))


def from_stacked(g, d):
    """G [N, R, d] -> (W_y, W_q, W_k [N, d, d], W_b [N, d, 4])."""
    t = lambda a: jnp.swapaxes(a, 1, 2)  # noqa: E731
    return t(g[:, :d]), t(g[:, d:2 * d]), t(g[:, 2 * d:3 * d]), t(g[:, 3 * d:3 * d + 4])


def _reference(args, aux, *, input_softmax, seq_len):
    """The scan reference on kernel-layout arrays (second-order derivatives, reset VJPs)."""
    from srwm_jax.ops.srwm_scan import SRWMWeights, srwm_scan  # noqa: PLC0415
    x, g0, fresh = args
    d = x.shape[-1]

    def to_ref(g):
        return SRWMWeights(*(w[:, None] for w in from_stacked(g, d)))

    reset = None if aux is None else aux[:, :seq_len] > 0
    y, W_T = srwm_scan(x[:, :seq_len, None], to_ref(g0), input_softmax=input_softmax,
                       reset=reset, reset_weights=None if fresh is None else to_ref(fresh))
    y = _common.pad_rows(y[:, :, 0], 1, x.shape[1])
    return y, to_stacked(*(w[:, 0] for w in W_T))


@functools.cache
def _srwm_core(input_softmax: bool, seq_len: int, config: MosaicSRWMConfig, interpret: bool):
    from .mosaic_bwd import srwm_backward_mosaic  # noqa: PLC0415
    from .mosaic_fwd import srwm_forward_mosaic  # noqa: PLC0415

    def launch(args, aux, save_residuals, chunk):
        x, g0, fresh = args
        sel = _selector(x.shape[-1])
        resets = None if aux is None else (aux, fresh)
        return srwm_forward_mosaic(
            x, g0, sel, seq_len=seq_len, input_softmax=input_softmax,
            save_residuals=save_residuals, chunk=chunk, time_block=config.time_block,
            interpret=interpret, resets=resets)

    def outputs(x, o, ckpt):
        return o[..., :x.shape[-1]].astype(x.dtype), ckpt[:, -stacked_rows(x.shape[-1]):]

    def forward(args, aux):
        o, ckpt = launch(args, aux, False, args[0].shape[1])
        return outputs(args[0], o, ckpt)

    def forward_with_residuals(args, aux):
        o, ckpt, u = launch(args, aux, True, min(config.chunk, args[0].shape[1]))
        return outputs(args[0], o, ckpt), (o, u, ckpt)

    def backward(args, aux, residuals, cotangents):
        x, g0, fresh = args
        o, u, ckpt = residuals
        dy, dg_final = cotangents
        sel = _selector(x.shape[-1])
        out = srwm_backward_mosaic(
            x, dy.astype(x.dtype), o, u, ckpt, dg_final.astype(jnp.float32), sel,
            seq_len=seq_len, input_softmax=input_softmax,
            chunk=min(config.chunk, x.shape[1]), time_block=config.time_block,
            interpret=interpret, in_smem=config.in_smem,
            resets=None if aux is None else (aux, fresh, g0))
        return out[0].astype(x.dtype), out[1], None if aux is None else out[2]

    return _autodiff.kernel_op(
        forward, forward_with_residuals, backward,
        functools.partial(_reference, input_softmax=input_softmax, seq_len=seq_len))


def srwm_mosaic(x, W, *, input_softmax: bool, reset=None, reset_weights=None,
                interpret: bool = False, config: MosaicSRWMConfig | None = None):
    """Fused SRWM (Irie et al. 2022) as Pallas Mosaic GPU kernels (Hopper, sm_90a).

    Args:
      x: [B, T, H, d] inputs, float32 or bfloat16 (math in float32); d in (16, 32, 64).
      W: fast weights W_0 with fields y, q, k [B, H, d, d] and b [B, H, d, 4], float32.
      input_softmax: softmax each head's input before the reads.
      reset: optional bool [B, T]; where True the sequence restarts from ``reset_weights``
        (default W) before step t.
      interpret: run in Mosaic GPU's CPU interpreter (``plgpu.InterpretGPUParams``).
      config: ``default_mosaic_srwm_config(d)`` when None.

    Returns:
      y [B, T, H, d] in x's dtype and W_T (same type as W, float32). Differentiable w.r.t.
      x, W and reset_weights: first order by the Mosaic backward kernel (with resets, it
      rebuilds the weights before a reset from the chunk's start), higher orders through
      the scan reference.

    Raises:
      ValueError: configurations ``srwm_mosaic_supported`` rejects.
    Reference: ``srwm_jax.reference.srwm_reference``.
    """
    ok, reason = srwm_mosaic_supported(x, W, reset)
    if not ok:
        raise ValueError(f"srwm_mosaic: unsupported configuration: {reason}")
    batch, seq_len, heads, d = x.shape
    n = batch * heads
    if config is None:
        config = default_mosaic_srwm_config(d)
    t_pad = _common.round_up(seq_len, config.time_block)

    def stacked(W):
        return to_stacked(*(w.reshape((n,) + w.shape[2:]) for w in (W.y, W.q, W.k, W.b)))

    def seq_major(a):  # [B, T, H, ...] -> [N, Tp, ...]
        a = jnp.swapaxes(_common.to_sequence_major(a), 0, 1)
        return _common.pad_rows(a, 1, t_pad)

    fresh = mask = None
    if reset is not None:
        fresh = stacked(W if reset_weights is None else reset_weights)
        per_head = jnp.broadcast_to(reset.astype(jnp.float32)[:, :, None],
                                    (batch, seq_len, heads))
        mask = seq_major(per_head[..., None])[..., 0]
    op = _srwm_core(bool(input_softmax), seq_len, config, bool(interpret))
    y, g_T = op((seq_major(x), stacked(W), fresh), mask)
    y = _common.from_sequence_major(jnp.swapaxes(y[:, :seq_len], 0, 1), batch, heads)
    wy, wq, wk, wb = (w.reshape((batch, heads) + w.shape[1:]) for w in from_stacked(g_T, d))
    return y, W._replace(y=wy, q=wq, k=wk, b=wb)
