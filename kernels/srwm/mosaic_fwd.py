"""SRWM forward as a Pallas Mosaic GPU kernel (Hopper): one sequence per warpgroup.

One CTA = one warpgroup (128 threads) runs one sequence through all T steps. Its four fast
weights are kept in registers as ONE stacked, transposed tile G of shape [R, d] in the WGMMA
layout (R = 4d rows: d = 16, 32, 64 give R = 64, 128, 256):

    G[0:d]    = W_y^T      G[d:2d]  = W_q^T      G[2d:3d] = W_k^T
    G[3d:3d+4] = W_b^T     G[3d+4:4d] = 0 (padding rows, stay 0)

so every read of the step is one row sum over G's d columns, giving a row vector (one value
per tile row, ``WGMMA.reduce(1)``):

    o = rowsum(G * a)        o = [a W_y | a W_q | a W_k | a W_b | 0]            (logits)
    u = rowsum(G * (q - k))  u = [(q-k) W_y | (q-k) W_q | (q-k) W_k | (q-k) W_b | 0]
    G = G + (rate * u)[:, None] * k[None, :]      rate_j = sigmoid(b_{j // d})

a, q, k are used as column vectors (one value per tile column, ``WGMMA.reduce(0)``,
broadcast over rows). q and k come out of the first read as rows of o, so o takes an SMEM
round trip: stored as a row vector, reloaded as the column vectors o[d:2d], o[2d:3d] and
o[3d:3d+8] (the sigmoid rates, spread onto the rows by the constant selector
``sel[j, m] = (j // d == m)``, [R, 8]). Softmaxes run on [d] column vectors (whose
reductions stay inside each thread's quad of lanes); broadcasting a column vector over rows
costs no registers. Why this mapping is in kernels/README.md ("Mosaic GPU").

Kernel layout (prepared by ``kernels/srwm/mosaic_ops.py``), sequence-major; Tp = T padded to a
multiple of the time block TB (padded steps are computed but leave G unchanged):

  x    [N, Tp, d]   input dtype     g0  [N, R, d]  float32     sel [R, 8] float32

Outputs: the logits o [N, Tp, R] float32 (y_t = o[:, t, :d]); G after every ``chunk`` steps
[N, NC * R, d] float32 (chunk c at rows c*R...; the last is G_T); with ``save_residuals`` the
reads u [N, Tp, R] float32 (with o they define each step's update, which the backward undoes).
Optional resets: mask [N, Tp] float32 (1 where the sequence restarts before step t) and the
reset weights fresh [N, R, d] float32.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from ..delta_rule.mosaic_fwd import call_kernel

SEL_COLS = 8  # columns of the selector tile: the 4 rates, padded to a WGMMA column group


def stacked_rows(d: int) -> int:
    """R: rows of the stacked tile (3d + 4 outputs, padded to a multiple of 64)."""
    return -(-(3 * d + 4) // 64) * 64


def load_tile(ref):
    """[R, d] SMEM tile -> float32 registers (WGMMA layout)."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA).astype(jnp.float32)


def load_col(ref):
    """[d] SMEM vector -> float32 column vector (one value per tile column, WGMMA.reduce(0)),
    broadcast over rows as ``v[None, :]``."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(0)).astype(jnp.float32)


def load_row(ref):
    """[R] SMEM vector -> float32 row vector (one value per tile row, WGMMA.reduce(1))."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA.reduce(1)).astype(jnp.float32)


def softmax(v):
    """Softmax of a column vector (its reductions stay inside each thread's quad)."""
    e = jnp.exp(v - jnp.max(v))
    return e / jnp.sum(e)


def sigmoid(t):
    return 1.0 / (1.0 + jnp.exp(-t))


def read_step(g, a, o_ref, sel_ref, d):
    """The reads of one step from G: stores the logits o in ``o_ref`` ([R] SMEM) and returns
    q, k ([d] column vectors), the sigmoid rates s ([8] column vector, entries 4.. unused), the
    per-row rates [R] and u = rowsum(G (q - k)) [R]."""
    o_ref[...] = jnp.sum(g * a[None, :], axis=1)
    q = softmax(load_col(o_ref.at[pl.ds(d, d)]))
    k = softmax(load_col(o_ref.at[pl.ds(2 * d, d)]))
    s = sigmoid(load_col(o_ref.at[pl.ds(3 * d, SEL_COLS)]))
    rates = jnp.sum(load_tile(sel_ref) * s[None, :], axis=1)
    u = jnp.sum(g * (q - k)[None, :], axis=1)
    return q, k, s, rates, u


