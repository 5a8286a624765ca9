"""Public entry points of the Mosaic GPU delta-rule kernels: ``delta_rule_mosaic`` and
``delta_rule_mosaic_supported``.

Legend: B batch, T time, H heads, dk key dim, dv value dim; N = B*H sequences.
Same operator and tolerances as ``delta_rule_pallas`` (the Triton kernels); the layout and
the warpgroup mapping are in ``mosaic_fwd.py`` and kernels/README.md ("Mosaic GPU").
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from .. import _autodiff, _common
from .mosaic_fwd import SEQS

# Register budget of the state tiles: dk tiles of [64, BV] floats over 128 threads hold
# dk*BV/2 floats per thread; the backward holds S and dL/dS (twice that).
_STATE_FLOATS_FWD = 128
_STATE_FLOATS_BWD = 128
_SMEM_BUDGET = 110 * 1024  # bytes of SMEM per CTA: leaves room for 2 CTAs per SM
MIN_BLOCK_V = 8           # WGMMA tiles have columns in multiples of 8


@dataclasses.dataclass(frozen=True)
class MosaicDeltaConfig:
    """block_v / block_v_bwd: value columns per CTA (multiples of 8 dividing dv);
    time_block: steps staged in SMEM per TMA round; chunk: checkpoint spacing (a multiple of
    time_block); grad_in_smem: the backward keeps dL/dS in SMEM instead of registers."""
    block_v: int
    block_v_bwd: int
    time_block: int
    chunk: int
    grad_in_smem: bool = False


def mosaic_available() -> tuple[bool, str]:
    """Whether this jax has Pallas Mosaic GPU with ``plgpu.kernel`` (and, for interpret mode,
    ``InterpretGPUParams``)."""
    try:
        from jax.experimental.pallas import mosaic_gpu as plgpu  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - every supported jax has the module
        return False, f"jax {jax.__version__} has no Pallas Mosaic GPU ({e})"
    for name in ("kernel", "InterpretGPUParams", "load"):
        if not hasattr(plgpu, name):
            return False, (f"jax {jax.__version__}'s Pallas Mosaic GPU lacks plgpu.{name} "
                           "(needs jax >= 0.11)")
    return True, "ok"


def default_mosaic_delta_config(dk: int, dv: int, bytes_in: int = 4) -> MosaicDeltaConfig:
    block_v = min(dv, _STATE_FLOATS_FWD * 2 // dk)
    block_v_bwd = min(dv, _STATE_FLOATS_BWD // dk)
    # dk >= 32: dL/dS moves to SMEM, so the backward's registers hold S only (as the forward).
    grad_in_smem = block_v_bwd < MIN_BLOCK_V
    if grad_in_smem:
        block_v_bwd = block_v
    # SMEM: the state staging tile [dk, 64, BV] f32, plus per staged step: forward q, k rows,
    # v, y tiles, the f32 insert, beta; backward q, k rows, f32 dq, dk rows, v, dy tiles, f32
    # insert and dv, beta, dbeta.
    fwd_state, bwd_state = (4 * SEQS * dk * bv for bv in (block_v, block_v_bwd))
    bwd_state *= 2 if grad_in_smem else 1
    fwd_step = SEQS * (2 * dk * bytes_in + block_v * (2 * bytes_in + 4) + bytes_in)
    bwd_step = SEQS * (dk * (2 * bytes_in + 8) + block_v_bwd * (2 * bytes_in + 8) + bytes_in + 4)

    def fits(tb):
        return max(fwd_state + tb * fwd_step, bwd_state + tb * bwd_step) <= _SMEM_BUDGET

    time_block = 1
    while time_block < 16 and fits(2 * time_block):
        time_block *= 2
    chunk = max(time_block, _common.round_up(max(64, 2 * max(dk, dv)), time_block))
    return MosaicDeltaConfig(block_v=block_v, block_v_bwd=block_v_bwd, time_block=time_block,
                             chunk=chunk, grad_in_smem=grad_in_smem)


def delta_rule_mosaic_supported(q, k, v, beta, S0, reset=None, *unused_args, **unused_kwargs):
    """(ok, reason): whether the Mosaic GPU kernels handle these inputs (shapes, dtypes,
    ``reset`` mask or None, and this jax); the Triton kernels' own limits apply too."""
    from .ops import delta_rule_supported  # noqa: PLC0415
    ok, reason = delta_rule_supported(q, k, v, beta, S0)
    if not ok:
        return ok, reason
    ok, reason = mosaic_available()
    if not ok:
        return ok, reason
    dk, dv = k.shape[-1], v.shape[-1]
    if dv < MIN_BLOCK_V:
        return False, f"dv={dv} < {MIN_BLOCK_V} (WGMMA register tiles need 8-column multiples)"
    if reset is not None:
        return False, ("reset masks: the masked Mosaic GPU forward runs in interpret mode, but "
                       "its sm_90a compile did not finish Mosaic's layout inference "
                       "(kernels/README.md)")
    if _STATE_FLOATS_FWD * 2 // dk < MIN_BLOCK_V:
        return False, (f"dk={dk} > {_STATE_FLOATS_FWD * 2 // MIN_BLOCK_V}: the state (dk [64, 8] "
                       "register tiles, dk*4 floats per thread) would not fit in registers")
    return True, "ok"


