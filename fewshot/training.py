"""Few-shot training as a library: `train_and_evaluate(config, workdir)` (CLI: fewshot.train).

The workdir receives config.json, metrics.jsonl, TensorBoard events (tensorboard/),
checkpoints/ (periodic) and best/ (best validation accuracy): the layout of the shared run
layer, srwm_jax.training. The task (sync, sequential, bootstrap) comes from fewshot.tasks.

Data parallel over all devices: one mesh axis "data"; the episode batch is split over it and
the parameters are replicated (jit + NamedSharding). Several processes (hosts): start
jax.distributed first (srwm_jax.training.distributed; fewshot.train's --num_processes etc.);
the mesh then spans every process's devices, each process samples and feeds only its rows of
the global batch (config.batch_size), and process 0 alone writes config.json, metrics and
TensorBoard (all processes take part in the orbax checkpoint saves).
"""
from __future__ import annotations

import os
import sys
import time

import jax
import ml_collections
from tqdm import tqdm

from .config_checks import RESUMABLE_FIELDS, locked_fields, validate_config
from .models import SequenceLearner
from .steps import make_optimizer, make_schedule, make_train_step
from .tasks import Task, example_batch, get_task
from .warm_start import warm_start
from srwm_jax.training.distributed import DistributedError
from srwm_jax.training.mesh import DataParallel, count_params
from srwm_jax.training.run_context import RunContext, check_finite_scalars

def build(config, task: Task | None = None):
    """Model, optimiser, mesh and jitted steps for `config` (shared by training and evaluation).

    `task`: config's fewshot.tasks.Task, if the caller has looked it up (default: get_task).
    Returns:
      (model: SequenceLearner, optimizer: optax.GradientTransformation, mesh: DataParallel,
       train_step(state, batch, dropout_key) -> (state, metrics),
       eval_step(state, batch) -> bool correct [B] or [B, T]); batches are host arrays with
       B divisible by the device count.
    """
    task = task or get_task(config)
    model = SequenceLearner(ml_collections.FrozenConfigDict(config))
    optimizer = make_optimizer(config)
    mesh = DataParallel()
    train_step = jax.jit(make_train_step(model, optimizer, config, task.loss_fn),
                         in_shardings=(mesh.replicated, mesh.batch, mesh.replicated),
                         out_shardings=(mesh.replicated, mesh.replicated), donate_argnums=0)
    # Replicated output: every process reads all B results (they are a few bytes).
    eval_step = jax.jit(task.make_eval_step(model, config),
                        in_shardings=(mesh.replicated, mesh.batch), out_shardings=mesh.replicated)
    return model, optimizer, mesh, train_step, eval_step


def make_sampler(config, split: str, seed: int):
    """The task's sampler for `split` (train | val | test); see fewshot.tasks.Task."""
    return get_task(config).make_sampler(config, split, seed)


def initial_state(config, model, optimizer, mesh, batch, task: Task | None = None):
    """Fresh replicated TrainState from the first episode of `batch` (key: config.seed); `task`
    as in `build`."""
    init = (task or get_task(config)).init_state
    example = example_batch(batch)
    return jax.jit(lambda k: init(model, optimizer, config, example, k),
                   out_shardings=mesh.replicated)(jax.random.key(config.seed))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, resume: bool = True,
                       overwrite: bool = False):
    """Trains `config` into `workdir`, validating and checkpointing on its schedule.

    Args:
      config: a full few-shot config (configs/fewshot/default.py and its variants).
      workdir: run directory; made if missing. A run already there (config.json or
        checkpoints) is resumed from its latest checkpoint, with the same results as an
        uninterrupted run; its config must be this one except RESUMABLE_FIELDS.
      resume: False refuses a workdir that already holds a run.
      overwrite: delete a run already in `workdir` (its contents) and start afresh.
    Returns:
      The final fewshot.steps.TrainState (replicated over the devices).
    Raises:
      ConfigError: bad config.
      srwm_jax.training.run_config.RunConfigError: `workdir` holds a run and resume=False, or
        a run with a different config (the message names the fields).
      fewshot.data.DatasetError: the dataset is missing or incomplete.
      fewshot.warm_start.WarmStartError: config.init_from cannot be read.
      srwm_jax.training.checkpoints.CheckpointError: the latest checkpoint cannot be restored.
      srwm_jax.training.distributed.DistributedError: Ctrl-C with several processes (no
        checkpoint can be saved by one process alone).
      srwm_jax.training.run_context.RunLockError: another trainer holds `workdir`.
      srwm_jax.training.checkpoints.NonFiniteError: the loss or the parameters became NaN or
        infinite (nothing non-finite is ever saved).
      srwm_jax.training.checkpoints.DiskFullError: a checkpoint could not be written.
    SIGTERM / SIGUSR1 stop the loop at the next step with a checkpoint of it (run_context).
    """
    validate_config(config, num_devices=jax.device_count(), splits=("train", "val"))
    task = get_task(config)
    with RunContext(workdir, config, resume=resume, overwrite=overwrite, kind="fewshot",
                    resumable=RESUMABLE_FIELDS, locked=locked_fields(config)) as run:
        return _train(config, workdir, task, run)


