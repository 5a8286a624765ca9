"""Delta rule fast weights (DeltaNet, Schlag et al. 2021): the `lax.scan` path.

Legend: B batch, T time, H heads, dk key dim, dv value dim. State S is [in, out] = [dk, dv].

Per head and step t:
    S_t = S_{t-1} + outer(k_t, beta_t * (v_t - k_t S_{t-1}))
    y_t = q_t S_t                      (read after the write, as in the original kernel)
q, k and beta arrive already activated (the layer applies elu+1 + sum-normalisation and sigmoid).

Gradients use a custom VJP: q, k, beta, v - k S_{t-1} and S every C = max(dk, dv, 16) steps
are saved (O(T*(dk+dv)) per head); the backward walks each chunk backwards from its
checkpoint with hand-derived formulas (`_chunk_backward`). Undoing updates by subtraction or
by a matrix inverse loses accuracy as T grows (see the kernel notes), so this path never does.

The public op with its checks and the implementation dispatch is
`srwm_jax.ops.delta_rule.delta_rule`; the Pallas kernels import this module (not that one) for
their second derivatives, so the op -> kernel import has no way back.
"""

import jax
import jax.numpy as jnp
from jax import lax

_HI = lax.Precision.HIGHEST


def delta_rule_step(S, q_t, k_t, v_t, beta_t):
    """One step. S: [B, H, dk, dv]; q_t, k_t: [B, H, dk]; v_t: [B, H, dv]; beta_t: [B, H]."""
    S, y_t, _ = _step(S, q_t, k_t, v_t, beta_t)
    return S, y_t


def _step(S, q_t, k_t, v_t, beta_t):
    """delta_rule_step that also returns v_t - k_t S_{t-1} (saved for the backward)."""
    v_delta = v_t - jnp.einsum("bhi,bhio->bho", k_t, S, precision=_HI)
    S = S + k_t[..., :, None] * (beta_t[..., None] * v_delta)[..., None, :]
    y_t = jnp.einsum("bhi,bhio->bho", q_t, S, precision=_HI)
    return S, y_t, v_delta


def _scan_chunk(S, inputs, valid, resets=None):
    """Runs the steps `inputs` ([C, ...] each) from S; steps with valid[t] False leave S as is.

    resets: None, or (mask [C, B] bool, S_reset): where mask[t, b], S of sequence b is
    replaced by S_reset before step t.
    """
    if resets is None:
        def body(s, step):
            (q_t, k_t, v_t, b_t), ok = step
            s_new, y_t, v_delta = _step(s, q_t, k_t, v_t, b_t)
            return jnp.where(ok, s_new, s), (y_t, v_delta)

        S_end, ys = lax.scan(body, S, (inputs, valid))
        return ys, S_end

    mask, S_reset = resets

    def body_reset(s, step):
        (q_t, k_t, v_t, b_t), ok, r_t = step
        s = jnp.where(r_t[:, None, None, None], S_reset, s)
        s_new, y_t, v_delta = _step(s, q_t, k_t, v_t, b_t)
        return jnp.where(ok, s_new, s), (y_t, v_delta)

    S_end, ys = lax.scan(body_reset, S, (inputs, valid, mask))
    return ys, S_end


