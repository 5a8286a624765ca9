"""SRWM backward as a Pallas Mosaic GPU kernel (Hopper): one sequence per warpgroup.

Same stacked, transposed [R, d] tile G as the forward (``mosaic_fwd.py``), and the
memory-efficient scheme of the Triton backward: the forward saved G every ``chunk`` steps and,
per step, the logits o and the reads u; this kernel walks time blocks last to first, reloads G
from the checkpoint at each chunk's last block and undoes each step by subtraction
(G_{t-1} = G_t - (rate u) (x) k), carrying dL/dG. Per step (a, q, k, r = q - k are [d]
column vectors, broadcast over rows; row sums of [R, d] tiles give [R] row vectors, column
sums [d] column vectors, across warps through SMEM):

    p     = rowsum(dG k)             dk_upd = colsum(dG (rate u))
    drate = p u      du = p rate     dr     = colsum(G du)       ds = colsum(sel drate)
    do    = [dy | softmax'(q) dr | softmax'(k) (dk_upd - dr) | ds s (1 - s) | 0]   (via SMEM)
    da    = colsum(G do)             dx = softmax'(a) da  (or da)
    dG    = dG + du (x) r + do (x) a

Resets (optional, d <= 32): the step began with G_in = G_{t-1} (1 - m) + F m (F the reset
weights), so dL/dF += dG_in m and the carried gradient is dG_in (1 - m); where m = 1, G_{t-1}
cannot be undone from F and is rebuilt, as in the Triton backward, from the chunk's start
(G_0 or the previous checkpoint) plus the saved updates of the chunk's earlier steps (their
o, u and mask re-staged from GMEM one time block at a time), resets applied on the way.

``in_smem`` (d >= 32): G and dL/dG live in SMEM tiles, loaded where used, so that no more
than about two [R, d] tiles are live in registers (d = 32: 32 floats per thread each).

Kernel layout: x [N, Tp, d] (input dtype), dy [N, Tp, d] (input dtype), o and u [N, Tp, R]
float32, checkpoints [N, NC * R, d] float32, dL/dG_T [N, R, d] float32, sel [R, 8] float32.
Outputs: dx [N, Tp, d] float32, dL/dG_0 [N, R, d] float32.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from ..delta_rule.mosaic_fwd import call_kernel
from .mosaic_fwd import SEL_COLS, load_col, load_row, load_tile, sigmoid, softmax


def _softmax_vjp(p, dp):
    """p (dp - <p, dp>) for a softmax output p (column vectors)."""
    return p * (dp - jnp.sum(p * dp))


def _bwd_kernel(*refs, d, seq_len, time_block, num_blocks, chunk_blocks, input_softmax,
                in_smem, has_reset):
    (x_ref, dy_ref, o_ref, u_ref, ckpt_ref, dgt_ref, sel_ref), refs = refs[:7], refs[7:]
    mask_ref = fresh_ref = g0_ref = df_ref = None
    if has_reset:
        (mask_ref, fresh_ref, g0_ref), refs = refs[:3], refs[3:]
    (dx_ref, dg0_ref), refs = refs[:2], refs[2:]
    if has_reset:
        df_ref, refs = refs[0], refs[1:]
    (x_s, dy_s, o_s, u_s, do_s, dx_s, g_s, dg_s, sel_s), refs = refs[:9], refs[9:]
    if has_reset:
        (m_s, f_s, df_s, ro_s, ru_s, rm_s), refs = refs[:6], refs[6:]
    (barriers,) = refs
    rows = g_s.shape[0]
    seq = lax.axis_index("seq")
    chunk = chunk_blocks * time_block

    def stage(src, dst, slot):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[slot])
        plgpu.barrier_wait(barriers.at[slot])

    stage(sel_ref, sel_s, 0)
    stage(dgt_ref.at[seq], dg_s, 1)
    do_s[...] = jnp.zeros(do_s.shape, jnp.float32)  # rows 3d+8.. of do stay 0
    if has_reset:
        stage(fresh_ref.at[seq], f_s, 2)
        df_s[...] = jnp.zeros(df_s.shape, jnp.float32)

    def rebuild(t):
        """G_{t-1} of a sequence that resets at step t: the chunk's start (W_0 or the previous
        checkpoint) plus the saved updates of steps chunk_start..t-1, resets applied."""
        c = t // chunk

        @pl.when(c == 0)
        def _():
            stage(g0_ref.at[seq], g_s, 1)

        @pl.when(c > 0)
        def _():
            stage(ckpt_ref.at[seq, pl.ds((c - 1) * rows, rows)], g_s, 1)

        def block(bb, g):
            base = c * chunk + bb * time_block

            def run(g):
                stage(o_ref.at[seq, pl.ds(base, time_block)], ro_s, 0)
                stage(u_ref.at[seq, pl.ds(base, time_block)], ru_s, 1)
                stage(mask_ref.at[seq, pl.ds(base, time_block)], rm_s, 2)

                def one(jj, g):
                    before = ((base + jj) < t).astype(jnp.float32)
                    m = rm_s[jj] * before
                    g = g * (1.0 - m) + load_tile(f_s) * m
                    k = softmax(load_col(ro_s.at[jj, pl.ds(2 * d, d)]))
                    s = sigmoid(load_col(ro_s.at[jj, pl.ds(3 * d, SEL_COLS)]))
                    rate = jnp.sum(load_tile(sel_s) * s[None, :], axis=1)
                    ru = rate * load_row(ru_s.at[jj]) * before
                    return g + ru[:, None] * k[None, :]

                return lax.fori_loop(0, time_block, one, g)

            return lax.cond(base < t, run, lambda g: g, g)

        return lax.fori_loop(0, chunk_blocks, block, load_tile(g_s))
    # The carry: (G, dG) in registers, or nothing (in_smem: both in g_s, dg_s).
    carry0 = () if in_smem else (jnp.zeros((rows, d), jnp.float32), load_tile(dg_s))

    def time_block_body(i, carry):
        b = num_blocks - 1 - i
        times = pl.ds(b * time_block, time_block)
        stage(x_ref.at[seq, times], x_s, 0)
        stage(dy_ref.at[seq, times], dy_s, 1)
        stage(o_ref.at[seq, times], o_s, 2)
        stage(u_ref.at[seq, times], u_s, 0)
        if has_reset:
            stage(mask_ref.at[seq, times], m_s, 1)
        last_of_chunk = ((b + 1) % chunk_blocks == 0) | (b == num_blocks - 1)

        def reload(carry):
            stage(ckpt_ref.at[seq, pl.ds((b // chunk_blocks) * rows, rows)], g_s, 1)
            return carry if in_smem else (load_tile(g_s), carry[1])

        carry = lax.cond(last_of_chunk, reload, lambda c: c, carry)

        def step(jj, carry):
            j = time_block - 1 - jj
            valid = ((b * time_block + j) < seq_len).astype(jnp.float32)
            a = load_col(x_s.at[j])
            if input_softmax:
                a = softmax(a)
            q = softmax(load_col(o_s.at[j, pl.ds(d, d)]))
            k = softmax(load_col(o_s.at[j, pl.ds(2 * d, d)]))
            s = sigmoid(load_col(o_s.at[j, pl.ds(3 * d, SEL_COLS)]))
            rate = jnp.sum(load_tile(sel_s) * s[None, :], axis=1)
            u = load_row(u_s.at[j])
            ru = rate * u * valid
            # in_smem: one [R, d] tile live at a time (dG for p and dk_upd, then G).
            g, dg = (None, load_tile(dg_s)) if in_smem else carry
            p = jnp.sum(dg * k[None, :], axis=1) * valid
            dk_upd = jnp.sum(dg * ru[:, None], axis=0)
            if in_smem:
                g = load_tile(g_s)
            g = g - ru[:, None] * k[None, :]               # G_{t-1}
            if in_smem:
                g_s[...] = g
            drate = p * u
            du = p * rate
            dr = jnp.sum(g * du[:, None], axis=0)
            ds = jnp.sum(load_tile(sel_s) * drate[:, None], axis=0)
            do_j = do_s.at[j]
            do_j[pl.ds(0, d)] = load_col(dy_s.at[j])
            do_j[pl.ds(d, d)] = _softmax_vjp(q, dr)
            do_j[pl.ds(2 * d, d)] = _softmax_vjp(k, dk_upd - dr)
            do_j[pl.ds(3 * d, SEL_COLS)] = ds * s * (1.0 - s)
            do = load_row(do_j)
            if in_smem:
                g = load_tile(g_s)
            da = jnp.sum(g * do[:, None], axis=0)
            dx_s[j] = _softmax_vjp(a, da) if input_softmax else da
            if in_smem:
                dg = load_tile(dg_s)
            dg = dg + du[:, None] * (q - k)[None, :] + do[:, None] * a[None, :]
            if has_reset:
                # The step began with G_in = G_{t-1} (1 - m) + F m: dF gets dG_in m, and where it
                # reset, G_{t-1} is rebuilt from the chunk's start.
                m = m_s[j]
                df_s[...] = load_tile(df_s) + dg * m
                dg = dg * (1.0 - m)
                t = b * time_block + j
                if in_smem:
                    @pl.when(m > 0)
                    def _():
                        g_s[...] = rebuild(t)
                else:
                    g = lax.cond(m > 0, lambda g: rebuild(t), lambda g: g, g)
            if in_smem:
                dg_s[...] = dg
                return carry
            return g, dg

        carry = lax.fori_loop(0, time_block, step, carry)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(dx_s, dx_ref.at[seq, times])
        plgpu.wait_smem_to_gmem(0)
        return carry

    carry = lax.fori_loop(0, num_blocks, time_block_body, carry0)
    if not in_smem:
        dg_s[...] = carry[1]
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(dg_s, dg0_ref.at[seq])
    if has_reset:
        plgpu.copy_smem_to_gmem(df_s, df_ref.at[seq])
    plgpu.wait_smem_to_gmem(0)


def srwm_backward_mosaic(x, dy, o, u, ckpt, dg_final, sel, *, seq_len, input_softmax,
                         chunk, time_block, interpret, in_smem=False, resets=None):
    """Launches the backward kernel (module docstring); returns (dx [N, Tp, d] float32,
    dL/dG_0 [N, R, d] float32), plus dL/dF [N, R, d] float32 with ``resets`` = (mask [N, Tp]
    float32, the reset weights F [N, R, d], G_0 [N, R, d])."""
    n, t_pad, d = x.shape
    rows = sel.shape[0]
    num_blocks = t_pad // time_block
    f32 = jnp.float32
    out_shape = (jax.ShapeDtypeStruct((n, t_pad, d), f32), jax.ShapeDtypeStruct((n, rows, d), f32))
    if resets is not None:
        out_shape += (jax.ShapeDtypeStruct((n, rows, d), f32),)
    scratch = (plgpu.SMEM((time_block, d), x.dtype), plgpu.SMEM((time_block, d), dy.dtype),
               plgpu.SMEM((time_block, rows), f32), plgpu.SMEM((time_block, rows), f32),
               plgpu.SMEM((time_block, rows), f32), plgpu.SMEM((time_block, d), f32),
               plgpu.SMEM((rows, d), f32), plgpu.SMEM((rows, d), f32),
               plgpu.SMEM((rows, SEL_COLS), f32))
    if resets is not None:
        scratch += (plgpu.SMEM((time_block,), f32), plgpu.SMEM((rows, d), f32),
                    plgpu.SMEM((rows, d), f32), plgpu.SMEM((time_block, rows), f32),
                    plgpu.SMEM((time_block, rows), f32), plgpu.SMEM((time_block,), f32))
    scratch += (plgpu.Barrier(num_barriers=3),)
    kernel = functools.partial(
        _bwd_kernel, d=d, seq_len=seq_len, time_block=time_block, num_blocks=num_blocks,
        chunk_blocks=chunk // time_block, input_softmax=input_softmax, in_smem=in_smem,
        has_reset=resets is not None)
    return call_kernel(kernel, out_shape=out_shape, scratch=scratch, grid=(n,),
                       grid_names=("seq",), interpret=interpret,
                       name="srwm_bwd_mosaic_reset" if resets is not None else "srwm_bwd_mosaic",
                       )(x, dy, o, u, ckpt, dg_final, sel, *(resets or ()))
