"""Public SRWM kernel entry points: ``srwm_pallas`` and ``srwm_supported``.

Legend: B batch, T time, H heads, d head dim; N = B*H sequences.
The math and the reference every kernel is tested against: ``srwm_jax/reference.py``.
"""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from .. import _autodiff, _common
from .bwd import srwm_backward
from .fwd import srwm_forward

SUPPORTED_HEAD_DIMS = (16, 32, 64)


@dataclasses.dataclass(frozen=True)
class SRWMBlockConfig:
    """Tuning knobs of the SRWM kernels (the defaults come from ``default_srwm_config``).

    block_seqs: sequences per program (BB), a power of two; B*H is padded to a multiple.
    num_warps / num_warps_bwd: Triton warps per program for forward / backward.
    chunk: the forward saves W every ``chunk`` steps; the backward reloads it there.
    """
    block_seqs: int
    num_warps: int
    num_warps_bwd: int
    chunk: int


def default_srwm_config(d: int, num_sequences: int, masked: bool = False) -> SRWMBlockConfig:
    """Defaults set from H100 (sm_90a) compiles, not timings (kernels/README.md, occupancy).

    A program's state is BB * (3d^2 + 4d) floats (twice that in the backward, which
    also carries dL/dW). d=16: one sequence on one warp, forward and backward (the backward
    then fits 16 blocks per SM at 128 registers, one wave at the few-shot shape); larger
    heads get more warps rather than more sequences, ~50 state floats per thread. All are
    free of register spills, masked kernels included (tests/test_h100_compile.py).
    chunk = 4d keeps the checkpoints (3d^2+4d floats per chunk) below the per-step
    residuals (5d+8 floats per step).
    masked: the call has a reset mask. d=64's masked backward then runs on 8 warps, not 16:
    at 16 warps ptxas caps it at 128 registers and, from jax 0.12's Triton, it spills; at 8 it
    fits in 255 registers, still one block per SM (kernels/README.md, occupancy per version).
    On jax >= 0.12 (``jax_compat.pallas_triton_needs_wider_srwm_blocks``) d=64's masked
    *forward* runs on 16 warps, not 8: that Triton gives it 179 registers on 8 warps (1 block,
    8 warps per SM; 128 registers and 2 blocks, 16 warps on jax 0.10/0.11 with input softmax),
    and 123-128 on 16 warps, 16 warps per SM again, with no spill.
    """
    from srwm_jax import jax_compat  # noqa: PLC0415 (as in _reference: kernels/ stay relative)
    wider = jax_compat.pallas_triton_needs_wider_srwm_blocks()
    if d <= 16:
        block_seqs, warps, warps_bwd = 1, 1, 1
    elif d <= 32:
        block_seqs, warps, warps_bwd = 1, 2, 4
    else:
        block_seqs, warps, warps_bwd = 1, (16 if wider and masked else 8), (8 if masked else 16)
    # Keep at least one program per ~2 sequences when N is tiny (RL: B*H can be small).
    block_seqs = max(1, min(block_seqs, 1 << max(0, (num_sequences - 1).bit_length() - 1)))
    return SRWMBlockConfig(block_seqs=block_seqs, num_warps=warps, num_warps_bwd=warps_bwd,
                           chunk=4 * d)


def srwm_supported(x, W, *unused_args, **unused_kwargs) -> tuple[bool, str]:
    """Whether the Pallas SRWM kernels handle these inputs: (ok, one-line reason).

    Checks shapes and dtypes only; which backend runs is the caller's choice
    (``srwm_pallas(..., interpret=True)`` runs anywhere).
    """
    d = x.shape[-1]
    if d not in SUPPORTED_HEAD_DIMS:
        return False, f"head dim d={d} is not one of {SUPPORTED_HEAD_DIMS}"
    dy = W.y.shape[-1]
    if dy != d:
        return False, f"W.y output dim {dy} differs from head dim {d} (kernel needs square W.y)"
    if W.b.shape[-1] != 4:
        return False, f"W.b has {W.b.shape[-1]} outputs, expected 4"
    if jnp.dtype(x.dtype) not in _common.SUPPORTED_INPUT_DTYPES:
        return False, f"x dtype {jnp.dtype(x.dtype).name} is not float32 or bfloat16"
    for name in ("y", "q", "k", "b"):
        dtype = jnp.dtype(getattr(W, name).dtype)
        if dtype != jnp.float32:
            return False, f"W.{name} dtype {dtype.name} is not float32 (state is float32)"
    if x.shape[1] < 1:
        return False, "sequence length T must be at least 1"
    return True, "ok"


# --- differentiable op on kernel-layout arrays ----------------------------------------------

def _launch_args(config: SRWMBlockConfig, interpret: bool, backward: bool = False):
    return dict(block_seqs=config.block_seqs,
                num_warps=config.num_warps_bwd if backward else config.num_warps,
                interpret=interpret, compiler_params=_common.triton_params)


def _reference(args, aux, *, input_softmax):
    """The scan reference (srwm_jax) on kernel-layout arrays, for derivatives past the first."""
    # The scan path's own module (not the public op, which imports the kernels): no cycle.
    from srwm_jax.ops.srwm_scan import SRWMWeights, srwm_scan  # noqa: PLC0415
    x, w0, fresh = args

    def to_ref(w):  # (wy, wq, wk, wb [N, 4, d]) -> SRWMWeights of [N, 1, d, *]
        wy, wq, wk, wb = w
        return SRWMWeights(wy[:, None], wq[:, None], wk[:, None], jnp.swapaxes(wb, 1, 2)[:, None])

    reset = None if aux is None else jnp.swapaxes(aux, 0, 1) > 0
    y, W_T = srwm_scan(jnp.swapaxes(x, 0, 1)[:, :, None], to_ref(w0), input_softmax=input_softmax,
                       reset=reset, reset_weights=None if fresh is None else to_ref(fresh))
    return (jnp.swapaxes(y[:, :, 0], 0, 1), W_T.y[:, 0], W_T.q[:, 0], W_T.k[:, 0],
            jnp.swapaxes(W_T.b[:, 0], 1, 2))


