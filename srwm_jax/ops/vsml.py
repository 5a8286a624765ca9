"""VSML: every weight of a dense layer is a tiny LSTM; all of them share one set of parameters.

Variable Shared Meta Learning (Kirsch & Schmidhuber, "Meta Learning Backpropagation And
Improving It", NeurIPS 2021, Sec. 3 / Eqs. 1-3; semantics matched to the authors'
`vsml_layers.dense`, `models.SubRNN`, `models.VSMLRNN._tick` and `recurrent.CustomLSTM` in
louiskirsch/vsml-neurips2021, written here from the paper and that reading).

Legend: B batch, T time (input steps), A = n_in input units, O = n_out output units of a
layer, m message size, s LSTM state size (the "slow" size in the paper's terms), L layers.

One tick of a dense VSML layer: the LSTM at weight (a, o) reads its input unit's forward
message and its output unit's backward message,
    z_ao  = [fwd_a, bwd_o] W_x + h_ao W_h + b                        (4s gates: i, g, f, o)
    c_ao' = sigmoid(f + forget_offset) c_ao + sigmoid(i + input_offset) tanh(g)
    h_ao' = sigmoid(o) tanh(c_ao')
and emits the messages  fwd_ao = h_ao' W_f + b_f,  bwd_ao = h_ao' W_b + b_b,  merged at the
units by the mean (the original's reduce_fn; "sum" is the alternative):
    fwd_out[o] = mean_a fwd_ao   [B, O, m],      bwd_out[a] = mean_o bwd_ao   [B, A, m].
The gate offsets (+5 forget, -5 input by default, as the original's CustomLSTM) make the
states, i.e. the "weights", change slowly. This op computes the tick without forming the
[A, O, 2m] concatenation: the input projection splits into a per-input-unit and a
per-output-unit part, and the mean commutes with the linear read-out. The step-by-step
reference (`srwm_jax.reference_vsml`) forms it literally.

A network (`vsml_network`): L dense layers; per input step every layer runs `micro_ticks`
ticks in order 0..L-1 on the same incoming messages (the original's loop). Layer l's forward
output is layer l+1's forward input in the same step; its backward output is layer l-1's
backward input from the next step on (the backward messages travel one layer per step, as in
the original). Layer 0's forward input and layer L-1's backward input come from outside.

Errors feedback (`error_feedback=True`, the paper's online classification): the outside
backward input of step t is built from the target y*_{t-1} the caller gives (e.g. the one-hot
label of the previous step): channel 0 = softmax(out_{t-1}) - y*_{t-1} (the cross-entropy
gradient with respect to the previous output's logits, the original's loss gradient), channel
1 = y*_{t-1} (the label, `feed_label`), other channels 0, with out the forward output's channel
0. The previous output is part of the state.

Gradients over long episodes: the time scan runs in chunks of `chunk` steps under
`jax.checkpoint`, so the backward pass keeps the state at chunk boundaries (T / chunk copies)
and recomputes one chunk at a time (chunk copies), instead of one copy per step.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

REDUCTIONS = ("mean", "sum")
_HI = lax.Precision.HIGHEST


class VSMLParams(NamedTuple):
    """The parameters shared by every LSTM of a layer (or of all layers).

    w_x [2m, 4s] (rows: forward message, then backward message), w_h [s, 4s], b [4s]
    (gates i, g, f, o), w_fwd [s, m], b_fwd [m], w_bwd [s, m], b_bwd [m].
    """
    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    w_fwd: jax.Array
    b_fwd: jax.Array
    w_bwd: jax.Array
    b_bwd: jax.Array


class VSMLState(NamedTuple):
    """The LSTM states of one layer: h, c each [B, A, O, s]."""
    h: jax.Array
    c: jax.Array


class VSMLNetworkState(NamedTuple):
    """State of a network: lstm (one VSMLState per layer), bwd (for l = 0..L-2, the backward
    message [B, O_l, m] layer l+1 sent to layer l's output units in the last step) and out
    [B, O_{L-1}] (channel 0 of the last forward output; read by error_feedback only)."""
    lstm: tuple
    bwd: tuple
    out: jax.Array


def init_vsml_params(key, msg_size: int, state_size: int, dtype=jnp.float32) -> VSMLParams:
    """Random VSMLParams: every matrix truncated normal with std 1/sqrt(fan_in), zero biases
    (the original's CustomLSTM / hk.Linear defaults)."""
    m, s = msg_size, state_size
    k = jax.random.split(key, 4)

    def tn(key, shape, fan_in):
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) / fan_in ** 0.5

    # The original's LSTM matrix reads [inputs, h] together: fan_in 2m + s for both parts.
    return VSMLParams(w_x=tn(k[0], (2 * m, 4 * s), 2 * m + s), w_h=tn(k[1], (s, 4 * s), 2 * m + s),
                      b=jnp.zeros((4 * s,), dtype), w_fwd=tn(k[2], (s, m), s),
                      b_fwd=jnp.zeros((m,), dtype), w_bwd=tn(k[3], (s, m), s),
                      b_bwd=jnp.zeros((m,), dtype))


def init_vsml_state(batch_size: int, n_in: int, n_out: int, state_size: int, *,
                    key=None, rand_fraction: float = 0.0, dtype=jnp.float32) -> VSMLState:
    """A fresh layer state: h = 0; c = 0, or with `key`, its first round(rand_fraction * s)
    channels drawn N(0, 1/n_in) truncated at 2 std (the original's `initial_vsml_state`: the
    random part plays the role of a random weight initialisation), the same for every b."""
    shape = (n_in, n_out, state_size)
    c = jnp.zeros(shape, dtype)
    n_rand = int(round(rand_fraction * state_size))
    if key is not None and n_rand:
        r = jax.random.truncated_normal(key, -2.0, 2.0, (n_in, n_out, n_rand), dtype) / n_in ** 0.5
        c = c.at[..., :n_rand].set(r)
    c = jnp.broadcast_to(c, (batch_size,) + shape)
    return VSMLState(jnp.zeros_like(c), c)


def _reduce(a, axis, reduce):
    return jnp.mean(a, axis) if reduce == "mean" else jnp.sum(a, axis)


def vsml_tick(params: VSMLParams, fwd, bwd, state: VSMLState, *, reduce: str = "mean",
              forget_offset: float = 5.0, input_offset: float = -5.0):
    """One tick of a dense VSML layer (module docstring).

    Args:
      params: VSMLParams (message size m, state size s).
      fwd: [B, A, m] forward messages at the input units.
      bwd: [B, O, m] backward messages at the output units.
      state: VSMLState, h and c [B, A, O, s].
      reduce: "mean" (the original) or "sum": how messages merge at a unit.
      forget_offset, input_offset: added to the forget and input gate pre-activations.

    Returns:
      (fwd_out [B, O, m], bwd_out [B, A, m], new VSMLState).

    Raises:
      ValueError: shapes that do not fit together (see `check_vsml_shapes`).
    """
    check_vsml_shapes(params, fwd, bwd, state)
    return _tick(params, fwd, bwd, state, reduce, forget_offset, input_offset)


def _tick(p, fwd, bwd, state, reduce, forget_offset, input_offset):
    m = fwd.shape[-1]
    g_in = jnp.einsum("bam,mg->bag", fwd, p.w_x[:m], precision=_HI)    # per input unit
    g_out = jnp.einsum("bom,mg->bog", bwd, p.w_x[m:], precision=_HI)   # per output unit
    z = (g_in[:, :, None] + g_out[:, None] + p.b
         + jnp.einsum("baos,sg->baog", state.h, p.w_h, precision=_HI))
    i, g, f, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + forget_offset) * state.c + jax.nn.sigmoid(i + input_offset) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    # mean_a (h_ao W_f + b_f) = (mean_a h_ao) W_f + b_f; with "sum" the bias counts A times.
    n_in, n_out = (1, 1) if reduce == "mean" else h.shape[1:3]
    fwd_out = jnp.einsum("bos,sm->bom", _reduce(h, 1, reduce), p.w_fwd, precision=_HI)
    bwd_out = jnp.einsum("bas,sm->bam", _reduce(h, 2, reduce), p.w_bwd, precision=_HI)
    fwd_out = fwd_out + n_in * p.b_fwd
    bwd_out = bwd_out + n_out * p.b_bwd
    return fwd_out, bwd_out, VSMLState(h, c)


