"""Public delta-rule kernel entry points: ``delta_rule_pallas`` and ``delta_rule_supported``.

Legend: B batch, T time, H heads, dk key dim, dv value dim; N = B*H sequences.
The math and the reference every kernel is tested against: ``srwm_jax/reference.py``.
"""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from .. import _autodiff, _common
from .bwd import delta_rule_backward
from .fwd import delta_rule_forward

MAX_HEAD_DIM = 128


@dataclasses.dataclass(frozen=True)
class DeltaRuleBlockConfig:
    """Tuning knobs of the delta-rule kernels (defaults from ``default_delta_rule_config``).

    block_seqs: sequences per program (BB), a power of two; B*H is padded to a multiple.
    block_v / block_v_bwd: value columns per program (BV), powers of two dividing dv, for
      forward / backward. The backward writes dq, dk and dbeta as dv / block_v_bwd partial
      sums, so block_v_bwd should stay large.
    num_warps / num_warps_bwd: Triton warps per program for forward / backward.
    chunk: the forward saves S every ``chunk`` steps; the backward reloads it there.
    """
    block_seqs: int
    block_v: int
    block_v_bwd: int
    num_warps: int
    num_warps_bwd: int
    chunk: int


def _warps_for(elements: int, per_thread: int = 8) -> int:
    """Warps so that each thread holds at most ~``per_thread`` state floats (1 to 8 warps)."""
    warps = 1
    while warps < 8 and elements > warps * 32 * per_thread:
        warps *= 2
    return warps


