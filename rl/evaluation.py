"""Evaluation of RL agents and baselines (CLIs: rl.evaluate, rl.random_baseline).

`evaluate` uses argmax actions on fixed level splits (paper: 1000-1199, 1200-1399, 1400-1599).
Each of `episodes` envs per game plays exactly one episode (the first one), so short episodes
are not over-represented; `random_returns` uses the same protocol for the uniformly random
policy. `load_for_eval` restores a run directory's latest checkpoint for testing.
"""
from __future__ import annotations

import jax
import numpy as np

from .agent import make_agent
from .config_checks import RENAMED_KEYS, RESUMABLE_FIELDS, validate_config
from .envs import NUM_ACTIONS, MultiGameEnv
from .learner import Learner, checkpoint_tree, from_checkpoint_tree, init_params, num_updates_for
from .normalization import aggregate_normalized, constants_for, normalized_score
from .sebulba import make_policy_fn
from srwm_jax.stats import sem as standard_error
from srwm_jax.training.checkpoints import Checkpoints
from srwm_jax.training.metrics import append_csv
from srwm_jax.training.run_config import load_config, workdir_fingerprint
from srwm_jax.training.workdir import check_kind

def evaluate_split(agent, params, games, *, start_level, num_levels, episodes,
                   distribution_mode="easy", seed=12345, max_steps=10_000, greedy=True,
                   device=None, policy_fn=None):
    """Plays one episode per env on levels [start_level, start_level + num_levels).

    Args:
      agent, params: the policy (rl.agent.Agent and its parameters).
      games: ProcGen game names; `episodes` envs per game.
      greedy: argmax actions (False: sampled from the policy).
      device: where the policy runs (default: the first device).
      policy_fn: a prebuilt rl.sebulba.make_policy_fn (default: built here).
    Returns:
      {game: float array [episodes finished] of returns} (unfinished episodes dropped).
    """
    device = device or jax.devices()[0]
    policy = policy_fn or make_policy_fn(agent, greedy=greedy)
    env = MultiGameEnv(games, episodes, num_levels=num_levels, start_level=start_level,
                       distribution_mode=distribution_mode, seed=seed, num_threads=1)
    params = jax.device_put(params, device)
    state = jax.device_put(agent.initial_state(env.num_envs), device)
    key = jax.random.key(seed)

    def choose(step, reward, obs, first):
        nonlocal state
        action, _, state = policy(params, state, obs, reward, first, jax.random.fold_in(key, step))
        return np.asarray(action)
    return first_episode_returns(env, games, choose, max_steps)


def first_episode_returns(env, games, choose_actions, max_steps):
    """Steps `env` until every env has finished its first episode (or `max_steps`).

    choose_actions(step, reward [N], obs [N, ...], first [N]) -> int actions [N].
    Returns {game: returns of the envs of that game that finished}."""
    returns = np.zeros(env.num_envs)
    done = np.zeros(env.num_envs, bool)
    reward, obs, first = env.observe()
    for step in range(max_steps):
        env.act(choose_actions(step, reward, obs, first))
        reward, obs, first = env.observe()
        returns += np.where(done, 0.0, reward)
        done |= first
        if done.all():
            break
    return {g: returns[(env.game_of_env == i) & done] for i, g in enumerate(games)}


