"""Delta-rule backward as a Pallas Mosaic GPU kernel: reverse time from exact S checkpoints.

Same scheme and equations as the Triton backward (``kernels/delta_rule/bwd.py``): time
blocks are walked last to first; at the last block of every checkpoint chunk the state is
reloaded from the checkpoint, and inside the chunk each step is undone with its saved insert
(S_{t-1} = S_t - k (x) ins). With R_i = S[:, i, cols] and G_i = dL/dS[:, i, cols] as
[64, BV] register tiles (one sequence per row, as in ``mosaic_fwd.py``), per step:

    dq_i  = rowsum(R_i dy)             G_i += q_i dy                R_i -= k_i ins
    dins  = sum_i k_i G_i              dv   = beta dins             dbeta = rowsum(dins (v - k S))
    dk_i  = rowsum(G_i ins - R_i dv)   G_i -= k_i dv

``rowsum`` reduces a [64, BV] tile over its BV columns (inside each warp). A CTA owns BV value
columns, so dq, dk and dbeta come out as dv / BV partial sums that the wrapper adds.
No reset masks here: a differentiated call with resets uses the scan reference's VJP
(``mosaic_ops.py``).

Layout as in ``mosaic_fwd.py``, plus dy [Tp, Np, dv], checkpoints [NC * dk, Np, dv],
dL/dS_T [dk, Np, dv] float32, inserts [Tp, Np, dv] float32. Outputs (float32):
dqT, dkT [NV * Tp, dk, Np], dv [Tp, Np, dv], dbeta [NV * Tp, Np], dS0 [dk, Np, dv]
(GMEM arrays stay 3-D: TMA copies take at most 5 strided dimensions).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from .mosaic_fwd import SEQS, call_kernel, col, load_row, load_tile


def _bwd_kernel(q_ref, k_ref, v_ref, beta_ref, dy_ref, ckpt_ref, g_ref, ins_ref,
                dq_ref, dk_ref, dv_ref, dbeta_ref, ds0_ref,
                q_s, k_s, v_s, beta_s, dy_s, ins_s, st_s,
                dq_s, dk_s, dv_s, dbeta_s, barriers, *grad_s,
                dk, block_v, time_block, num_blocks, chunk_blocks, seq_len):
    # grad_s: () keeps dL/dS in registers; (g_s,) keeps it in SMEM [dk, 64, BV] (dk >= 32,
    # where S and dL/dS together would not fit in 255 registers per thread).
    block = lax.axis_index("col")
    rows = pl.ds(lax.axis_index("seq") * SEQS, SEQS)
    cols = pl.ds(block * block_v, block_v)

    def stage(src, dst, slot):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[slot])
        plgpu.barrier_wait(barriers.at[slot])

    def write_state(state, dst):
        for i in range(dk):
            st_s[i] = state[i]
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(st_s, dst)
        plgpu.wait_smem_to_gmem(0)

    if grad_s:
        (g_s,) = grad_s
        stage(g_ref.at[:, rows, cols], g_s, 0)
        grad = ()
        zero = jnp.zeros_like(load_tile(g_s.at[0]))
    else:
        stage(g_ref.at[:, rows, cols], st_s, 0)
        grad = tuple(load_tile(st_s.at[i]) for i in range(dk))
        zero = jnp.zeros_like(grad[0])
    state = tuple(zero for _ in range(dk))

    def time_block_body(bb, carry):
        b = num_blocks - 1 - bb
        times = pl.ds(b * time_block, time_block)
        chunk_end = ((b + 1) % chunk_blocks == 0) | (b == num_blocks - 1)

        @pl.when(chunk_end)
        def _stage_checkpoint():
            stage(ckpt_ref.at[pl.ds((b // chunk_blocks) * dk, dk), rows, cols], st_s, 0)

        state, grad = carry
        state = lax.cond(chunk_end, lambda s: tuple(load_tile(st_s.at[i]) for i in range(dk)),
                         lambda s: s, state)
        stage(q_ref.at[times, :, rows], q_s, 0)
        stage(k_ref.at[times, :, rows], k_s, 1)
        stage(v_ref.at[times, rows, cols], v_s, 2)
        stage(beta_ref.at[times, rows], beta_s, 3)
        stage(dy_ref.at[times, rows, cols], dy_s, 4)
        stage(ins_ref.at[times, rows, cols], ins_s, 5)

        def step(jj, carry):
            j = time_block - 1 - jj
            state, grad = carry
            k = [load_row(k_s.at[j, i]) for i in range(dk)]
            beta = load_row(beta_s.at[j])
            v = load_tile(v_s.at[j])
            dy = load_tile(dy_s.at[j])
            insert = load_tile(ins_s.at[j])
            for i in range(dk):
                dq_s[j, i] = jnp.sum(state[i] * dy, axis=1)
            state = tuple(state[i] - col(k[i]) * insert for i in range(dk))
            d_insert = k_state = None
            new_grad = []
            for i in range(dk):
                g = (load_tile(grad_s[0].at[i]) if grad_s else grad[i])
                g = g + col(load_row(q_s.at[j, i])) * dy
                if grad_s:
                    grad_s[0][i] = g
                else:
                    new_grad.append(g)
                d_insert = col(k[i]) * g if i == 0 else d_insert + col(k[i]) * g
                k_state = (col(k[i]) * state[i] if i == 0 else k_state + col(k[i]) * state[i])
            dbeta_s[j] = jnp.sum(d_insert * (v - k_state), axis=1)
            dv = col(beta) * d_insert
            dv_s[j] = dv
            for i in range(dk):
                g = load_tile(grad_s[0].at[i]) if grad_s else new_grad[i]
                dk_s[j, i] = jnp.sum(g * insert - state[i] * dv, axis=1)
                g = g - col(k[i]) * dv
                if grad_s:
                    grad_s[0][i] = g
                else:
                    new_grad[i] = g
            return state, tuple(new_grad)

        carry = lax.fori_loop(0, time_block, step, (state, grad))
        plgpu.commit_smem()
        out_times = pl.ds(block * seq_len + b * time_block, time_block)
        plgpu.copy_smem_to_gmem(dq_s, dq_ref.at[out_times, :, rows])
        plgpu.copy_smem_to_gmem(dk_s, dk_ref.at[out_times, :, rows])
        plgpu.copy_smem_to_gmem(dbeta_s, dbeta_ref.at[out_times, rows])
        plgpu.copy_smem_to_gmem(dv_s, dv_ref.at[times, rows, cols])
        plgpu.wait_smem_to_gmem(0)
        return carry

    _, grad = lax.fori_loop(0, num_blocks, time_block_body, (state, grad))
    if grad_s:
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(grad_s[0], ds0_ref.at[:, rows, cols])
        plgpu.wait_smem_to_gmem(0)
    else:
        write_state(grad, ds0_ref.at[:, rows, cols])


def delta_rule_backward_mosaic(qT, kT, v, beta, dy, checkpoints, d_final, inserts, *, chunk,
                               time_block, block_v, interpret, grad_in_smem=False):
    """Launches the backward kernel; returns float32 (dqT, dkT, dv, dbeta, dS0) with the
    value-block partial sums of dq, dk and dbeta added."""
    seq_len, dk, n = qT.shape
    dv = v.shape[-1]
    num_v_blocks = dv // block_v
    f32 = jnp.float32
    out_shape = (jax.ShapeDtypeStruct((num_v_blocks * seq_len, dk, n), f32),
                 jax.ShapeDtypeStruct((num_v_blocks * seq_len, dk, n), f32),
                 jax.ShapeDtypeStruct((seq_len, n, dv), f32),
                 jax.ShapeDtypeStruct((num_v_blocks * seq_len, n), f32),
                 jax.ShapeDtypeStruct((dk, n, dv), f32))
    tile = (time_block, SEQS, block_v)
    scratch = (plgpu.SMEM((time_block, dk, SEQS), qT.dtype),
               plgpu.SMEM((time_block, dk, SEQS), kT.dtype),
               plgpu.SMEM(tile, v.dtype),
               plgpu.SMEM((time_block, SEQS), beta.dtype),
               plgpu.SMEM(tile, dy.dtype),
               plgpu.SMEM(tile, f32),
               plgpu.SMEM((dk, SEQS, block_v), f32),
               plgpu.SMEM((time_block, dk, SEQS), f32),
               plgpu.SMEM((time_block, dk, SEQS), f32),
               plgpu.SMEM(tile, f32),
               plgpu.SMEM((time_block, SEQS), f32),
               plgpu.Barrier(num_barriers=6))
    if grad_in_smem:
        scratch += (plgpu.SMEM((dk, SEQS, block_v), f32),)
    kernel = functools.partial(_bwd_kernel, dk=dk, block_v=block_v, time_block=time_block,
                               num_blocks=seq_len // time_block,
                               chunk_blocks=chunk // time_block, seq_len=seq_len)
    dq, dk_, dv_, dbeta, ds0 = call_kernel(
        kernel, out_shape=out_shape, scratch=scratch, grid=(n // SEQS, num_v_blocks),
        grid_names=("seq", "col"), interpret=interpret, name="delta_rule_bwd_mosaic",
    )(qT, kT, v, beta, dy, checkpoints, d_final, inserts)
    partials = lambda a: a.reshape((num_v_blocks, seq_len) + a.shape[1:]).sum(0)  # noqa: E731
    return partials(dq), partials(dk_), dv_, partials(dbeta), ds0
