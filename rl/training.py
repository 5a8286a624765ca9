"""`train_and_evaluate(config, workdir)`: the IMPALA/Sebulba training run (rl.impala is the CLI)."""

import collections
import csv
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpointing, evaluate as evaluation, plotting
from .agent import count_params, make_agent
from .learner import Learner
from .sebulba import SebulbaRunner

log = logging.getLogger("rl")


def init_params(agent, key, frame_shape=(64, 64, 3)):
    frames = jnp.zeros((1, 1) + tuple(frame_shape), jnp.uint8)
    zeros = jnp.zeros((1, 1), jnp.float32)
    firsts = jnp.ones((1, 1), bool)
    return agent.init(key, frames, zeros, firsts, agent.initial_state(1))


def num_updates_for(config) -> int:
    return max(1, config.total_steps // (config.unroll_length * config.batch_size))


def validate_config(config):
    from .agent import CORE_KINDS
    from .normalization import PROCGEN_RETURN_RANGES
    problems = []
    if config.agent.core not in CORE_KINDS:
        problems.append(f"agent.core={config.agent.core!r} not in {CORE_KINDS}")
    unknown = [g for g in config.games if g not in PROCGEN_RETURN_RANGES]
    if unknown:
        problems.append(f"unknown games {unknown}; choose from {sorted(PROCGEN_RETURN_RANGES)}")
    if config.distribution_mode not in ("easy", "hard", "memory", "exploration", "extreme"):
        problems.append(f"distribution_mode={config.distribution_mode!r}")
    for name in ("unroll_length", "batch_size", "num_actor_threads", "envs_per_game",
                 "queue_size", "total_steps"):
        if config[name] < 1:
            problems.append(f"{name} must be >= 1, got {config[name]}")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))


def _devices(ids):
    devices = jax.devices()
    return [devices[i] for i in ids] if ids else devices


class _Progress:
    """Per-game running returns, throughput, policy lag; writes the log line, TB and a CSV."""

    def __init__(self, config, workdir, writer, start_steps):
        self.config, self.writer = config, writer
        self.returns = {g: collections.deque(maxlen=config.return_window) for g in config.games}
        self.episodes = collections.Counter()
        self.lags: list[np.ndarray] = []
        self.last_time, self.last_steps = time.monotonic(), start_steps
        self.csv_path = os.path.join(workdir, "train_returns.csv")

    def add_episodes(self, records, env_steps):
        for r in records:
            self.returns[r.game].append(r.episode_return)
            self.episodes[r.game] += 1
            if self.writer:
                self.writer.add_scalar(f"episode_return/{r.game}", r.episode_return, env_steps)

    def report(self, env_steps, update, metrics, queue_size):
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
        if self.writer:
            self.writer.add_scalar("perf/sps", sps, env_steps)
            self.writer.add_scalar("perf/policy_lag_mean", lags.mean(), env_steps)
            self.writer.add_scalar("perf/policy_lag_max", lags.max(), env_steps)
            for k, v in metrics.items():
                self.writer.add_scalar(f"loss/{k}", v, env_steps)
            for g, m in means.items():
                if np.isfinite(m):
                    self.writer.add_scalar(f"mean_return/{g}", m, env_steps)
            self.writer.flush()
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "game", "mean_return", "episodes", "sps", "policy_lag_mean"])
            for g, m in means.items():
                w.writerow([env_steps, g, m, self.episodes[g], round(sps, 1),
                            round(float(lags.mean()), 3)])
        return dict(sps=sps, policy_lag_mean=float(lags.mean()), policy_lag_max=int(lags.max()),
                    mean_returns=means)


def train_and_evaluate(config, workdir: str, resume: bool = False, env_factory=None,
                       use_tensorboard: bool = True):
    """Trains `config` into `workdir`; returns a summary dict (last progress report, evals)."""
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    checkpointing.save_config(workdir, config)
    agent = make_agent(config)
    rng = jax.random.key(config.seed)
    params = init_params(agent, jax.random.fold_in(rng, 0), config.frame_shape)
    learner = Learner(agent, config, num_updates_for(config),
                      devices=_devices(config.learner_device_ids))
    train_state = learner.init_state(params)
    manager = checkpointing.make_manager(workdir, config.max_checkpoints)
    env_steps = 0
    if resume and manager.latest_step() is not None:
        train_state, env_steps, rng = checkpointing.restore(manager, train_state, rng)
        log.info("resumed from %s at %d env steps", manager.directory, env_steps)
    update = int(train_state.update)
    log.info("agent %s: %d parameters; learner devices %s; actor devices %s", config.agent.core,
             count_params(params), learner.mesh.devices.tolist(),
             _devices(config.actor_device_ids))

    writer = None
    if use_tensorboard:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(os.path.join(workdir, "tb"))
    progress = _Progress(config, workdir, writer, env_steps)
    steps_per_update = config.unroll_length * config.batch_size
    start = last_log = last_ckpt = time.monotonic()
    next_eval = env_steps + config.eval_every_steps if config.eval_every_steps else None
    summary = dict(evals=[])
    metrics = None
    runner = SebulbaRunner(agent, config, train_state.params,
                           actor_devices=_devices(config.actor_device_ids),
                           env_factory=env_factory, seed=config.seed * 7919 + update,
                           start_version=update)
    interrupted = False
    try:
        runner.start()
        while env_steps < config.total_steps:
            if config.max_minutes and time.monotonic() - start > 60 * config.max_minutes:
                log.info("max_minutes=%s reached", config.max_minutes)
                break
            batch, versions = runner.get_batch(config.batch_size)
            progress.lags.append(update - versions)
            train_state, metrics = learner.update(train_state, batch)
            update += 1
            env_steps += steps_per_update
            runner.publish(train_state.params, update)
            progress.add_episodes(runner.drain_episodes(), env_steps)
            now = time.monotonic()
            if now - last_log > config.log_every_seconds:
                last_log = now
                summary["progress"] = progress.report(env_steps, update, metrics,
                                                      runner.rollout_queue.qsize())
            if now - last_ckpt > 60 * config.checkpoint_every_minutes:
                last_ckpt = now
                checkpointing.save(manager, train_state, env_steps, rng)
            if next_eval is not None and env_steps >= next_eval:
                next_eval += config.eval_every_steps
                summary["evals"].append(_evaluate(agent, train_state.params, config, workdir,
                                                  env_steps))
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: saving a checkpoint at %d env steps", env_steps)
    finally:
        runner.close()
    # Only reached without an exception (an actor failure propagates after runner.close()).
    if metrics is not None:
        summary["progress"] = progress.report(env_steps, update, metrics,
                                              runner.rollout_queue.qsize())
    checkpointing.save(manager, train_state, env_steps, rng)
    manager.wait_until_finished()
    if not interrupted and config.eval_episodes > 0:
        summary["evals"].append(_evaluate(agent, train_state.params, config, workdir, env_steps))
    if writer:
        writer.close()
    try:
        plotting.plot_learning_curves(workdir)
    except Exception as e:  # noqa: BLE001 - a plot must not fail a finished run
        log.warning("plotting failed: %s", e)
    summary.update(env_steps=env_steps, updates=update, interrupted=interrupted,
                   train_state=train_state)
    return summary


def _evaluate(agent, params, config, workdir, env_steps):
    t0 = time.monotonic()
    rows = evaluation.evaluate(agent, params, config)
    evaluation.append_eval_csv(os.path.join(workdir, "eval.csv"), env_steps, rows)
    log.info("evaluation at %d steps (%.0fs):\n%s", env_steps, time.monotonic() - t0,
             evaluation.format_eval(rows))
    return rows
