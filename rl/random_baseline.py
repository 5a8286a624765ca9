"""Mean episode return of the uniformly random policy on the same levels as a training run.

    python -m rl.random_baseline --games starpilot --episodes 200 [--start_level 0 --num_levels 200]
    python -m rl.random_baseline --workdir runs/rl_ff_cpu   # levels/games from its config.json;
                                                            # writes random_baseline.json (plotted)

Each env plays exactly one episode, as in rl.evaluate.
"""

import argparse
import json
import os

import numpy as np

from .envs import MultiGameEnv


def random_returns(games, *, episodes, start_level, num_levels, distribution_mode="easy",
                   seed=0, max_steps=10_000, num_actions=15):
    """{game: np.ndarray of returns} for uniformly random actions, one episode per env."""
    env = MultiGameEnv(games, episodes, num_levels=num_levels, start_level=start_level,
                       distribution_mode=distribution_mode, seed=seed)
    rng = np.random.default_rng(seed)
    returns = np.zeros(env.num_envs)
    done = np.zeros(env.num_envs, bool)
    env.observe()
    for _ in range(max_steps):
        env.act(rng.integers(0, num_actions, env.num_envs))
        reward, _, first = env.observe()
        returns += np.where(done, 0.0, reward)
        done |= first
        if done.all():
            break
    return {g: returns[(env.game_of_env == i) & done] for i, g in enumerate(games)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--games", default="starpilot", help="comma-separated")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--start_level", type=int, default=0)
    parser.add_argument("--num_levels", type=int, default=200)
    parser.add_argument("--distribution_mode", default="easy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    games, start, num, mode = (args.games.split(","), args.start_level, args.num_levels,
                               args.distribution_mode)
    if args.workdir:
        from .checkpointing import load_config
        config = load_config(args.workdir)
        games, start, num, mode = (list(config.games), config.start_level, config.num_levels,
                                   config.distribution_mode)
    per_game = random_returns(games, episodes=args.episodes, start_level=start,
                              num_levels=num, distribution_mode=mode, seed=args.seed)
    means = {g: float(np.mean(r)) for g, r in per_game.items()}
    for g, r in per_game.items():
        print(f"{g:>10}: random-policy return {np.mean(r):.2f} +- {np.std(r) / np.sqrt(len(r)):.2f}"
              f" (s.e.m., {len(r)} episodes, levels {start}..{start + num - 1}, {mode})")
    if args.workdir:
        with open(os.path.join(args.workdir, "random_baseline.json"), "w") as f:
            json.dump(means, f)


if __name__ == "__main__":
    main()
