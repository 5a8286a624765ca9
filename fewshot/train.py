"""Few-shot training: `python -m fewshot.train --config configs/fewshot/<name>.py --workdir DIR`.

Dotted overrides: `--config.batch_size=64 --config.model=deltanet`. A run resumes from the
latest checkpoint in DIR automatically (`--noresume` starts over in a fresh DIR only).
The workdir receives config.json, metrics.jsonl, TensorBoard events, checkpoints/ (periodic)
and best/ (best validation accuracy).

Data parallel over all local devices: one mesh axis "data"; the episode batch is split over
it and the parameters are replicated (jit + NamedSharding). Multi-host: call
`jax.distributed.initialize()` before training (see README); each host then feeds its share.
"""
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
from tqdm import tqdm

from .checkpointing import Checkpoints
from .data import DatasetError, EpisodeSampler, load_split
from .metrics import MetricWriter
from .models import SequenceLearner
from .steps import init_state, make_eval_step, make_optimizer, make_schedule, make_train_step
from .warm_start import WarmStartError, warm_start

TASKS = ("sync", "sequential", "bootstrap")

REQUIRED_KEYS = ("data_dir", "seed", "batch_size", "total_steps", "model", "n_way", "k_shot")
MODELS = ("srwm", "deltanet", "lstm", "srdelta", "fakesr")


class ConfigError(ValueError):
    """A config that cannot run; the message says which key and what to do."""


def validate_config(config):
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"config is missing required keys {missing}; start from configs/fewshot/default.py.")
    if config.model not in MODELS:
        raise ConfigError(f"config.model={config.model!r}: choose one of {MODELS}.")
    if config.get("task", "sync") not in TASKS:
        raise ConfigError(f"config.task={config.task!r}: choose one of {TASKS}.")
    if int(config.get("train_queries", 1)) < 1:
        raise ConfigError(f"config.train_queries={config.train_queries} must be >= 1 (queries per training episode).")
    n = jax.device_count()
    if config.batch_size % n:
        raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the {n} devices.")


class Mesh:
    """Shardings for data parallelism over all devices."""

    def __init__(self):
        # Auto axes: XLA propagates shardings (make_mesh defaults to Explicit axes on new jax).
        self.mesh = jax.make_mesh((jax.device_count(),), ("data",),
                                  axis_types=(jax.sharding.AxisType.Auto,))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch = NamedSharding(self.mesh, P("data"))

    def put_batch(self, batch):
        return jax.device_put(batch, self.batch)


def build(config):
    """Model, optimiser, mesh and jitted steps for `config` (shared by train and evaluate)."""
    model = SequenceLearner(ml_collections.FrozenConfigDict(config))
    optimizer = make_optimizer(config)
    mesh = Mesh()
    task = config.get("task", "sync")
    loss_fn, make_eval = None, make_eval_step
    if task == "sequential":
        from . import sequential
        loss_fn, make_eval = sequential.sequence_loss, sequential.make_eval_step
    elif task == "bootstrap":
        from .bootstrap import bootstrap_loss
        loss_fn = bootstrap_loss  # evaluated as an ordinary K-shot (sync) learner
    train_step = jax.jit(make_train_step(model, optimizer, config, loss_fn),
                         in_shardings=(mesh.replicated, mesh.batch, mesh.replicated),
                         out_shardings=(mesh.replicated, mesh.replicated), donate_argnums=0)
    eval_step = jax.jit(make_eval(model, config), in_shardings=(mesh.replicated, mesh.batch),
                        out_shardings=mesh.batch)
    return model, optimizer, mesh, train_step, eval_step


def make_sampler(config, split, seed):
    task = config.get("task", "sync")
    if task == "sequential":
        from .sequential import SequentialTask
        # Validation / test sequences are fixed by the eval seed, the same for every model.
        return SequentialTask(config, split, seed if split == "train" else config.eval_seed)
    ds = load_split(config.dataset, config.data_dir, split, image_size=config.image_size,
                    rotations=config.rotations, source=config.data_source)
    # Bootstrapping trains on K support + F future + 1 query per class; evaluation is K-shot.
    future = config.future_shots if task == "bootstrap" and split == "train" else 0
    queries = config.get("train_queries", 1) if task in ("sync", "bootstrap") and split == "train" else 1
    return EpisodeSampler(ds, config.n_way, config.k_shot, num_queries=queries, seed=seed,
                          future_shots=future)


def initial_state(config, model, optimizer, mesh, example_batch):
    key = jax.random.key(config.seed)
    example = jax.tree.map(lambda a: a[:1], example_batch)
    init = init_state
    if config.get("task", "sync") == "sequential":
        from .sequential import init_state as init
    return jax.jit(lambda k: init(model, optimizer, config, example, k),
                   out_shardings=mesh.replicated)(key)


def episode_accuracy(eval_step, mesh, state, sampler, num_episodes, seed, batch_size):
    """Fraction of correct query predictions on `num_episodes` fixed episodes from `seed`."""
    n_dev = jax.device_count()
    correct = []
    for batch in sampler.iterate_fixed(num_episodes, seed, batch_size):
        size = len(batch["query_labels"])
        pad = (-size) % n_dev  # the last batch may not split evenly over devices
        if pad:
            batch = jax.tree.map(lambda a: np.concatenate([a, a[:pad]]), batch)
        correct.append(np.asarray(eval_step(state, mesh.put_batch(batch)))[:size])
    return float(np.mean(np.concatenate(correct)))


