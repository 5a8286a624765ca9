"""Online classification episodes (VSML's learning setting) and meta-training by backprop.

Kirsch & Schmidhuber 2021, Sec. 4: an episode is a stream of T examples of N classes (labels
a fresh random assignment per episode); at step t the learner sees x_t and predicts its class,
and the label of x_t arrives at step t+1 (VSML: as error and label feedback at the output
units). The meta-loss is the cross-entropy summed over the episode (averaged over episodes);
accuracy on the k-th occurrence of a class within an episode shows learning within it (the
1st occurrence is at chance, 1/N).

Inputs are reduced to `dim` features: a fixed random projection of the flattened image (the
original's `rand_proj` option), standardised with the split's feature mean / std.

Legend: B episodes, T steps, N ways, d = dim input features, S image side.

Learners (`OnlineLearner.kind`): "vsml" (srwm_jax.vsml_layer.VSMLLayer, d -> N units, error
feedback); "lstm", "srwm", "deltanet" (srwm_jax.layers.MemoryStack on [x_t, one_hot(y_{t-1})],
then a linear read-out, as fewshot.models.SequenceLearner for the delayed-label task).
"""
from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from srwm_jax.layers import MemoryStack
from srwm_jax.vsml_layer import VSMLLayer

KINDS = ("vsml", "lstm", "srwm", "deltanet")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Everything one online meta-training run needs (defaults: CPU-sized)."""
    kind: str = "vsml"
    n_way: int = 5
    length: int = 50            # T steps per episode
    dim: int = 16               # input features (random projection size)
    # VSML
    msg_size: int = 8
    state_size: int = 16
    micro_ticks: int = 1
    vsml_hidden: tuple = ()     # hidden unit counts between input and output units
    forget_offset: float = 1.0     # the original's 5 / -5 meta-train far slower by backprop
    input_offset: float = -1.0
    chunk: int = 10
    # Baselines (lstm / srwm / deltanet)
    hidden: int = 32
    num_heads: int = 4
    num_layers: int = 1
    # Optimisation
    batch_size: int = 16
    steps: int = 500
    learning_rate: float = 3e-3
    clip_grad_norm: float = 1.0
    seed: int = 0


class OnlineLearner(nn.Module):
    """x [B, T, d], prev_labels [B, T, N] (one_hot(y_{t-1}), zeros at t = 0) -> logits [B, T, N]."""
    config: OnlineConfig

    @nn.compact
    def __call__(self, x, prev_labels):
        c = self.config
        if c.kind == "vsml":
            layer = VSMLLayer(x.shape[-1], c.n_way, hidden=tuple(c.vsml_hidden),
                              msg_size=c.msg_size, state_size=c.state_size,
                              micro_ticks=c.micro_ticks, forget_offset=c.forget_offset,
                              input_offset=c.input_offset, chunk=c.chunk, name="vsml")
            y, _ = layer(x, feedback=prev_labels)
            # One learned temperature: the messages are means over the input units.
            return y * self.param("logit_scale", nn.initializers.constant(4.0), ())
        if c.kind not in KINDS:
            raise ValueError(f"kind={c.kind!r}: choose one of {KINDS}.")
        h = jnp.concatenate([x, prev_labels.astype(x.dtype)], -1)
        if c.kind != "lstm":
            h = nn.Dense(c.hidden, name="input_proj")(h)
        h, _ = MemoryStack(c.kind, num_layers=c.num_layers, hidden=c.hidden,
                           num_heads=c.num_heads, ff_dim=2 * c.hidden, impl="scan",
                           name="memory")(h)
        return nn.Dense(c.n_way, name="classifier")(h)


def previous_labels(labels, n_way):
    """labels int [B, T] -> [B, T, N]: one_hot(labels[t-1]); zeros at t = 0 (no label yet)."""
    onehot = jax.nn.one_hot(labels, n_way)
    return jnp.concatenate([jnp.zeros_like(onehot[:, :1]), onehot[:, :-1]], axis=1)


def occurrences(labels):
    """labels int [B, T] -> int [B, T]: 0 for a class's first appearance in its episode, 1 for
    the second, ..."""
    labels = np.asarray(labels)
    out = np.zeros_like(labels)
    for b in range(labels.shape[0]):
        seen: dict = {}
        for t, y in enumerate(labels[b]):
            out[b, t] = seen.get(int(y), 0)
            seen[int(y)] = out[b, t] + 1
    return out


# --- episode sources ------------------------------------------------------------------------

class SyntheticEpisodes:
    """Gaussian classes: per episode N prototypes ~ N(0, I_d), examples = prototype + noise
    * N(0, I_d). Deterministic in (seed, step)."""

    def __init__(self, n_way, length, dim, noise=0.3, seed=0):
        self.n_way, self.length, self.dim, self.noise, self.seed = n_way, length, dim, noise, seed

    def sample(self, batch_size, step):
        """-> x float32 [B, T, d], labels int32 [B, T]."""
        rng = np.random.default_rng([self.seed, step])
        protos = rng.normal(size=(batch_size, self.n_way, self.dim))
        labels = rng.integers(0, self.n_way, size=(batch_size, self.length))
        x = np.take_along_axis(protos, labels[..., None], 1)
        x = x + self.noise * rng.normal(size=x.shape)
        return x.astype(np.float32), labels.astype(np.int32)


class ImageEpisodes:
    """Episodes from a ClassImages split (fewshot.data.load_split), images reduced to `dim`
    features by a fixed random projection (seed `projection_seed`, shared by every split and
    dataset so that transfer uses the same input map), standardised per feature on this split.
    Per episode: N random classes, a random label permutation, T uniformly drawn examples."""

    def __init__(self, ds, n_way, length, dim, seed=0, projection_seed=0):
        imgs = np.asarray(ds.images, np.float32).mean(-1) / 255.0     # [M, S, S] grey
        M = imgs.shape[0]
        flat = imgs.reshape(M, -1)
        proj = np.random.default_rng(projection_seed).normal(size=(flat.shape[1], dim))
        feats = flat @ (proj / np.sqrt(flat.shape[1]))
        self.features = ((feats - feats.mean(0)) / (feats.std(0) + 1e-6)).astype(np.float32)
        self.class_start = np.asarray(ds.class_start)
        self.n_way, self.length, self.seed = n_way, length, seed
        if ds.num_classes < n_way:
            raise ValueError(f"{ds.name} {ds.split} has {ds.num_classes} classes, fewer than "
                             f"n_way={n_way}.")

    def sample(self, batch_size, step):
        rng = np.random.default_rng([self.seed, step])
        nc = self.class_start.size - 1
        x = np.empty((batch_size, self.length, self.features.shape[1]), np.float32)
        labels = rng.integers(0, self.n_way, size=(batch_size, self.length)).astype(np.int32)
        for b in range(batch_size):
            classes = rng.choice(nc, self.n_way, replace=False)
            lo, hi = self.class_start[classes], self.class_start[classes + 1]
            picks = lo[labels[b]] + (rng.random(self.length) * (hi - lo)[labels[b]]).astype(int)
            x[b] = self.features[picks]
        return x, labels


# --- meta-training and evaluation -----------------------------------------------------------

def episode_loss(model, params, x, labels):
    """Cross-entropy summed over the episode, mean over episodes; and accuracy."""
    logits = model.apply({"params": params}, x, previous_labels(labels, model.config.n_way))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return ce.sum(1).mean(), jnp.mean(jnp.argmax(logits, -1) == labels)


def meta_train(config: OnlineConfig, episodes, *, log=None, log_every=50):
    """Meta-trains an OnlineLearner with Adam on episodes.sample(batch, step).

    Returns (model, params, history: list of (step, loss, accuracy, seconds))."""
    model = OnlineLearner(config)
    x0, y0 = episodes.sample(config.batch_size, 0)
    params = model.init(jax.random.key(config.seed), x0,
                        previous_labels(y0, config.n_way))["params"]
    opt = optax.adam(config.learning_rate)
    if config.clip_grad_norm:
        opt = optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), opt)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, labels):
        (loss, acc), g = jax.value_and_grad(lambda p: episode_loss(model, p, x, labels),
                                            has_aux=True)(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    history, start = [], time.time()
    for i in range(config.steps):
        x, labels = episodes.sample(config.batch_size, i)
        params, opt_state, loss, acc = step(params, opt_state, x, labels)
        if (i + 1) % log_every == 0 or i + 1 == config.steps:
            history.append((i + 1, float(loss), float(acc), time.time() - start))
            if log:
                log(f"{config.kind} step {i + 1}: loss {float(loss):.3f} acc {float(acc):.3f} "
                    f"({time.time() - start:.0f} s)")
    return model, params, history


def occurrence_accuracy(model, params, episodes, num_batches=4, batch_size=64, max_k=10,
                        start_step=10**6):
    """Accuracy on the k-th occurrence (k = 1..max_k) of a class, on fixed episodes (steps
    start_step.. of the source). Returns (acc [max_k] float, count [max_k], total accuracy)."""
    apply = jax.jit(lambda p, x, y: jnp.argmax(
        model.apply({"params": p}, x, previous_labels(y, model.config.n_way)), -1) == y)
    correct, count = np.zeros(max_k), np.zeros(max_k)
    total = []
    for i in range(num_batches):
        x, labels = episodes.sample(batch_size, start_step + i)
        ok = np.asarray(apply(params, x, labels))
        occ = occurrences(labels)
        total.append(ok.mean())
        for k in range(max_k):
            correct[k] += ok[occ == k].sum()
            count[k] += (occ == k).sum()
    with np.errstate(invalid="ignore"):
        return correct / count, count, float(np.mean(total))


def num_params(params):
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))
