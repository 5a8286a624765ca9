"""IMPALA loss and the jitted, data-parallel learner update.

Legend: B unrolls in a batch, T unroll length, A actions. A batch holds T+1 observations per
unroll (the last one is the first of the next unroll, used only for the bootstrap value), like
torchbeast's learner, which drops its first entry after shifting.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import vtrace
from srwm_jax.training.mesh import DataParallel


class Batch(NamedTuple):
    """A batch of unrolls, batch-major (numpy on the host, sharded jax arrays on the learner)."""
    frames: Any            # [B, T+1, 64, 64, 3] uint8, obs_t
    rewards: Any           # [B, T+1] float32, reward observed with obs_t (of the action before)
    firsts: Any            # [B, T+1] bool, obs_t starts an episode (state reset before step t)
    actions: Any           # [B, T] int32, a_t taken at obs_t
    behaviour_logits: Any  # [B, T, A] float32, actor's logits at obs_t
    initial_state: Any     # pytree of [B, ...]: the actor's core state before obs_0


class TrainState(NamedTuple):
    """The learner's state (replicated over the learner devices)."""
    params: Any        # agent parameter pytree
    opt_state: Any     # optax state of make_optimizer
    update: jax.Array  # number of updates done (int32 scalar)


def checkpoint_tree(train_state: TrainState, env_steps: int, rng_key) -> dict:
    """The checkpointed pytree: the train state plus env steps (int64 scalar) and the RNG key
    data, so a resumed run continues the same step count and random stream."""
    return dict(params=train_state.params, opt_state=train_state.opt_state,
                update=train_state.update, env_steps=np.asarray(env_steps, np.int64),
                rng=np.asarray(jax.random.key_data(rng_key)))  # host: the same in every process


def from_checkpoint_tree(tree: dict) -> tuple[TrainState, int, jax.Array]:
    """Inverse of checkpoint_tree -> (train_state, env_steps, rng_key)."""
    return (TrainState(tree["params"], tree["opt_state"], tree["update"]),
            int(tree["env_steps"]), jax.random.wrap_key_data(tree["rng"]))


def init_params(agent, key, frame_shape=(64, 64, 3)):
    """Fresh agent parameters from a one-step dummy input of frames [1, 1, *frame_shape]."""
    frames = jnp.zeros((1, 1) + tuple(frame_shape), jnp.uint8)
    zeros = jnp.zeros((1, 1), jnp.float32)
    firsts = jnp.ones((1, 1), bool)
    return agent.init(key, frames, zeros, firsts, agent.initial_state(1))


