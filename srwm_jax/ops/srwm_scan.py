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
    xs = jax.nn.softmax(x_t, axis=-1) if input_softmax else x_t
    y = _read(xs, W.y)
    q = jax.nn.softmax(_read(xs, W.q), axis=-1)
    k = jax.nn.softmax(_read(xs, W.k), axis=-1)
    b = jax.nn.sigmoid(_read(xs, W.b))  # [B, H, 4]

    def update(w, rate):
        # q W - k W computed as (q - k) W: one mat-vec, same value up to rounding.
        diff = _read(q - k, w)
        return w + k[..., :, None] * (rate[..., None] * diff)[..., None, :]

    new = SRWMWeights(*(update(w, b[..., i]) for i, w in enumerate(W)))
    return new, y


def _scan_chunk(W, xs, valid, input_softmax, resets=None):
    """Runs steps xs [C, B, H, d] from W; steps with valid[t] False leave W unchanged.

    resets: None, or (mask [C, B] bool, W_reset): where mask[t, b], W of sequence b is replaced
    by W_reset before step t.
    """
    if resets is None:
        def body(w, inputs):
            x_t, ok = inputs
            w_new, y_t = srwm_step(w, x_t, input_softmax)
            w_new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), w_new, w)
            return w_new, y_t

        W_end, ys = lax.scan(body, W, (xs, valid))
        return ys, W_end

    mask, W_reset = resets

    def body_reset(w, inputs):
        x_t, ok, r_t = inputs
        w = jax.tree.map(lambda f, a: jnp.where(r_t[:, None, None, None], f, a), W_reset, w)
        w_new, y_t = srwm_step(w, x_t, input_softmax)
        w_new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), w_new, w)
        return w_new, y_t

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
    ys, W_T, _ = _srwm_forward(xs, W, resets, input_softmax)
    return ys, W_T


def _srwm_forward(xs, W, resets, input_softmax):
    T, d = xs.shape[0], xs.shape[-1]
    C, n = _chunking(T, d)
    xc, valid = _to_chunks(xs, C, n)
    if resets is None:
        def chunk(w, inputs):
            x_c, ok = inputs
            ys, w_end = _scan_chunk(w, x_c, ok, input_softmax)
            return w_end, (ys, w)

        W_T, (ys, W_starts) = lax.scan(chunk, W, (xc, valid))
    else:
        mask, W_reset = resets
        mc, _ = _to_chunks(mask, C, n)  # padded steps never reset

        def chunk(w, inputs):
            x_c, ok, m_c = inputs
            ys, w_end = _scan_chunk(w, x_c, ok, input_softmax, (m_c, W_reset))
            return w_end, (ys, w)

        W_T, (ys, W_starts) = lax.scan(chunk, W, (xc, valid, mc))
    ys = ys.reshape((n * C,) + ys.shape[2:])[:T]
    return ys, W_T, W_starts


def _srwm_fwd(xs, W, resets, input_softmax):
    ys, W_T, W_starts = _srwm_forward(xs, W, resets, input_softmax)
    # Saved: inputs, W every C steps, and (with resets) the bool mask and the one reset state:
    # O(T*d + (T/C)*d^2 + d^2) per head, never a W per step.
    return (ys, W_T), (xs, W_starts, resets)


def _softmax_vjp(p, dp):
    """Cotangent of z for p = softmax(z) over the last axis, given dp."""
    return p * (dp - jnp.sum(p * dp, -1, keepdims=True))


def _rate_columns(W):
    """One-hot [m, 4] map from the columns of concat(W.y, W.q, W.k, W.b) to their rate."""
    sizes = [w.shape[-1] for w in W]
    return jnp.asarray([[float(j == i) for j in range(4)] for i, n in enumerate(sizes)
                        for _ in range(n)], jnp.float32)


