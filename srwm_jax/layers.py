"""Flax (linen) layers around the functional cells, as in the paper and the original code.

Legend: B batch, T time, D model width (= num_heads * head_dim), H heads, d head dim.

Every recurrent layer has the signature
    y, new_state = layer(x [B, T, D], state, reset=None, *, deterministic=True)
and an `initial_state(batch_size)` method (callable on the unbound module). `state=None`
means a fresh sequence. `reset` is an optional bool [B, T]: where reset[b, t] is True the
state of sequence b is reset to fresh *before* step t (episode boundaries in RL). Every layer
hands the mask to its operator in one call (`srwm` / `delta_rule` take `reset`, the LSTM
resets inside its scan, ShortConv masks its history), so a mask keeps the fused kernels and
the O(T*d) gradients. Carry
`new_state` into the next call for truncated BPTT (wrap it in `jax.lax.stop_gradient` to cut
gradients between calls).

For SRWM-based layers the state is the change of the fast weights from the slow (learned)
weights, as in the original code, so a parameter update between calls keeps the learned
change on top of the new slow weights.

Every layer checks its arguments first and raises a ValueError naming the argument, the
expected shape and what it got (`srwm_jax.layer_inputs.check_layer_inputs`): x must be a
floating-point [B, T, D] array, each state leaf shaped as in `initial_state(B)`, reset a bool
[B, T] array. Layers are batch-major: a time-major [T, B] mask is refused, except when T == B,
which no shape check can tell apart, so build masks batch-major (`reset.T` converts).

Fields with a longer story are documented where they are checked: `state_gradient` at
`STATE_GRADIENTS`, `dense_init` at `dense`; introspection (the "fast_weight_stats" collection)
in `srwm_jax.introspect` and docs/introspection.md.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from srwm_jax.dispatch import Impl
from srwm_jax.feature_maps import elu_p1_sum_norm
from srwm_jax.layer_inputs import check_layer_inputs
from srwm_jax.ops._validate import check_float
from srwm_jax.introspect import sow_delta_rule, sow_srdelta, sow_srwm
from srwm_jax.ops.delta_rule import delta_rule
from srwm_jax.ops.srwm import SRWMWeights, srwm

MEMORY_KINDS = ("srwm", "deltanet", "srdelta", "fakesr", "lstm")

# Gradients across time (`state_gradient`, SRWM / DeltaNet / SR-DeltaNet layers and MemoryStack):
# "unroll" (default) backpropagates through the whole sequence of fast-weight states; "step"
# is the original RL code's behaviour (IDSIA/modern-srwm reinforcement_learning/torchbeast:
# the agent calls its core one step at a time, `SRlayer`/`SMFWPlayer` return detached states
# and the delta-rule autograd function gives the fast weights no gradient): every step reads
# the state left by the previous step as a constant (stop_gradient), so a step's output is
# differentiated only through that step's own computation. For the SRWM this means W_q, W_k
# and w_b get no gradient at all and W_y only each step's direct read. The forward values are
# the same in both modes.
STATE_GRADIENTS = ("unroll", "step")
DENSE_INITS = ("flax", "torch")


def torch_uniform(fan_in: int):
    """torch.nn.Linear / Conv2d default init of weight and bias:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / fan_in ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def dense(features, fan_in, dense_init, *, use_bias=True, name=None):
    """nn.Dense initialised by `dense_init` ("flax" | "torch").

    Dense initialisation (`dense_init`): "flax" (default) is Flax's Dense default (kernel
    normal with std 1/sqrt(fan_in), zero bias); "torch" is torch.nn.Linear's (kernel and bias
    from U(-1/sqrt(fan_in), 1/sqrt(fan_in))), the original code's. The SRWM slow weights and the
    Fake SR W_y keep the original's N(0, 1/d) in both modes (the original sets them explicitly).

    Raises:
      ValueError: unknown dense_init.
    """
    if dense_init == "flax":
        return nn.Dense(features, use_bias=use_bias, name=name)
    if dense_init == "torch":
        init = torch_uniform(fan_in)
        return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=init, name=name)
    raise ValueError(f"dense_init={dense_init!r}: choose one of {DENSE_INITS}.")


def _check_state_gradient(owner, state_gradient):
    if state_gradient not in STATE_GRADIENTS:
        raise ValueError(f"{owner}: state_gradient={state_gradient!r}; "
                         f"choose one of {STATE_GRADIENTS}.")