def default_delta_rule_config(dk: int, dv: int, num_sequences: int) -> DeltaRuleBlockConfig:
    """Untuned defaults (no GPU was available when they were set; see kernels/README.md).

    Forward: 512-1024 state floats per program ([BB, dk, BV]; BB sequences only while the
    program stays within 512), ~8 per thread (2-4 warps): at ~16 per thread jax 0.12's Triton
    spills (dk=dv=16 and 32), and so does the masked 16x16 backward at BB=4 (kernels/README.md,
    occupancy per version); resident warps per SM stay the same or grow. Backward: the program
    also carries dL/dS, ~8 floats per thread too, and uses BV = min(dv, 32) so that at most 4
    partial sums of dq/dk are written (dv = 128).
    chunk = max(64, 2 max(dk, dv)) keeps the checkpoints (dk*dv floats per chunk) at
    most about the per-step residuals (dv floats per step).
    """
    block_v = min(dv, max(8, 1024 // dk))
    block_v_bwd = min(dv, 32)
    block_seqs = max(1, min(8, 512 // (dk * block_v)))
    block_seqs = min(block_seqs, 1 << max(0, (num_sequences - 1).bit_length()))
    return DeltaRuleBlockConfig(
        block_seqs=block_seqs, block_v=block_v, block_v_bwd=block_v_bwd,
        num_warps=_warps_for(block_seqs * dk * block_v),
        num_warps_bwd=_warps_for(2 * block_seqs * dk * block_v_bwd),
        chunk=max(64, 2 * max(dk, dv)))


def delta_rule_supported(q, k, v, beta, S0, *unused_args, **unused_kwargs) -> tuple[bool, str]:
    """Whether the Pallas delta-rule kernels handle these inputs: (ok, one-line reason).

    Checks shapes and dtypes only; which backend runs is the caller's choice
    (``delta_rule_pallas(..., interpret=True)`` runs anywhere).
    """
    dk, dv = k.shape[-1], v.shape[-1]
    for name, dim in (("dk", dk), ("dv", dv)):
        if not _common.is_power_of_two(dim) or dim > MAX_HEAD_DIM:
            return False, f"{name}={dim} is not a power of two <= {MAX_HEAD_DIM}"
    if q.shape[-1] != dk:
        return False, f"q dim {q.shape[-1]} differs from k dim {dk}"
    for name, a in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if jnp.dtype(a.dtype) not in _common.SUPPORTED_INPUT_DTYPES:
            return False, f"{name} dtype {jnp.dtype(a.dtype).name} is not float32 or bfloat16"
    if jnp.dtype(S0.dtype) != jnp.float32:
        return False, f"S0 dtype {jnp.dtype(S0.dtype).name} is not float32 (state is float32)"
    if q.shape[1] < 1:
        return False, "sequence length T must be at least 1"
    return True, "ok"


def _launch_args(config: DeltaRuleBlockConfig, interpret: bool, backward: bool = False):
    return dict(block_seqs=config.block_seqs,
                block_v=config.block_v_bwd if backward else config.block_v,
                num_warps=config.num_warps_bwd if backward else config.num_warps,
                interpret=interpret, compiler_params=_common.triton_params)


def _reference(args, aux):
    """The scan reference (srwm_jax) on kernel-layout arrays, for derivatives past the first."""
    # The scan path's own module (not the public op, which imports the kernels): no cycle.
    from srwm_jax.ops.delta_rule_scan import delta_rule_scan  # noqa: PLC0415
    q, k, v, beta, s0, fresh = args
    ref = lambda a: jnp.swapaxes(a, 0, 1)[:, :, None]  # noqa: E731  [T, N, ...] -> [N, T, 1, ...]
    reset = None if aux is None else jnp.swapaxes(aux, 0, 1) > 0
    y, S_T = delta_rule_scan(ref(q), ref(k), ref(v), ref(beta), s0[:, None], reset=reset,
                             reset_state=None if fresh is None else fresh[:, None])
    return jnp.swapaxes(y[:, :, 0], 0, 1), S_T[:, 0]


@functools.cache
def _delta_core(config: DeltaRuleBlockConfig, interpret: bool):
    """op(args=(q, k, v, beta, s0, reset state or None), aux=mask or None) -> (y, S_T)."""

    def resets(args, aux):
        return None if aux is None else (aux, args[5])

    def forward(args, aux):
        # No gradient needed: one chunk spanning all of T, so the only checkpoint is S_T.
        y, ckpt = delta_rule_forward(*args[:5], save_residuals=False, chunk=args[0].shape[0],
                                     resets=resets(args, aux), **_launch_args(config, interpret))
        return y, ckpt[0]

    def forward_with_residuals(args, aux):
        chunk = min(config.chunk, args[0].shape[0])
        y, ckpt, inserts = delta_rule_forward(*args[:5], save_residuals=True, chunk=chunk,
                                              resets=resets(args, aux),
                                              **_launch_args(config, interpret))
        return (y, ckpt[-1]), (ckpt, inserts)

    def backward(args, aux, residuals, cotangents):
        q, k, v, beta, s0, _ = args
        ckpt, inserts = residuals
        dy, d_final = cotangents
        chunk = min(config.chunk, q.shape[0])
        dq, dk, dv, dbeta, ds0, *dfresh = delta_rule_backward(
            q, k, v, beta, dy, ckpt, d_final.astype(jnp.float32), inserts, chunk=chunk,
            resets=resets(args, aux), s0=s0, **_launch_args(config, interpret, backward=True))
        return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
                dbeta.astype(beta.dtype), ds0, dfresh[0] if dfresh else None)

    return _autodiff.kernel_op(forward, forward_with_residuals, backward, _reference)


def delta_rule_pallas(q, k, v, beta, S0, *, reset=None, reset_state=None,
                      interpret: bool = False, config: DeltaRuleBlockConfig | None = None):
    """Fused delta rule (DeltaNet) over a sequence, as Pallas kernels.

    S_t = S_{t-1} + outer(k_t, beta_t (v_t - k_t S_{t-1})),  y_t = q_t S_t.

    Args:
      q, k: [B, T, H, dk]; v: [B, T, H, dv]; beta: [B, T, H] (already activated;
        float32 or bfloat16, math in float32).
      S0: [B, H, dk, dv] float32 initial state.
      reset: optional bool [B, T]; where True, the sequence restarts from ``reset_state``
        before step t (see ``srwm_jax.delta_rule``).
      reset_state: [B, H, dk, dv]; default zeros.
      interpret: run the same kernels in Pallas interpret mode (any backend).
      config: block sizes; ``default_delta_rule_config(dk, dv, B*H)`` when None.

    Returns:
      y [B, T, H, dv] in v's dtype and S_T [B, H, dk, dv] float32. Differentiable
      w.r.t. all inputs (first order by the backward kernel, residuals O(T*dv) per head;
      higher orders through the scan reference's VJP).

    Reference: ``srwm_jax.reference.delta_rule_reference`` (the plain definition).
    """
    ok, reason = delta_rule_supported(q, k, v, beta, S0)
    if not ok:
        raise ValueError(f"delta_rule_pallas: unsupported configuration: {reason}")
    batch, _, heads, dk = q.shape
    dv = v.shape[-1]
    n = batch * heads
    if config is None:
        config = default_delta_rule_config(dk, dv, n)
    n_pad = _common.round_up(n, config.block_seqs)

    def seq_major(a):  # [B, T, H, ...] -> [T, N_pad, ...]
        return _common.pad_rows(_common.to_sequence_major(a), 1, n_pad)

    def state_to_kernel(S):
        return _common.pad_rows(S.astype(jnp.float32).reshape(n, dk, dv), 0, n_pad)

    fresh, mask = None, None
    if reset is not None:
        fresh = state_to_kernel(jnp.zeros_like(S0) if reset_state is None else reset_state)
        # One mask row per (batch, head) sequence: [T, N_pad] int32 (Triton loads no bools).
        per_head = jnp.broadcast_to(reset.astype(jnp.int32)[:, :, None],
                                    (batch, reset.shape[1], heads))
        mask = seq_major(per_head[..., None])[..., 0]
    op = _delta_core(config, bool(interpret))
    y, s_final = op((seq_major(q), seq_major(k), seq_major(v), seq_major(beta),
                     state_to_kernel(S0), fresh), mask)
    y = _common.from_sequence_major(y[:, :n], batch, heads)
    return y, s_final[:n].reshape(batch, heads, dk, dv)