def _train(config, workdir, task, run: RunContext):
    """The training loop inside `run` (train_and_evaluate's; returns the final TrainState)."""
    main, checkpoints, writer = run.main, run.checkpoints, run.writer
    if run.changes and main:
        print(f"Resuming {workdir} with " + "; ".join(run.changes), flush=True)
    train_sampler = task.make_sampler(config, "train", config.seed)
    val_sampler = task.make_sampler(config, "val", config.seed)
    model, optimizer, mesh, train_step, eval_step = build(config, task)
    state = initial_state(config, model, optimizer, mesh, train_sampler.sample(1, 0), task)
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(state)
        if main:
            print(f"Resumed from {workdir}/checkpoints/{int(state.step)}", flush=True)
    elif config.init_from:
        state, report = warm_start(state, config.init_from, config.init_from_checkpoint)
        state = mesh.put_replicated(state)
        if main:
            print(report, flush=True)
    start = int(state.step)
    schedule = make_schedule(config)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    if main:
        print(f"{config.model} / {config.backbone}: {count_params(state.params):,} parameters, "
              f"{jax.device_count()} device(s) in {jax.process_count()} process(es), steps "
              f"{start}..{config.total_steps}", flush=True)

    bar = tqdm(total=config.total_steps, initial=start, dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30,
               disable=start >= config.total_steps or not main)
    images_per_step = config.batch_size * task.images_per_episode(config)
    sums, count, t_last = None, 0, time.time()
    try:
        # Each process samples only its rows of the global batch (all of it with one process).
        rows = mesh.process_rows(config.batch_size)
        for step, batch in train_sampler.iterate(config.batch_size, start_step=start,
                                                 num_steps=config.total_steps - start, rows=rows):
            state, metrics = train_step(state, mesh.put_process_batch(batch), dropout_key)
            sums = metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, metrics)
            count += 1
            done = step + 1
            bar.update(1)
            last = done == config.total_steps
            if done % config.log_every_steps == 0 or last:
                elapsed = time.time() - t_last
                scalars = {k: float(v) / count for k, v in sums.items()}
                scalars.update(learning_rate=float(schedule(step)),
                               steps_per_second=count / elapsed,
                               images_per_second=count * images_per_step / elapsed)
                writer.write(done, scalars, "train")
                # The mean over the interval is non-finite if any step's loss was.
                check_finite_scalars({"loss": scalars["loss"]},
                                     f"steps {done - count + 1}..{done}")
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc=f"{scalars['accuracy']:.3f}",
                                sps=f"{scalars['steps_per_second']:.1f}")
                sums, count, t_last = None, 0, time.time()
            if done % config.eval_every_steps == 0 or last:
                t0 = time.time()
                val = task.validation(config, eval_step, mesh, state, val_sampler)
                writer.write(done, val, "valid")
                if main:
                    tqdm.write(f"step {done}: valid "
                               + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                if val["accuracy"] > checkpoints.best_accuracy():
                    checkpoints.save_best(done, state, val["accuracy"])  # (finite values only)
                t_last += time.time() - t0  # keep evaluation out of the training throughput
            if done % config.checkpoint_every_steps == 0 or last:
                checkpoints.save(done, state)
            stop = run.stop_requested()
            if stop and not last:
                tqdm.write(f"{stop}: saving a checkpoint at step {done} and exiting "
                           "(the same command resumes).")
                checkpoints.save(done, state)
                break
    except KeyboardInterrupt:
        if jax.process_count() > 1:  # a save is collective; the others are elsewhere
            raise DistributedError(
                f"interrupted at step {int(state.step)} with several processes: no checkpoint is "
                "saved now (a save needs every process); the same command on every process "
                "resumes from the last periodic checkpoint.") from None
        tqdm.write(f"Interrupted: saving a checkpoint at step {int(state.step)} and exiting.")
        checkpoints.save(int(state.step), state)
    finally:
        bar.close()
    return state


def configure_cpu_devices(config, num_processes: int = 1) -> None:
    """Splits the host CPU into config.cpu_devices JAX devices (0: one per core, reduced to a
    divisor of this process's share of batch_size, batch_size / num_processes) before the
    backends start.

    XLA's CPU convolutions barely use a second core within one device, so on a CPU-only host
    data parallelism over per-core devices is what uses them all; results are the same as with
    one device. GPU/TPU hosts are unaffected (their accelerators stay the default devices).
    Call before anything touches jax devices."""
    n = int(config.cpu_devices)
    share = config.batch_size // num_processes if config.batch_size % num_processes == 0 else 1
    if n == 0:
        n = max(1, min(os.cpu_count() or 1, share))
        while share % n:
            n -= 1
    if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_num_cpu_devices", n)
