"""A finished few-shot run read back from its directory: its config (`load_run`), then its model
with a checkpoint's state (`restore_run`, the model built once). The one loader of
fewshot.evaluation (evaluate, evaluate_sequential) and fewshot.inspection.

The config is workdir/config.json merged onto `defaults` (the CLIs pass
configs/fewshot/default.py), with config_checks.RENAMED_KEYS mapped, so older runs load with
today's fields (srwm_jax.training.run_config.load_config).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .config_checks import RENAMED_KEYS, RESUMABLE_FIELDS, validate_config
from .models import SequenceLearner
from .steps import TrainState
from .tasks import Task, get_task
from .training import build, initial_state
from srwm_jax.training.checkpoints import Checkpoints
from srwm_jax.training.mesh import DataParallel
from srwm_jax.training.run_config import load_config, workdir_fingerprint
from srwm_jax.training.workdir import check_kind


@dataclasses.dataclass(frozen=True)
class RestoredRun:
    """A run's model and restored state (restore_run).

    Attributes:
      model: the run's SequenceLearner.
      mesh: the DataParallel mesh eval_step is sharded over.
      eval_step: jitted (state, batch) -> bool correct [B] (sync, bootstrap) or [B, T]
        (sequential), as fewshot.tasks.Task.make_eval_step.
      state: the TrainState of the checkpoint, replicated over the devices.
    """
    model: SequenceLearner
    mesh: DataParallel
    eval_step: Callable
    state: TrainState

    @property
    def variables(self) -> dict:
        """The Flax variables of `model.apply`: {"params", "batch_stats"}."""
        return {"params": self.state.params, "batch_stats": self.state.batch_stats}


def load_run(workdir, defaults=None, evaluator: str | None = None) -> tuple:
    """(config, task) of the few-shot run in `workdir`, its fields checked (not its data).

    Args:
      workdir: a run directory written by fewshot.train.
      defaults: ConfigDict filling fields an older config.json lacks.
      evaluator: the command asking (fewshot.evaluate | fewshot.evaluate_sequential): the run's
        task must be tested by it (None: any task).
    Raises:
      FileNotFoundError: workdir/config.json is missing.
      ValueError: it is an RL run (srwm_jax.training.run_config.RunConfigError), or its task
        is tested by another command than `evaluator` (both messages name the command to use);
      fewshot.config_checks.ConfigError (a ValueError): a bad field.
    """
    check_kind(workdir, "fewshot")
    config = load_config(workdir, defaults, renames=RENAMED_KEYS)
    validate_config(config, splits=(), allow_extra=True)  # before any checkpoint is read
    task = get_task(config)
    if evaluator is not None and task.evaluator != evaluator:
        raise ValueError(f"{workdir} is a {task.name!r} run: test it with "
                         f"python -m {task.evaluator} --workdir {workdir}")
    return config, task


def restore_run(config, task: Task, workdir, checkpoint, example_batch) -> RestoredRun:
    """The run's model built once, with the state of workdir's `checkpoint` (best | latest).

    Args:
      config, task: from load_run.
      workdir: the run directory.
      checkpoint: best | latest.
      example_batch: a batch of the run's task (its first episode shapes the parameters).
    Raises:
      FileNotFoundError: no such checkpoint; CheckpointError (a RuntimeError): it cannot be
      restored, or was made under another config than the config.json beside it.
    """
    model, optimizer, mesh, _, eval_step = build(config, task)
    state = initial_state(config, model, optimizer, mesh, example_batch, task)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, read_only=True,
                              fingerprint=workdir_fingerprint(workdir, RESUMABLE_FIELDS))
    try:
        state = checkpoints.restore(state, which=checkpoint)
    finally:
        checkpoints.close()
    return RestoredRun(model=model, mesh=mesh, eval_step=eval_step, state=state)