@functools.cache
def _srwm_core(input_softmax: bool, config: SRWMBlockConfig, interpret: bool):
    """op(args=(x, W_0, reset weights or None), aux=mask or None) -> (y, wy, wq, wk, wb)."""

    def resets(args, aux):
        return None if aux is None else (aux, *args[2])

    def forward(args, aux):
        # No gradient needed: one chunk spanning all of T, so the only checkpoint is W_T.
        x, w0, _ = args
        y, cy, cq, ck, cb = srwm_forward(
            x, *w0, input_softmax=input_softmax, save_residuals=False, chunk=x.shape[0],
            resets=resets(args, aux), **_launch_args(config, interpret))
        return y, cy[0], cq[0], ck[0], cb[0]

    def forward_with_residuals(args, aux):
        x, w0, _ = args
        chunk = min(config.chunk, x.shape[0])
        y, cy, cq, ck, cb, *vectors = srwm_forward(
            x, *w0, input_softmax=input_softmax, save_residuals=True, chunk=chunk,
            resets=resets(args, aux), **_launch_args(config, interpret))
        return (y, cy[-1], cq[-1], ck[-1], cb[-1]), ((cy, cq, ck, cb), tuple(vectors))

    def backward(args, aux, residuals, cotangents):
        x, w0, _ = args
        checkpoints, vectors = residuals
        dy, *d_final = cotangents
        chunk = min(config.chunk, x.shape[0])
        out = srwm_backward(
            x, dy.astype(x.dtype), checkpoints, tuple(g.astype(jnp.float32) for g in d_final),
            vectors, input_softmax=input_softmax, chunk=chunk, resets=resets(args, aux),
            initial=w0, **_launch_args(config, interpret, backward=True))
        return (out[0], out[1], None if aux is None else out[2])

    return _autodiff.kernel_op(forward, forward_with_residuals, backward,
                               functools.partial(_reference, input_softmax=input_softmax))


def srwm_pallas(x, W, *, input_softmax: bool, reset=None, reset_weights=None,
                interpret: bool = False, config: SRWMBlockConfig | None = None):
    """Fused SRWM (Irie et al. 2022) over a sequence, as Pallas kernels.

    Args:
      x: [B, T, H, d] inputs, float32 or bfloat16 (math in float32).
      W: fast weights W_0 with fields y, q, k [B, H, d, d] and b [B, H, d, 4], float32
        (``srwm_jax.SRWMWeights`` or any NamedTuple with those fields).
      input_softmax: softmax each head's input before the reads.
      reset: optional bool [B, T]; where True, the sequence restarts from ``reset_weights``
        before step t (see ``srwm_jax.srwm``).
      reset_weights: like W; default W.
      interpret: run the same kernels in Pallas interpret mode (any backend).
      config: block sizes; ``default_srwm_config(d, B*H, masked=reset is not None)`` when None.

    Returns:
      y [B, T, H, d] in x's dtype and W_T (same type as W, float32). Differentiable
      w.r.t. x, every field of W and of reset_weights (first order by the backward kernel,
      residuals O(T*d) per head; higher orders through the scan reference's VJP).

    Reference: ``srwm_jax.reference.srwm_reference`` (the plain definition).
    """
    ok, reason = srwm_supported(x, W)
    if not ok:
        raise ValueError(f"srwm_pallas: unsupported configuration: {reason}")
    batch, _, heads, d = x.shape
    n = batch * heads
    if config is None:
        config = default_srwm_config(d, n, masked=reset is not None)
    n_pad = _common.round_up(n, config.block_seqs)

    def to_kernel(w):  # [B, H, d, m] -> [N_pad, d, m]
        return _common.pad_rows(w.astype(jnp.float32).reshape((n,) + w.shape[2:]), 0, n_pad)

    def weights_to_kernel(W):  # W_b transposed: [N_pad, 4, d]
        return (to_kernel(W.y), to_kernel(W.q), to_kernel(W.k), jnp.swapaxes(to_kernel(W.b), 1, 2))

    xs = _common.pad_rows(_common.to_sequence_major(x), 1, n_pad)
    fresh, mask = None, None
    if reset is not None:
        fresh = weights_to_kernel(W if reset_weights is None else reset_weights)
        # One mask row per (batch, head) sequence: [T, N_pad] int32 (Triton loads no bools).
        per_head = jnp.broadcast_to(reset.astype(jnp.int32)[:, :, None],
                                    (batch, reset.shape[1], heads))
        mask = _common.pad_rows(_common.to_sequence_major(per_head[..., None])[..., 0], 1, n_pad)
    op = _srwm_core(bool(input_softmax), config, bool(interpret))
    y, wy, wq, wk, wb = op((xs, weights_to_kernel(W), fresh), mask)

    def from_kernel(w):  # [N_pad, d, m] -> [B, H, d, m]
        return w[:n].reshape((batch, heads) + w.shape[1:])

    y = _common.from_sequence_major(y[:, :n], batch, heads)
    W_T = W._replace(y=from_kernel(wy), q=from_kernel(wq), k=from_kernel(wk),
                     b=from_kernel(jnp.swapaxes(wb, 1, 2)))
    return y, W_T
