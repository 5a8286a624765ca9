"""Helpers shared by the SRWM and delta-rule Pallas kernels.

Everything inside a kernel works on a *block* of ``BB`` independent sequences
(one sequence = one (batch, head) pair), so vectors are ``[BB, n]`` and
matrices ``[BB, n, m]``. Small mat-vecs are written as multiply-and-sum rather
than ``jnp.dot``: Triton's ``dot`` needs tiles of at least 16 in every
dimension, and an f32 ``dot`` defaults to TF32, which would cost ~1e-3
relative error per read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.pallas import triton as pl_triton

SUPPORTED_INPUT_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def vec_mat(a, m):
    """Row vector times matrix, batched: ``a [BB, n] @ m [BB, n, k] -> [BB, k]``."""
    return jnp.sum(a[:, :, None] * m, axis=1)


def mat_vec(m, g):
    """Matrix times column vector, batched: ``m [BB, n, k] @ g [BB, k] -> [BB, n]``."""
    return jnp.sum(m * g[:, None, :], axis=2)


def outer(a, b):
    """Batched outer product: ``a [BB, n], b [BB, k] -> [BB, n, k]``."""
    return a[:, :, None] * b[:, None, :]


def dot_last(a, b):
    """Batched inner product over the last axis: ``[BB, n], [BB, n] -> [BB]``."""
    return jnp.sum(a * b, axis=-1)


def softmax_last(z):
    z = z - jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax_last_vjp(p, dp):
    """Gradient through ``p = softmax(z)``: ``dz = p * (dp - <dp, p>)``."""
    return p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))


def sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def cdiv(n: int, d: int) -> int:
    return -(-n // d)


def triton_params(num_warps: int, num_stages: int = 1):
    """Selects Pallas's Triton lowering (see kernels/README.md for why Triton)."""
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def to_sequence_major(x):
    """``[B, T, H, n] -> [T, B*H, n]``: one row per sequence, time outermost."""
    b, t, h = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape((t, b * h) + x.shape[3:])


def from_sequence_major(x, batch: int, heads: int):
    """``[T, B*H, n] -> [B, T, H, n]``."""
    t = x.shape[0]
    return jnp.swapaxes(x.reshape((t, batch, heads) + x.shape[2:]), 0, 1)


def pad_rows(x, axis: int, rows: int):
    """Zero-pads ``axis`` of ``x`` up to ``rows`` (no-op when already that size)."""
    extra = rows - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def chunked_time_loop(seq_len: int, chunk: int, step, carry, *, reverse: bool = False,
                      before_chunk=None, after_chunk=None):
    """Runs ``carry = step(t, carry)`` over t in [0, seq_len), chunk by chunk.

    ``before_chunk(c, carry)`` / ``after_chunk(c, carry)`` (both return the carry)
    run around chunk c, which covers steps [c*chunk, min((c+1)*chunk, seq_len)).
    ``reverse`` visits chunks, and steps inside each chunk, from last to first.
    The step body is traced once (the last, shorter chunk uses a dynamic trip
    count), which keeps the kernels small to compile.
    """
    num_chunks = cdiv(seq_len, chunk)

    def chunk_body(i, carry):
        c = num_chunks - 1 - i if reverse else i
        start = c * chunk
        count = jnp.minimum(chunk, seq_len - start)
        if before_chunk is not None:
            carry = before_chunk(c, carry)
        if reverse:
            carry = lax.fori_loop(0, count, lambda j, cr: step(start + count - 1 - j, cr), carry)
        else:
            carry = lax.fori_loop(0, count, lambda j, cr: step(start + j, cr), carry)
        if after_chunk is not None:
            carry = after_chunk(c, carry)
        return carry

    return lax.fori_loop(0, num_chunks, chunk_body, carry)


def where_rows(mask, fresh, state):
    """Per sequence of a block: ``fresh`` where mask [BB] is True, else ``state``.

    ``fresh`` and ``state`` are matching pytrees of [BB, ...] register values.
    """
    def pick(f, s):
        return jnp.where(mask.reshape((-1,) + (1,) * (s.ndim - 1)), f, s)
    return jax.tree.map(pick, fresh, state)


def any_row(mask):
    """Whether any sequence of the block resets here (a scalar bool from an int32 [BB] mask)."""
    return jnp.max(mask) > 0
