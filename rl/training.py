"""`train_and_evaluate(config, workdir)`: the IMPALA/Sebulba training run (rl.train is the CLI).

The workdir layout is the shared run layer's (srwm_jax.training): config.json, metrics.jsonl,
tensorboard/, checkpoints/<env steps>/, plus train_returns.csv, eval.csv and
learning_curves.png.

Several processes (jax.distributed started first, srwm_jax.training.distributed): every
process runs its own actor threads and environments on its own devices and feeds its share
(config.batch_size / process count unrolls) of each update to the learner, whose mesh spans
every process's devices; the gradient all-reduce crosses processes. Process 0 alone logs,
evaluates and writes files; all processes take part in the checkpoint saves. Decisions from
local clocks (checkpoint time, max_minutes) are agreed on by all processes every update, and
every `config.params_check_every_updates` updates the processes assert that they hold
bit-identical parameters. The logged training returns are process 0's actors' episodes.
"""

import collections
import logging
import os
import time

import jax
import numpy as np

from . import plots
from .agent import make_agent
from .config_checks import RESUMABLE_FIELDS, locked_fields, validate_config
from .evaluation import append_eval_csv, evaluate, format_eval
from .learner import Learner, checkpoint_tree, from_checkpoint_tree, init_params, num_updates_for
from .sebulba import SebulbaRunner
from srwm_jax.training import distributed
from srwm_jax.training.mesh import count_params
from srwm_jax.training.metrics import MetricWriter, append_csv
from srwm_jax.training.run_context import RunContext, check_finite_scalars

log = logging.getLogger("rl")

TRAIN_RETURN_FIELDS = ["step", "game", "mean_return", "episodes", "sps", "policy_lag_mean"]

def _actor_devices(ids):
    # Indices into this process's own devices (each process runs its own actors).
    devices = jax.local_devices()
    return [devices[i] for i in ids] if ids else devices


class Progress:
    """Per-game running returns, throughput, policy lag; writes the log line, the metrics
    (jsonl + TensorBoard) and train_returns.csv."""

    def __init__(self, config, workdir, writer: MetricWriter, start_steps: int):
        self.config, self.writer = config, writer
        self.returns = {g: collections.deque(maxlen=config.return_window) for g in config.games}
        self.episodes = collections.Counter()
        self.lags: list[np.ndarray] = []
        self.last_time, self.last_steps = time.monotonic(), start_steps
        self.csv_path = os.path.join(workdir, "train_returns.csv")

    def add_episodes(self, records, env_steps):
        """Adds finished episodes (rl.envs.EpisodeRecord) to the running per-game returns."""
        for r in records:
            self.returns[r.game].append(r.episode_return)
            self.episodes[r.game] += 1
            self.writer.write(env_steps, {r.game: r.episode_return}, "episode_return", jsonl=False)

    def report(self, env_steps, update, metrics, queue_size):
        """Logs and writes the progress since the last report.

        Returns:
          {sps, policy_lag_mean, policy_lag_max, mean_returns: {game: running mean}}.
        """
        now = time.monotonic()
        sps = (env_steps - self.last_steps) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_steps = now, env_steps
        lags = np.concatenate(self.lags) if self.lags else np.zeros(1)
        self.lags = []
        means = {g: float(np.mean(r)) if r else float("nan") for g, r in self.returns.items()}
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        game_str = " ".join(f"{g}={m:.2f}({self.episodes[g]})" for g, m in means.items())
        log.info("steps %d  updates %d  SPS %.0f  policy lag mean %.2f max %d  queue %d  "
                 "loss %.1f  entropy %.3f  grad norm %.1f  returns %s", env_steps, update, sps,
                 lags.mean(), lags.max(), queue_size, metrics["loss"], metrics["entropy"],
                 metrics["grad_norm"], game_str)
        self.writer.write(env_steps, {"sps": sps, "policy_lag_mean": lags.mean(),
                                      "policy_lag_max": lags.max()}, "perf")
        self.writer.write(env_steps, metrics, "loss")
        self.writer.write(env_steps, {g: m for g, m in means.items() if np.isfinite(m)},
                          "mean_return")
        append_csv(self.csv_path, TRAIN_RETURN_FIELDS,
                   [dict(step=env_steps, game=g, mean_return=m, episodes=self.episodes[g],
                         sps=round(sps, 1), policy_lag_mean=round(float(lags.mean()), 3))
                    for g, m in means.items()])
        return dict(sps=sps, policy_lag_mean=float(lags.mean()), policy_lag_max=int(lags.max()),
                    mean_returns=means)


