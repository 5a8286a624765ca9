"""Per-step statistics of the fast-weight operators: what the self-referential weights do.

Legend: B batch, T time, H heads, d head dim, dy output dim of W_y, dk / dv key / value dims.

`srwm_stats` and `delta_rule_stats` rerun the definition of `srwm` / `delta_rule` (paper
Eqs. 5-8; Schlag et al. 2021) as a plain float32 `lax.scan` that records, per (batch, head,
step), the quantities below. They never touch the op's own path, so the op's results are
unchanged and whatever `impl` (scan or Pallas kernel) the model ran with, the statistics come
from this reference loop. They work under `jit` and `vmap`. Cost: one extra sequential pass,
only when called.

Resets follow the ops: `reset [B, T]` bool; where reset[b, t] is True the state before step t
is replaced by the reset state (SRWM: `W_reset`, default the W passed in; delta rule:
`S_reset`, default zeros).

SRWM, per step t (every read uses W_{t-1}; i indexes the four matrices y, q, k, b in the
order of `SRWMWeights`):
    learning_rate[..., i] = sigmoid(x' w_b)[i]                       (b_y, b_q, b_k, b_b)
    update_norm[..., i]   = || k (x) b_i (q W_i - k W_i) ||_F = b_i ||k|| ||(q - k) W_i||
    distance[..., i]      = || W_i,t - W_i,ref ||_F   after the step's update
    entropy_q, entropy_k  = -sum_j q_j log q_j (nats; log d for a uniform q)
W_ref is the reset state (`W_reset`, default the W passed in): the distance is how far the
fast weights have moved from where a fresh sequence starts. For a layer (which passes its
slow weights as the reset state) this is the norm of its state, the learned change.

Delta rule, per step t:
    beta        = beta_t
    error_norm  = || v_t - k_t S_{t-1} ||   (what the write corrects)
    state_norm  = || S_t ||_F               (after the write)

Layers: when the flax collection `STATS_COLLECTION` is mutable in `apply` (not `init`), every
fast-weight layer in `srwm_jax.layers` sows its statistics there (through the `sow_*` helpers
below); otherwise nothing is computed. Example:

    >>> (y, state), stats = layer.apply(variables, h, mutable=[STATS_COLLECTION])
    >>> stats[STATS_COLLECTION]["srwm"]   # a 1-tuple of SRWMStats, one per call
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from srwm_jax.ops.srwm import SRWMWeights

STATS_COLLECTION = "fast_weight_stats"
MATRICES = ("y", "q", "k", "b")  # order of the last axis of the SRWM statistics

_HI = lax.Precision.HIGHEST


class SRWMStats(NamedTuple):
    """Per-step SRWM statistics, float32.

    learning_rate, update_norm, distance: [B, T, H, 4] (last axis: y, q, k, b).
    entropy_q, entropy_k: [B, T, H] in nats.
    """
    learning_rate: jax.Array
    update_norm: jax.Array
    distance: jax.Array
    entropy_q: jax.Array
    entropy_k: jax.Array


class DeltaRuleStats(NamedTuple):
    """Per-step delta-rule statistics, float32, each [B, T, H]."""
    beta: jax.Array
    error_norm: jax.Array
    state_norm: jax.Array


def _read(v, w):
    """v [B, H, d] @ w [B, H, d, n] -> [B, H, n]."""
    return jnp.einsum("bhi,bhio->bho", v, w, precision=_HI)


def _norm(a, axes):
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=axes))


def _entropy(logits):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _broadcast_state(state, batch):
    """[B, ...] or (unbatched) [...] of one less dim -> float32 [B, ...]."""
    state = jnp.asarray(state, jnp.float32)
    return jnp.broadcast_to(state, (batch,) + state.shape[-3:]) if state.ndim == 3 else state


def _check_reset(reset, B, T):
    if reset is None:
        return jnp.zeros((B, T), bool)
    if tuple(reset.shape) != (B, T):
        raise ValueError(f"reset has shape {list(reset.shape)}, expected [{B}, {T}] "
                         "(B batch, T time; True = reset before that step).")
    return jnp.asarray(reset).astype(bool)


def _where_reset(r, fresh, current):
    return jnp.where(r.reshape((-1,) + (1,) * (current.ndim - 1)), fresh, current)


def _srwm_record(x, W, reset, W_reset, input_softmax):
    """The recorder loop: (y [B, T, H, dy] float32, SRWMStats, W_T)."""
    B, T, H, d = x.shape
    if len(W) != 4:
        raise ValueError("W must be srwm_jax.SRWMWeights(y=..., q=..., k=..., b=...).")
    W = SRWMWeights(*(jnp.asarray(w, jnp.float32) for w in W))
    for name, w in zip(W._fields, W):
        if w.ndim != 4 or w.shape[:3] != (B, H, d):
            raise ValueError(f"W.{name} has shape {list(w.shape)}, expected [{B}, {H}, {d}, ?] "
                             "(B batch, H heads, d head dim of x).")
    ref = W if W_reset is None else SRWMWeights(
        *(_broadcast_state(r, B) for r in W_reset))
    reset = _check_reset(reset, B, T)

    def step(w, inputs):
        x_t, r_t = inputs
        w = SRWMWeights(*(_where_reset(r_t, f, c) for f, c in zip(ref, w)))
        xs = jax.nn.softmax(x_t, axis=-1) if input_softmax else x_t
        y = _read(xs, w.y)
        q_logits, k_logits = _read(xs, w.q), _read(xs, w.k)
        q, k = jax.nn.softmax(q_logits, axis=-1), jax.nn.softmax(k_logits, axis=-1)
        rate = jax.nn.sigmoid(_read(xs, w.b))  # [B, H, 4]
        new, update_norms = [], []
        k_norm = _norm(k, -1)
        for i, m in enumerate(w):
            diff = _read(q - k, m)  # q W - k W
            new.append(m + k[..., :, None] * (rate[..., i, None] * diff)[..., None, :])
            update_norms.append(rate[..., i] * k_norm * _norm(diff, -1))
        new = SRWMWeights(*new)
        dist = jnp.stack([_norm(m - m0, (-2, -1)) for m, m0 in zip(new, ref)], -1)
        stats = SRWMStats(rate, jnp.stack(update_norms, -1), dist, _entropy(q_logits),
                          _entropy(k_logits))
        return new, (y, stats)

    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    W_T, (ys, stats) = lax.scan(step, W, (tm(jnp.asarray(x, jnp.float32)), tm(reset)))
    return tm(ys), jax.tree.map(tm, stats), W_T


def srwm_stats(x, W, reset=None, *, W_reset=None, input_softmax=False):
    """Per-step statistics of `srwm(x, W)` (see the module docstring for the definitions).

    Args:
      x: [B, T, H, d] inputs of the op.
      W: SRWMWeights, y [B, H, d, dy], q, k [B, H, d, d], b [B, H, d, 4]: the weights before
        step 0.
      reset: None or bool [B, T]: where True, the weights before step t are replaced by W_reset.
      W_reset: SRWMWeights of [B, H, d, *] or unbatched [H, d, *] arrays (a layer's slow
        weights): the reset state and the reference of `distance`. Default: W.
      input_softmax: as in `srwm`.

    Returns:
      SRWMStats, float32: learning_rate, update_norm, distance [B, T, H, 4] (y, q, k, b);
      entropy_q, entropy_k [B, T, H].

    Raises:
      ValueError: x not [B, T, H, d], W fields not [B, H, d, *], or reset not [B, T].

    Source: the recurrence of paper Eqs. 5-8 (srwm_jax/ops/srwm.py), with a recorder.
    """
    if x.ndim != 4:
        raise ValueError(f"x has shape {list(x.shape)}, expected [B, T, H, d] (4 dims).")
    return _srwm_record(x, W, reset, W_reset, bool(input_softmax))[1]


def delta_rule_stats(q, k, v, beta, S0, reset=None, *, S_reset=None):
    """Per-step statistics of `delta_rule(q, k, v, beta, S0)` (see the module docstring).

    Args:
      q, k: [B, T, H, dk] activated queries and keys (q does not enter the statistics; it is
        taken so the call mirrors the op's).
      v: [B, T, H, dv].  beta: [B, T, H] learning rates (after sigmoid).
      S0: [B, H, dk, dv] fast weights before step 0.
      reset: None or bool [B, T]: where True, the state before step t is replaced by S_reset.
      S_reset: [B, H, dk, dv] or [H, dk, dv] reset state; default zeros (a fresh sequence).

    Returns:
      DeltaRuleStats, float32 [B, T, H] each: beta, error_norm ||v - k S_{t-1}||, state_norm
      ||S_t||_F.

    Raises:
      ValueError: k, v, beta, S0 or reset with shapes that do not match q [B, T, H, dk].

    Source: the delta rule of srwm_jax/ops/delta_rule.py (Schlag et al. 2021), with a recorder.
    """
    del q  # the read after the write does not change the state
    if k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"k {list(k.shape)} and v {list(v.shape)} must be [B, T, H, dk] and "
                         "[B, T, H, dv] (4 dims).")
    B, T, H, dk = k.shape
    dv = v.shape[-1]
    if tuple(beta.shape) != (B, T, H) or tuple(S0.shape) != (B, H, dk, dv):
        raise ValueError(f"beta {list(beta.shape)} and S0 {list(S0.shape)} must be [{B}, {T}, {H}] "
                         f"and [{B}, {H}, {dk}, {dv}] (B batch, T time, H heads, dk, dv).")
    fresh = (jnp.zeros((B, H, dk, dv), jnp.float32) if S_reset is None
             else _broadcast_state(S_reset, B))
    reset = _check_reset(reset, B, T)

    def step(S, inputs):
        k_t, v_t, b_t, r_t = inputs
        S = _where_reset(r_t, fresh, S)
        err = v_t - _read(k_t, S)
        S = S + k_t[..., :, None] * (b_t[..., None] * err)[..., None, :]
        return S, DeltaRuleStats(b_t, _norm(err, -1), _norm(S, (-2, -1)))

    tm = lambda a: jnp.swapaxes(jnp.asarray(a), 0, 1).astype(jnp.float32)  # noqa: E731
    _, stats = lax.scan(step, jnp.asarray(S0, jnp.float32),
                        (tm(k), tm(v), tm(beta), jnp.swapaxes(reset, 0, 1)))
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), stats)


# --- Flax layers: sow the statistics when the collection is mutable (zero cost otherwise) ---

def recording(module):
    """True when `module` should sow statistics: STATS_COLLECTION is mutable and the module is
    not being initialised (`init` makes every collection mutable; the statistics must not end
    up in the variables that `init` returns, which callers keep as parameters)."""
    return module.is_mutable_collection(STATS_COLLECTION) and not module.is_initializing()


def sow_srwm(module, x, slow, change, reset, input_softmax, name="srwm"):
    """From an SRWM layer: x [B, T, H, d], slow weights [H, d, *], state (change) [B, H, d, *].

    Returns the recorder's output y [B, T, H, dy] (for layers that feed it on), or None when
    the collection is not mutable (then nothing is computed).
    """
    if not recording(module):
        return None
    x, slow, change = lax.stop_gradient((x, tuple(slow), tuple(change)))
    W = SRWMWeights(*(s[None] + c for s, c in zip(slow, change)))
    y, stats, _ = _srwm_record(x, W, reset, SRWMWeights(*slow), bool(input_softmax))
    module.sow(STATS_COLLECTION, name, stats)
    return y


def sow_delta_rule(module, q, k, v, beta, S0, reset, name="delta_rule"):
    """From a delta-rule layer (its op inputs and state before the call); zero reset state."""
    if recording(module):
        args = lax.stop_gradient((q, k, v, beta, S0))
        module.sow(STATS_COLLECTION, name, delta_rule_stats(*args, reset))


def sow_srdelta(module, x, slow, change, S0, reset, input_softmax, delta_inputs):
    """From an SR-DeltaNet layer: the SRWM's statistics, then the delta rule's on the inputs
    `delta_inputs(y) -> (q, k, v, beta)` that the layer derives from the SRWM's output y."""
    y = sow_srwm(module, x, slow, change, reset, input_softmax)
    if y is not None:
        sow_delta_rule(module, *delta_inputs(y), S0, reset)


# --- Named per-step series for tables and plots ---

def named_series(stats):
    """SRWMStats or DeltaRuleStats -> {name: [B, T, H] array}, with the four-matrix statistics
    split by matrix: lr_y .. lr_b, update_y .. update_b, dist_y .. dist_b, entropy_q, entropy_k
    (SRWM); beta, error_norm, state_norm (delta rule)."""
    if isinstance(stats, SRWMStats):
        out = {}
        for prefix, a in (("lr", stats.learning_rate), ("update", stats.update_norm),
                          ("dist", stats.distance)):
            out.update({f"{prefix}_{m}": a[..., i] for i, m in enumerate(MATRICES)})
        return {**out, "entropy_q": stats.entropy_q, "entropy_k": stats.entropy_k}
    if isinstance(stats, DeltaRuleStats) or _is_other_stats(stats):
        return dict(stats._asdict())
    raise TypeError(f"expected SRWMStats or DeltaRuleStats, got {type(stats).__name__}.")


def _is_other_stats(node):
    """Statistics of other layers (e.g. srwm_jax.vsml_layer.VSMLStats): a NamedTuple whose
    class name ends in "Stats" and whose fields are [B, T, *] arrays."""
    return (isinstance(node, tuple) and hasattr(node, "_asdict")
            and type(node).__name__.endswith("Stats"))


def collect_layers(collection):
    """The `STATS_COLLECTION` dict of an `apply` -> {"<module path>/<op>": {name: [B, T, H]}}.

    Paths follow the module tree (e.g. "memory/srwm_0/srwm"). A layer called several times in
    one apply (each call sows one entry) gets its calls concatenated along T, in call order,
    when they share B and H; otherwise (e.g. few-shot queries read in parallel, a batch of
    B * Q) each call keeps its own entry, "<path>/call<i>".
    """
    out = {}

    def walk(node, path):
        if isinstance(node, tuple) and node and (isinstance(node[0], (SRWMStats, DeltaRuleStats))
                                                 or _is_other_stats(node[0])):
            parts = [named_series(s) for s in node]
            first = next(iter(parts[0].values())).shape
            if all(next(iter(p.values())).shape[::2] == first[::2] for p in parts):
                out["/".join(path)] = {k: jnp.concatenate([p[k] for p in parts], axis=1)
                                       for k in parts[0]}
            else:
                out.update({"/".join(path + [f"call{i}"]): p for i, p in enumerate(parts)})
            return
        for key, child in node.items():
            walk(child, path + [str(key)])

    walk(collection, [])
    return out
