"""Step-by-step reference of a VSML network: the definition `srwm_jax.ops.vsml` is tested against.

A Python loop over steps, layers and micro-ticks; every LSTM (a, o) of a layer reads the
literal concatenation [fwd_a, bwd_o] (one vmap over a, one over o), messages are merged by an
explicit mean / sum over the [A, O] grid, resets replace the state before their step. No
chunking, no checkpointing, no separable shortcut: under `jax.enable_x64(True)` with float64
inputs it computes in float64, and `jax.grad` of it gives reference gradients. Meant for small
sizes (it unrolls T in Python).

Legend and equations: `srwm_jax.ops.vsml` (Kirsch & Schmidhuber 2021, Sec. 3).
"""
import jax
import jax.numpy as jnp
from jax import lax

_HI = lax.Precision.HIGHEST


def _one_lstm(p, fwd_a, bwd_o, h, c, forget_offset, input_offset):
    """One weight's LSTM: fwd_a, bwd_o [m], h, c [s] -> (fwd msg [m], bwd msg [m], h, c)."""
    x = jnp.concatenate([fwd_a, bwd_o])
    z = jnp.dot(x, p.w_x, precision=_HI) + jnp.dot(h, p.w_h, precision=_HI) + p.b
    s = h.shape[0]
    i, g, f, o = z[:s], z[s:2 * s], z[2 * s:3 * s], z[3 * s:]
    c = jax.nn.sigmoid(f + forget_offset) * c + jax.nn.sigmoid(i + input_offset) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (jnp.dot(h, p.w_fwd, precision=_HI) + p.b_fwd,
            jnp.dot(h, p.w_bwd, precision=_HI) + p.b_bwd, h, c)


def vsml_tick_reference(p, fwd, bwd, h, c, reduce="mean", forget_offset=5.0, input_offset=-5.0):
    """fwd [B, A, m], bwd [B, O, m], h, c [B, A, O, s] -> (fwd_out [B, O, m], bwd_out [B, A, m],
    h, c)."""
    def cell(fwd_a, bwd_o, h_ao, c_ao):
        return _one_lstm(p, fwd_a, bwd_o, h_ao, c_ao, forget_offset, input_offset)

    over_o = jax.vmap(cell, in_axes=(None, 0, 0, 0))
    over_ao = jax.vmap(over_o, in_axes=(0, None, 0, 0))
    f_msg, b_msg, h, c = jax.vmap(over_ao)(fwd, bwd, h, c)   # [B, A, O, m] messages
    merge = jnp.mean if reduce == "mean" else jnp.sum
    return merge(f_msg, axis=1), merge(b_msg, axis=2), h, c


def vsml_network_reference(params, fwd_in, bwd_in, state, *, reset=None, reset_state=None,
                           micro_ticks=1, reduce="mean", error_feedback=False,
                           forget_offset=5.0, input_offset=-5.0):
    """The same arguments and results as `srwm_jax.ops.vsml.vsml_network` (no `chunk`).

    state: anything with fields lstm (L pairs (h, c)), bwd (L-1 arrays [B, O_l, m]) and out
    [B, O]; returns the final state as a plain (lstm, bwd, out) tuple.
    """
    L = len(params)
    B, T, _, m = fwd_in.shape
    lstm = [tuple(s) for s in state.lstm]
    bwd_between = list(state.bwd)
    out = state.out
    fresh = state if reset_state is None else reset_state
    fwd_outs, bwd_outs = [], []
    for t in range(T):
        if reset is not None:
            r = reset[:, t]
            pick = lambda f, c: jnp.where(r.reshape((-1,) + (1,) * (c.ndim - 1)), f, c)  # noqa: E731
            lstm = [tuple(pick(f, c) for f, c in zip(fs, cs)) for fs, cs in zip(fresh.lstm, lstm)]
            bwd_between = [pick(f, c) for f, c in zip(fresh.bwd, bwd_between)]
            out = pick(fresh.out, out)
        if error_feedback:
            target = bwd_in[:, t]
            err = jax.nn.softmax(out, axis=-1) - target
            outside_bwd = jnp.zeros(target.shape + (m,), fwd_in.dtype)
            outside_bwd = outside_bwd.at[..., 0].set(err).at[..., 1].set(target)
        else:
            outside_bwd = bwd_in[:, t]
        fwd = fwd_in[:, t]
        new_between = list(bwd_between)
        for layer in range(L):
            incoming = outside_bwd if layer == L - 1 else bwd_between[layer]
            h, c = lstm[layer]
            for _ in range(micro_ticks):
                f_out, b_out, h, c = vsml_tick_reference(params[layer], fwd, incoming, h, c,
                                                         reduce, forget_offset, input_offset)
            lstm[layer] = (h, c)
            if layer > 0:
                new_between[layer - 1] = b_out
            else:
                bwd_outs.append(b_out)
            fwd = f_out
        bwd_between = new_between
        out = fwd[..., 0]
        fwd_outs.append(fwd)
    return (jnp.stack(fwd_outs, 1), jnp.stack(bwd_outs, 1),
            (tuple(lstm), tuple(bwd_between), out))
