"""Look inside a trained RL agent: the fast-weight statistics over an episode, step by step.

    python -m rl.introspect --workdir runs/rl_srwm_cpu --game starpilot [--episodes 1] [--out DIR]
        [--greedy] [--level 0] [--env procgen|fake]

Plays the game with the run's latest checkpoint, replays the steps with the statistics recorded
and writes stats.csv, episode.png and summary.json into --out (default
<workdir>/inspect_<game>/); see rl.inspection.inspect. --env fake plays rl.fake_env.FakeEnv
(no ProcGen; tests and smoke checks).
"""

from absl import flags

from .config_checks import DEFAULT_CONFIG_FILE
from .inspection import InspectError, inspect
from srwm_jax.training.cli import define_defaults_flag, errors_exit_2, run, start_cli
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run made by rl.train (its latest checkpoint is used).")
flags.DEFINE_string("game", None, "Game to play (e.g. starpilot).")
flags.DEFINE_integer("episodes", 1, "Episodes to play (boundaries are marked in the outputs).",
                     lower_bound=1)
flags.DEFINE_string("out", None, "Output folder (default: <workdir>/inspect_<game>).")
flags.DEFINE_enum("env", "procgen", ["procgen", "fake"], "procgen, or rl.fake_env (no ProcGen).")
flags.DEFINE_integer("level", 0, "ProcGen level to play.", lower_bound=0)
flags.DEFINE_bool("greedy", False, "Argmax actions instead of sampling (training behaviour).")
flags.DEFINE_integer("max_steps", 3000, "Cap on env steps.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the env and the action sampling.", lower_bound=0)
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.mark_flags_as_required(["workdir", "game"])


def main(argv):
    """Parses the flags and runs rl.inspection.inspect.

    Bad input exits with status 2 and one error line."""
    start_cli(argv)
    # ValueError: a bad field of the run's config.json (rl.config_checks.ConfigError,
    # RunConfigError, unreadable JSON).
    with errors_exit_2(InspectError, FileNotFoundError, RuntimeError, ValueError):
        s = inspect(FLAGS.workdir, FLAGS.game, FLAGS.out, FLAGS.episodes, FLAGS.env, FLAGS.level,
                    FLAGS.greedy, FLAGS.max_steps, FLAGS.seed,
                    defaults=load_config_file(_DEFAULTS.value))
    print(f"{s['game']}: {s['steps']} steps, episode returns {s['episode_returns']}, replay logits "
          f"within {s['replay_max_logit_diff']:.2g} of the acting ones\nwrote:\n  "
          + "\n  ".join(s["files"]))


if __name__ == "__main__":
    run(main)