def _per_step(run_one, state, xs, reset):
    """Runs a recurrent op one step at a time with the state's gradient cut between steps.

    The original RL code's behaviour (state_gradient="step"): its agent calls the core once per
    step and every layer returns a detached state. run_one(state, xs_t, reset_t) ->
    (new_state, ys_t) is the op on one step (xs_t leaves [B, 1, ...], reset_t None or [B, 1]);
    xs: a pytree of [B, T, ...] arrays; reset None or bool [B, T]. Returns the stacked ys
    ([B, T, ...] leaves) and the final state, both as the unrolled op would give them; the
    state (incoming, between steps and returned) carries no gradient.
    """
    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731

    def body(s, inputs):
        xs_t, r_t = inputs
        s, ys_t = run_one(lax.stop_gradient(s), jax.tree.map(lambda a: a[:, None], xs_t),
                          None if r_t is None else r_t[:, None])
        return s, jax.tree.map(lambda a: a[:, 0], ys_t)

    state, ys = lax.scan(body, state, (jax.tree.map(tm, xs), None if reset is None else tm(reset)))
    return jax.tree.map(tm, ys), lax.stop_gradient(state)


def _normal(mean, std):
    def init(key, shape, dtype=jnp.float32):
        return mean + std * jax.random.normal(key, shape, dtype)
    return init


class FeedForward(nn.Module):
    """Transformer feed-forward block: x + Drop(Linear(Drop(ReLU(Linear(LN(x))))))."""
    ff_dim: int
    dropout: float = 0.0
    use_layer_norm: bool = True
    dense_init: str = "flax"

    @nn.compact
    def __call__(self, x, *, deterministic=True):
        """x [..., D] -> [..., D]."""
        check_float("FeedForward: x", x)
        D = x.shape[-1]
        out = nn.LayerNorm(epsilon=1e-5)(x) if self.use_layer_norm else x
        out = nn.relu(dense(self.ff_dim, D, self.dense_init, name="Dense_0")(out))
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        out = dense(D, self.ff_dim, self.dense_init, name="Dense_1")(out)
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return x + out


class _SlowSRWM(nn.Module):
    """The learned initial weights of an SRWM, shared by all sequences: fields [H, d, *]."""
    num_heads: int
    head_dim: int
    y_dim: int
    beta_init: float

    @nn.compact
    def __call__(self):
        H, d = self.num_heads, self.head_dim
        std = 1.0 / d ** 0.5
        return SRWMWeights(
            y=self.param("W_y", _normal(0.0, std), (H, d, self.y_dim)),
            q=self.param("W_q", _normal(0.0, std), (H, d, d)),
            k=self.param("W_k", _normal(0.0, std), (H, d, d)),
            b=self.param("w_b", _normal(self.beta_init, std), (H, d, 4)))


def _srwm_zero_state(batch_size, num_heads, head_dim, y_dim):
    H, d = num_heads, head_dim
    return SRWMWeights(*(jnp.zeros((batch_size, H, d, n), jnp.float32)
                         for n in (y_dim, d, d, 4)))


def _run_srwm(slow, x, state, reset, input_softmax, impl):
    """x [B, T, H, d], state: weight change [B, H, d, *] -> (new change, y [B, T, H, dy]).

    A reset restores the slow weights (a zero change) before its step.
    """
    B = x.shape[0]
    W = SRWMWeights(*(s[None] + c for s, c in zip(slow, state)))
    fresh = None
    if reset is not None:
        fresh = SRWMWeights(*(jnp.broadcast_to(s[None], (B,) + s.shape) for s in slow))
    y, W_T = srwm(x, W, input_softmax=input_softmax, reset=reset, reset_weights=fresh, impl=impl)
    return SRWMWeights(*(w - s[None] for w, s in zip(W_T, slow))), y


def _run_srwm_mode(slow, x, state, reset, input_softmax, impl, state_gradient):
    """`_run_srwm` through the whole unroll ("unroll") or with the gradient cut per step
    ("step")."""
    if state_gradient == "unroll":
        return _run_srwm(slow, x, state, reset, input_softmax, impl)
    ys, new_state = _per_step(
        lambda change, x_t, r_t: _run_srwm(slow, x_t, change, r_t, input_softmax, impl),
        state, x, reset)
    return new_state, ys


