"""Delta-rule backward kernel: reverse time, chunk by chunk, from exact S checkpoints.

Same scheme as the SRWM backward: for chunk c (last to first) reload S at the
chunk's end, walk the chunk backwards undoing each step with the saved insert
(S_{t-1} = S_t - outer(k_t, insert_t)), so float32 subtraction error never
spans more than ``chunk`` steps.

Per step, with G = dL/dS_t (carried), ins = beta (v - v_old), v_old = k S_{t-1}:

    dq   = S_t dy                       G   += outer(q, dy)          (read after write)
    dins = k G                          dk   = G ins + S_{t-1} dv_old
    dv   = beta dins                    dv_old = -beta dins
    dbeta = <dins, v - v_old>           G_{t-1} = G + outer(k, dv_old)

A program owns BV value columns, so dq, dk and dbeta (sums over all dv columns)
are written as per-block partial sums [NV, T, N, .] that the wrapper adds up.
"""
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .._common import chunked_time_loop, dot_last, mat_vec, outer, vec_mat


def _delta_bwd_kernel(q_ref, k_ref, v_ref, beta_ref, dy_ref, ckpt_ref, g_ref, ins_ref,
                      dq_ref, dk_ref, dv_ref, dbeta_ref, ds0_ref,
                      *, seq_len, chunk, block_seqs, block_v):
    block = pl.program_id(1)
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)
    cols = pl.ds(block * block_v, block_v)

    def step(t, carry):
        s, g = carry
        q = q_ref[t, rows, :].astype(jnp.float32)
        k = k_ref[t, rows, :].astype(jnp.float32)
        v = v_ref[t, rows, cols].astype(jnp.float32)
        beta = beta_ref[t, rows].astype(jnp.float32)
        dy = dy_ref[t, rows, cols].astype(jnp.float32)
        insert = ins_ref[t, rows, cols]

        dq = mat_vec(s, dy)                  # read of S_t
        g = g + outer(q, dy)
        s = s - outer(k, insert)             # S_{t-1}
        d_insert = vec_mat(k, g)
        v_delta = v - vec_mat(k, s)          # v - v_old, recomputed (insert / beta fails at beta=0)
        dbeta = dot_last(d_insert, v_delta)
        dv = beta[:, None] * d_insert
        dk = mat_vec(g, insert) - mat_vec(s, dv)
        g = g - outer(k, dv)

        dq_ref[block, t, rows, :] = dq
        dk_ref[block, t, rows, :] = dk
        dbeta_ref[block, t, rows] = dbeta
        dv_ref[t, rows, cols] = dv.astype(dv_ref.dtype)
        return s, g

    def reload_checkpoint(c, carry):
        return ckpt_ref[c, rows, :, cols], carry[1]

    initial = (ckpt_ref[0, rows, :, cols], g_ref[rows, :, cols])
    _, grad = chunked_time_loop(seq_len, chunk, step, initial, reverse=True,
                                before_chunk=reload_checkpoint)
    ds0_ref[rows, :, cols] = grad


def delta_rule_backward(q, k, v, beta, dy, checkpoints, d_final, inserts, *, chunk,
                        block_seqs, block_v, num_warps, interpret, compiler_params):
    """Launches the backward kernel. Returns float32 (dq, dk, dv, dbeta, dS0) in kernel layout."""
    seq_len, n, dk = q.shape
    dv = v.shape[-1]
    num_v_blocks = dv // block_v
    f32 = jnp.float32
    out_shape = (
        jax.ShapeDtypeStruct((num_v_blocks, seq_len, n, dk), f32),
        jax.ShapeDtypeStruct((num_v_blocks, seq_len, n, dk), f32),
        jax.ShapeDtypeStruct((seq_len, n, dv), f32),
        jax.ShapeDtypeStruct((num_v_blocks, seq_len, n), f32),
        jax.ShapeDtypeStruct((n, dk, dv), f32),
    )
    kernel = functools.partial(_delta_bwd_kernel, seq_len=seq_len, chunk=chunk,
                               block_seqs=block_seqs, block_v=block_v)
    dq, dk_, dv_, dbeta, ds0 = pl.pallas_call(
        kernel,
        grid=(n // block_seqs, num_v_blocks),
        out_shape=out_shape,
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="delta_rule_bwd",
    )(q, k, v, beta, dy, checkpoints, d_final, inserts)
    return dq.sum(0), dk_.sum(0), dv_, dbeta.sum(0), ds0