def train_and_evaluate(config, workdir: str, resume: bool = True, env_factory=None,
                       use_tensorboard: bool = True, overwrite: bool = False):
    """Trains `config` into `workdir` with Sebulba actors and a data-parallel learner.

    Args:
      config: a full RL config (configs/rl/default.py and its variants).
      workdir: run directory; made if missing. A run already there (config.json or
        checkpoints) is resumed from its latest checkpoint (env steps, updates and RNG
        included); its config must be this one except rl.config_checks.RESUMABLE_FIELDS.
      resume: False refuses a workdir that already holds a run.
      env_factory: actor index -> env with the rl.envs.MultiGameEnv interface (default:
        ProcGen); tests pass rl.fake_env.FakeEnv.
      use_tensorboard: also write TensorBoard events (metrics.jsonl is always written).
      overwrite: delete a run already in `workdir` (its contents) and start afresh.
    Returns:
      Summary dict: env_steps, updates, interrupted, train_state, progress (the last
      Progress.report) and evals (a list of rl.evaluation.evaluate row lists).
    Raises:
      ValueError: bad config; srwm_jax.training.run_config.RunConfigError (a ValueError):
        `workdir` holds a run and resume=False, or a run with a different config.
      srwm_jax.training.checkpoints.CheckpointError: the latest checkpoint cannot be restored.
      rl.sebulba.ActorFailed / ActorStalled: an actor thread raised / hung (after the runner
        is shut down).
      srwm_jax.training.distributed.DistributedError: Ctrl-C with several processes (no
        checkpoint can be saved by one process alone).
      srwm_jax.training.run_context.RunLockError: another trainer holds `workdir`.
      srwm_jax.training.checkpoints.NonFiniteError: the loss or the parameters became NaN or
        infinite (nothing non-finite is ever saved).
      srwm_jax.training.checkpoints.DiskFullError: a checkpoint could not be written.
    SIGTERM / SIGUSR1 end the loop at the next update with a checkpoint of it (run_context;
    summary["interrupted"] is True).
    """
    validate_config(config, num_devices=jax.local_device_count(),
                    num_processes=jax.process_count())
    with RunContext(workdir, config, resume=resume, overwrite=overwrite, kind="rl",
                    resumable=RESUMABLE_FIELDS, locked=locked_fields(config),
                    best=False, tensorboard=use_tensorboard) as run:
        return _train(config, workdir, env_factory, run)


