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

Resets (optional): where step t starts from the reset state F, the carried gradient is
added to dF and restarts from zero; S before the reset is rebuilt by adding the saved
inserts forward from the chunk's start (previous checkpoint, or S_0), applying resets on the
way (only at steps where some sequence of the block resets; at most ``chunk`` outer products).

A program owns BV value columns, so dq, dk and dbeta (sums over all dv columns)
are written as per-block partial sums [NV, T, N, .] that the wrapper adds up.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import (any_row, chunked_time_loop, dot_last, mat_vec, outer, vec_mat,
                             where_rows)


def _delta_bwd_kernel(q_ref, k_ref, v_ref, beta_ref, dy_ref, ckpt_ref, g_ref, ins_ref, *refs,
                      seq_len, chunk, block_seqs, block_v, has_reset):
    if has_reset:
        (reset_ref, fresh_ref, s0_ref,
         dq_ref, dk_ref, dv_ref, dbeta_ref, ds0_ref, dfresh_ref) = refs
    else:
        dq_ref, dk_ref, dv_ref, dbeta_ref, ds0_ref = refs
    block = pl.program_id(1)
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)
    cols = pl.ds(block * block_v, block_v)

    def rebuild(t):
        """S before the reset at step t: the chunk's start plus the saved inserts up to t-1
        (the start is loaded by one branch of a cond, the reset state only at resets)."""
        c = t // chunk
        start = lax.cond(c == 0, lambda: s0_ref[rows, :, cols],
                         lambda: ckpt_ref[jnp.maximum(c - 1, 0), rows, :, cols])

        def add_insert(j, s):
            r = reset_ref[j, rows]
            s = lax.cond(any_row(r), lambda s: where_rows(r > 0, fresh_ref[rows, :, cols], s),
                         lambda s: s, s)
            return s + outer(k_ref[j, rows, :].astype(jnp.float32), ins_ref[j, rows, cols])

        return lax.fori_loop(c * chunk, t, add_insert, start)

    def cross_reset(t, s, g):
        """After step t: where it began with a reset, add the carried gradient to dF (kept in
        the output, not in registers), restart it from zero and rebuild S_{t-1}."""
        r = reset_ref[t, rows]

        def at_reset(args):
            s, g = args
            m = (r > 0)[:, None, None]
            dfresh_ref[rows, :, cols] = dfresh_ref[rows, :, cols] + jnp.where(m, g, 0.0)
            if block_seqs == 1:  # the only sequence resets: the old S and G are dead here
                return rebuild(t), jnp.zeros_like(g)
            return jnp.where(m, rebuild(t), s), jnp.where(m, 0.0, g)

        return lax.cond(any_row(r), at_reset, lambda args: args, (s, g))

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
        if has_reset:
            s, g = cross_reset(t, s, g)
        return s, g

    def reload_checkpoint(c, carry):
        return (ckpt_ref[c, rows, :, cols],) + carry[1:]

    grad = g_ref[rows, :, cols]
    if has_reset:  # dF accumulates in its output at reset steps
        dfresh_ref[rows, :, cols] = jnp.zeros_like(grad)
    _, grad = chunked_time_loop(seq_len, chunk, step, (ckpt_ref[0, rows, :, cols], grad),
                                reverse=True, before_chunk=reload_checkpoint)
    ds0_ref[rows, :, cols] = grad


def delta_rule_backward(q, k, v, beta, dy, checkpoints, d_final, inserts, *, chunk,
                        block_seqs, block_v, num_warps, interpret, compiler_params,
                        resets=None, s0=None):
    """Launches the backward kernel. Returns float32 (dq, dk, dv, dbeta, dS0) in kernel layout,
    plus dF (the reset state's gradient) when ``resets`` = (mask, fresh) is given; ``s0`` is
    then S_0, the first chunk's start."""
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
    has_reset = resets is not None
    if has_reset:
        out_shape = out_shape + (jax.ShapeDtypeStruct((n, dk, dv), f32),)
    kernel = functools.partial(_delta_bwd_kernel, seq_len=seq_len, chunk=chunk,
                               block_seqs=block_seqs, block_v=block_v, has_reset=has_reset)
    dq, dk_, dv_, dbeta, ds0, *dfresh = pl.pallas_call(
        kernel,
        grid=(n // block_seqs, num_v_blocks),
        out_shape=out_shape,
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="delta_rule_bwd_reset" if has_reset else "delta_rule_bwd",
    )(q, k, v, beta, dy, checkpoints, d_final, inserts, *((*resets, s0) if has_reset else ()))
    return (dq.sum(0), dk_.sum(0), dv_, dbeta.sum(0), ds0, *dfresh)
