"""SRWM forward kernel: one program runs a block of BB sequences through all T steps.

Kernel layout (prepared by ``kernels/srwm/ops.py``): N = B*H sequences padded to
a multiple of BB, time outermost so a step's inputs for the block are one
contiguous ``[BB, d]`` tile.

  x      [T, N, d]         input dtype (f32 or bf16)
  w_y    [N, d, d]         float32 (w_q, w_k likewise)
  w_b    [N, 4, d]         float32, W_b transposed: row i is column i of W_b, so the
                           four sigmoid rates and the four W_b columns are separate
                           [BB, d] vectors (Triton cannot slice a register tile).

Outputs: y [T, N, d] (input dtype); the fast weights at the end of every chunk
of ``chunk`` steps, ``[NC, N, ...]`` with NC = ceil(T / chunk) (the last one is
W_T); and, when ``save_residuals``, the per-step update vectors the backward
needs to undo each step inside a chunk (optional inputs, with resets: a mask
[T, N] int32 and the reset weights in the layout of w_*; where the mask is set,
the sequence restarts from them before the step):

  q, k             [T, N, d]   the key/query softmaxes (they define the update)
  u_y, u_q, u_k    [T, N, d]   (q - k) W_i, read from W_{t-1}
  rates            [T, N, 8]   b_0..b_3 (sigmoid outputs), then u_b (4 values)
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import (any_row, chunked_time_loop, dot_last, outer, sigmoid,
                             softmax_last, vec_mat, where_rows)


def srwm_step(wy, wq, wk, wb, a):
    """One SRWM step for a block. a: [BB, d] (after the optional input softmax).

    Returns the new state, y_t, and the vectors defining the update.
    """
    y = vec_mat(a, wy)
    q = softmax_last(vec_mat(a, wq))
    k = softmax_last(vec_mat(a, wk))
    rates = [sigmoid(dot_last(a, wb[i])) for i in range(4)]   # 4 x [BB]
    r = q - k
    # q W - k W as (q - k) W: one read instead of two (same value up to rounding).
    u_y, u_q, u_k = vec_mat(r, wy), vec_mat(r, wq), vec_mat(r, wk)
    u_b = [dot_last(r, wb[i]) for i in range(4)]              # 4 x [BB]
    wy = wy + outer(k, rates[0][:, None] * u_y)
    wq = wq + outer(k, rates[1][:, None] * u_q)
    wk = wk + outer(k, rates[2][:, None] * u_k)
    wb = tuple(wb[i] + k * (rates[3] * u_b[i])[:, None] for i in range(4))
    return (wy, wq, wk, wb), y, (q, k, u_y, u_q, u_k, rates, u_b)


def _srwm_fwd_kernel(x_ref, wy_ref, wq_ref, wk_ref, wb_ref, *refs,
                     seq_len, chunk, block_seqs, input_softmax, save_residuals, has_reset):
    if has_reset:
        reset_ref, fy_ref, fq_ref, fk_ref, fb_ref, *refs = refs
    y_ref, cy_ref, cq_ref, ck_ref, cb_ref, *res_refs = refs
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)
    state = (wy_ref[rows, :, :], wq_ref[rows, :, :], wk_ref[rows, :, :],
             tuple(wb_ref[rows, i, :] for i in range(4)))

    def apply_reset(t, state):
        # The reset weights are read only at steps where some sequence of the block resets.
        r = reset_ref[t, rows]

        def reset_some(state):
            fresh = (fy_ref[rows, :, :], fq_ref[rows, :, :], fk_ref[rows, :, :],
                     tuple(fb_ref[rows, i, :] for i in range(4)))
            return where_rows(r > 0, fresh, state)

        return lax.cond(any_row(r), reset_some, lambda s: s, state)

    def step(t, state):
        if has_reset:
            state = apply_reset(t, state)
        a = x_ref[t, rows, :].astype(jnp.float32)
        if input_softmax:
            a = softmax_last(a)
        state, y, (q, k, u_y, u_q, u_k, rates, u_b) = srwm_step(*state, a)
        y_ref[t, rows, :] = y.astype(y_ref.dtype)
        if save_residuals:
            q_ref, k_ref, uy_ref, uq_ref, uk_ref, rates_ref = res_refs
            q_ref[t, rows, :] = q
            k_ref[t, rows, :] = k
            uy_ref[t, rows, :] = u_y
            uq_ref[t, rows, :] = u_q
            uk_ref[t, rows, :] = u_k
            for i in range(4):
                rates_ref[t, rows, i] = rates[i]
                rates_ref[t, rows, 4 + i] = u_b[i]
        return state

    def save_checkpoint(c, state):
        wy, wq, wk, wb = state
        cy_ref[c, rows, :, :] = wy
        cq_ref[c, rows, :, :] = wq
        ck_ref[c, rows, :, :] = wk
        for i in range(4):
            cb_ref[c, rows, i, :] = wb[i]
        return state

    chunked_time_loop(seq_len, chunk, step, state, after_chunk=save_checkpoint)


def srwm_forward(x, wy, wq, wk, wb, *, input_softmax, save_residuals, chunk,
                 block_seqs, num_warps, interpret, compiler_params, resets=None):
    """Launches the forward kernel on kernel-layout arrays (see module docstring).

    resets: None, or (mask [T, N] int32, fy, fq, fk, fb) with the reset weights in the
    layout of wy, wq, wk, wb: where mask[t, n] != 0, sequence n restarts from them before step t.
    """
    seq_len, n, d = x.shape
    num_chunks = -(-seq_len // chunk)
    f32 = jnp.float32
    out_shape = [
        jax.ShapeDtypeStruct((seq_len, n, d), x.dtype),
        jax.ShapeDtypeStruct((num_chunks, n, d, d), f32),
        jax.ShapeDtypeStruct((num_chunks, n, d, d), f32),
        jax.ShapeDtypeStruct((num_chunks, n, d, d), f32),
        jax.ShapeDtypeStruct((num_chunks, n, 4, d), f32),
    ]
    if save_residuals:
        out_shape += [jax.ShapeDtypeStruct((seq_len, n, d), f32)] * 5
        out_shape += [jax.ShapeDtypeStruct((seq_len, n, 8), f32)]
    kernel = functools.partial(
        _srwm_fwd_kernel, seq_len=seq_len, chunk=chunk, block_seqs=block_seqs,
        input_softmax=input_softmax, save_residuals=save_residuals,
        has_reset=resets is not None)
    return pl.pallas_call(
        kernel,
        grid=(n // block_seqs,),
        out_shape=tuple(out_shape),
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="srwm_fwd_reset" if resets is not None else "srwm_fwd",
    )(x, wy, wq, wk, wb, *(resets or ()))