def evaluate(agent, params, config, *, episodes=None, policy_fn=None, greedy=True):
    """Evaluates on config.eval_splits (+ the training levels if config.eval_on_train_levels).

    Returns:
      A list of row dicts {split, game, mean_return, sem, normalized, episodes}, one per
      (split, game) plus a game "ALL" row per split (aggregate normalised score).
    """
    episodes = episodes or config.eval_episodes
    splits = [(f"test_{s}_{s + n - 1}", s, n) for s, n in config.eval_splits]
    if config.eval_on_train_levels:
        splits.insert(0, ("train", config.start_level, config.num_levels))
    which = constants_for(config.distribution_mode)
    rows = []
    for name, start, num in splits:
        per_game = evaluate_split(agent, params, config.games, start_level=start, num_levels=num,
                                  episodes=episodes, distribution_mode=config.distribution_mode,
                                  max_steps=config.eval_max_steps, policy_fn=policy_fn,
                                  greedy=greedy)
        means = {g: float(np.mean(r)) if len(r) else float("nan") for g, r in per_game.items()}
        label = name if greedy else f"{name}_sampled"
        for g, r in per_game.items():
            sem = standard_error(r) if len(r) else float("nan")  # sample std / sqrt(n)
            rows.append(dict(split=label, game=g, mean_return=means[g], sem=sem,
                             normalized=normalized_score(g, means[g], which), episodes=len(r)))
        rows.append(dict(split=label, game="ALL", mean_return=float(np.mean(list(means.values()))),
                         normalized=aggregate_normalized(means, which),
                         episodes=sum(len(r) for r in per_game.values())))
    return rows


EVAL_FIELDS = ["step", "split", "game", "mean_return", "normalized", "episodes"]


def append_eval_csv(path, step, rows):
    """Appends evaluation `rows` at env step `step` to the CSV at `path` (columns EVAL_FIELDS;
    the sem column is left out)."""
    append_csv(path, EVAL_FIELDS, ({"step": step, **row} for row in rows))


def format_eval(rows) -> str:
    """Evaluation rows as aligned text lines, one per (split, game)."""
    sem = lambda r: f" +- {r['sem']:.2f} (s.e.m.)" if "sem" in r else ""  # noqa: E731
    return "\n".join(f"  {r['split']:>16} {r['game']:>10}: return {r['mean_return']:8.2f}{sem(r)}  "
                      f"normalised {100 * r['normalized']:6.1f}  ({r['episodes']} episodes)"
                      for r in rows)


def random_returns(games, *, episodes, start_level, num_levels, distribution_mode="easy",
                   seed=0, max_steps=10_000, num_actions=NUM_ACTIONS):
    """{game: np.ndarray of returns} for uniformly random actions, one episode per env."""
    env = MultiGameEnv(games, episodes, num_levels=num_levels, start_level=start_level,
                       distribution_mode=distribution_mode, seed=seed)
    rng = np.random.default_rng(seed)
    return first_episode_returns(env, games, lambda *_: rng.integers(0, num_actions, env.num_envs),
                                 max_steps)


def load_run_config(workdir: str, defaults=None):
    """The config of the RL run in `workdir`, merged onto `defaults` (configs/rl/default.py's
    get_config() from the CLIs), with renamed keys mapped.

    Raises:
      FileNotFoundError: workdir/config.json is missing.
      RunConfigError (a ValueError): it is a few-shot run (the message names its evaluator).
    """
    check_kind(workdir, "rl")
    return load_config(workdir, defaults, renames=RENAMED_KEYS)


def load_for_eval(workdir: str, defaults=None):
    """(config, params, env_steps) of the latest checkpoint in `workdir`, on the default device.

    Raises:
      FileNotFoundError: no config.json or no checkpoint; CheckpointError (a RuntimeError): it
        cannot be restored, or was made under another config than the config.json beside it;
      rl.config_checks.ConfigError (a ValueError): a field of the run's config is bad.
    """
    config = load_run_config(workdir, defaults)
    validate_config(config, allow_extra=True)
    agent = make_agent(config)
    learner = Learner(agent, config, num_updates_for(config), devices=jax.devices()[:1])
    train_state = learner.init_state(init_params(agent, jax.random.key(0), config.frame_shape))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints, best=False, read_only=True,
                              fingerprint=workdir_fingerprint(workdir, RESUMABLE_FIELDS))
    try:
        tree = checkpoints.restore(checkpoint_tree(train_state, 0, jax.random.key(0)))
    finally:
        checkpoints.close()
    train_state, env_steps, _ = from_checkpoint_tree(tree)
    return config, train_state.params, env_steps