def _chunk_backward(w_start, x_c, ok, d_y, d_m_end, input_softmax, resets):
    """The reverse recurrence over one chunk, by hand (the formulas of kernels/srwm/bwd.py).

    The four matrices are handled as one M = concat(W_y, W_q, W_k, W_b) [.., d, m]
    (m = dy + 2d + 4) whose column j has rate c_j = b_{block(j)}: one step is
        z = a M;  q, k = softmax(z_q), softmax(z_k);  b = sigmoid(z_b);  u = (q - k) M;
        M += outer(k, c * u).
    The forward is recomputed from the checkpoint for the vectors (q, k, b, u); walking back,
    M_{t-1} = M_t - outer(k, c * u) from the recomputed M at the chunk's end (error bounded by
    one chunk's C steps, as in the kernels). With resets, M_{t-1} is kept for the chunk instead
    (C*d*m per sequence; slower). With G = dL/dM_t, per step backwards:
        g = k G;  db_i = sum_{j in block i} g_j u_j;  du = c * g;  dr = M du
        dq = dr;  dk = G (c * u) - dr;  dz = (dy, softmax'(q) dq, softmax'(k) dk, db b (1 - b))
        da = M dz;  G_{t-1} = G + outer(q - k, du) + outer(a, dz)
    Padded steps (ok False) get a = 0, which makes them identities with zero gradients.

    w_start: SRWMWeights checkpoint; x_c: [C, B, H, d]; ok: [C]; d_y: [C, B, H, dy];
    d_m_end: dL/dM at the chunk's end; resets: None or (mask [C, B], M_reset).
    Returns (dL/dM at the chunk's start, dx [C, B, H, d], dL/dM_reset's share or None).
    """
    E = _rate_columns(w_start)
    dy_, d = w_start.y.shape[-1], w_start.q.shape[-1]
    a_c = jax.nn.softmax(x_c, axis=-1) if input_softmax else x_c
    a_c = a_c * ok[:, None, None, None]

    def rows(r, m):
        return r[:, None, None, None] if m.ndim == 4 else r

    def forward_step(m, a):
        z = _read(a, m)
        q = jax.nn.softmax(z[..., dy_:dy_ + d], axis=-1)
        k = jax.nn.softmax(z[..., dy_ + d:dy_ + 2 * d], axis=-1)
        b = jax.nn.sigmoid(z[..., dy_ + 2 * d:])
        u = _read(q - k, m)
        v = (b @ E.T) * u
        return m + k[..., :, None] * v[..., None, :], (m, q, k, b, u)

    m_start = jnp.concatenate(w_start, -1)
    if resets is None:
        def vectors_step(m, a):
            m, (_, *vectors) = forward_step(m, a)
            return m, tuple(vectors)

        m_end, (q, k, b, u) = lax.scan(vectors_step, m_start, a_c)
    else:
        mask, m_reset = resets

        def fwd_body(m, step):
            a, r = step
            return forward_step(jnp.where(rows(r, m), m_reset, m), a)

        _, (m_prev, q, k, b, u) = lax.scan(fwd_body, m_start, (a_c, mask))

    c = b @ E.T
    v = c * u

    def rev_step(G, m, q, k, b, c, u, v, a, dy):
        g = _read(k, G)
        d_rate = (g * u) @ E
        du = c * g
        dr = jnp.einsum("...io,...o->...i", m, du, precision=_HI)
        dk = jnp.einsum("...io,...o->...i", G, v, precision=_HI) - dr
        dz = jnp.concatenate([dy, _softmax_vjp(q, dr), _softmax_vjp(k, dk),
                              d_rate * b * (1.0 - b)], -1)
        da = jnp.einsum("...io,...o->...i", m, dz, precision=_HI)
        G = G + (q - k)[..., :, None] * du[..., None, :] + a[..., :, None] * dz[..., None, :]
        return G, da

    if resets is None:
        # M_{t-1} = M_t - outer(k, v): the subtraction error spans at most one chunk, from the
        # exact recomputed M at its end (as in kernels/srwm/bwd.py); no per-step M is stored.
        def rev_undo(carry, step):
            m, G = carry
            k_t, v_t = step[1], step[5]
            m = m - k_t[..., :, None] * v_t[..., None, :]
            G, da = rev_step(G, m, *step)
            return (m, G), da

        (_, d_m_start), da = lax.scan(rev_undo, (m_end, d_m_end), (q, k, b, c, u, v, a_c, d_y),
                                      reverse=True)
        d_reset = None
    else:
        steps = (m_prev, q, k, b, c, u, v, a_c, d_y)
        def rev_body(carry, step):
            G, d_f = carry
            *step, r = step
            G, da = rev_step(G, *step)
            # A reset at t: the weights entering step t were M_reset, not M_{t-1}.
            here = rows(r, G)
            return (jnp.where(here, 0.0, G), d_f + jnp.where(here, G, 0.0)), da

        (d_m_start, d_reset), da = lax.scan(rev_body, (d_m_end, jnp.zeros_like(d_m_end)),
                                            steps + (mask,), reverse=True)
    dx = _softmax_vjp(a_c, da) if input_softmax else da
    return d_m_start, dx, d_reset


def _split(m, like):
    """concat(W.y, W.q, W.k, W.b) [.., d, m] -> SRWMWeights shaped like `like`."""
    bounds = [0]
    for w in like:
        bounds.append(bounds[-1] + w.shape[-1])
    return SRWMWeights(*(m[..., lo:hi] for lo, hi in zip(bounds, bounds[1:])))


def _srwm_bwd(input_softmax, residuals, cotangents):
    xs, W_starts, resets = residuals
    d_ys, d_WT = cotangents
    T, d = xs.shape[0], xs.shape[-1]
    C, n = _chunking(T, d)
    xc, valid = _to_chunks(xs, C, n)
    d_yc, _ = _to_chunks(d_ys, C, n)
    d_MT = jnp.concatenate(d_WT, -1)

    if resets is None:
        def chunk_back(d_m_end, inputs):
            w_start, x_c, ok, d_y = inputs
            d_m_start, d_x, _ = _chunk_backward(w_start, x_c, ok, d_y, d_m_end, input_softmax,
                                                None)
            return d_m_start, d_x

        d_M0, d_xc = lax.scan(chunk_back, d_MT, (W_starts, xc, valid, d_yc), reverse=True)
        d_resets = None
    else:
        mask, W_reset = resets
        mc, _ = _to_chunks(mask, C, n)
        M_reset = jnp.concatenate(W_reset, -1)

        def chunk_back(carry, inputs):
            d_m_end, d_m_reset = carry
            w_start, x_c, ok, m_c, d_y = inputs
            d_m_start, d_x, d_mr = _chunk_backward(w_start, x_c, ok, d_y, d_m_end, input_softmax,
                                                   (m_c, M_reset))
            # The reset weights are read at every reset point: their gradient sums over them.
            return (d_m_start, d_m_reset + d_mr), d_x

        (d_M0, d_M_reset), d_xc = lax.scan(chunk_back, (d_MT, jnp.zeros_like(M_reset)),
                                           (W_starts, xc, valid, mc, d_yc), reverse=True)
        d_resets = (None, _split(d_M_reset, W_reset))
    d_xs = d_xc.reshape((n * C,) + d_xc.shape[2:])[:T]
    return d_xs, _split(d_M0, d_WT), d_resets


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