def images_per_episode(config):
    """Images one training episode (or sequence) puts through the backbone, for images/s."""
    queries = config.get("train_queries", 1)
    return {"sync": config.n_way * config.k_shot + queries,
            "bootstrap": config.n_way * (config.k_shot + config.get("future_shots", 0))
            + 2 * queries,  # each query is read twice
            "sequential": 2 * config.n_way * config.get("sequential_shots", 0)
            }[config.get("task", "sync")]


def validation_metrics(config, eval_step, mesh, state, val_sampler):
    """Validation scalars; "accuracy" is the model-selection metric: query accuracy (sync,
    bootstrap) or accuracy over all positions of the fixed validation sequences (sequential,
    which also reports the accuracy per occurrence of a class)."""
    if config.get("task", "sync") == "sequential":
        from .sequential import sequence_validation
        return sequence_validation(eval_step, mesh, state, val_sampler, config.val_episodes,
                                   config.eval_batch_size)
    return {"accuracy": episode_accuracy(eval_step, mesh, state, val_sampler, config.val_episodes,
                                         config.eval_seed, config.eval_batch_size)}


def train_and_evaluate(config, workdir, resume=True):
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    if checkpoints.latest_step() is not None and not resume:
        raise ConfigError(f"{workdir} already holds checkpoints; pass --resume or use a fresh --workdir.")
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))

    train_sampler = make_sampler(config, "train", config.seed)
    val_sampler = make_sampler(config, "val", config.seed)
    model, optimizer, mesh, train_step, eval_step = build(config)
    state = initial_state(config, model, optimizer, mesh, train_sampler.sample(1, 0))
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(state)
        print(f"Resumed from {workdir}/checkpoints/{int(state.step)}", flush=True)
    elif config.get("init_from"):
        state, report = warm_start(state, config.init_from, config.get("init_from_checkpoint", "best"))
        state = jax.device_put(state, mesh.replicated)
        print(report, flush=True)
    start = int(state.step)
    schedule = make_schedule(config)
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    writer = MetricWriter(workdir)
    n_params = sum(a.size for a in jax.tree.leaves(state.params))
    print(f"{config.model} / {config.backbone}: {n_params:,} parameters, {jax.device_count()} device(s), "
          f"steps {start}..{config.total_steps}", flush=True)

    bar = tqdm(total=config.total_steps, initial=start, dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30, disable=start >= config.total_steps)
    sums, count, t_last = None, 0, time.time()
    step = start
    try:
        for step, batch in train_sampler.iterate(config.batch_size, start_step=start,
                                                 num_steps=config.total_steps - start):
            state, metrics = train_step(state, mesh.put_batch(batch), dropout_key)
            sums = metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, metrics)
            count += 1
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == config.total_steps:
                elapsed = time.time() - t_last
                scalars = {k: float(v) / count for k, v in sums.items()}
                scalars.update(learning_rate=float(schedule(step)), steps_per_second=count / elapsed,
                               images_per_second=count * config.batch_size * images_per_episode(config)
                               / elapsed)
                writer.write(done, scalars, "train")
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc=f"{scalars['accuracy']:.3f}",
                                sps=f"{scalars['steps_per_second']:.1f}")
                sums, count, t_last = None, 0, time.time()
            if done % config.eval_every == 0 or done == config.total_steps:
                t0 = time.time()
                val = validation_metrics(config, eval_step, mesh, state, val_sampler)
                val_acc = val["accuracy"]
                writer.write(done, val, "valid")
                tqdm.write(f"step {done}: valid " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                if val_acc > checkpoints.best_accuracy():
                    checkpoints.save_best(done, state, val_acc)
                t_last += time.time() - t0  # keep evaluation out of the training throughput
            if done % config.checkpoint_every == 0 or done == config.total_steps:
                checkpoints.save(done, state)
    except KeyboardInterrupt:
        tqdm.write(f"Interrupted: saving a checkpoint at step {int(state.step)} and exiting.")
        checkpoints.save(int(state.step), state)
    finally:
        bar.close()
        writer.close()
        checkpoints.close()
    return state


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a program, so the module stays importable)."""
    config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/fewshot/.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard events.")
    flags.DEFINE_bool("resume", True, "Resume from the latest checkpoint in --workdir if there is one.")


def configure_cpu_devices(config):
    """Splits the host CPU into config.cpu_devices JAX devices (0: one per core, reduced to a
    divisor of batch_size) before the backends start. XLA's CPU convolutions barely use a second
    core within one device, so on a CPU-only host data parallelism over per-core devices is
    what uses them all; results are the same as with one device. GPU/TPU hosts are unaffected
    (their accelerators stay the default devices). Call before anything touches jax devices."""
    n = int(config.get("cpu_devices", 1))
    if n == 0:
        n = max(1, min(os.cpu_count() or 1, config.batch_size))
        while config.batch_size % n:
            n -= 1
    if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_num_cpu_devices", n)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError("--config and --workdir are required.")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    configure_cpu_devices(FLAGS.config)
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume)
    except (DatasetError, ConfigError, WarmStartError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
