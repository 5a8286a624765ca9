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

Resets (optional): where step t of a sequence starts from the reset weights F, the
gradient carried past the step is dL/dF's share: it is added to dF and the carried
gradient restarts from zero. The weights before the reset, W_{t-1}, cannot be undone from
F; they are rebuilt by adding the saved updates outer(k_s, b_s u_s) forward from the
chunk's start (the previous checkpoint, or W_0 for the first chunk), applying the resets on
the way. The rebuild runs only at steps where some sequence of the block resets, and adds
at most ``chunk`` outer products each time (no reads, softmaxes or sigmoids).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .._common import (any_row, chunked_time_loop, dot_last, mat_vec, outer,
                             softmax_last, softmax_last_vjp, vec_mat, where_rows)


def _srwm_bwd_kernel(x_ref, dy_ref, cy_ref, cq_ref, ck_ref, cb_ref,
                     gy_ref, gq_ref, gk_ref, gb_ref,
                     q_ref, k_ref, uy_ref, uq_ref, uk_ref, rates_ref, *refs,
                     seq_len, chunk, block_seqs, input_softmax, has_reset):
    if has_reset:
        (reset_ref, fy_ref, fq_ref, fk_ref, fb_ref, iy_ref, iq_ref, ik_ref, ib_ref,
         dx_ref, dwy_ref, dwq_ref, dwk_ref, dwb_ref, dfy_ref, dfq_ref, dfk_ref, dfb_ref) = refs
    else:
        dx_ref, dwy_ref, dwq_ref, dwk_ref, dwb_ref = refs
    rows = pl.ds(pl.program_id(0) * block_seqs, block_seqs)

    def load(y_ref, q_ref_, k_ref_, b_ref, *index):
        return (y_ref[(*index, rows)], q_ref_[(*index, rows)], k_ref_[(*index, rows)],
                tuple(b_ref[(*index, rows, i)] for i in range(4)))

    def store(refs, g):
        gy, gq, gk, gb = g
        refs[0][rows, :, :] = gy
        refs[1][rows, :, :] = gq
        refs[2][rows, :, :] = gk
        for i in range(4):
            refs[3][rows, i, :] = gb[i]

    def accumulate(refs, g):
        store(refs, jax.tree.map(lambda a, b: a + b, load(*refs), g))

    def rebuild(t):
        """W before the reset at step t: the chunk's start plus the saved updates up to t-1.

        Only W, the carried gradient and one step's vectors are live: the chunk's start is
        loaded by one branch of a cond, and the reset weights only at steps that reset."""
        c = t // chunk
        start = lax.cond(c == 0, lambda: load(iy_ref, iq_ref, ik_ref, ib_ref),
                         lambda: load(cy_ref, cq_ref, ck_ref, cb_ref, jnp.maximum(c - 1, 0)))

        def add_update(s, w):
            r = reset_ref[s, rows]
            w = lax.cond(any_row(r),
                         lambda w: where_rows(r > 0, load(fy_ref, fq_ref, fk_ref, fb_ref), w),
                         lambda w: w, w)
            k = k_ref[s, rows, :]
            rates = [rates_ref[s, rows, i] for i in range(4)]
            wy, wq, wk, wb = w
            wy = wy + outer(k, rates[0][:, None] * uy_ref[s, rows, :])
            wq = wq + outer(k, rates[1][:, None] * uq_ref[s, rows, :])
            wk = wk + outer(k, rates[2][:, None] * uk_ref[s, rows, :])
            wb = tuple(wb[i] + k * (rates[3] * rates_ref[s, rows, 4 + i])[:, None]
                       for i in range(4))
            return wy, wq, wk, wb

        return lax.fori_loop(c * chunk, t, add_update, start)

    def cross_reset(t, w, g):
        """After step t: where it began with a reset, add the carried gradient to dF (kept in
        the output, not in registers), restart it from zero and rebuild W_{t-1}."""
        r = reset_ref[t, rows]

        def at_reset(args):
            w, g = args
            m = r > 0
            accumulate((dfy_ref, dfq_ref, dfk_ref, dfb_ref), where_rows(
                m, g, jax.tree.map(jnp.zeros_like, g)))
            if block_seqs == 1:  # the only sequence resets: the old W and G are dead here
                return rebuild(t), jax.tree.map(jnp.zeros_like, g)
            return (where_rows(m, rebuild(t), w),
                    where_rows(m, jax.tree.map(jnp.zeros_like, g), g))

        return lax.cond(any_row(r), at_reset, lambda args: args, (w, g))

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
        w, g = (wy, wq, wk, wb), (gy, gq, gk, gb)
        if has_reset:
            w, g = cross_reset(t, w, g)
        return w, g

    def reload_checkpoint(c, carry):
        return (load_checkpoint(c),) + carry[1:]

    if has_reset:  # dF accumulates in its output at reset steps
        store((dfy_ref, dfq_ref, dfk_ref, dfb_ref), jax.tree.map(jnp.zeros_like, grads))
    _, grads = chunked_time_loop(seq_len, chunk, step, (load_checkpoint(0), grads),
                                 reverse=True, before_chunk=reload_checkpoint)

    store((dwy_ref, dwq_ref, dwk_ref, dwb_ref), grads)


def srwm_backward(x, dy, checkpoints, d_final, residuals, *, input_softmax, chunk,
                  block_seqs, num_warps, interpret, compiler_params, resets=None, initial=None):
    """Launches the backward kernel. Returns (dx [T, N, d], dW_0 as 4 kernel-layout arrays),
    plus dF (the reset weights' gradient, 4 arrays) when ``resets`` = (mask, fy, fq, fk, fb)
    is given; ``initial`` is then W_0 (4 kernel-layout arrays), the first chunk's start."""
    seq_len, n, d = x.shape
    f32 = jnp.float32
    out_shape = (
        jax.ShapeDtypeStruct((seq_len, n, d), x.dtype),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, d, d), f32),
        jax.ShapeDtypeStruct((n, 4, d), f32),
    )
    has_reset = resets is not None
    if has_reset:
        out_shape = out_shape + out_shape[1:]
    kernel = functools.partial(
        _srwm_bwd_kernel, seq_len=seq_len, chunk=chunk, block_seqs=block_seqs,
        input_softmax=input_softmax, has_reset=has_reset)
    dx, *dw = pl.pallas_call(
        kernel,
        grid=(n // block_seqs,),
        out_shape=out_shape,
        compiler_params=compiler_params(num_warps),
        interpret=interpret,
        name="srwm_bwd_reset" if has_reset else "srwm_bwd",
    )(x, dy, *checkpoints, *d_final, *residuals,
      *((*resets, *initial) if has_reset else ()))
    if has_reset:
        return dx, tuple(dw[:4]), tuple(dw[4:])
    return dx, tuple(dw)