def _run_delta_rule_mode(q, k, v, beta, S, reset, impl, state_gradient):
    """`delta_rule` through the whole unroll ("unroll") or with the gradient cut per step
    ("step")."""
    if state_gradient == "unroll":
        return delta_rule(q, k, v, beta, S, reset=reset, impl=impl)
    return _per_step(lambda s, qkvb, r_t: delta_rule(*qkvb, s, reset=r_t, impl=impl)[::-1],
                     S, (q, k, v, beta), reset)


class SRWMLayer(nn.Module):
    """Self-referential weight matrix layer (paper Sec. 3; original `SRWMlayer` / RL `SRlayer`).

    Heads are split from the residual stream h [B, T, D]: x = h.reshape(B, T, H, d). Output
    = out_proj(srwm(x)) with dropout, added to LN(h) if `use_layer_norm` (few-shot models)
    or to h (RL agents).
    """
    num_heads: int
    head_dim: int
    dropout: float = 0.0
    input_softmax: bool = False
    use_layer_norm: bool = True
    beta_init: float = -1.0
    impl: Impl = "auto"
    state_gradient: str = "unroll"   # "unroll" | "step" (module docstring)
    dense_init: str = "flax"         # "flax" | "torch" (module docstring)
    STATE_DOC: ClassVar[str] = ("SRWMWeights of the weight change: y, q, k [B, H, d, d], "
                                "b [B, H, d, 4]; H heads, d head dim")

    def initial_state(self, batch_size):
        return _srwm_zero_state(batch_size, self.num_heads, self.head_dim, self.head_dim)

    @nn.compact
    def __call__(self, h, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, h, state, reset, width=self.num_heads * self.head_dim)
        _check_state_gradient("SRWMLayer", self.state_gradient)
        B, T, D = h.shape
        H, d = self.num_heads, self.head_dim
        slow = _SlowSRWM(H, d, d, self.beta_init, name="slow")()
        state = self.initial_state(B) if state is None else state
        new_state, y = _run_srwm_mode(slow, h.reshape(B, T, H, d), state, reset,
                                      self.input_softmax, self.impl, self.state_gradient)
        sow_srwm(self, h.reshape(B, T, H, d), slow, state, reset, self.input_softmax)
        out = dense(D, D, self.dense_init, use_bias=False, name="out_proj")(y.reshape(B, T, D))
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        residual = nn.LayerNorm(epsilon=1e-5)(h) if self.use_layer_norm else h
        return residual + out, new_state


class FakeSRLayer(nn.Module):
    """SRWM without self-modification ("Fake SR", paper Sec. 4.3): a fixed per-head W_y."""
    num_heads: int
    head_dim: int
    dropout: float = 0.0
    dense_init: str = "flax"         # "flax" | "torch" (module docstring)

    STATE_DOC: ClassVar[str] = "() (stateless)"

    def initial_state(self, batch_size):
        return ()

    @nn.compact
    def __call__(self, h, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, h, state, reset, width=self.num_heads * self.head_dim)
        B, T, D = h.shape
        H, d = self.num_heads, self.head_dim
        W_y = self.param("W_y", _normal(0.0, 1.0 / d ** 0.5), (H, d, d))
        y = jnp.einsum("bthi,hio->btho", h.reshape(B, T, H, d), W_y)
        out = dense(D, D, self.dense_init, use_bias=False, name="out_proj")(y.reshape(B, T, D))
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return h + out, ()


def _split_qkvb(qkvb, d):
    """[..., 3d+1] -> q, k, v [..., d] and beta [...] (raw, before activations)."""
    return qkvb[..., :d], qkvb[..., d:2 * d], qkvb[..., 2 * d:3 * d], qkvb[..., 3 * d]