def _chunking(T, dk, dv):
    C = min(T, max(dk, dv, 16))
    return C, -(-T // C)


def _to_chunks(a, C, n):
    pad = n * C - a.shape[0]
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape((n, C) + a.shape[1:])


def _valid(T, C, n):
    return (jnp.arange(n * C) < T).reshape(n, C)


def _forward(inputs, S0, resets):
    q = inputs[0]
    T, dk, dv = q.shape[0], q.shape[-1], inputs[2].shape[-1]
    C, n = _chunking(T, dk, dv)
    chunks = tuple(_to_chunks(a, C, n) for a in inputs)
    if resets is None:
        def chunk(s, step):
            ys, s_end = _scan_chunk(s, *step)
            return s_end, (ys, s)

        S_T, (ys, S_starts) = lax.scan(chunk, S0, (chunks, _valid(T, C, n)))
    else:
        mask, S_reset = resets

        def chunk(s, step):
            inp, ok, m_c = step
            ys, s_end = _scan_chunk(s, inp, ok, (m_c, S_reset))
            return s_end, (ys, s)

        S_T, (ys, S_starts) = lax.scan(chunk, S0, (chunks, _valid(T, C, n),
                                                   _to_chunks(mask, C, n)))
    ys, v_delta = (a.reshape((n * C,) + a.shape[2:])[:T] for a in ys)
    return ys, S_T, S_starts, v_delta


@jax.custom_vjp
def _delta_time_major(inputs, S0, resets):
    ys, S_T, _, _ = _forward(inputs, S0, resets)
    return ys, S_T


def _fwd(inputs, S0, resets):
    ys, S_T, S_starts, v_delta = _forward(inputs, S0, resets)
    q, k, _, beta = inputs
    # Saved: q, k, beta, v - k S_{t-1} (in place of v), S every C steps and (with resets) the
    # bool mask and the reset state: O(T*(dk+dv)) per head.
    return (ys, S_T), ((q, k, v_delta, beta), S_starts, resets)


def _chunk_backward(s_start, inp, d_y, d_s_end, resets):
    """The reverse recurrence over one chunk, by hand (the formulas of kernels/delta_rule/bwd.py).

    s_start: [B, H, dk, dv] checkpoint; inp: (q, k, v - k S_{t-1}, beta) [C, B, H, ...] as
    saved by the forward; d_y: [C, B, H, dv]; d_s_end: dL/dS at the chunk's end;
    resets: None or (mask [C, B], S_reset).
    Returns (dL/dS at the chunk's start, (dq, dk, dv, dbeta) [C, ...], dL/dS_reset's share).

    With ins_t = beta_t (v_t - k_t S_{t-1}) saved, S_{t-1} = S_start + sum_{s<t} outer(k_s, ins_s)
    (within the segment since the last reset, which starts from S_reset), so every product
    S_{t-1} w_t is one masked [C, C] matmul per chunk; no state is stacked, recomputed step by
    step or undone by subtraction. With G = dL/dS_t, only G is a scan (backwards):
        G^ = G + outer(q, dy);  dins = k G^;  G_{t-1} = G^ - beta outer(k, dins)
    and then, batched over the chunk:
        dq = S_t dy;  dk = G^ ins - S_{t-1} (beta dins);  dv = beta dins;
        dbeta = <dins, v - k S_{t-1}>
    Zero-padded steps (k = beta = 0) are identities, so padding needs no mask.
    """
    q, k, v_delta, beta = inp
    ins = beta[..., None] * v_delta

    def rev_step(g, q_t, k_t, b_t, dy_t, ins_t):
        g = g + q_t[..., :, None] * dy_t[..., None, :]
        d_ins = jnp.einsum("bhi,bhio->bho", k_t, g, precision=_HI)
        dk_part = jnp.einsum("bhio,bho->bhi", g, ins_t, precision=_HI)
        g = g - k_t[..., :, None] * (b_t[..., None] * d_ins)[..., None, :]
        return g, (d_ins, dk_part)

    C = q.shape[0]
    t_idx = jnp.arange(C)
    if resets is None:
        def rev_body(g, step):
            return rev_step(g, *step)

        d_s_start, (d_ins, dk_part) = lax.scan(rev_body, d_s_end, (q, k, beta, d_y, ins),
                                               reverse=True)
        d_reset = None
        same = jnp.ones((1, 1, C, C), bool)           # [B, H, t, s]: s and t in one segment
        from_start = jnp.ones((C, 1, 1, 1), bool)      # [t, B, H, 1]: segment starts at S_start
        s_reset = s_start
    else:
        mask, s_reset = resets

        def rev_body(carry, step):
            g, d_f = carry
            *step, r_t = step
            g, out = rev_step(g, *step)
            # A reset at t: the state entering step t was S_reset, not S_{t-1}.
            m = r_t[:, None, None, None]
            return (jnp.where(m, 0.0, g), d_f + jnp.where(m, g, 0.0)), out

        (d_s_start, d_reset), (d_ins, dk_part) = lax.scan(
            rev_body, (d_s_end, jnp.zeros_like(d_s_end)), (q, k, beta, d_y, ins, mask),
            reverse=True)
        # Segment of step t = resets at or before t (a matmul: jnp.cumsum is slow on CPU).
        seg = jnp.einsum("ts,sb->bt", (t_idx[:, None] >= t_idx[None, :]).astype(jnp.float32),
                         mask.astype(jnp.float32))
        same = (seg[:, :, None] == seg[:, None, :])[:, None]
        from_start = (seg.T == 0)[:, :, None, None]

    b_ins = beta[..., None] * d_ins
    w = jnp.stack([d_y, b_ins], -1)                                  # [C, B, H, dv, 2]
    # The checkpoint's (or the reset state's) part of S_{t-1} w_t ...
    base = jnp.where(from_start[..., None],
                     jnp.einsum("bhio,tbhox->tbhix", s_start, w, precision=_HI),
                     jnp.einsum("bhio,tbhox->tbhix", s_reset, w, precision=_HI))
    # ... plus the updates of earlier steps of its segment: sum_s k_s <ins_s, w_t>.
    scores = jnp.einsum("sbho,tbhox->bhxts", ins, w, precision=_HI)
    before = (t_idx[:, None] > t_idx[None, :]) & same                # s < t
    upto = (t_idx[:, None] >= t_idx[None, :]) & same                 # s <= t (S_t for dq)
    scores = jnp.where(jnp.stack([upto, before], 2), scores, 0.0)
    reads = base + jnp.einsum("bhxts,sbhi->tbhix", scores, k, precision=_HI)
    dq = reads[..., 0]
    dk = dk_part - reads[..., 1]
    dbeta = jnp.sum(d_ins * v_delta, -1)
    return d_s_start, (dq, dk, b_ins, dbeta), d_reset


def _bwd(residuals, cotangents):
    inputs, S_starts, resets = residuals
    d_ys, d_ST = cotangents
    T, dk, dv = inputs[0].shape[0], inputs[0].shape[-1], inputs[2].shape[-1]
    C, n = _chunking(T, dk, dv)
    chunks = tuple(_to_chunks(a, C, n) for a in inputs)

    if resets is None:
        def chunk_back(d_s_end, step):
            s_start, inp, d_y = step
            d_s_start, d_inp, _ = _chunk_backward(s_start, inp, d_y, d_s_end, None)
            return d_s_start, d_inp

        d_S0, d_chunks = lax.scan(chunk_back, d_ST, (S_starts, chunks, _to_chunks(d_ys, C, n)),
                                  reverse=True)
        d_resets = None
    else:
        mask, S_reset = resets

        def chunk_back(carry, step):
            d_s_end, d_s_reset = carry
            s_start, inp, m_c, d_y = step
            d_s_start, d_inp, d_sr = _chunk_backward(s_start, inp, d_y, d_s_end, (m_c, S_reset))
            # The reset state is read at every reset point: its gradient sums over them.
            return (d_s_start, d_s_reset + d_sr), d_inp

        (d_S0, d_S_reset), d_chunks = lax.scan(
            chunk_back, (d_ST, jnp.zeros_like(S_reset)),
            (S_starts, chunks, _to_chunks(mask, C, n), _to_chunks(d_ys, C, n)), reverse=True)
        d_resets = (None, d_S_reset)
    d_inputs = tuple(a.reshape((n * C,) + a.shape[2:])[:T] for a in d_chunks)
    return d_inputs, d_S0, d_resets


_delta_time_major.defvjp(_fwd, _bwd)


def delta_rule_scan(q, k, v, beta, S0, *, reset=None, reset_state=None):
    """Scan reference with a memory-efficient custom VJP; same arguments and results as
    `delta_rule`."""
    tm = lambda a: jnp.swapaxes(a, 0, 1).astype(jnp.float32)  # noqa: E731
    S0 = S0.astype(jnp.float32)
    resets = None
    if reset is not None:
        S_reset = jnp.zeros_like(S0) if reset_state is None else reset_state.astype(jnp.float32)
        resets = (jnp.swapaxes(reset, 0, 1), S_reset)
    ys, S_T = _delta_time_major((tm(q), tm(k), tm(v), tm(beta)), S0, resets)
    return jnp.swapaxes(ys, 0, 1).astype(v.dtype), S_T
