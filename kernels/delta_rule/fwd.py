"""Delta-rule forward kernel: one program runs BB sequences x one block of BV value columns.

The columns of S evolve independently (v_old, the insert and the update are all
per column; only k and beta are shared), so the grid is (N / BB, dv / BV) and
each program keeps a [BB, dk, BV] slice of S in registers for all T steps.

Kernel layout (prepared by ``kernels/delta_rule/ops.py``), N = B*H padded to a
multiple of BB:

  q, k   [T, N, dk]   input dtype        v     [T, N, dv]   input dtype
  beta   [T, N]       input dtype        s0    [N, dk, dv]  float32

Outputs: y [T, N, dv] (v's dtype); S at the end of every ``chunk`` steps,
[NC, N, dk, dv] with NC = ceil(T / chunk) (the last is S_T); and, when
``save_residuals``, the inserted rows ``beta * (v - k S_{t-1})`` [T, N, dv],
which let the backward undo each step inside a chunk.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import any_row, chunked_time_loop, outer, vec_mat, where_rows


def _delta_fwd_kernel(q_ref, k_ref, v_ref, beta_ref, s0_ref, *refs,
                      seq_len, chunk, block_seqs, block_v, save_residuals, has_reset):
    if has_reset:
        reset_ref, fresh_ref, *refs = refs
    y_ref, ckpt_ref, *res_refs = refs
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)
    cols = pl.ds(pl.program_id(1) * block_v, block_v)
    state = s0_ref[rows, :, cols]

    def step(t, s):
        if has_reset:
            # The reset state is read only at steps where some sequence of the block resets.
            r = reset_ref[t, rows]
            s = lax.cond(any_row(r), lambda s: where_rows(r > 0, fresh_ref[rows, :, cols], s),
                         lambda s: s, s)
        q = q_ref[t, rows, :].astype(jnp.float32)
        k = k_ref[t, rows, :].astype(jnp.float32)
        v = v_ref[t, rows, cols].astype(jnp.float32)
        beta = beta_ref[t, rows].astype(jnp.float32)
        insert = beta[:, None] * (v - vec_mat(k, s))
        s = s + outer(k, insert)
        y_ref[t, rows, cols] = vec_mat(q, s).astype(y_ref.dtype)
        if save_residuals:
            res_refs[0][t, rows, cols] = insert
        return s

    def save_checkpoint(c, s):
        ckpt_ref[c, rows, :, cols] = s
        return s

    chunked_time_loop(seq_len, chunk, step, state, after_chunk=save_checkpoint)


def delta_rule_forward(q, k, v, beta, s0, *, save_residuals, chunk, block_seqs, block_v,
                       num_warps, interpret, compiler_params, resets=None):
    """Launches the forward kernel on kernel-layout arrays (see module docstring).

    resets: None, or (mask [T, N] int32, fresh [N, dk, dv] float32): where mask[t, n] != 0,
    sequence n restarts from fresh[n] before step t.
    """
    seq_len, n, dk = q.shape
    dv = v.shape[-1]
    num_chunks = -(-seq_len // chunk)
    out_shape = [jax.ShapeDtypeStruct((seq_len, n, dv), v.dtype),
                 jax.ShapeDtypeStruct((num_chunks, n, dk, dv), jnp.float32)]
    if save_residuals:
        out_shape.append(jax.ShapeDtypeStruct((seq_len, n, dv), jnp.float32))
    kernel = functools.partial(
        _delta_fwd_kernel, seq_len=seq_len, chunk=chunk, block_seqs=block_seqs,
        block_v=block_v, save_residuals=save_residuals, has_reset=resets is not None)
    return pl.pallas_call(
        kernel,
        grid=(n // block_seqs, dv // block_v),
        out_shape=tuple(out_shape),
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="delta_rule_fwd_reset" if resets is not None else "delta_rule_fwd",
    )(q, k, v, beta, s0, *(resets or ()))
