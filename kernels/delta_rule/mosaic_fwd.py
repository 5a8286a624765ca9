"""Delta-rule forward as a Pallas Mosaic GPU kernel (Hopper): 64 sequences per warpgroup.

One CTA = one warpgroup (128 threads) runs ``SEQS = 64`` sequences x ``BV`` value columns.
The state S [dk, dv] of each sequence is held in registers as ``dk`` tiles
``R_i = S[:, i, cols]`` of shape [64, BV] in the WGMMA register layout: row = sequence,
column = value column. Every step is then elementwise work on [64, BV] tiles plus
row-vector broadcasts (``k_i[:, None]``), with no cross-thread reduction:

    kS  = sum_i k_i R_i                ins = beta (v - kS)
    R_i = R_i + k_i ins                y   = sum_i q_i R_i

where k_i, q_i, beta are [64] row vectors (one value per sequence). Why this mapping is in
kernels/README.md ("Mosaic GPU").

Kernel layout (prepared by ``kernels/delta_rule/mosaic_ops.py``), Np = B*H padded to a
multiple of 64, Tp = T padded to a multiple of the time block ``TB`` (padded steps have
beta = 0, which leaves S unchanged):

  qT, kT [Tp, dk, Np]  input dtype     v    [Tp, Np, dv]  input dtype
  beta   [Tp, Np]      input dtype     s0   [dk, Np, dv]  float32
  reset  [Tp, Np]      float32 (1 where the sequence restarts before step t; optional)
  fresh  [dk, Np, dv]  float32 (the reset state; optional)

Outputs: y [Tp, Np, dv] (v's dtype); S after every ``chunk`` steps [NC * dk, Np, dv]
(chunk c at rows c*dk...; the last is S_T; TMA copies take at most 5 strided dimensions, so
GMEM arrays stay 3-D); with ``save_residuals`` the inserts beta (v - k S_{t-1}) [Tp, Np, dv]
float32. Inputs are staged GMEM -> SMEM by TMA one time block at a time.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

SEQS = 64  # rows of a WGMMA-layout register tile: one sequence per row


def row_layout():
    return plgpu.Layout.WGMMA.reduce(1)


def load_row(ref):
    """[64] SMEM vector -> registers, one value per sequence (row) of a WGMMA tile."""
    return plgpu.load(ref, layout=row_layout()).astype(jnp.float32)


def load_tile(ref):
    """[64, BV] SMEM tile -> float32 registers in the WGMMA layout."""
    return plgpu.load(ref, layout=plgpu.Layout.WGMMA).astype(jnp.float32)


def col(x):
    """[64] row vector -> [64, 1] for broadcasting against a [64, BV] tile."""
    return x[:, None]


def call_kernel(body, *, out_shape, scratch, grid, grid_names, interpret, name):
    """``plgpu.kernel`` with interpret mode selected by ``interpret`` (a bool)."""
    def named_body(*refs):
        return body(*refs)

    named_body.__name__ = named_body.__qualname__ = name  # the kernel's name in dumps
    kwargs = dict(out_type=out_shape, scratch_types=scratch, grid=grid, grid_names=grid_names)
    if interpret:
        kwargs["interpret"] = plgpu.InterpretGPUParams()
    return plgpu.kernel(named_body, **kwargs)


def _fwd_kernel(*refs, dk, block_v, time_block, num_blocks, chunk_blocks, save_residuals,
                has_reset):
    n_in = 7 if has_reset else 5
    ins, refs = refs[:n_in], refs[n_in:]
    q_ref, k_ref, v_ref, beta_ref, s0_ref = ins[:5]
    reset_ref, fresh_ref = ins[5:] if has_reset else (None, None)
    y_ref, ckpt_ref = refs[:2]
    refs = refs[2:]
    ins_ref = None
    if save_residuals:
        ins_ref, refs = refs[0], refs[1:]
    (q_s, k_s, v_s, beta_s, y_s, st_s, *rest) = refs
    res_s = None
    if save_residuals:
        res_s, rest = rest[0], rest[1:]
    reset_s = fresh_s = None
    if has_reset:
        reset_s, fresh_s, rest = rest[0], rest[1], rest[2:]
    (barriers,) = rest

    rows = pl.ds(lax.axis_index("seq") * SEQS, SEQS)
    cols = pl.ds(lax.axis_index("col") * block_v, block_v)

    def stage(src, dst, slot):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[slot])
        plgpu.barrier_wait(barriers.at[slot])

    stage(s0_ref.at[:, rows, cols], st_s, 0)
    state = tuple(load_tile(st_s.at[i]) for i in range(dk))
    if has_reset:
        stage(fresh_ref.at[:, rows, cols], fresh_s, 1)

    def time_block_body(b, state):
        times = pl.ds(b * time_block, time_block)
        stage(q_ref.at[times, :, rows], q_s, 0)
        stage(k_ref.at[times, :, rows], k_s, 1)
        stage(v_ref.at[times, rows, cols], v_s, 2)
        stage(beta_ref.at[times, rows], beta_s, 3)
        if has_reset:
            stage(reset_ref.at[times, rows], reset_s, 4)

        def step(j, state):
            if has_reset:
                # A 0/1 blend, exact for finite states: S (1 - m) + F m. (`jnp.where` on a
                # broadcast [64, 1] mask left Mosaic's layout inference running for >10 min.)
                m = col(load_row(reset_s.at[j]))
                keep = 1.0 - m
                state = tuple(state[i] * keep + load_tile(fresh_s.at[i]) * m for i in range(dk))
            k = [load_row(k_s.at[j, i]) for i in range(dk)]
            beta = load_row(beta_s.at[j])
            v = load_tile(v_s.at[j])
            k_state = sum(col(k[i]) * state[i] for i in range(1, dk)) + col(k[0]) * state[0]
            insert = col(beta) * (v - k_state)
            state = tuple(state[i] + col(k[i]) * insert for i in range(dk))
            y = col(load_row(q_s.at[j, 0])) * state[0]
            for i in range(1, dk):
                y = y + col(load_row(q_s.at[j, i])) * state[i]
            y_s[j] = y.astype(y_s.dtype)
            if save_residuals:
                res_s[j] = insert
            return state

        state = lax.fori_loop(0, time_block, step, state)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(y_s, y_ref.at[times, rows, cols])
        if save_residuals:
            plgpu.copy_smem_to_gmem(res_s, ins_ref.at[times, rows, cols])
        plgpu.wait_smem_to_gmem(0)

        @pl.when(((b + 1) % chunk_blocks == 0) | (b == num_blocks - 1))
        def _save_checkpoint():
            for i in range(dk):
                st_s[i] = state[i]
            plgpu.commit_smem()
            first = (b // chunk_blocks) * dk
            plgpu.copy_smem_to_gmem(st_s, ckpt_ref.at[pl.ds(first, dk), rows, cols])
            plgpu.wait_smem_to_gmem(0)

        return state

    lax.fori_loop(0, num_blocks, time_block_body, state)


def delta_rule_forward_mosaic(qT, kT, v, beta, s0, *, save_residuals, chunk, time_block,
                              block_v, interpret, resets=None):
    """Launches the forward kernel on kernel-layout arrays (module docstring).

    ``chunk`` (a multiple of ``time_block``) spaces the checkpoints; ``resets`` is None or
    (mask [Tp, Np] float32, fresh [dk, Np, dv] float32).
    """
    seq_len, dk, n = qT.shape
    dv = v.shape[-1]
    num_blocks = seq_len // time_block
    chunk_blocks = chunk // time_block
    num_chunks = -(-num_blocks // chunk_blocks)
    f32 = jnp.float32
    out_shape = [jax.ShapeDtypeStruct((seq_len, n, dv), v.dtype),
                 jax.ShapeDtypeStruct((num_chunks * dk, n, dv), f32)]
    if save_residuals:
        out_shape.append(jax.ShapeDtypeStruct((seq_len, n, dv), f32))
    scratch = [plgpu.SMEM((time_block, dk, SEQS), qT.dtype),
               plgpu.SMEM((time_block, dk, SEQS), kT.dtype),
               plgpu.SMEM((time_block, SEQS, block_v), v.dtype),
               plgpu.SMEM((time_block, SEQS), beta.dtype),
               plgpu.SMEM((time_block, SEQS, block_v), v.dtype),
               plgpu.SMEM((dk, SEQS, block_v), f32)]
    if save_residuals:
        scratch.append(plgpu.SMEM((time_block, SEQS, block_v), f32))
    if resets is not None:
        scratch += [plgpu.SMEM((time_block, SEQS), f32), plgpu.SMEM((dk, SEQS, block_v), f32)]
    scratch.append(plgpu.Barrier(num_barriers=5))
    kernel = functools.partial(
        _fwd_kernel, dk=dk, block_v=block_v, time_block=time_block, num_blocks=num_blocks,
        chunk_blocks=chunk_blocks, save_residuals=save_residuals, has_reset=resets is not None)
    return call_kernel(
        kernel, out_shape=tuple(out_shape), scratch=tuple(scratch),
        grid=(n // SEQS, dv // block_v), grid_names=("seq", "col"), interpret=interpret,
        name="delta_rule_fwd_mosaic_reset" if resets is not None else "delta_rule_fwd_mosaic",
    )(qT, kT, v, beta, s0, *(resets or ()))