class DeltaNetLayer(nn.Module):
    """DeltaNet layer (Schlag et al. 2021; original `FastFFlayer`).

    LN(x) -> bias-free projection to q, k, v, beta per head; q, k: elu+1 and sum-normalised
    (`sum_norm_eps`: 0 in the few-shot code, 1e-5 in the RL code; computed by
    `srwm_jax.feature_maps.elu_p1_sum_norm`, finite for every finite input); beta: sigmoid;
    fast weights start at zero; y = W_t q after the update; out projection, dropout, x + out.
    """
    num_heads: int
    head_dim: int
    dropout: float = 0.0
    sum_norm_eps: float = 0.0
    impl: Impl = "auto"
    state_gradient: str = "unroll"   # "unroll" | "step" (module docstring)
    dense_init: str = "flax"         # "flax" | "torch" (module docstring)
    STATE_DOC: ClassVar[str] = "fast weights [B, H, d, d]; H heads, d head dim"

    def initial_state(self, batch_size):
        d = self.head_dim
        return jnp.zeros((batch_size, self.num_heads, d, d), jnp.float32)

    @nn.compact
    def __call__(self, x, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, x, state, reset)
        _check_state_gradient("DeltaNetLayer", self.state_gradient)
        B, T, D = x.shape
        H, d = self.num_heads, self.head_dim
        qkvb = dense(H * (3 * d + 1), D, self.dense_init, use_bias=False, name="slow_proj")(
            nn.LayerNorm(epsilon=1e-5)(x)).reshape(B, T, H, 3 * d + 1)
        q, k, v, beta = _split_qkvb(qkvb, d)
        q = elu_p1_sum_norm(q, self.sum_norm_eps)
        k = elu_p1_sum_norm(k, self.sum_norm_eps)
        beta = jax.nn.sigmoid(beta)
        state = self.initial_state(B) if state is None else state
        y, new_state = _run_delta_rule_mode(q, k, v, beta, state, reset, self.impl,
                                            self.state_gradient)
        sow_delta_rule(self, q, k, v, beta, state, reset)
        out = dense(D, H * d, self.dense_init, use_bias=False,
                    name="out_proj")(y.reshape(B, T, H * d))
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return x + out, new_state


class SRDeltaNetLayer(nn.Module):
    """Self-referential DeltaNet (RL `SMFWPlayer`): the DeltaNet's slow projection is an SRWM.

    Per head, an SRWM with W_y [d, 3d+1] (input softmax) produces q, k, v, beta for a delta-rule
    fast weight memory: q, k softmax, beta sigmoid; out projection, dropout, h + out. The state
    is (SRWM weight change, delta-rule fast weights). (The released original of this layer calls
    an undefined function and does not run; this is the layer as described in the paper.)
    """
    num_heads: int
    head_dim: int
    dropout: float = 0.0
    input_softmax: bool = True
    beta_init: float = 0.0
    impl: Impl = "auto"
    state_gradient: str = "unroll"   # "unroll" | "step" (module docstring)
    dense_init: str = "flax"         # "flax" | "torch" (module docstring)
    STATE_DOC: ClassVar[str] = ("(SRWMWeights of the weight change: y [B, H, d, 3d+1], q, k "
                                "[B, H, d, d], b [B, H, d, 4]; fast weights [B, H, d, d]); "
                                "H heads, d head dim")

    def initial_state(self, batch_size):
        H, d = self.num_heads, self.head_dim
        return (_srwm_zero_state(batch_size, H, d, 3 * d + 1),
                jnp.zeros((batch_size, H, d, d), jnp.float32))

    @nn.compact
    def __call__(self, h, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, h, state, reset, width=self.num_heads * self.head_dim)
        _check_state_gradient("SRDeltaNetLayer", self.state_gradient)
        B, T, D = h.shape
        H, d = self.num_heads, self.head_dim
        slow = _SlowSRWM(H, d, 3 * d + 1, self.beta_init, name="slow")()
        state = self.initial_state(B) if state is None else state

        change, S = state
        change, qkvb = _run_srwm_mode(slow, h.reshape(B, T, H, d), change, reset,
                                      self.input_softmax, self.impl, self.state_gradient)
        q, k, v, beta = _split_qkvb(qkvb, d)
        y, S = _run_delta_rule_mode(jax.nn.softmax(q, -1), jax.nn.softmax(k, -1), v,
                                    jax.nn.sigmoid(beta), S, reset, self.impl, self.state_gradient)
        new_state = (change, S)

        def delta_inputs(qkvb):  # as in `run`, for the statistics (srwm_jax.introspect)
            q, k, v, beta = _split_qkvb(qkvb, d)
            return jax.nn.softmax(q, -1), jax.nn.softmax(k, -1), v, jax.nn.sigmoid(beta)

        sow_srdelta(self, h.reshape(B, T, H, d), slow, *state, reset, self.input_softmax,
                    delta_inputs)
        out = dense(D, D, self.dense_init, use_bias=False, name="out_proj")(y.reshape(B, T, D))
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return h + out, new_state