def _fwd_kernel(*refs, d, seq_len, time_block, num_blocks, chunk_blocks, input_softmax,
                save_residuals, has_reset):
    n_in = 5 if has_reset else 3
    ins, refs = refs[:n_in], refs[n_in:]
    x_ref, g0_ref, sel_ref = ins[:3]
    reset_ref, fresh_ref = ins[3:] if has_reset else (None, None)
    o_ref, ckpt_ref = refs[:2]
    refs = refs[2:]
    u_ref = None
    if save_residuals:
        u_ref, refs = refs[0], refs[1:]
    x_s, o_s, g_s, sel_s, *rest = refs
    u_s = None
    if save_residuals:
        u_s, rest = rest[0], rest[1:]
    reset_s = fresh_s = None
    if has_reset:
        reset_s, fresh_s, rest = rest[0], rest[1], rest[2:]
    (barriers,) = rest
    rows = g_s.shape[0]
    seq = lax.axis_index("seq")

    def stage(src, dst, slot):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[slot])
        plgpu.barrier_wait(barriers.at[slot])

    stage(g0_ref.at[seq], g_s, 0)
    stage(sel_ref, sel_s, 1)
    g = load_tile(g_s)
    if has_reset:
        stage(fresh_ref.at[seq], fresh_s, 2)

    def time_block_body(b, g):
        times = pl.ds(b * time_block, time_block)
        stage(x_ref.at[seq, times], x_s, 0)
        if has_reset:
            stage(reset_ref.at[seq, pl.ds(b * time_block, time_block)], reset_s, 1)

        def step(j, g):
            if has_reset:
                # A 0/1 blend (as the delta-rule kernel): G (1 - m) + F m, exact for finite G.
                m = reset_s[j]
                g = g * (1.0 - m) + load_tile(fresh_s) * m
            a = load_col(x_s.at[j])
            if input_softmax:
                a = softmax(a)
            _, k, _, rates, u = read_step(g, a, o_s.at[j], sel_s, d)
            # Steps past T (the padded tail of the last time block) leave G unchanged.
            valid = ((b * time_block + j) < seq_len).astype(jnp.float32)
            g = g + ((rates * u) * valid)[:, None] * k[None, :]
            if save_residuals:
                u_s[j] = u
            return g

        g = lax.fori_loop(0, time_block, step, g)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_s, o_ref.at[seq, times])
        if save_residuals:
            plgpu.copy_smem_to_gmem(u_s, u_ref.at[seq, times])
        plgpu.wait_smem_to_gmem(0)

        @pl.when(((b + 1) % chunk_blocks == 0) | (b == num_blocks - 1))
        def _save_checkpoint():
            g_s[...] = g
            plgpu.commit_smem()
            first = (b // chunk_blocks) * rows
            plgpu.copy_smem_to_gmem(g_s, ckpt_ref.at[seq, pl.ds(first, rows)])
            plgpu.wait_smem_to_gmem(0)

        return g

    lax.fori_loop(0, num_blocks, time_block_body, g)


def srwm_forward_mosaic(x, g0, sel, *, seq_len, input_softmax, save_residuals, chunk,
                        time_block, interpret, resets=None):
    """Launches the forward kernel on kernel-layout arrays (module docstring).

    ``seq_len``: the true T (<= x.shape[1]); ``chunk`` (a multiple of ``time_block``) spaces
    the checkpoints; ``resets`` is None or (mask [N, Tp] float32, fresh [N, R, d] float32).
    """
    n, t_pad, d = x.shape
    rows = g0.shape[1]
    num_blocks = t_pad // time_block
    chunk_blocks = chunk // time_block
    num_chunks = -(-num_blocks // chunk_blocks)
    f32 = jnp.float32
    out_shape = [jax.ShapeDtypeStruct((n, t_pad, rows), f32),
                 jax.ShapeDtypeStruct((n, num_chunks * rows, d), f32)]
    if save_residuals:
        out_shape.append(jax.ShapeDtypeStruct((n, t_pad, rows), f32))
    scratch = [plgpu.SMEM((time_block, d), x.dtype),
               plgpu.SMEM((time_block, rows), f32),
               plgpu.SMEM((rows, d), f32),
               plgpu.SMEM((rows, SEL_COLS), f32)]
    if save_residuals:
        scratch.append(plgpu.SMEM((time_block, rows), f32))
    if resets is not None:
        scratch += [plgpu.SMEM((time_block,), f32), plgpu.SMEM((rows, d), f32)]
    scratch.append(plgpu.Barrier(num_barriers=3))
    kernel = functools.partial(
        _fwd_kernel, d=d, seq_len=seq_len, time_block=time_block, num_blocks=num_blocks,
        chunk_blocks=chunk_blocks, input_softmax=input_softmax, save_residuals=save_residuals,
        has_reset=resets is not None)
    return call_kernel(
        kernel, out_shape=tuple(out_shape), scratch=tuple(scratch), grid=(n,),
        grid_names=("seq",), interpret=interpret,
        name="srwm_fwd_mosaic_reset" if resets is not None else "srwm_fwd_mosaic",
    )(x, g0, sel, *(resets or ()))