def check_vsml_shapes(params, fwd, bwd, state):
    """Raises a ValueError naming the argument whose shape does not fit (legend of the module)."""
    if len(params) != 7:
        raise ValueError("params must be a VSMLParams(w_x, w_h, b, w_fwd, b_fwd, w_bwd, b_bwd).")
    two_m, four_s = params.w_x.shape if params.w_x.ndim == 2 else (None, None)
    if two_m is None or two_m % 2 or four_s % 4:
        raise ValueError(f"params.w_x has shape {list(params.w_x.shape)}, expected [2m, 4s] "
                         "(m message size, s state size).")
    m, s = two_m // 2, four_s // 4
    want = {"w_h": (s, 4 * s), "b": (4 * s,), "w_fwd": (s, m), "b_fwd": (m,), "w_bwd": (s, m),
            "b_bwd": (m,)}
    for name, shape in want.items():
        if tuple(getattr(params, name).shape) != shape:
            raise ValueError(f"params.{name} has shape {list(getattr(params, name).shape)}, "
                             f"expected {list(shape)} (m = {m} message size, s = {s} state size "
                             "from params.w_x [2m, 4s]).")
    for name, a in (("fwd", fwd), ("bwd", bwd)):
        if a.ndim != 3 or a.shape[-1] != m or not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} has shape {list(a.shape)} and dtype {a.dtype}, expected a "
                             f"floating-point [B, {'A' if name == 'fwd' else 'O'}, m = {m}] array "
                             "(B batch, A input / O output units, m message size).")
    B, A, n_out = fwd.shape[0], fwd.shape[1], bwd.shape[1]
    if bwd.shape[0] != B:
        raise ValueError(f"bwd has batch {bwd.shape[0]}, fwd has {B}: both are [B, *, m].")
    for name in ("h", "c"):
        a = getattr(state, name)
        if tuple(a.shape) != (B, A, n_out, s):
            raise ValueError(f"state.{name} has shape {list(a.shape)}, expected [B, A, O, s] = "
                             f"{[B, A, n_out, s]} (B batch and A inputs from fwd, O outputs "
                             "from bwd, s state size from params).")


