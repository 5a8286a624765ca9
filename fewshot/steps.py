"""Training state, optimiser, and the jitted train / eval steps of the synchronous-label task."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from .models import sync_episode_inputs


@flax.struct.dataclass
class TrainState:
    """Few-shot training state (the checkpointed tree)."""
    step: jax.Array     # int32 scalar: optimiser steps done
    params: Any         # flax parameter pytree
    batch_stats: Any    # BatchNorm running statistics ({} without BatchNorm)
    opt_state: Any      # optax state of make_optimizer(config)


def make_schedule(config):
    """"constant", "cosine" (decay to 0 over total_steps), "decay_end" (constant, then linear
    decay to 0 over the last decay_fraction of total_steps), or the Transformer "warmup" schedule
    of the original code:
    lr(s) = D^-0.5 * min(s^-0.5, s * warmup^-1.5), s counted from 1 (ignores learning_rate)."""
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "cosine":  # learning_rate decayed to 0 at total_steps (short runs)
        return optax.cosine_decay_schedule(config.learning_rate, decay_steps=config.total_steps)
    if config.schedule == "decay_end":
        decay_steps = max(1, int(round(config.decay_fraction * config.total_steps)))

        def schedule(step):
            s = jnp.asarray(step, jnp.float32)
            return config.learning_rate * jnp.clip((config.total_steps - s) / decay_steps, 0.0, 1.0)
        return schedule
    if config.schedule == "warmup":
        scale, w = config.hidden_size ** -0.5, config.warmup_steps

        def schedule(step):
            s = jnp.asarray(step, jnp.float32) + 1.0
            return scale * jnp.minimum(s ** -0.5, s * w ** -1.5)
        return schedule
    raise ValueError(f"config.schedule={config.schedule!r}: choose 'constant', 'cosine', "
                     "'decay_end' or 'warmup'.")


def make_optimizer(config):
    """Adam (config.adam_b1/b2/eps) on make_schedule(config), after global-norm clipping if
    config.clip_grad_norm > 0."""
    adam = optax.adam(make_schedule(config), b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.adam_eps)
    if config.clip_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), adam)
    return adam


def init_state(model, optimizer, config, example_batch, key):
    """Fresh TrainState (step 0) of the sync / bootstrap tasks from one example episode."""
    images, labels_in, _ = sync_episode_inputs(example_batch, config.n_way, config.query_label)
    variables = model.init({"params": key, "dropout": key}, images, labels_in, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer.init(params))


def episode_loss(model, config, params, batch_stats, batch, key, train):
    """Cross-entropy of the query prediction (last step). Returns (loss, (accuracy, batch_stats)).

    In training, config.train_queries Q > 1 scores Q queries per episode, each read from the
    support state independently (SequenceLearner parallel_queries): Q times the labels per step.
    """
    Q = config.train_queries if train else 1
    images, labels_in, target = sync_episode_inputs(batch, config.n_way, config.query_label, Q)
    variables = {"params": params, "batch_stats": batch_stats}
    if train:
        (logits, _), updates = model.apply(variables, images, labels_in, train=True,
                                           parallel_queries=Q if Q > 1 else 0,
                                           mutable=["batch_stats"], rngs={"dropout": key})
        batch_stats = updates["batch_stats"]
    else:
        logits, _ = model.apply(variables, images, labels_in, train=False)
    logits = (logits if Q > 1 else logits[:, -1]).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == target)
    return loss, (accuracy, batch_stats)


def sync_loss(model, config, params, batch_stats, batch, key, train):
    """`episode_loss` in the Task.loss_fn form: (loss, ({"accuracy": ...}, batch_stats))."""
    loss, (accuracy, batch_stats) = episode_loss(model, config, params, batch_stats, batch, key,
                                                 train)
    return loss, ({"accuracy": accuracy}, batch_stats)


def make_train_step(model, optimizer, config, loss_fn=sync_loss):
    """-> train_step(state, batch, base_key) -> (new state, metrics dict of scalars).

    loss_fn(model, config, params, batch_stats, batch, key, train) -> (loss, (metrics dict,
    batch_stats)): the task's loss (fewshot.tasks.Task.loss_fn). metrics gains "loss" and
    "grad_norm"."""
    def train_step(state, batch, base_key):
        key = jax.random.fold_in(base_key, state.step)  # resumed runs draw the same dropout masks
        grad_fn = jax.value_and_grad(
            lambda p: loss_fn(model, config, p, state.batch_stats, batch, key, True), has_aux=True)
        (loss, (metrics, batch_stats)), grads = grad_fn(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = TrainState(step=state.step + 1,
                               params=optax.apply_updates(state.params, updates),
                               batch_stats=batch_stats, opt_state=opt_state)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics
    return train_step


def make_eval_step(model, config):
    """-> eval_step(state, batch) -> bool [B]: whether each episode's query is classified right."""
    def eval_step(state, batch):
        images, labels_in, target = sync_episode_inputs(batch, config.n_way, config.query_label)
        logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                images, labels_in, train=False)
        return jnp.argmax(logits[:, -1], -1) == target  # [B] bool
    return eval_step
