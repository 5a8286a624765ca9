"""Flax VSML layer: a stack of dense layers whose weights are tiny shared LSTMs (srwm_jax.ops.vsml).

Legend: B batch, T time, A = in_features, O = out_features, m msg_size, s state_size,
L layers (len(hidden) + 1).

Same contract as the layers of `srwm_jax.layers`:
    y, new_state = layer(x [B, T, A], state, reset=None, *, feedback=None, deterministic=True)
with `initial_state(batch_size)` (callable on the unbound module), `state=None` for a fresh
sequence and `reset` bool [B, T] restoring the fresh state before step t. x enters channel 0
of the forward messages of layer 0's input units (the other channels are 0, as the
original's); y [B, T, O] is channel 0 of the last layer's forward messages (tanh-bounded when
output_bound > 0). `feedback` is what the output units receive from outside, per step:
with error_feedback (default), the target of the previous step [B, T, O] (e.g. the one-hot
label of step t-1, as fewshot.sequential.delayed_label_inputs gives), turned inside the
recurrence into [softmax(y_{t-1}) - target, target] (the original's error and label inputs);
otherwise backward messages [B, T, O, f] with f <= m channels (zero-padded to m). None feeds
zeros: the network then only runs forward.

The fresh state: h = 0, c = 0 except its first round(rand_fraction * s) channels, drawn once
from `init_seed` (the original draws them anew for every episode; here the fresh state is
fixed so that a reset always restores the same one, as the other layers' resets do).

Introspection: when the flax collection `fast_weight_stats` is mutable in `apply`, the layer
sows VSMLStats per step and layer (state norm, step change, distance from the fresh state).
"""
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from srwm_jax.introspect import STATS_COLLECTION, recording
from srwm_jax.layer_inputs import check_layer_inputs
from srwm_jax.ops.vsml import (REDUCTIONS, VSMLNetworkState, VSMLParams, network_step,
                               init_network_state, init_vsml_params, vsml_network)


class VSMLStats(NamedTuple):
    """Per-step statistics of a VSML layer, float32, each [B, T, L] (one column per layer):
    state_norm ||c_t||_F over [A, O, s], state_change ||c_t - c_{t-1}||_F, distance
    ||c_t - c_fresh||_F (how far the learned "weights" moved from the fresh state)."""
    state_norm: jax.Array
    state_change: jax.Array
    distance: jax.Array


def _norm(a):
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=(-3, -2, -1)))


def vsml_stats(params, fwd_in, bwd_in, state, fresh, reset=None, *, micro_ticks=1,
               reduce="mean", error_feedback=False, forget_offset=5.0, input_offset=-5.0):
    """Reruns `vsml_network` (same arguments; `fresh` is the reset state and the reference of
    `distance`) as a plain scan recording VSMLStats [B, T, L]. Never touches the op's path."""
    kw = dict(micro_ticks=micro_ticks, reduce=reduce, error_feedback=error_feedback,
              offsets=(forget_offset, input_offset))
    B, T = fwd_in.shape[:2]
    reset = jnp.zeros((B, T), bool) if reset is None else reset

    def step(carry, inputs):
        f_t, b_t, r_t = inputs
        carry = jax.tree.map(lambda f, c: jnp.where(r_t.reshape((-1,) + (1,) * (c.ndim - 1)), f, c),
                             fresh, carry)
        new, _ = network_step(params, carry, f_t, b_t, **kw)
        stats = VSMLStats(*(jnp.stack(v, -1) for v in zip(*[
            (_norm(n.c), _norm(n.c - o.c), _norm(n.c - f.c))
            for n, o, f in zip(new.lstm, carry.lstm, fresh.lstm)])))
        return new, stats

    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    _, stats = lax.scan(step, state, (tm(fwd_in), tm(bwd_in), tm(reset)))
    return jax.tree.map(lambda a: tm(a).astype(jnp.float32), stats)


