"""Self-referential weight matrix (SRWM, Irie et al. 2022, Eqs. 5-8): the `lax.scan` path.

Legend: B batch, T time, H heads, d head dim, dy output dim of W_y (normally d).
Weights are stored [in, out], so a read is `x @ W`.

Per head and step t, every read uses W_{t-1}:
    x' = softmax(x_t) if input_softmax else x_t
    y_t = x' W_y,  q = softmax(x' W_q),  k = softmax(x' W_k),  b = sigmoid(x' W_b)   (b: 4 values)
    W_i += outer(k, b[i] * (q W_i - k W_i))   for i in (y, q, k, b)

Gradients go through a `jax.custom_vjp` that saves only the inputs and W every C steps
(C = max(d, 16)): O(T*d) floats per head instead of the O(T*d^2) of plain autodiff. The
backward recomputes each C-step chunk from its checkpoint and differentiates it, so it is
exact (it never undoes updates by subtraction, whose float32 error grows with T).

The public op with its checks and the kernel dispatch is `srwm_jax.ops.srwm.srwm`; the Pallas
kernels import this module (not that one) for their second derivatives, so the op -> kernel
import has no way back.
"""
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

_HI = lax.Precision.HIGHEST  # keep f32 accuracy on GPUs, where the default dot may use TF32


class SRWMWeights(NamedTuple):
    """Fast weights of one SRWM layer, one matrix set per (batch, head).

    y: [B, H, d, dy]   q: [B, H, d, d]   k: [B, H, d, d]   b: [B, H, d, 4]
    """
    y: jax.Array
    q: jax.Array
    k: jax.Array
    b: jax.Array


def _read(x, w):
    """x [..., d] @ w [..., d, n] -> [..., n] in float32."""
    return jnp.einsum("...i,...io->...o", x, w, precision=_HI)


def srwm_step(W, x_t, input_softmax):
    """One SRWM step. W: SRWMWeights (float32, [B,H,d,*]); x_t: [B, H, d]
    -> (W_t, y_t [B, H, dy])."""
    new, y, _ = _step(W, x_t, input_softmax)
    return new, y


def _step(W, x_t, input_softmax):
    """srwm_step that also returns the step's vectors (q, k, b, u): u = (q - k) W_{t-1} per
    matrix (a tuple of four), saved for the backward."""
    xs = jax.nn.softmax(x_t, axis=-1) if input_softmax else x_t
    y = _read(xs, W.y)
    q = jax.nn.softmax(_read(xs, W.q), axis=-1)
    k = jax.nn.softmax(_read(xs, W.k), axis=-1)
    b = jax.nn.sigmoid(_read(xs, W.b))  # [B, H, 4]

    def update(w, rate):
        # q W - k W computed as (q - k) W: one mat-vec, same value up to rounding.
        diff = _read(q - k, w)
        return w + k[..., :, None] * (rate[..., None] * diff)[..., None, :], diff

    new, diffs = zip(*(update(w, b[..., i]) for i, w in enumerate(W)))
    return SRWMWeights(*new), y, (q, k, b, diffs)


def _scan_chunk(W, xs, valid, input_softmax, resets=None, save=False):
    """Runs steps xs [C, B, H, d] from W; steps with valid[t] False leave W unchanged.

    resets: None, or (mask [C, B] bool, W_reset): where mask[t, b], W of sequence b is replaced
    by W_reset before step t. save: also return each step's (q, k, b, u) (see `_step`).
    Returns (ys [C, B, H, dy], or (ys, vectors) with save; W at the chunk's end).
    """
    def run(w, x_t, ok):
        w_new, y_t, vectors = _step(w, x_t, input_softmax)
        w_new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), w_new, w)
        return w_new, ((y_t, vectors) if save else y_t)

    if resets is None:
        def body(w, inputs):
            return run(w, *inputs)

        W_end, ys = lax.scan(body, W, (xs, valid))
        return ys, W_end

    mask, W_reset = resets

    def body_reset(w, inputs):
        x_t, ok, r_t = inputs
        w = jax.tree.map(lambda f, a: jnp.where(r_t[:, None, None, None], f, a), W_reset, w)
        return run(w, x_t, ok)

    W_end, ys = lax.scan(body_reset, W, (xs, valid, mask))
    return ys, W_end