def num_updates_for(config) -> int:
    """Learner updates in a run of config.total_steps env steps (the LR-decay horizon)."""
    return max(1, config.total_steps // (config.unroll_length * config.batch_size))


def make_optimizer(config, num_updates: int) -> optax.GradientTransformation:
    """RMSProp as torch.optim.RMSprop (eps outside the sqrt), global-norm clipping,
    linear LR decay."""
    schedule = optax.linear_schedule(config.learning_rate, 0.0, max(num_updates, 1))
    return optax.chain(
        optax.clip_by_global_norm(config.grad_norm_clip),
        optax.rmsprop(schedule, decay=config.rmsprop_decay, eps=config.rmsprop_eps,
                      eps_in_sqrt=False, momentum=config.rmsprop_momentum or None),
    )


def impala_loss(params, agent, batch: Batch, config):
    """Sum-over-(T, B) IMPALA loss of torchbeast's polybeast_learner.learn.
    Returns (loss, metrics)."""
    (logits, values), _ = agent.apply(params, batch.frames, batch.rewards, batch.firsts,
                                      batch.initial_state)
    bootstrap_value = values[:, -1]
    logits, values = logits[:, :-1], values[:, :-1]
    rewards = batch.rewards[:, 1:]
    if config.reward_clip:
        rewards = jnp.clip(rewards, -config.reward_clip, config.reward_clip)
    discounts = (1.0 - batch.firsts[:, 1:].astype(jnp.float32)) * config.discount

    tm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731 - batch-major -> time-major
    returns = vtrace.vtrace_from_logits(
        behaviour_logits=tm(batch.behaviour_logits), target_logits=tm(logits),
        actions=tm(batch.actions), discounts=tm(discounts), rewards=tm(rewards),
        values=tm(values), bootstrap_value=bootstrap_value)

    log_probs = jax.nn.log_softmax(logits, axis=-1)
    action_log_probs = jnp.take_along_axis(log_probs, batch.actions[..., None], -1)[..., 0]
    pg_loss = -jnp.sum(action_log_probs * tm(returns.pg_advantages))
    # torchbeast: baseline_cost * compute_baseline_loss, which already has a factor 0.5.
    baseline_loss = config.baseline_cost * 0.5 * jnp.sum(jnp.square(tm(returns.vs) - values))
    neg_entropy = jnp.sum(jnp.exp(log_probs) * log_probs)
    entropy_loss = config.entropy_cost * neg_entropy
    loss = pg_loss + baseline_loss + entropy_loss
    num = logits.shape[0] * logits.shape[1]
    metrics = dict(loss=loss, pg_loss=pg_loss, baseline_loss=baseline_loss,
                   entropy_loss=entropy_loss, entropy=-neg_entropy / num,
                   mean_value=jnp.mean(values), mean_vs=jnp.mean(returns.vs))
    return loss, metrics


class Learner:
    """Holds the mesh, the shardings and the jitted update for `agent`.

    Data parallel over `devices`: the batch axis is sharded over mesh axis "data", parameters and
    optimizer state are replicated; jit inserts the gradient all-reduce (the loss is a sum).
    The devices may belong to several processes (jax.distributed): the all-reduce then crosses
    processes and every process ends the update with the same parameters.
    """

    def __init__(self, agent, config, num_updates: int, devices=None):
        self.agent = agent
        self.config = config
        self.parallel = DataParallel(devices)
        self.parallel.check_batch_size(config.batch_size)
        self.replicated = self.parallel.replicated
        self.optimizer = make_optimizer(config, num_updates)

        def update(train_state: TrainState, batch: Batch):
            grad_fn = jax.grad(impala_loss, has_aux=True)
            grads, metrics = grad_fn(train_state.params, agent, batch, config)
            updates, opt_state = self.optimizer.update(grads, train_state.opt_state,
                                                       train_state.params)
            params = optax.apply_updates(train_state.params, updates)
            metrics["grad_norm"] = optax.tree.norm(grads)
            return TrainState(params, opt_state, train_state.update + 1), metrics

        self._update = jax.jit(update, out_shardings=(self.replicated, self.replicated))

    def init_state(self, params) -> TrainState:
        """Fresh TrainState (update 0) for `params`, replicated over the learner devices.

        Several processes: `params` must be the same in every process (same seed)."""
        params = jax.device_put(params, self.replicated)
        opt_state = jax.jit(self.optimizer.init, out_shardings=self.replicated)(params)
        return TrainState(params, opt_state, jax.device_put(np.int32(0), self.replicated))

    def shard_batch(self, batch: Batch) -> Batch:
        """Host batch -> device batch split over the learner devices along B.

        Several processes: `batch` is this process's share (its own actors' unrolls,
        config.batch_size / process count of them); the update sees all processes' rows."""
        return self.parallel.put_process_batch(batch)

    def update(self, train_state: TrainState, batch: Batch):
        """One IMPALA update on a host batch -> (new train state, metrics dict of scalars)."""
        return self._update(train_state, self.shard_batch(batch))


def concat_batches(batches):
    """Concatenates host batches (pytrees of numpy arrays) along the batch axis."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *batches)


def slice_batch(batch, start, stop):
    """Rows [start, stop) of every leaf of a host batch."""
    return jax.tree.map(lambda x: x[start:stop], batch)