def _to_kernel(a, t_pad, n_pad, keys_minor):
    """[B, T, H, n] (or [B, T, H]) -> [Tp, Np, n], or [Tp, n, Np] when keys_minor."""
    a = _common.pad_rows(_common.pad_rows(_common.to_sequence_major(a), 1, n_pad), 0, t_pad)
    return jnp.swapaxes(a, 1, 2) if keys_minor else a


def _reference(args, aux):
    """The scan reference on kernel-layout arrays (second-order derivatives, reset VJPs)."""
    from srwm_jax.ops.delta_rule_scan import delta_rule_scan  # noqa: PLC0415
    qT, kT, v, beta, s0, fresh = args
    seq = lambda a: jnp.swapaxes(a, 0, 1)[:, :, None]  # noqa: E731  [T, N, ...] -> [N, T, 1, ...]
    state = lambda s: jnp.swapaxes(s, 0, 1)[:, None]  # noqa: E731  [dk, N, dv] -> [N, 1, dk, dv]
    reset = None if aux is None else jnp.swapaxes(aux, 0, 1) > 0
    y, s_final = delta_rule_scan(seq(jnp.swapaxes(qT, 1, 2)), seq(jnp.swapaxes(kT, 1, 2)),
                                 seq(v), seq(beta), state(s0), reset=reset,
                                 reset_state=None if fresh is None else state(fresh))
    return jnp.swapaxes(y[:, :, 0], 0, 1), jnp.swapaxes(s_final[:, 0], 0, 1)


@functools.cache
def _delta_core(config: MosaicDeltaConfig, interpret: bool):
    from .mosaic_bwd import delta_rule_backward_mosaic  # noqa: PLC0415
    from .mosaic_fwd import delta_rule_forward_mosaic  # noqa: PLC0415

    def launch(args, aux, save_residuals, chunk):
        resets = None if aux is None else (aux, args[5])
        return delta_rule_forward_mosaic(*args[:5], save_residuals=save_residuals, chunk=chunk,
                                         time_block=config.time_block, block_v=config.block_v,
                                         interpret=interpret, resets=resets)

    def forward(args, aux):
        y, ckpt = launch(args, aux, False, args[0].shape[0])
        return y, ckpt[-args[0].shape[1]:]

    def forward_with_residuals(args, aux):
        y, ckpt, inserts = launch(args, aux, True, min(config.chunk, args[0].shape[0]))
        return (y, ckpt[-args[0].shape[1]:]), (ckpt, inserts)

    def backward(args, aux, residuals, cotangents):
        if aux is not None:  # resets: no Mosaic backward yet (kernels/README.md)
            return jax.vjp(lambda a: _reference(a, aux), args)[1](cotangents)[0]
        qT, kT, v, beta, s0, _ = args
        ckpt, inserts = residuals
        dy, d_final = cotangents
        dq, dk, dv, dbeta, ds0 = delta_rule_backward_mosaic(
            qT, kT, v, beta, dy, ckpt, d_final.astype(jnp.float32), inserts,
            chunk=min(config.chunk, qT.shape[0]), time_block=config.time_block,
            block_v=config.block_v_bwd, interpret=interpret, grad_in_smem=config.grad_in_smem)
        return (dq.astype(qT.dtype), dk.astype(kT.dtype), dv.astype(v.dtype),
                dbeta.astype(beta.dtype), ds0, None)

    return _autodiff.kernel_op(forward, forward_with_residuals, backward, _reference)


