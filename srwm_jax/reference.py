"""Plain step-by-step definitions of both operators, with resets: the references for every kernel.

These are the definitions that `srwm_jax.srwm` / `srwm_jax.delta_rule` (scan path with a
custom VJP) and the Pallas kernels in `kernels/` are tested against. They are one `lax.scan`
over time of the paper's equations, with no custom VJP, no chunking and no dtype casts: they
compute in the dtype they are given, so under `jax.enable_x64(True)` with float64 inputs they
give float64 values, and `jax.grad` of them (plain autodiff) gives float64 reference gradients
of any order. Memory and speed are not their concern (autodiff keeps every state: O(T*d^2)).

Legend: B batch, T time, H heads, d head dim, dy output dim of W_y; dk key dim, dv value dim.
Weights and states are stored [in, out], so a read is `x @ W`.

Resets: `reset[b, t]` True replaces the state of sequence b *before* step t by the reset state
(SRWM: `reset_weights`, default the initial weights W; delta rule: `reset_state`, default 0).
A reset at t = 0 therefore starts the sequence from the reset state instead of the initial one.
"""
import jax
import jax.numpy as jnp
from jax import lax

_HI = lax.Precision.HIGHEST


def _read(v, m):
    """v [B, H, i] @ m [B, H, i, o] -> [B, H, o]."""
    return jnp.einsum("bhi,bhio->bho", v, m, precision=_HI)


def _where_reset(r_t, fresh, state):
    """Per sequence: `fresh` where r_t [B] is True, else `state` (leaves [B, ...])."""
    return jax.tree.map(
        lambda f, s: jnp.where(r_t.reshape((-1,) + (1,) * (s.ndim - 1)), f, s), fresh, state)


def srwm_reference(x, W, *, input_softmax=False, reset=None, reset_weights=None):
    """SRWM (Irie et al. 2022, Eqs. 5-8), one step at a time.

    Per head and step t (every read uses W_{t-1}, after the reset if reset[b, t]):
        a = softmax(x_t) if input_softmax else x_t
        y_t = a W_y,  q = softmax(a W_q),  k = softmax(a W_k),  b = sigmoid(a W_b)  (4 values)
        W_i += outer(k, b_i * (q W_i - k W_i))   for i in (y, q, k, b)

    Args:
      x: [B, T, H, d].
      W: 4 arrays (y [B, H, d, dy], q, k [B, H, d, d], b [B, H, d, 4]), e.g. SRWMWeights.
      input_softmax: softmax over each head's d inputs first.
      reset: optional bool [B, T].
      reset_weights: 4 arrays shaped like W; default W.

    Returns:
      y [B, T, H, dy] and the final weights as a tuple of 4 arrays.
    """
    W = tuple(W)
    B, T = x.shape[:2]
    reset = jnp.zeros((B, T), bool) if reset is None else reset
    fresh = W if reset_weights is None else tuple(reset_weights)

    def step(w, inputs):
        x_t, r_t = inputs
        w = _where_reset(r_t, fresh, w)
        a = jax.nn.softmax(x_t, axis=-1) if input_softmax else x_t
        y = _read(a, w[0])
        q = jax.nn.softmax(_read(a, w[1]), axis=-1)
        k = jax.nn.softmax(_read(a, w[2]), axis=-1)
        b = jax.nn.sigmoid(_read(a, w[3]))
        w = tuple(m + k[..., :, None]
                  * (b[..., i, None] * (_read(q, m) - _read(k, m)))[..., None, :]
                  for i, m in enumerate(w))
        return w, y

    W_T, ys = lax.scan(step, W, (jnp.swapaxes(x, 0, 1), jnp.swapaxes(reset, 0, 1)))
    return jnp.swapaxes(ys, 0, 1), W_T


def delta_rule_reference(q, k, v, beta, S0, *, reset=None, reset_state=None):
    """Delta rule (Schlag et al. 2021), one step at a time.

    Per head and step t (S_{t-1} replaced by the reset state where reset[b, t]):
        S_t = S_{t-1} + outer(k_t, beta_t * (v_t - k_t S_{t-1})),   y_t = q_t S_t

    Args:
      q, k: [B, T, H, dk];  v: [B, T, H, dv];  beta: [B, T, H];  S0: [B, H, dk, dv].
      reset: optional bool [B, T].   reset_state: [B, H, dk, dv]; default zeros.

    Returns:
      y [B, T, H, dv] and S_T [B, H, dk, dv].
    """
    B, T = q.shape[:2]
    reset = jnp.zeros((B, T), bool) if reset is None else reset
    fresh = jnp.zeros_like(S0) if reset_state is None else reset_state

    def step(S, inputs):
        q_t, k_t, v_t, b_t, r_t = inputs
        S = _where_reset(r_t, fresh, S)
        v_old = _read(k_t, S)
        S = S + k_t[..., :, None] * (b_t[..., None] * (v_t - v_old))[..., None, :]
        return S, _read(q_t, S)

    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    S_T, ys = lax.scan(step, S0, (tm(q), tm(k), tm(v), tm(beta), tm(reset)))
    return tm(ys), S_T
