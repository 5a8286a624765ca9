"""SRWM backward as a Pallas Mosaic GPU kernel (Hopper): one sequence per warpgroup.

Same stacked, transposed [R, d] tile G as the forward (``mosaic_fwd.py``), and the
memory-efficient scheme of the Triton backward: the forward saved G every ``chunk`` steps and,
per step, the logits o and the reads u; this kernel walks time blocks last to first, reloads G
from the checkpoint at each chunk's last block and undoes each step by subtraction
(G_{t-1} = G_t - (rate u) (x) k), carrying dL/dG in registers. Per step (a, q, k, r = q - k as
[R, d] column tiles; rows sums give row vectors, column sums [d] column vectors):

    p     = rowsum(dG k)             dk_upd = colsum(dG (rate u))
    drate = p u      du = p rate     dr     = colsum(G du)       ds = colsum(sel drate)
    do    = [dy | softmax'(q) dr | softmax'(k) (dk_upd - dr) | ds s (1 - s) | 0]   (via SMEM)
    da    = colsum(G do)             dx = softmax'(a) da  (or da)
    dG    = dG + du (x) r + do (x) a

Column vectors that come out of a tile whose rows are all equal (the softmax VJPs) are taken
from its first row exactly: colsum(X * e0) with the one-hot row vector e0.

Kernel layout: x [N, Tp, d] (input dtype), dy [N, Tp, d] (input dtype), o and u [N, Tp, R]
float32, checkpoints [N, NC * R, d] float32, dL/dG_T [N, R, d] float32, sel [R, d], e0 [R]
float32. Outputs: dx [N, Tp, d] float32, dL/dG_0 [N, R, d] float32.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from ..delta_rule.mosaic_fwd import call_kernel
from .mosaic_fwd import load_cols, load_tile, sigmoid, softmax_cols


def _load_row(ref):
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(1)).astype(jnp.float32)


def _load_col(ref):
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(0)).astype(jnp.float32)


def _softmax_vjp_tile(p, dp):
    """p (dp - <p, dp>) on [R, d] column tiles (softmax over columns)."""
    return p * (dp - jnp.sum(p * dp, axis=1)[:, None])


def _bwd_kernel(x_ref, dy_ref, o_ref, u_ref, ckpt_ref, dgt_ref, sel_ref, e0_ref,
                dx_ref, dg0_ref,
                x_s, dy_s, o_s, u_s, do_s, dx_s, g_s, sel_s, e0_s, barriers,
                *, d, seq_len, time_block, num_blocks, chunk_blocks, input_softmax):
    rows = g_s.shape[0]
    seq = lax.axis_index("seq")

    def stage(src, dst, slot):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[slot])
        plgpu.barrier_wait(barriers.at[slot])

    stage(sel_ref, sel_s, 0)
    stage(e0_ref, e0_s, 1)
    stage(dgt_ref.at[seq], g_s, 2)
    dg = load_tile(g_s)

    def first_row(t):
        """[R, d] tile whose rows are equal -> its row as a [d] column vector (exact)."""
        return jnp.sum(t * _load_row(e0_s)[:, None], axis=0)

    def time_block_body(i, carry):
        g, dg = carry
        b = num_blocks - 1 - i
        times = pl.ds(b * time_block, time_block)
        stage(x_ref.at[seq, times], x_s, 0)
        stage(dy_ref.at[seq, times], dy_s, 1)
        stage(o_ref.at[seq, times], o_s, 2)
        stage(u_ref.at[seq, times], u_s, 0)
        last_of_chunk = ((b + 1) % chunk_blocks == 0) | (b == num_blocks - 1)

        def reload(g):
            stage(ckpt_ref.at[seq, pl.ds((b // chunk_blocks) * rows, rows)], g_s, 1)
            return load_tile(g_s)

        g = lax.cond(last_of_chunk, reload, lambda g: g, g)

        def step(jj, carry):
            g, dg = carry
            j = time_block - 1 - jj
            valid = ((b * time_block + j) < seq_len).astype(jnp.float32)
            a = load_cols(x_s.at[j], rows)
            if input_softmax:
                a = softmax_cols(a)
            q = softmax_cols(load_cols(o_s.at[j, pl.ds(d, d)], rows))
            k = softmax_cols(load_cols(o_s.at[j, pl.ds(2 * d, d)], rows))
            s = sigmoid(_load_col(o_s.at[j, pl.ds(3 * d, d)]))
            sel = load_tile(sel_s)
            rate = jnp.sum(sel * s[None, :], axis=1)
            u = _load_row(u_s.at[j])
            ru = rate * u * valid
            g = g - ru[:, None] * k                       # G_{t-1}
            p = jnp.sum(dg * k, axis=1) * valid
            dk_upd = jnp.sum(dg * ru[:, None], axis=0)
            drate = p * u
            du = p * rate
            dr = jnp.sum(g * du[:, None], axis=0)
            ds = jnp.sum(sel * drate[:, None], axis=0)
            do_j = do_s.at[j]
            do_j[pl.ds(0, d)] = _load_col(dy_s.at[j])
            cols = lambda v: jnp.broadcast_to(v[None, :], q.shape)  # noqa: E731
            do_j[pl.ds(d, d)] = first_row(_softmax_vjp_tile(q, cols(dr)))
            do_j[pl.ds(2 * d, d)] = first_row(_softmax_vjp_tile(k, cols(dk_upd - dr)))
            do_j[pl.ds(3 * d, d)] = ds * s * (1.0 - s)
            do = _load_row(do_j)
            da = jnp.sum(g * do[:, None], axis=0)
            if input_softmax:
                da = first_row(_softmax_vjp_tile(a, cols(da)))
            dx_s[j] = da
            dg = dg + du[:, None] * (q - k) + do[:, None] * a
            return g, dg

        g, dg = lax.fori_loop(0, time_block, step, (g, dg))
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(dx_s, dx_ref.at[seq, times])
        plgpu.wait_smem_to_gmem(0)
        return g, dg

    _, dg = lax.fori_loop(0, num_blocks, time_block_body, (jnp.zeros_like(dg), dg))
    g_s[...] = dg
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(g_s, dg0_ref.at[seq])
    plgpu.wait_smem_to_gmem(0)


def srwm_backward_mosaic(x, dy, o, u, ckpt, dg_final, sel, e0, *, seq_len, input_softmax,
                         chunk, time_block, interpret):
    """Launches the backward kernel (module docstring); returns (dx [N, Tp, d] float32,
    dL/dG_0 [N, R, d] float32)."""
    n, t_pad, d = x.shape
    rows = sel.shape[0]
    num_blocks = t_pad // time_block
    f32 = jnp.float32
    out_shape = (jax.ShapeDtypeStruct((n, t_pad, d), f32), jax.ShapeDtypeStruct((n, rows, d), f32))
    scratch = (plgpu.SMEM((time_block, d), x.dtype), plgpu.SMEM((time_block, d), dy.dtype),
               plgpu.SMEM((time_block, rows), f32), plgpu.SMEM((time_block, rows), f32),
               plgpu.SMEM((time_block, rows), f32), plgpu.SMEM((time_block, d), f32),
               plgpu.SMEM((rows, d), f32), plgpu.SMEM((rows, d), f32), plgpu.SMEM((rows,), f32),
               plgpu.Barrier(num_barriers=3))
    kernel = functools.partial(
        _bwd_kernel, d=d, seq_len=seq_len, time_block=time_block, num_blocks=num_blocks,
        chunk_blocks=chunk // time_block, input_softmax=input_softmax)
    return call_kernel(kernel, out_shape=out_shape, scratch=scratch, grid=(n,),
                       grid_names=("seq",), interpret=interpret, name="srwm_bwd_mosaic",
                       )(x, dy, o, u, ckpt, dg_final, sel, e0)
