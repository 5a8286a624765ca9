"""Every RL config field's rule, and the checks between fields and against the devices.

`FIELD_RULES` holds one rule per field of configs/rl/default.py, sub-config fields by dotted
name ("agent.core"); tests/test_config_checks.py fails when a field is added there without
one. `validate_config` raises one ValueError (ConfigError) listing every problem, before a
run writes anything.

Beside the rules: the fields a resumed run may change (`RESUMABLE_FIELDS`, `locked_fields`) and
the keys renamed since older runs were written (`RENAMED_KEYS`).
"""
from __future__ import annotations

import os

from .agent import CORE_KINDS
from .envs import MODE_GAMES, NUM_ACTIONS, mode_has_game
from .normalization import PROCGEN_RETURN_RANGES
from srwm_jax.layers import DENSE_INITS, STATE_GRADIENTS
from srwm_jax.training.config_schema import Bool, Choice, Float, Int, TupleOf
from srwm_jax.training.config_schema import ConfigError, config_problems

DISTRIBUTION_MODES = ("easy", "hard", "memory", "exploration", "extreme")
Game = Choice(*sorted(PROCGEN_RETURN_RANGES))
Probability = Float(0.0, 1.0, hi_open=True)

# The defaults of every field (configs/rl/default.py of a clone; None in an installed copy, which
# has no configs/): the evaluation CLIs fill the fields an older run's config.json lacks from it
# (srwm_jax.training.cli.define_defaults_flag).
_DEFAULT_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs", "rl", "default.py")
DEFAULT_CONFIG_FILE = _DEFAULT_FILE if os.path.exists(_DEFAULT_FILE) else None

# config.json keys renamed since older runs were written: {old: new} (see load_config).
RENAMED_KEYS = {"max_checkpoints": "keep_checkpoints"}

# Fields a resumed run may change (rl.training.train_and_evaluate; the others must be the run's
# own): they decide when to stop, log, checkpoint and evaluate, not what is learned. The config
# fingerprint stored with every checkpoint leaves them out.
RESUMABLE_FIELDS = ("max_minutes", "log_every_seconds", "checkpoint_every_minutes",
                    "keep_checkpoints", "eval_every_steps", "eval_episodes",
                    "unroll_timeout_seconds", "params_check_every_updates",
                    # the device layout: a run may resume on other hardware / process counts
                    "actor_device_ids", "learner_device_ids")

FIELD_RULES = {
    "seed": Int(0, 2**31 - 1),            # ProcGen's level seeds are C ints (rl.envs)
    # environment
    "games": TupleOf(Game, min_length=1),
    "distribution_mode": Choice(*DISTRIBUTION_MODES),
    "num_levels": Int(0),                 # 0 = unlimited levels (ProcGen's convention)
    "start_level": Int(0),
    "num_actions": Int(1, NUM_ACTIONS),   # the policy's actions index ProcGen's 15
    "frame_shape": TupleOf(Int(1), length=3),
    # Sebulba actors
    "num_actor_threads": Int(1),
    "envs_per_game": Int(1),
    "env_threads": Int(1),
    "queue_size": Int(1),
    "actor_device_ids": TupleOf(Int(0), min_length=1),
    "unroll_timeout_seconds": Float(0.0),  # 0 = automatic
    "learner_device_ids": TupleOf(Int(0)),  # empty = all devices
    # agent
    "agent.core": Choice(*CORE_KINDS),
    "agent.lstm_hidden": Int(1),
    "agent.num_layers": Int(1),
    "agent.hidden": Int(1),
    "agent.num_heads": Int(1),
    "agent.ff_dim": Int(1),
    "agent.dropout": Probability,
    "agent.sum_norm_eps": Float(0.0, lo_open=True),
    "agent.state_gradient": Choice(*STATE_GRADIENTS),
    "agent.dense_init": Choice(*DENSE_INITS),
    # IMPALA / V-trace
    "total_steps": Int(1),
    "max_minutes": Float(0.0),            # 0 = no limit
    "unroll_length": Int(1),
    "batch_size": Int(1),
    "discount": Float(0.0, 1.0),
    "reward_clip": Float(0.0),            # 0 = no clipping
    "baseline_cost": Float(0.0),
    "entropy_cost": Float(0.0),
    "learning_rate": Float(0.0, lo_open=True),
    "rmsprop_decay": Probability,
    "rmsprop_eps": Float(0.0, lo_open=True),
    "rmsprop_momentum": Probability,
    "grad_norm_clip": Float(0.0, lo_open=True),
    # evaluation
    "eval_splits": TupleOf(TupleOf(Int(0), length=2)),
    "eval_on_train_levels": Bool,
    "eval_episodes": Int(0),              # 0 = no final evaluation
    "eval_every_steps": Int(0),           # 0 = only at the end
    "eval_max_steps": Int(1),
    # logging / checkpointing
    "log_every_seconds": Float(0.0),
    "return_window": Int(1),
    "checkpoint_every_minutes": Float(0.0),  # 0 = after every update
    "keep_checkpoints": Int(1),
    "params_check_every_updates": Int(0),   # several processes; 0 = never
}