class LSTMLayer(nn.Module):
    """Single-layer LSTM over [B, T, D_in] -> [B, T, hidden]; state (c, h) each [B, hidden].

    Gates as torch.nn.LSTM (input, forget, cell, output), one bias vector. torch_init=True is
    torch.nn.LSTM's parameterisation (the RL agent's, torchbeast_procgen): every weight and
    bias drawn from U(-1/sqrt(hidden), 1/sqrt(hidden)) and a second bias b_h on the recurrent
    projection (4 * hidden more parameters).
    """
    hidden: int
    torch_init: bool = False
    STATE_DOC: ClassVar[str] = "(c, h), each [B, hidden]"

    def initial_state(self, batch_size):
        z = jnp.zeros((batch_size, self.hidden), jnp.float32)
        return (z, z)

    @nn.compact
    def __call__(self, x, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, x, state, reset)
        B, T, _ = x.shape
        n = self.hidden
        if self.torch_init:
            init = torch_uniform(n)
            gates_in = nn.Dense(4 * n, kernel_init=init, bias_init=init, name="input_proj")(x)
            W_h = self.param("W_h", init, (n, 4 * n))
            gates_in = gates_in + self.param("b_h", init, (4 * n,))
        else:
            gates_in = nn.Dense(4 * n, name="input_proj")(x)  # all time steps at once
            W_h = self.param("W_h", nn.initializers.orthogonal(), (n, 4 * n))
        state = self.initial_state(B) if state is None else state
        reset = jnp.zeros((B, T), bool) if reset is None else reset

        def step(carry, inputs):
            g_x, r_t = inputs
            c, h = (jnp.where(r_t[:, None], 0.0, a) for a in carry)  # reset before step t
            g = g_x + h @ W_h
            i, f, gg, o = jnp.split(g, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (c, h), h

        new_state, hs = lax.scan(step, state, (jnp.swapaxes(gates_in, 0, 1), reset.T))
        return jnp.swapaxes(hs, 0, 1), new_state


class ShortConv(nn.Module):
    """Causal depthwise convolution over time: y_t = sum_{j<K} w_j * x_{t-j}, per channel.

    Gives every step a learned view of the K - 1 previous inputs (the "short convolution" of
    recent linear-attention models such as flash-linear-attention's DeltaNet; not in the SRWM
    paper). Initialised as w_0 = 1 and w_j ~ N(0, past_init_std^2) for j > 0; with the default
    past_init_std = 0 a model with it starts as the model without. State: the last K - 1 inputs
    [B, K-1, D] (zeros for a fresh sequence), so a sequence split over calls gives the same
    output as one call. A reset at step t (optional bool [B, T]) hides every input before t
    from steps >= t, as if the sequence started fresh at t.
    """
    kernel_size: int
    past_init_std: float = 0.0
    STATE_DOC: ClassVar[str] = "the last K-1 inputs [B, K-1, D]; K kernel_size, D width of x"

    def initial_state(self, batch_size, width):
        return jnp.zeros((batch_size, self.kernel_size - 1, width))

    @nn.compact
    def __call__(self, x, state=None, reset=None):
        """x [B, T, D], reset None or bool [B, T] -> (y [B, T, D], state [B, K-1, D])."""
        check_layer_inputs(self, x, state, reset,
                           initial_state=lambda b: self.initial_state(b, x.shape[2]))
        K, (B, T, D) = self.kernel_size, x.shape
        if K < 1:
            raise ValueError(f"ShortConv: kernel_size={K} must be >= 1.")
        def init(key, shape):
            return (self.past_init_std * jax.random.normal(key, shape)).at[0].set(1.0)

        w = self.param("kernel", init, (K, D))
        past = self.initial_state(B, D) if state is None else state
        padded = jnp.concatenate([past.astype(x.dtype), x], axis=1)  # [B, K-1+T, D]
        if reset is None:
            y = sum(w[j].astype(x.dtype) * padded[:, K - 1 - j: K - 1 - j + T] for j in range(K))
            return y, padded[:, T:]
        # Segment number of every position (resets so far); x_{t-j} reaches step t only from
        # the same segment, i.e. with no reset in (t-j, t]. The history is segment 0.
        segment = jnp.concatenate([jnp.zeros((B, K - 1), jnp.int32),
                                   jnp.cumsum(reset.astype(jnp.int32), axis=1)], axis=1)
        seen = lambda lo, now: (segment[:, lo:lo + now.shape[1]] == now)[..., None]  # noqa: E731
        y = sum(jnp.where(seen(K - 1 - j, segment[:, K - 1:]),
                          w[j].astype(x.dtype) * padded[:, K - 1 - j: K - 1 - j + T], 0)
                for j in range(K))
        last = segment[:, -1:]
        return y, jnp.where(seen(T, jnp.broadcast_to(last, (B, K - 1))), padded[:, T:], 0)


class MemoryStack(nn.Module):
    """num_layers x [memory layer -> feed-forward block] on a residual stream of width `hidden`.

    kind: "srwm" | "deltanet" | "srdelta" | "fakesr" use `num_heads` heads of
    hidden // num_heads; "lstm" stacks LSTM layers of width `hidden` (no feed-forward blocks).
    State: a tuple with one entry per layer.
    """
    kind: str
    num_layers: int = 2
    hidden: int = 128
    num_heads: int = 8
    ff_dim: int = 512
    dropout: float = 0.0
    input_softmax: bool = False
    use_layer_norm: bool = True   # SRWM residual LN(h) + out (few-shot); False: h + out (RL)
    beta_init: float = -1.0
    sum_norm_eps: float = 0.0
    impl: Impl = "auto"
    state_gradient: str = "unroll"   # fast-weight kinds: "unroll" | "step" (module docstring)
    dense_init: str = "flax"         # "flax" | "torch": every projection and FF block (and
                                     # kind="lstm": torch.nn.LSTM's init and second bias)

    def _layers(self, **kw):
        """The memory layers; kw=dict(parent=None) builds detached copies (for initial_state)."""
        if self.kind not in MEMORY_KINDS:
            raise ValueError(f"MemoryStack: unknown kind {self.kind!r}; "
                             f"choose one of {MEMORY_KINDS}.")
        if self.kind != "lstm" and self.hidden % self.num_heads:
            raise ValueError(f"MemoryStack: hidden={self.hidden} is not divisible by "
                             f"num_heads={self.num_heads}.")
        if self.kind == "lstm" and self.state_gradient != "unroll":
            raise ValueError(f"MemoryStack: state_gradient={self.state_gradient!r} applies to the "
                             "fast-weight kinds only; use 'unroll' with kind='lstm'.")
        _check_state_gradient("MemoryStack", self.state_gradient)
        H, d = self.num_heads, self.hidden // self.num_heads
        fw = dict(state_gradient=self.state_gradient, dense_init=self.dense_init)
        make: dict[str, Any] = {
            "srwm": lambda i: SRWMLayer(H, d, self.dropout, self.input_softmax, self.use_layer_norm,
                                        self.beta_init, self.impl, name=f"srwm_{i}", **fw, **kw),
            "deltanet": lambda i: DeltaNetLayer(H, d, self.dropout, self.sum_norm_eps, self.impl,
                                                name=f"deltanet_{i}", **fw, **kw),
            "srdelta": lambda i: SRDeltaNetLayer(H, d, self.dropout, self.input_softmax,
                                                 self.beta_init, self.impl, name=f"srdelta_{i}",
                                                 **fw, **kw),
            "fakesr": lambda i: FakeSRLayer(H, d, self.dropout, dense_init=self.dense_init,
                                            name=f"fakesr_{i}", **kw),
            # dense_init="torch": torch.nn.LSTM's parameterisation, as the original's LSTM baseline.
            "lstm": lambda i: LSTMLayer(self.hidden, torch_init=self.dense_init == "torch",
                                        name=f"lstm_{i}", **kw),
        }[self.kind]
        return [make(i) for i in range(self.num_layers)]

    def initial_state(self, batch_size):
        return tuple(layer.initial_state(batch_size) for layer in self._layers(parent=None))

    def state_doc(self):
        """The state's shapes in words (for error messages)."""
        layer = self._layers(parent=None)[0]
        return f"a tuple of {self.num_layers} {type(layer).__name__} states: {layer.STATE_DOC}"

    @nn.compact
    def __call__(self, x, state=None, reset=None, *, deterministic=True):
        check_layer_inputs(self, x, state, reset, state_doc=self.state_doc(), width_doc="hidden",
                           width=None if self.kind == "lstm" else self.hidden)
        layers = self._layers()
        state = self.initial_state(x.shape[0]) if state is None else state
        new_state = []
        for i, (layer, s) in enumerate(zip(layers, state)):
            x, s = layer(x, s, reset, deterministic=deterministic)
            new_state.append(s)
            if self.kind != "lstm":
                x = FeedForward(self.ff_dim, self.dropout, dense_init=self.dense_init,
                                name=f"ff_{i}")(x, deterministic=deterministic)
        return x, tuple(new_state)
