"""SRWM backward kernel: reverse time, chunk by chunk, from exact W checkpoints.

For chunk c (last to first) the program reloads W at the chunk's end from the
forward's checkpoint, then walks the chunk backwards. At step t it first undoes
the step's update with the saved vectors,

    W_{t-1,i} = W_{t,i} - outer(k_t, b_{t,i} * u_{t,i}),

then back-propagates through the step against the rebuilt W_{t-1}. Reloading
an exact checkpoint every ``chunk`` steps bounds the float32 error of the
subtraction to ``chunk`` steps (the original CUDA code undoes all T steps, whose
error reaches ~6e-4 relative at T=4096); it also never revisits a chunk, so
gradients are counted once at any T.

Per step, with G_i = dL/dW_{t,i} (the carried gradient), r = q - k, a the
(softmaxed) input, v_i = b_i u_i the inserted row:

    g_i  = k G_i                 (dL/dv_i)
    db_i = <g_i, u_i>            du_i = b_i g_i
    dq   = sum_i W_{t-1,i} du_i  dk = sum_i G_i v_i - dq
    dz_q = softmax'(q) dq,  dz_k = softmax'(k) dk,  dz_{b,i} = db_i b_i (1 - b_i),  dz_y = dy_t
    da   = sum_i W_{t-1,i} dz_i
    G_{t-1,i} = G_i + outer(r, du_i) + outer(a, dz_i)
    dx_t = softmax'(a) da  (or da without the input softmax)
"""
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .._common import (chunked_time_loop, dot_last, mat_vec, outer, softmax_last,
                             softmax_last_vjp, vec_mat)


def _srwm_bwd_kernel(x_ref, dy_ref, cy_ref, cq_ref, ck_ref, cb_ref,
                     gy_ref, gq_ref, gk_ref, gb_ref,
                     q_ref, k_ref, uy_ref, uq_ref, uk_ref, rates_ref,
                     dx_ref, dwy_ref, dwq_ref, dwk_ref, dwb_ref,
                     *, seq_len, chunk, block_seqs, input_softmax):
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)

    def load_checkpoint(c):
        return (cy_ref[c, rows, :, :], cq_ref[c, rows, :, :], ck_ref[c, rows, :, :],
                tuple(cb_ref[c, rows, i, :] for i in range(4)))

    grads = (gy_ref[rows, :, :], gq_ref[rows, :, :], gk_ref[rows, :, :],
             tuple(gb_ref[rows, i, :] for i in range(4)))

    def step(t, carry):
        (wy, wq, wk, wb), (gy, gq, gk, gb) = carry
        q = q_ref[t, rows, :]
        k = k_ref[t, rows, :]
        u_y, u_q, u_k = uy_ref[t, rows, :], uq_ref[t, rows, :], uk_ref[t, rows, :]
        rates = [rates_ref[t, rows, i] for i in range(4)]       # 4 x [BB]
        u_b = [rates_ref[t, rows, 4 + i] for i in range(4)]     # 4 x [BB]
        v_y = rates[0][:, None] * u_y
        v_q = rates[1][:, None] * u_q
        v_k = rates[2][:, None] * u_k
        v_b = [rates[3] * u_b[i] for i in range(4)]

        # Undo step t: W_{t-1} = W_t - outer(k, v).
        wy = wy - outer(k, v_y)
        wq = wq - outer(k, v_q)
        wk = wk - outer(k, v_k)
        wb = tuple(wb[i] - k * v_b[i][:, None] for i in range(4))

        a = x_ref[t, rows, :].astype(jnp.float32)
        if input_softmax:
            a = softmax_last(a)
        dy = dy_ref[t, rows, :].astype(jnp.float32)
        r = q - k

        # Through the update W_t = W_{t-1} + outer(k, b * (r W_{t-1})).
        g_y, g_q, g_k = vec_mat(k, gy), vec_mat(k, gq), vec_mat(k, gk)
        g_b = [dot_last(k, gb[i]) for i in range(4)]
        d_rate = [dot_last(g_y, u_y), dot_last(g_q, u_q), dot_last(g_k, u_k),
                  sum(g_b[i] * u_b[i] for i in range(4))]
        du_y = rates[0][:, None] * g_y
        du_q = rates[1][:, None] * g_q
        du_k = rates[2][:, None] * g_k
        du_b = [rates[3] * g_b[i] for i in range(4)]
        dr = (mat_vec(wy, du_y) + mat_vec(wq, du_q) + mat_vec(wk, du_k)
              + sum(wb[i] * du_b[i][:, None] for i in range(4)))
        dk = (mat_vec(gy, v_y) + mat_vec(gq, v_q) + mat_vec(gk, v_k)
              + sum(gb[i] * v_b[i][:, None] for i in range(4)) - dr)
        dq = dr

        # Through the reads of W_{t-1}.
        dz_q = softmax_last_vjp(q, dq)
        dz_k = softmax_last_vjp(k, dk)
        dz_b = [d_rate[i] * rates[i] * (1.0 - rates[i]) for i in range(4)]   # 4 x [BB]
        da = (mat_vec(wy, dy) + mat_vec(wq, dz_q) + mat_vec(wk, dz_k)
              + sum(wb[i] * dz_b[i][:, None] for i in range(4)))

        gy = gy + outer(r, du_y) + outer(a, dy)
        gq = gq + outer(r, du_q) + outer(a, dz_q)
        gk = gk + outer(r, du_k) + outer(a, dz_k)
        gb = tuple(gb[i] + r * du_b[i][:, None] + a * dz_b[i][:, None] for i in range(4))

        dx = softmax_last_vjp(a, da) if input_softmax else da
        dx_ref[t, rows, :] = dx.astype(dx_ref.dtype)
        return (wy, wq, wk, wb), (gy, gq, gk, gb)

    def reload_checkpoint(c, carry):
        return load_checkpoint(c), carry[1]

    _, grads = chunked_time_loop(seq_len, chunk, step, (load_checkpoint(0), grads),
                                 reverse=True, before_chunk=reload_checkpoint)
    gy, gq, gk, gb = grads
    dwy_ref[rows, :, :] = gy
    dwq_ref[rows, :, :] = gq
    dwk_ref[rows, :, :] = gk
    for i in range(4):
        dwb_ref[rows, i, :] = gb[i]


def srwm_backward(x, dy, checkpoints, d_final, residuals, *, input_softmax, chunk,
                  block_seqs, num_warps, interpret, compiler_params):
    """Launches the backward kernel. Returns (dx [T, N, d], dW_0 as 4 kernel-layout arrays)."""
    seq_len, n, d = x.shape
    f32 = jnp.float32
    out_shape = (
        jax.ShapeDtypeStruct((seq_len, n, d), x.dtype),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, 4, d), f32),
    )
    kernel = functools.partial(
        _srwm_bwd_kernel, seq_len=seq_len, chunk=chunk, block_seqs=block_seqs,
        input_softmax=input_softmax)
    dx, *dw0 = pl.pallas_call(
        kernel,
        grid=(n // block_seqs,),
        out_shape=out_shape,
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="srwm_bwd",
    )(x, dy, *checkpoints, *d_final, *residuals)
    return dx, tuple(dw0)