def _train(config, workdir, env_factory, run: RunContext):
    """The loop of train_and_evaluate inside `run` (returns its summary)."""
    main, checkpoints, writer = run.main, run.checkpoints, run.writer
    if run.changes and main:
        log.info("resuming %s with %s", workdir, "; ".join(run.changes))
    agent = make_agent(config)
    rng = jax.random.key(config.seed)
    params = init_params(agent, jax.random.fold_in(rng, 0), config.frame_shape)
    learner = Learner(agent, config, num_updates_for(config),
                      devices=distributed.devices_by_local_index(config.learner_device_ids))
    train_state = learner.init_state(params)
    env_steps = 0
    if checkpoints.latest_step() is not None:
        tree = checkpoints.restore(checkpoint_tree(train_state, env_steps, rng))
        train_state, env_steps, rng = from_checkpoint_tree(tree)
        log.info("resumed from %s at %d env steps", checkpoints.directory, env_steps)
    update = int(train_state.update)
    log.info("agent %s: %d parameters; learner devices %s; actor devices %s", config.agent.core,
             count_params(params), learner.parallel.mesh.devices.tolist(),
             _actor_devices(config.actor_device_ids))

    progress = Progress(config, workdir, writer, env_steps)
    steps_per_update = config.unroll_length * config.batch_size  # over all processes
    local_batch_size = config.batch_size // jax.process_count()  # this process's actors' share
    check_every = config.params_check_every_updates if jax.process_count() > 1 else 0
    start = last_log = last_ckpt = time.monotonic()
    next_eval = env_steps + config.eval_every_steps if config.eval_every_steps else None
    summary = dict(evals=[])
    metrics = None
    runner = SebulbaRunner(agent, config, distributed.local_copy(train_state.params),
                           actor_devices=_actor_devices(config.actor_device_ids),
                           env_factory=env_factory,
                           seed=config.seed * 7919 + update + 1_000_003 * jax.process_index(),
                           start_version=update)
    interrupted = False
    try:
        runner.start()
        while env_steps < config.total_steps:
            now = time.monotonic()
            # Clock-based decisions and stop signals, the same in every process (one all-gather
            # per update when there are several; the values themselves when there is one).
            due = distributed.agree({
                "stop": bool(config.max_minutes) and now - start > 60 * config.max_minutes,
                "signal": run.stop.received is not None,
                "checkpoint": now - last_ckpt > 60 * config.checkpoint_every_minutes})
            if due["signal"]:
                interrupted = True
                log.warning("%s: saving a checkpoint at %d env steps and exiting (the same "
                            "command resumes)", run.stop.received or "stop signal", env_steps)
                break
            if due["stop"]:
                log.info("max_minutes=%s reached", config.max_minutes)
                break
            batch, versions = runner.get_batch(local_batch_size)
            if main:
                progress.lags.append(update - versions)
            train_state, metrics = learner.update(train_state, batch)
            update += 1
            env_steps += steps_per_update
            check_finite_scalars({"loss": float(metrics["loss"])}, f"update {update}")
            if check_every and update % check_every == 0:
                distributed.check_identical(train_state.params, f"parameters after update {update}")
            runner.publish(distributed.local_copy(train_state.params), update)
            progress.add_episodes(runner.drain_episodes(), env_steps)
            now = time.monotonic()
            if main and now - last_log > config.log_every_seconds:
                last_log = now
                summary["progress"] = progress.report(env_steps, update, metrics,
                                                      runner.rollout_queue.qsize())
            if due["checkpoint"]:
                last_ckpt = now
                checkpoints.save(env_steps, checkpoint_tree(train_state, env_steps, rng))
            if next_eval is not None and env_steps >= next_eval:
                next_eval += config.eval_every_steps
                with distributed.main_process_only(f"evaluation at {env_steps}") as evaluates:
                    if evaluates:
                        summary["evals"].append(_evaluate(
                            agent, distributed.local_copy(train_state.params), config, workdir,
                            env_steps))
    except KeyboardInterrupt:
        if jax.process_count() > 1:
            # A save is collective: the other processes are elsewhere in the loop.
            raise distributed.DistributedError(
                f"interrupted at {env_steps} env steps with several processes: no checkpoint is "
                "saved now (a save needs every process); the same command on every process "
                "resumes from the last periodic checkpoint.") from None
        interrupted = True
        log.warning("interrupted: saving a checkpoint at %d env steps", env_steps)
    finally:
        runner.close()
    # Only reached without an exception (an actor failure propagates after runner.close()).
    if metrics is not None and main:
        summary["progress"] = progress.report(env_steps, update, metrics,
                                              runner.rollout_queue.qsize())
    checkpoints.save(env_steps, checkpoint_tree(train_state, env_steps, rng))
    checkpoints.wait_until_finished()
    with distributed.main_process_only("final evaluation") as evaluates:
        if not interrupted and config.eval_episodes > 0 and evaluates:
            summary["evals"].append(_evaluate(agent, distributed.local_copy(train_state.params),
                                              config, workdir, env_steps))
        writer.close()
        try:
            if evaluates:
                plots.plot_learning_curves(workdir)
        except Exception as e:  # noqa: BLE001 - a plot must not fail a finished run
            log.warning("plotting failed: %s", e)
    summary.update(env_steps=env_steps, updates=update, interrupted=interrupted,
                   train_state=train_state)
    return summary


def _evaluate(agent, params, config, workdir, env_steps):
    t0 = time.monotonic()
    rows = evaluate(agent, params, config)
    append_eval_csv(os.path.join(workdir, "eval.csv"), env_steps, rows)
    log.info("evaluation at %d steps (%.0fs):\n%s", env_steps, time.monotonic() - t0,
             format_eval(rows))
    return rows