def _error_feedback(out_prev, target, m):
    err = jax.nn.softmax(out_prev, axis=-1) - target
    msg = jnp.stack([err, target], axis=-1)
    return jnp.pad(msg, [(0, 0)] * (msg.ndim - 1) + [(0, m - 2)])


def network_step(params, state, fwd_in, bwd_in, *, micro_ticks, reduce, error_feedback,
                 offsets):
    """One input step of `vsml_network`, unchecked: fwd_in [B, A_0, m], bwd_in [B, O, m] (or
    targets [B, O] with error_feedback), offsets (forget, input). Returns (new
    VSMLNetworkState, (fwd_out [B, O, m], bwd_out [B, A_0, m])). Used by the statistics
    recorder of srwm_jax.vsml_layer."""
    L = len(state.lstm)
    m = fwd_in.shape[-1]
    if error_feedback:
        bwd_in = _error_feedback(state.out, bwd_in, m)
    fwd = fwd_in
    lstm, bwd_next, bwd_first = list(state.lstm), list(state.bwd), None
    for li in range(L):
        incoming_bwd = bwd_in if li == L - 1 else state.bwd[li]
        s = lstm[li]
        for _ in range(micro_ticks):
            fwd_out, bwd_out, s = _tick(params[li], fwd, incoming_bwd, s, reduce, *offsets)
        lstm[li] = s
        if li > 0:
            bwd_next[li - 1] = bwd_out
        else:
            bwd_first = bwd_out
        fwd = fwd_out
    return VSMLNetworkState(tuple(lstm), tuple(bwd_next), fwd[..., 0]), (fwd, bwd_first)


def _where_reset(r, fresh, current):
    return jax.tree.map(lambda f, c: jnp.where(r.reshape((-1,) + (1,) * (c.ndim - 1)), f, c),
                        fresh, current)


