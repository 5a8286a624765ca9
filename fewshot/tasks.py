"""The few-shot tasks, chosen once by `config.task` from `TASKS`.

    sync        Fig. 2 episodes: N*K labelled support images, then the query (fewshot.steps)
    sequential  delayed-label stream over two datasets, Sec. 4.2 (fewshot.sequential)
    bootstrap   K-shot student vs (K+F)-shot teacher, evaluated as sync (fewshot.bootstrap)

A `Task` bundles everything that differs between them; the trainer and the evaluators look
the task up once (`get_task`) and never switch on its name.

Legend: B episodes (or sequences), T steps of a sequence.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from . import bootstrap, sequential, steps
from .data import EpisodeSampler, load_split


@dataclasses.dataclass(frozen=True)
class Task:
    """What differs between the few-shot tasks.

    Attributes:
      name: the `config.task` value.
      make_sampler: (config, split, seed) -> sampler with `sample(batch_size, step)` and
        `iterate(batch_size, start_step, num_steps=...)`.
      init_state: (model, optimizer, config, example_batch, key) -> fewshot.steps.TrainState.
      loss_fn: (model, config, params, batch_stats, batch, key, train) -> (loss, (metrics
        dict, batch_stats)).
      make_eval_step: (model, config) -> eval_step(state, batch) -> bool correct [B] (sync)
        or [B, T] (sequential).
      images_per_episode: (config) -> images one training episode puts through the backbone.
      validation: (config, eval_step, mesh, state, val_sampler) -> {"accuracy": model-selection
        metric, ...other scalars}.
      evaluator: the command that tests a finished run of this task.
    """
    name: str
    make_sampler: Callable
    init_state: Callable
    loss_fn: Callable
    make_eval_step: Callable
    images_per_episode: Callable
    validation: Callable
    evaluator: str


def episode_accuracy(eval_step, mesh, state, sampler, num_episodes, seed, batch_size) -> float:
    """Fraction of correct query predictions on `num_episodes` fixed episodes from `seed`.

    Args:
      eval_step: jitted (state, batch) -> bool [B] (see Task.make_eval_step).
      mesh: srwm_jax.training.mesh.DataParallel the step is sharded over.
      state: the train state to test.
      sampler: an EpisodeSampler (`iterate_fixed(num_episodes, seed, batch_size)`).
      num_episodes, seed, batch_size: the fixed episodes and how many go in one call.
    Returns:
      Mean accuracy in [0, 1].
    """
    correct = []
    for batch in sampler.iterate_fixed(num_episodes, seed, batch_size):
        padded, size = mesh.pad_batch(batch)  # the last batch may not split evenly
        correct.append(np.asarray(eval_step(state, mesh.put_batch(padded)))[:size])
    return float(np.mean(np.concatenate(correct)))


def _episode_sampler(config, split, seed, future_shots=0):
    ds = load_split(config.dataset, config.data_dir, split, image_size=config.image_size,
                    rotations=config.rotations, source=config.data_source)
    queries = config.train_queries if split == "train" else 1
    return EpisodeSampler(ds, config.n_way, config.k_shot, num_queries=queries, seed=seed,
                          future_shots=future_shots)


def _sync_sampler(config, split, seed):
    return _episode_sampler(config, split, seed)


def _bootstrap_sampler(config, split, seed):
    # Bootstrapping trains on K support + F future + 1 query per class; evaluation is K-shot.
    return _episode_sampler(config, split, seed,
                            config.future_shots if split == "train" else 0)


def _sequential_sampler(config, split, seed):
    # Validation / test sequences are fixed by the eval seed, the same for every model.
    return sequential.SequentialEpisodeSampler(config, split,
                                               seed if split == "train" else config.eval_seed)


def _query_validation(config, eval_step, mesh, state, val_sampler):
    return {"accuracy": episode_accuracy(eval_step, mesh, state, val_sampler, config.val_episodes,
                                         config.eval_seed, config.eval_batch_size)}


def _sequence_validation(config, eval_step, mesh, state, val_sampler):
    return sequential.sequence_validation(eval_step, mesh, state, val_sampler,
                                          config.val_episodes, config.eval_batch_size)


TASKS = {
    "sync": Task(
        name="sync", make_sampler=_sync_sampler, init_state=steps.init_state,
        loss_fn=steps.sync_loss, make_eval_step=steps.make_eval_step,
        images_per_episode=lambda c: c.n_way * c.k_shot + c.train_queries,
        validation=_query_validation, evaluator="fewshot.evaluate"),
    "bootstrap": Task(
        name="bootstrap", make_sampler=_bootstrap_sampler, init_state=steps.init_state,
        loss_fn=bootstrap.bootstrap_loss, make_eval_step=steps.make_eval_step,  # K-shot eval
        # each query is read twice (student and teacher passes)
        images_per_episode=lambda c: c.n_way * (c.k_shot + c.future_shots) + 2 * c.train_queries,
        validation=_query_validation, evaluator="fewshot.evaluate"),
    "sequential": Task(
        name="sequential", make_sampler=_sequential_sampler, init_state=sequential.init_state,
        loss_fn=sequential.sequence_loss, make_eval_step=sequential.make_eval_step,
        images_per_episode=lambda c: 2 * c.n_way * c.sequential_shots,
        validation=_sequence_validation, evaluator="fewshot.evaluate_sequential"),
}


def get_task(config) -> Task:
    """The Task of `config.task`.

    Raises:
      ValueError: config.task names no task in TASKS.
    """
    try:
        return TASKS[config.task]
    except KeyError:
        raise ValueError(f"config.task={config.task!r}: choose one of {tuple(TASKS)}.") from None


def example_batch(batch) -> dict:
    """The first episode of `batch` (leading axis kept), to initialise parameters from."""
    return jax.tree.map(lambda a: a[:1], batch)
