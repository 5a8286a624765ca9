"""Chunkwise-parallel delta rule (the UT / WY form): matmuls inside chunks, a scan across them.

Legend: B batch, T time, H heads, dk key dim, dv value dim, L chunk size, n = ceil(T / L).
Same definition as `srwm_jax.ops.delta_rule`
(S_t = S_{t-1} + outer(k_t, beta_t (v_t - k_t S_{t-1})), y_t = q_t S_t, resets replace S_{t-1}
by the reset state before step t).

Within a chunk that starts from S, the inserts ins_t = beta_t (v_t - k_t S_{t-1}) satisfy
    (I + N) INS = diag(beta) (V - K S),   N[t, s] = beta_t <k_t, k_s> for s < t,
a unit lower-triangular system. Its inverse is the finite series (I - N)(I + N^2)(I + N^4)...
(N is nilpotent), so the chunk needs only matmuls: log2(L) of [L, L] products, no triangular
solve. Then y_t = q_t S + sum_{s<=t} <q_t, k_s> ins_s and S_end = S + K^T INS. A reset inside a
chunk splits it into segments: the masks keep s and t in one segment, and a segment after a
reset starts from the reset state instead of S (Yang et al. 2024, "Parallelizing linear
transformers with the delta rule over sequence length", derive the same chunk form).

Memory: each chunk's function is under `jax.checkpoint`, so autodiff keeps the inputs and S at
each chunk start (O(T * (dk + dv) + (T / L) dk dv) per head) and recomputes one chunk at a time
in the backward. Plain autodiff gives gradients of any order. Inputs may be bf16; everything is
computed in float32.
"""
import math

import jax
import jax.numpy as jnp
from jax import lax

_HI = lax.Precision.HIGHEST


def _unit_lower_inverse(N):
    """(I + N)^-1 for strictly lower-triangular N [..., L, L], by matmuls only."""
    L = N.shape[-1]
    eye = jnp.eye(L, dtype=N.dtype)
    X = eye - N
    P = jnp.matmul(N, N, precision=_HI)
    for _ in range(max(math.ceil(math.log2(L)) - 1, 0)):
        X = X + jnp.matmul(X, P, precision=_HI)
        P = jnp.matmul(P, P, precision=_HI)
    return X


def _chunk(S, inp, F):
    """One chunk. S, F: [B, H, dk, dv]; inp = (q, k [B, H, L, dk], v [B, H, L, dv],
    beta [B, H, L], reset [B, L] bool or None). Returns (S at the chunk's end, y [B, H, L, dv])."""
    q, k, v, beta, reset = inp
    L = q.shape[-2]
    idx = jnp.arange(L)
    incl = idx[:, None] >= idx[None, :]
    strict = idx[:, None] > idx[None, :]
    kS = jnp.einsum("bhti,bhio->bhto", k, S, precision=_HI)
    qS = jnp.einsum("bhti,bhio->bhto", q, S, precision=_HI)
    if reset is None:
        same, start = True, None
    else:
        # Segment of step t = resets at or before t (a matmul: jnp.cumsum is slow on CPU).
        seg = jnp.einsum("ts,bs->bt", incl.astype(jnp.float32), reset.astype(jnp.float32))
        same = (seg[:, :, None] == seg[:, None, :])[:, None]          # [B, 1, L, L]
        start = (seg == 0)[:, None, :, None]                           # [B, 1, L, 1]: from S
        kS = jnp.where(start, kS, jnp.einsum("bhti,bhio->bhto", k, F, precision=_HI))
        qS = jnp.where(start, qS, jnp.einsum("bhti,bhio->bhto", q, F, precision=_HI))
    kk = jnp.einsum("bhti,bhsi->bhts", k, k, precision=_HI)
    N = jnp.where(strict & same, beta[..., :, None] * kk, 0.0)
    ins = jnp.matmul(_unit_lower_inverse(N), beta[..., None] * (v - kS), precision=_HI)
    qk = jnp.where(incl & same, jnp.einsum("bhti,bhsi->bhts", q, k, precision=_HI), 0.0)
    y = qS + jnp.matmul(qk, ins, precision=_HI)
    if reset is None:
        return S + jnp.einsum("bhti,bhto->bhio", k, ins, precision=_HI), y
    last = (seg == seg[:, -1:])[:, None, :, None]                      # in the last segment
    base = jnp.where((seg[:, -1] > 0)[:, None, None, None], F, S)
    return base + jnp.einsum("bhti,bhto->bhio", jnp.where(last, k, 0.0), ins, precision=_HI), y


def delta_rule_chunked(q, k, v, beta, S0, *, reset=None, reset_state=None, chunk_size=64):
    """Chunkwise-parallel delta rule; same arguments and results as `srwm_jax.delta_rule`.

    q, k: [B, T, H, dk]; v: [B, T, H, dv]; beta: [B, T, H]; S0: [B, H, dk, dv];
    reset: optional bool [B, T]; reset_state: [B, H, dk, dv] (default zeros);
    chunk_size: L, steps per chunk (the last chunk is zero-padded; padded steps are identities).
    Returns y [B, T, H, dv] in v's dtype and S_T [B, H, dk, dv] float32.
    """
    B, T, H, _ = q.shape
    L = min(chunk_size, T)
    n = -(-T // L)
    f32 = jnp.float32

    def chunks(a):  # [B, T, H, ...] -> [n, B, H, L, ...] float32, zero-padded in time
        a = jnp.pad(a.astype(f32), [(0, 0), (0, n * L - T)] + [(0, 0)] * (a.ndim - 2))
        a = a.reshape((B, n, L) + a.shape[2:])
        return jnp.swapaxes(jnp.moveaxis(a, 1, 0), 2, 3)

    xs = [chunks(a) for a in (q, k, v)] + [chunks(beta)]
    S0 = S0.astype(f32)
    if reset is None:
        F = None
        rs = None
    else:
        F = jnp.zeros_like(S0) if reset_state is None else reset_state.astype(f32)
        r = jnp.pad(reset, [(0, 0), (0, n * L - T)]).reshape(B, n, L)
        rs = jnp.moveaxis(r, 1, 0)                                     # [n, B, L]

    step = jax.checkpoint(_chunk)

    def body(S, inp):
        return step(S, inp, F)

    S_T, ys = lax.scan(body, S0, (*xs, rs))
    # [n, B, H, L, dv] -> [B, T, H, dv]
    ys = jnp.moveaxis(ys, 0, 1)                                        # [B, n, H, L, dv]
    ys = jnp.swapaxes(ys, 2, 3).reshape(B, n * L, H, -1)[:, :T]
    return ys.astype(v.dtype), S_T