def delta_rule_mosaic(q, k, v, beta, S0, *, reset=None, reset_state=None,
                      interpret: bool = False, config: MosaicDeltaConfig | None = None):
    """Fused delta rule (DeltaNet) as Pallas Mosaic GPU kernels (Hopper, sm_90a).

    S_t = S_{t-1} + outer(k_t, beta_t (v_t - k_t S_{t-1})),  y_t = q_t S_t.

    Args:
      q, k: [B, T, H, dk]; v: [B, T, H, dv]; beta: [B, T, H] (float32 or bfloat16; math
        in float32). S0: [B, H, dk, dv] float32.
      reset: optional bool [B, T]; where True the sequence restarts from ``reset_state``
        (default zeros) before step t.
      interpret: run in Mosaic GPU's CPU interpreter (``plgpu.InterpretGPUParams``).
      config: ``default_mosaic_delta_config(dk, dv)`` when None.

    Returns:
      y [B, T, H, dv] in v's dtype and S_T [B, H, dk, dv] float32. Differentiable w.r.t.
      all inputs: first order by the Mosaic backward kernel without resets, by the scan
      reference's VJP with resets; higher orders through the scan reference.

    Raises:
      ValueError: configurations ``delta_rule_mosaic_supported`` rejects.
    Reference: ``srwm_jax.reference.delta_rule_reference``.
    """
    ok, reason = delta_rule_mosaic_supported(q, k, v, beta, S0)
    if not ok:
        raise ValueError(f"delta_rule_mosaic: unsupported configuration: {reason}")
    batch, seq_len, heads, dk = q.shape
    dv = v.shape[-1]
    n = batch * heads
    if config is None:
        config = default_mosaic_delta_config(dk, dv, jnp.dtype(q.dtype).itemsize)
    n_pad = _common.round_up(n, SEQS)
    t_pad = _common.round_up(seq_len, config.time_block)

    def state_to_kernel(S):
        s = _common.pad_rows(S.astype(jnp.float32).reshape(n, dk, dv), 0, n_pad)
        return jnp.swapaxes(s, 0, 1)

    fresh = mask = None
    if reset is not None:
        fresh = state_to_kernel(jnp.zeros_like(S0) if reset_state is None else reset_state)
        per_head = jnp.broadcast_to(reset.astype(jnp.float32)[:, :, None],
                                    (batch, seq_len, heads))
        mask = _to_kernel(per_head[..., None], t_pad, n_pad, False)[..., 0]
    y, s_final = _delta_core(config, bool(interpret))(
        (_to_kernel(q, t_pad, n_pad, True), _to_kernel(k, t_pad, n_pad, True),
         _to_kernel(v, t_pad, n_pad, False),
         _to_kernel(beta[..., None], t_pad, n_pad, False)[..., 0],
         state_to_kernel(S0), fresh), mask)
    y = _common.from_sequence_major(y[:seq_len, :n], batch, heads)
    return y, jnp.swapaxes(s_final, 0, 1)[:n].reshape(batch, heads, dk, dv)