def _chunking(T, d):
    C = min(T, max(d, 16))
    n = -(-T // C)
    return C, n


def _to_chunks(xs, C, n):
    """[T, ...] -> [n, C, ...] zero-padded, plus the validity mask [n, C]."""
    T = xs.shape[0]
    pad = n * C - T
    xs = jnp.pad(xs, [(0, pad)] + [(0, 0)] * (xs.ndim - 1))
    valid = (jnp.arange(n * C) < T).reshape(n, C)
    return xs.reshape((n, C) + xs.shape[1:]), valid


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _srwm_time_major(xs, W, resets, input_softmax):
    return _srwm_forward(xs, W, resets, input_softmax, save=False)


def _srwm_forward(xs, W, resets, input_softmax, save):
    T, d = xs.shape[0], xs.shape[-1]
    C, n = _chunking(T, d)
    xc, valid = _to_chunks(xs, C, n)
    if resets is None:
        def chunk(w, inputs):
            x_c, ok = inputs
            ys, w_end = _scan_chunk(w, x_c, ok, input_softmax, save=save)
            return w_end, ys

        W_T, ys = lax.scan(chunk, W, (xc, valid))
    else:
        mask, W_reset = resets
        mc, _ = _to_chunks(mask, C, n)  # padded steps never reset

        def chunk(w, inputs):
            x_c, ok, m_c = inputs
            ys, w_end = _scan_chunk(w, x_c, ok, input_softmax, (m_c, W_reset), save=save)
            return w_end, ys

        W_T, ys = lax.scan(chunk, W, (xc, valid, mc))
    ys = jax.tree.map(lambda a: a.reshape((n * C,) + a.shape[2:])[:T], ys)
    return ys, W_T


def _srwm_fwd(xs, W, resets, input_softmax):
    (ys, (q, k, b, diffs)), W_T = _srwm_forward(xs, W, resets, input_softmax, save=True)
    # Saved: the inputs, and per step q, k, b and u = (q - k) W_{t-1} (all four matrices as
    # one vector of N = dy + 2d + 4): O(T*d) per head, never a W per step.
    u = jnp.concatenate(diffs, -1)
    return (ys, W_T), (xs, W, resets, (q, k, b, u))


def _block_map(dy, d):
    """[N, 4] one-hot: column j of M = [W_y W_q W_k W_b] belongs to matrix i (rate b[i])."""
    sizes = (dy, d, d, 4)
    return jnp.repeat(jnp.eye(4, dtype=jnp.float32), jnp.array(sizes), axis=0,
                      total_repeat_length=sum(sizes))


def _segments(mask):
    """mask [C, B] bool (reset before step t) -> segment index [B, C] of each step
    (resets at or before t; a matmul: jnp.cumsum is slow on CPU)."""
    C = mask.shape[0]
    t_idx = jnp.arange(C)
    return jnp.einsum("ts,sb->bt", (t_idx[:, None] >= t_idx[None, :]).astype(jnp.float32),
                      mask.astype(jnp.float32))


def _chunk_backward(m_start, vecs, dy, g_end, resets):
    """The reverse recurrence over one chunk, by hand.

    m_start: [B, H, d, N] M = [W_y W_q W_k W_b] entering the chunk; vecs: (x', q, k, b, u, ok)
    [C, B, H, ...] (x' the read input, softmaxed or not; ok [C] the valid steps); dy: [C, B, H,
    dy]; g_end: dL/dM at the chunk's end; resets: None or (mask [C, B], M_reset [B, H, d, N]).
    Returns (dL/dM entering the chunk, (dx', dq-part..)) — see the module docstring.

    With c_s = rate_s * u_s the row update of step s, M_{t-1} = M_base + sum_{s<t} outer(k_s, c_s)
    over the earlier steps of t's segment (M_base: the chunk's start, or M_reset after a reset),
    so every product M_{t-1} v is M_base v + K^T (mask * (C v)): nothing is undone by
    subtraction and no per-step M is stored. With G = dL/dM_t, per step backwards:
        dc = k G;  du = rate dc;  db_i = <dc, u> over matrix i's columns;  d(q-k) = M_{t-1} du
        dq = d(q-k);  dk = G c - d(q-k);  dr = [dy, softmax'(q) dq, softmax'(k) dk, b(1-b) db]
        G_{t-1} = G + outer(q - k, du) + outer(x', dr)
    and after the scan, batched over the chunk: dx' = M_{t-1} dr.
    """
    xp, q, k, b, u, ok = vecs
    C = q.shape[0]
    dy_n, d = dy.shape[-1], q.shape[-1]
    E = _block_map(dy_n, d)
    okf = ok.astype(jnp.float32)[:, None, None, None]
    k = k * okf                     # padded steps: no update, so no gradient through them
    rate = jnp.einsum("tbhx,nx->tbhn", b, E)
    c = rate * u * okf
    kT = jnp.moveaxis(k, 0, 2)      # [B, H, C, d]
    cT = jnp.moveaxis(c, 0, 2)      # [B, H, C, N]
    t_idx = jnp.arange(C)
    if resets is None:
        seg = jnp.zeros((1, C), jnp.float32)
        mask, m_reset = jnp.zeros((C, 1), bool), m_start
    else:
        mask, m_reset = resets
        seg = _segments(mask)                                          # [B, C]

    def rev_body(g, step):
        t, xp_t, q_t, k_t, b_t, rate_t, u_t, c_t, dy_t, r_t = step
        dc = jnp.einsum("bhi,bhio->bho", k_t, g, precision=_HI)
        gc = jnp.einsum("bhio,bho->bhi", g, c_t, precision=_HI)
        du = rate_t * dc
        db = jnp.einsum("bhn,nx->bhx", dc * u_t, E, precision=_HI)
        # M_{t-1} du: the segment's base, plus the updates of its earlier steps.
        scores = jnp.einsum("bhsn,bhn->bhs", cT, du, precision=_HI)
        if resets is None:
            scores = jnp.where(t_idx < t, scores, 0.0)
            base = jnp.einsum("bhin,bhn->bhi", m_start, du, precision=_HI)
        else:
            seg_t = seg[:, t]
            before = (t_idx < t)[None, :] & (seg == seg_t[:, None])    # [B, C]
            scores = jnp.where(before[:, None, :], scores, 0.0)
            base = jnp.where((seg_t == 0)[:, None, None],
                             jnp.einsum("bhin,bhn->bhi", m_start, du, precision=_HI),
                             jnp.einsum("bhin,bhn->bhi", m_reset, du, precision=_HI))
        dqk = base + jnp.einsum("bhs,bhsi->bhi", scores, kT, precision=_HI)
        dkt = gc - dqk
        dzq = q_t * (dqk - jnp.sum(q_t * dqk, -1, keepdims=True))
        dzk = k_t * (dkt - jnp.sum(k_t * dkt, -1, keepdims=True))
        dr = jnp.concatenate([dy_t, dzq, dzk, db * b_t * (1.0 - b_t)], -1)
        g = g + jnp.einsum("bhik,bhkn->bhin", jnp.stack([q_t - k_t, xp_t], -1),
                           jnp.stack([du, dr], -2), precision=_HI)
        if resets is None:
            return g, (dr, None)
        # A reset at t: the state entering step t was M_reset, not M_{t-1}.
        m = r_t[:, None, None, None]
        return jnp.where(m, 0.0, g), (dr, jnp.where(m, g, 0.0))

    g_start, (dr, d_reset) = lax.scan(
        rev_body, g_end, (t_idx, xp, q, k, b, rate, u, c, dy, mask), reverse=True)
    # dx' = M_{t-1} dr for every t of the chunk at once.
    same = seg[:, :, None] == seg[:, None, :]                           # [B, t, s]
    before = (t_idx[:, None] > t_idx[None, :])[None] & same
    scores = jnp.einsum("tbhn,bhsn->bhts", dr, cT, precision=_HI)
    scores = jnp.where(before[:, None], scores, 0.0)
    from_start = (seg.T == 0)[:, :, None, None]                         # [C, B, 1, 1]
    base = jnp.einsum("bhin,tbhn->tbhi", m_start, dr, precision=_HI)
    if resets is not None:
        base = jnp.where(from_start, base,
                         jnp.einsum("bhin,tbhn->tbhi", m_reset, dr, precision=_HI))
    dxp = base + jnp.einsum("bhts,bhsi->tbhi", scores, kT, precision=_HI)
    return g_start, dxp, (None if resets is None else jnp.sum(d_reset, 0))


def _chunk_end(m_start, k, c, resets):
    """M at the end of a chunk from its start: M_base + sum over the last segment of
    outer(k_s, c_s). k [C, B, H, d], c [C, B, H, N] (zero on padded steps)."""
    if resets is None:
        return m_start + jnp.einsum("sbhi,sbhn->bhin", k, c, precision=_HI)
    mask, m_reset = resets
    seg = _segments(mask)                                               # [B, C]
    last = (seg == seg[:, -1:]).astype(jnp.float32)                     # [B, C]
    base = jnp.where((seg[:, -1] == 0)[:, None, None, None], m_start, m_reset)
    return base + jnp.einsum("sbhi,bs,sbhn->bhin", k, last, c, precision=_HI)


def _srwm_bwd(input_softmax, residuals, cotangents):
    xs, W0, resets, (q, k, b, u) = residuals
    d_ys, d_WT = cotangents
    T, d = xs.shape[0], xs.shape[-1]
    dy_n = W0.y.shape[-1]
    C, n = _chunking(T, d)
    xp = jax.nn.softmax(xs, axis=-1) if input_softmax else xs
    (xpc, qc, kc, bc, uc, d_yc), valid = zip(*(_to_chunks(a, C, n) for a in (xp, q, k, b, u, d_ys)))
    valid = valid[0]
    E = _block_map(dy_n, d)
    okf = valid.astype(jnp.float32)[:, :, None, None, None]
    kc = kc * okf
    cc = jnp.einsum("ntbhx,mx->ntbhm", bc, E) * uc * okf  # c = rate * u, the row updates
    m0 = jnp.concatenate(W0, -1)
    g_T = jnp.concatenate(d_WT, -1)
    if resets is None:
        mc, m_reset, chunk_resets = None, None, lambda m_c: None
    else:
        mask, W_reset = resets
        mc, _ = _to_chunks(mask, C, n)
        m_reset = jnp.concatenate(W_reset, -1)
        chunk_resets = lambda m_c: (m_c, m_reset)  # noqa: E731

    # M entering each chunk, rebuilt forwards from M_0 by whole-chunk sums (no per-step M).
    def forward_chunk(m, inputs):
        k_c, c_c, m_c = inputs
        return _chunk_end(m, k_c, c_c, chunk_resets(m_c)), m

    mc_in = mc if mc is not None else jnp.zeros((n, C, 1), bool)
    _, m_starts = lax.scan(forward_chunk, m0, (kc, cc, mc_in))

    def chunk_back(carry, inputs):
        g_end, d_reset = carry
        m_start, xp_c, q_c, k_c, b_c, u_c, ok, m_c, d_y = inputs
        g_start, dxp, d_r = _chunk_backward(m_start, (xp_c, q_c, k_c, b_c, u_c, ok), d_y, g_end,
                                            chunk_resets(m_c))
        if d_r is not None:
            # The reset state is read at every reset point: its gradient sums over them.
            d_reset = d_reset + d_r
        return (g_start, d_reset), dxp

    (g_0, d_m_reset), dxpc = lax.scan(
        chunk_back, (g_T, jnp.zeros_like(g_T)),
        (m_starts, xpc, qc, kc, bc, uc, valid, mc_in, d_yc), reverse=True)
    dxp = dxpc.reshape((n * C,) + dxpc.shape[2:])[:T]
    d_xs = xp * (dxp - jnp.sum(xp * dxp, -1, keepdims=True)) if input_softmax else dxp

    def split(m):
        return SRWMWeights(*jnp.split(m, [dy_n, dy_n + d, dy_n + 2 * d], axis=-1))

    d_resets = None if resets is None else (None, split(d_m_reset))
    return d_xs, split(g_0), d_resets


_srwm_time_major.defvjp(_srwm_fwd, _srwm_bwd)


def srwm_scan(x, W, *, input_softmax=False, reset=None, reset_weights=None):
    """Scan reference with a memory-efficient custom VJP; same arguments and results as `srwm`."""
    xs = jnp.swapaxes(x, 0, 1).astype(jnp.float32)
    W = SRWMWeights(*(w.astype(jnp.float32) for w in W))
    resets = None
    if reset is not None:
        W_reset = W if reset_weights is None else SRWMWeights(
            *(w.astype(jnp.float32) for w in reset_weights))
        resets = (jnp.swapaxes(reset, 0, 1), W_reset)
    ys, W_T = _srwm_time_major(xs, W, resets, bool(input_softmax))
    return jnp.swapaxes(ys, 0, 1).astype(x.dtype), W_T