class VSMLLayer(nn.Module):
    """A VSML network of dense layers A -> hidden... -> O (module docstring; the op's docstring
    has the equations). Parameters: one VSMLParams shared by every layer (shared=True, the
    original's default) or one per layer."""
    in_features: int
    out_features: int
    hidden: tuple = ()
    msg_size: int = 8
    state_size: int = 16
    micro_ticks: int = 1
    shared: bool = True
    reduce: str = "mean"
    error_feedback: bool = True
    output_bound: float = 0.0      # > 0: y = bound * tanh(y / bound), the original's tanh_bound
    rand_fraction: float = 0.5     # random part of the fresh cell state (init_rand_proportion)
    init_seed: int = 0
    forget_offset: float = 5.0
    input_offset: float = -5.0
    chunk: int = 16                # steps per checkpointed chunk of the gradient's time scan
    STATE_DOC: ClassVar[str] = ("VSMLNetworkState: lstm (per layer VSMLState h, c "
                                "[B, A_l, O_l, s]), bwd (L-1 backward messages [B, O_l, m]), "
                                "out [B, O]")

    def sizes(self):
        return (self.in_features, *self.hidden, self.out_features)

    def initial_state(self, batch_size):
        return init_network_state(batch_size, self.sizes(), self.msg_size, self.state_size,
                                  key=jax.random.key(self.init_seed),
                                  rand_fraction=self.rand_fraction)

    def _check_fields(self):
        name = type(self).__name__
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"{name}: reduce={self.reduce!r}; choose one of {REDUCTIONS}.")
        if min(self.sizes()) < 1 or self.msg_size < (2 if self.error_feedback else 1):
            raise ValueError(f"{name}: unit counts {self.sizes()} must be >= 1 and msg_size "
                             f"{self.msg_size} >= {2 if self.error_feedback else 1} (error "
                             "feedback sends the error and the label).")
        if self.micro_ticks < 1 or self.state_size < 1 or self.chunk < 1:
            raise ValueError(f"{name}: micro_ticks={self.micro_ticks}, state_size="
                             f"{self.state_size} and chunk={self.chunk} must be >= 1.")

    @nn.compact
    def __call__(self, x, state=None, reset=None, *, feedback=None, deterministic=True):
        """x [B, T, A], state, reset bool [B, T], feedback (module docstring) -> (y [B, T, O],
        new state). deterministic is accepted for the common contract (no dropout here)."""
        del deterministic
        self._check_fields()
        check_layer_inputs(self, x, state, reset, width=self.in_features, width_doc="in_features")
        B, T, _ = x.shape
        m = self.msg_size
        feedback = self._feedback(feedback, B, T, x.dtype)
        L = len(self.sizes()) - 1
        make = lambda key: init_vsml_params(key, m, self.state_size)  # noqa: E731
        if self.shared:
            p = VSMLParams(*self.param("lstm", make))
            params = (p,) * L
        else:
            params = tuple(VSMLParams(*self.param(f"lstm_{i}", make)) for i in range(L))
        # The recurrence computes in the promoted dtype of x and the parameters.
        dtype = jnp.result_type(x.dtype, params[0].w_x.dtype)
        cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)  # noqa: E731
        fresh = cast(self.initial_state(B))
        state = fresh if state is None else cast(VSMLNetworkState(*state))
        fwd_in = jnp.pad(x[..., None], [(0, 0)] * 3 + [(0, m - 1)]).astype(dtype)
        feedback = feedback.astype(dtype)
        kw = dict(micro_ticks=self.micro_ticks, reduce=self.reduce,
                  error_feedback=self.error_feedback, forget_offset=self.forget_offset,
                  input_offset=self.input_offset)
        fwd_out, _, new_state = vsml_network(params, fwd_in, feedback, state, reset=reset,
                                             reset_state=fresh, chunk=self.chunk, **kw)
        if recording(self):
            args = lax.stop_gradient((params, fwd_in, feedback, state))
            self.sow(STATS_COLLECTION, "vsml", vsml_stats(*args, fresh, reset, **kw))
        y = fwd_out[..., 0]
        if self.output_bound > 0:
            y = self.output_bound * jnp.tanh(y / self.output_bound)
        return y, new_state

    def _feedback(self, feedback, B, T, dtype):
        n_out, m = self.out_features, self.msg_size
        name = type(self).__name__
        want = [B, T, n_out] if self.error_feedback else [B, T, n_out, "f <= m"]
        if feedback is None:
            return jnp.zeros((B, T, n_out) if self.error_feedback else (B, T, n_out, m), dtype)
        shape = list(getattr(feedback, "shape", ()))
        ok = (shape == [B, T, n_out] if self.error_feedback
              else len(shape) == 4 and shape[:3] == [B, T, n_out] and shape[3] <= m)
        if not ok:
            raise ValueError(f"{name}: feedback has shape {shape}, expected {want} (B batch, T "
                             f"time of x, O = out_features = {n_out}"
                             f"{'; targets of the previous step' if self.error_feedback else ''}).")
        feedback = jnp.asarray(feedback, dtype)
        if not self.error_feedback:
            feedback = jnp.pad(feedback, [(0, 0)] * 3 + [(0, m - shape[3])])
        return feedback
