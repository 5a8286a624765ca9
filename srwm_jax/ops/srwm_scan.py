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


def _srwm_bwd(input_softmax, residuals, cotangents):
    xs, W_starts, resets = residuals
    d_ys, d_WT = cotangents
    T, d = xs.shape[0], xs.shape[-1]
    C, n = _chunking(T, d)
    xc, valid = _to_chunks(xs, C, n)
    d_yc, _ = _to_chunks(d_ys, C, n)

    if resets is None:
        def chunk_back(d_w_end, inputs):
            w_start, x_c, ok, d_y = inputs
            _, vjp = jax.vjp(lambda w, x: _scan_chunk(w, x, ok, input_softmax), w_start, x_c)
            d_w_start, d_x = vjp((d_y, d_w_end))
            return d_w_start, d_x

        d_W0, d_xc = lax.scan(chunk_back, d_WT, (W_starts, xc, valid, d_yc), reverse=True)
        d_resets = None
    else:
        mask, W_reset = resets
        mc, _ = _to_chunks(mask, C, n)

        def chunk_back(carry, inputs):
            d_w_end, d_w_reset = carry
            w_start, x_c, ok, m_c, d_y = inputs
            _, vjp = jax.vjp(
                lambda w, x, wr: _scan_chunk(w, x, ok, input_softmax, (m_c, wr)),
                w_start, x_c, W_reset)
            d_w_start, d_x, d_wr = vjp((d_y, d_w_end))
            # The reset state is read at every reset point: its gradient sums over them.
            return (d_w_start, jax.tree.map(jnp.add, d_w_reset, d_wr)), d_x

        zeros = jax.tree.map(jnp.zeros_like, W_reset)
        (d_W0, d_W_reset), d_xc = lax.scan(chunk_back, (d_WT, zeros),
                                           (W_starts, xc, valid, mc, d_yc), reverse=True)
        d_resets = (None, d_W_reset)
    d_xs = d_xc.reshape((n * C,) + d_xc.shape[2:])[:T]
    return d_xs, d_W0, d_resets


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