def vsml_network(params: Sequence[VSMLParams], fwd_in, bwd_in, state: VSMLNetworkState, *,
                 reset=None, reset_state: VSMLNetworkState | None = None, micro_ticks: int = 1,
                 reduce: str = "mean", error_feedback: bool = False, chunk: int = 16,
                 forget_offset: float = 5.0, input_offset: float = -5.0):
    """Runs an L-layer VSML network over T input steps (module docstring).

    Args:
      params: L VSMLParams, one per layer (pass the same one L times to share it).
      fwd_in: [B, T, A_0, m] forward messages at layer 0's input units.
      bwd_in: [B, T, O_{L-1}, m] backward messages at the last layer's output units; with
        error_feedback, [B, T, O_{L-1}] targets y*_{t-1} instead (module docstring).
      state: VSMLNetworkState before step 0 (`init_network_state`).
      reset: None or bool [B, T]: where reset[b, t], sequence b's state is replaced by
        `reset_state` before step t.
      reset_state: VSMLNetworkState with [B, ...] leaves; default: `state`.
      micro_ticks: ticks per layer and input step (>= 1).
      reduce: "mean" | "sum".  error_feedback: see the module docstring.
      chunk: steps per checkpointed chunk of the time scan (memory of the gradient).
      forget_offset, input_offset: LSTM gate offsets.

    Returns:
      (fwd_out [B, T, O_{L-1}, m], bwd_out [B, T, A_0, m], final VSMLNetworkState); the
      outputs of each step are those of its last micro-tick.

    Raises:
      ValueError: a shape that does not fit, L = 0, micro_ticks < 1, chunk < 1 or an unknown
      reduce.
    """
    params = tuple(params)
    L = len(params)
    if L == 0 or len(state.lstm) != L or len(state.bwd) != L - 1:
        raise ValueError(f"got {L} VSMLParams and a state with {len(state.lstm)} layers and "
                         f"{len(state.bwd)} backward messages: expected L >= 1 of each and L - 1.")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}: choose one of {REDUCTIONS}.")
    if micro_ticks < 1 or chunk < 1:
        raise ValueError(f"micro_ticks={micro_ticks} and chunk={chunk} must be >= 1.")
    if fwd_in.ndim != 4 or bwd_in.ndim != (3 if error_feedback else 4):
        raise ValueError(f"fwd_in has shape {list(fwd_in.shape)}, expected [B, T, A, m]; bwd_in "
                         f"{list(bwd_in.shape)}, expected "
                         f"{'[B, T, O] targets' if error_feedback else '[B, T, O, m]'} (B batch, "
                         "T time, A input units of layer 0, O output units of the last layer).")
    B, T = fwd_in.shape[:2]
    if tuple(bwd_in.shape[:2]) != (B, T):
        raise ValueError(f"bwd_in has shape {list(bwd_in.shape)}: its [B, T] must equal "
                         f"fwd_in's {[B, T]}.")
    m = fwd_in.shape[-1]
    if error_feedback and m < 2:
        raise ValueError(f"error_feedback needs message size m >= 2 (error and label), got {m}.")
    # Shape checks layer by layer, on one step (the messages between layers included).
    fwd = fwd_in[:, 0]
    for li in range(L):
        n_out = state.lstm[li].h.shape[2] if state.lstm[li].h.ndim == 4 else -1
        bwd = (jnp.zeros((B, n_out, m), fwd.dtype) if li == L - 1 else state.bwd[li])
        check_vsml_shapes(params[li], fwd, bwd, state.lstm[li])
        fwd = jnp.zeros((B, n_out, m), fwd.dtype)
    if error_feedback and tuple(bwd_in.shape) != (B, T, fwd.shape[1]):
        raise ValueError(f"bwd_in (targets) has shape {list(bwd_in.shape)}, expected "
                         f"{[B, T, fwd.shape[1]]} [B, T, O] (O output units of the last layer).")
    if not error_feedback and tuple(bwd_in.shape) != (B, T, fwd.shape[1], m):
        raise ValueError(f"bwd_in has shape {list(bwd_in.shape)}, expected "
                         f"{[B, T, fwd.shape[1], m]} [B, T, O, m].")
    if reset is not None and (tuple(reset.shape) != (B, T) or reset.dtype != jnp.bool_):
        raise ValueError(f"reset has shape {list(reset.shape)} and dtype {reset.dtype}, expected "
                         f"bool [B, T] = {[B, T]}.")
    fresh = state if reset_state is None else reset_state
    kw = dict(micro_ticks=micro_ticks, reduce=reduce, error_feedback=error_feedback,
              offsets=(forget_offset, input_offset))

    def step(carry, inputs):
        f_t, b_t, r_t = inputs
        if r_t is not None:
            carry = _where_reset(r_t, fresh, carry)
        return network_step(params, carry, f_t, b_t, **kw)

    C = min(chunk, T)
    n = -(-T // C)
    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731

    def chunked(a):
        a = tm(a)
        a = jnp.pad(a, [(0, n * C - T)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((n, C) + a.shape[1:])

    valid = (jnp.arange(n * C) < T).reshape(n, C)
    xs = (chunked(fwd_in), chunked(bwd_in), None if reset is None else chunked(reset))

    @jax.checkpoint
    def run_chunk(carry, inputs):
        def masked_step(c, inp):
            *inp, ok = inp
            new, ys = step(c, inp)
            return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, c), ys
        return lax.scan(masked_step, carry, inputs)

    final, (fwd_out, bwd_out) = lax.scan(run_chunk, state, (*xs, valid))
    unchunk = lambda a: tm(a.reshape((n * C,) + a.shape[2:])[:T])  # noqa: E731
    return unchunk(fwd_out), unchunk(bwd_out), final


def init_network_state(batch_size: int, sizes: Sequence[int], msg_size: int, state_size: int,
                       *, key=None, rand_fraction: float = 0.0,
                       dtype=jnp.float32) -> VSMLNetworkState:
    """Fresh VSMLNetworkState for units `sizes` = (A_0, O_0 = A_1, ..., O_{L-1}).

    key / rand_fraction: see `init_vsml_state` (one key per layer is split from key)."""
    L = len(sizes) - 1
    keys = [None] * L if key is None else list(jax.random.split(key, L))
    lstm = tuple(init_vsml_state(batch_size, sizes[li], sizes[li + 1], state_size, key=keys[li],
                                 rand_fraction=rand_fraction, dtype=dtype) for li in range(L))
    bwd = tuple(jnp.zeros((batch_size, sizes[li + 1], msg_size), dtype) for li in range(L - 1))
    return VSMLNetworkState(lstm, bwd, jnp.zeros((batch_size, sizes[-1]), dtype))
