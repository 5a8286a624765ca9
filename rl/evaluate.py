"""Evaluation with argmax actions on fixed level splits (paper: 1000-1199, 1200-1399, 1400-1599).

Each of `episodes` envs per game plays exactly one episode (the first one), so short episodes
are not over-represented (the same protocol as rl.random_baseline). Also usable on a checkpoint:

    python -m rl.evaluate --workdir runs/rl_ff_cpu [--episodes 200] [--sampled]

--sampled draws actions from the policy (as in training) instead of taking the argmax.
"""

import csv
import os

import jax
import numpy as np

from .envs import MultiGameEnv
from .normalization import aggregate_normalized, constants_for, normalized_score
from .sebulba import make_policy_fn


def evaluate_split(agent, params, games, *, start_level, num_levels, episodes,
                   distribution_mode="easy", seed=12345, max_steps=10_000, greedy=True,
                   device=None, policy_fn=None):
    """Returns {game: np.ndarray of episode returns} (one episode per env, unfinished dropped)."""
    device = device or jax.devices()[0]
    policy = policy_fn or make_policy_fn(agent, greedy=greedy)
    env = MultiGameEnv(games, episodes, num_levels=num_levels, start_level=start_level,
                       distribution_mode=distribution_mode, seed=seed, num_threads=1)
    params = jax.device_put(params, device)
    state = jax.device_put(agent.initial_state(env.num_envs), device)
    returns = np.zeros(env.num_envs)
    done = np.zeros(env.num_envs, bool)
    reward, obs, first = env.observe()
    key = jax.random.key(seed)
    for step in range(max_steps):
        action, _, state = policy(params, state, obs, reward, first, jax.random.fold_in(key, step))
        env.act(np.asarray(action))
        reward, obs, first = env.observe()
        returns += np.where(done, 0.0, reward)
        done |= first
        if done.all():
            break
    return {g: returns[(env.game_of_env == i) & done] for i, g in enumerate(games)}


def evaluate(agent, params, config, *, episodes=None, policy_fn=None, greedy=True):
    """Evaluates on config.eval_splits (+ training levels). Returns a list of row dicts."""
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
            sem = float(np.std(r) / np.sqrt(len(r))) if len(r) else float("nan")
            rows.append(dict(split=label, game=g, mean_return=means[g], sem=sem,
                             normalized=normalized_score(g, means[g], which), episodes=len(r)))
        rows.append(dict(split=label, game="ALL", mean_return=float(np.mean(list(means.values()))),
                         normalized=aggregate_normalized(means, which),
                         episodes=sum(len(r) for r in per_game.values())))
    return rows


EVAL_FIELDS = ["step", "split", "game", "mean_return", "normalized", "episodes"]


def append_eval_csv(path, step, rows):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_FIELDS, extrasaction="ignore")  # no sem column
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({"step": step, **row})


def format_eval(rows) -> str:
    sem = lambda r: f" +- {r['sem']:.2f}" if "sem" in r else ""  # noqa: E731
    return "\n".join(f"  {r['split']:>16} {r['game']:>10}: return {r['mean_return']:8.2f}{sem(r)}  "
                      f"normalised {100 * r['normalized']:6.1f}  ({r['episodes']} episodes)"
                      for r in rows)


def main(argv=None):
    import argparse

    from . import checkpointing
    from .agent import make_agent
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--sampled", action="store_true", help="sample actions instead of argmax")
    args = parser.parse_args(argv)
    config, params, step = checkpointing.load_for_eval(args.workdir)
    agent = make_agent(config)
    rows = evaluate(agent, params, config, episodes=args.episodes, greedy=not args.sampled)
    print(f"step {step}\n" + format_eval(rows))
    append_eval_csv(os.path.join(args.workdir, "eval.csv"), step, rows)


if __name__ == "__main__":
    main()