def field_problems(config, allow_extra: bool = False) -> list[str]:
    """Problems of single fields (FIELD_RULES) and between fields, as phrases; [] if none.

    `allow_extra`: accept fields without a rule (runs written by an older version)."""
    return config_problems(config, FIELD_RULES, _between_fields, allow_extra)


def _between_fields(c) -> list[str]:
    problems = []
    if len(set(c.games)) != len(c.games):
        problems.append(f"config.games={tuple(c.games)!r} lists a game twice")
    lacking = [g for g in c.games if not mode_has_game(c.distribution_mode, g)]
    if lacking:
        problems.append(f"config.distribution_mode={c.distribution_mode!r} is not a mode of "
                        f"{', '.join(lacking)}: ProcGen has it for "
                        f"{', '.join(MODE_GAMES[c.distribution_mode])} only (every game has "
                        "'easy' and 'hard')")
    if c.agent.core not in ("ff", "lstm") and c.agent.hidden % c.agent.num_heads:
        problems.append(f"config.agent.hidden={c.agent.hidden} is not divisible by "
                        f"config.agent.num_heads={c.agent.num_heads}")
    if any(n < 1 for _, n in c.eval_splits):
        problems.append(f"config.eval_splits={tuple(c.eval_splits)!r}: each (start_level, "
                        "num_levels) needs num_levels >= 1")
    return problems


def device_problems(config, num_devices: int, num_processes: int = 1) -> list[str]:
    """Device ids within each process's `num_devices` local devices (the ids index every
    process's own devices), the global batch split evenly over the processes (each one's
    actors feed batch_size / P unrolls) and over the learner devices of all processes (all of
    them when learner_device_ids is empty)."""
    problems = []
    for name in ("actor_device_ids", "learner_device_ids"):
        bad = [i for i in config[name] if i >= num_devices]
        if bad:
            problems.append(f"config.{name}={tuple(config[name])!r}: device(s) {bad} do not "
                            f"exist (each process has {num_devices})")
    if not problems and config.batch_size % num_processes:
        problems.append(f"config.batch_size={config.batch_size} (the global batch) must be "
                        f"divisible by the {num_processes} processes")
    learners = (len(config.learner_device_ids) or num_devices) * num_processes
    if not problems and config.batch_size % learners:
        problems.append(f"config.batch_size={config.batch_size} must be divisible by the "
                        f"{learners} learner devices")
    return problems


def validate_config(config, num_devices: int | None = None, allow_extra: bool = False,
                    num_processes: int = 1) -> None:
    """Refuses an RL config that cannot run, with every problem in one line.

    Args:
      config: an RL ConfigDict (configs/rl/default.py and its variants).
      num_devices: jax.local_device_count(), the devices of each process (None: skip the
        device checks).
      num_processes: jax.process_count().
      allow_extra: accept fields without a rule (an older run's config.json).
    Raises:
      ConfigError: one line naming each bad field, its value and what is allowed.
    """
    problems = field_problems(config, allow_extra)
    if not problems and num_devices is not None:
        problems += device_problems(config, num_devices, num_processes)
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


def locked_fields(config) -> dict:
    """{field: why} of the RESUMABLE_FIELDS this config may not change on resume: total_steps,
    over which the learning rate decays linearly to 0 (another value changes it at every
    update, so the resumed run would match no uninterrupted run)."""
    del config  # the same for every RL config
    return {"total_steps": "the learning rate decays linearly to 0 over total_steps; stop "
            "earlier with max_minutes, or start a fresh run to train longer"}
