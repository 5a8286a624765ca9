"""Mean episode return of the uniformly random policy on the same levels as a training run.

    python -m rl.random_baseline --games starpilot --episodes 200 [--start_level 0 --num_levels 200]
    python -m rl.random_baseline --workdir runs/rl_ff_cpu   # levels/games from its config.json;
                                                            # writes random_baseline.json (plotted)

Each env plays exactly one episode, as in rl.evaluate (rl.evaluation.random_returns).
"""
import json
import os

import numpy as np
from absl import app, flags

from .config_checks import DEFAULT_CONFIG_FILE, DISTRIBUTION_MODES, Game, validate_config
from .evaluation import load_run_config, random_returns
from srwm_jax.stats import sem as standard_error
from srwm_jax.training.cli import define_defaults_flag, errors_exit_2, run
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: games, levels and mode from its config.json.")
flags.DEFINE_list("games", ["starpilot"], "Comma-separated ProcGen games (without --workdir).")
flags.DEFINE_integer("episodes", 200, "Episodes per game.", lower_bound=1)
flags.DEFINE_integer("start_level", 0, "First level (without --workdir).", lower_bound=0)
flags.DEFINE_integer("num_levels", 200, "Number of levels (without --workdir; 0 = unlimited).",
                     lower_bound=0)
flags.DEFINE_enum("distribution_mode", "easy", DISTRIBUTION_MODES,
                  "ProcGen distribution mode (without --workdir).")
flags.DEFINE_integer("seed", 0, "Seed of the envs and the random actions.", lower_bound=0)
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.register_validator("games", lambda games: all(Game(g) is None for g in games),
                         f"every game must be one of {Game.options}")


def main(argv):
    """Parses the flags and runs rl.evaluation.random_returns.

    Bad input exits with status 2 and one error line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    games, start, num, mode = (FLAGS.games, FLAGS.start_level, FLAGS.num_levels,
                               FLAGS.distribution_mode)
    num_actions = {}
    if FLAGS.workdir:
        with errors_exit_2(FileNotFoundError, ValueError):
            config = load_run_config(FLAGS.workdir, load_config_file(_DEFAULTS.value))
            validate_config(config, allow_extra=True)
        games, start, num, mode = (list(config.games), config.start_level, config.num_levels,
                                   config.distribution_mode)
        num_actions = dict(num_actions=config.num_actions)
    per_game = random_returns(games, episodes=FLAGS.episodes, start_level=start, num_levels=num,
                              distribution_mode=mode, seed=FLAGS.seed, **num_actions)
    means = {g: float(np.mean(r)) for g, r in per_game.items()}
    for g, r in per_game.items():
        sem = standard_error(r) if len(r) else float("nan")  # sample std / sqrt(n)
        print(f"{g:>10}: random-policy return {np.mean(r):.2f} +- {sem:.2f}"
              f" (s.e.m., {len(r)} episodes, levels {start}..{start + num - 1}, {mode})")
    if FLAGS.workdir:
        with open(os.path.join(FLAGS.workdir, "random_baseline.json"), "w") as f:
            json.dump(means, f)


if __name__ == "__main__":
    run(main)
