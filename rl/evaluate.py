"""Evaluate an RL run's latest checkpoint on the fixed test level splits (and training levels).

    python -m rl.evaluate --workdir runs/rl_ff_cpu [--episodes 200] [--sampled]

--sampled draws actions from the policy (as in training) instead of taking the argmax.
Appends the rows to DIR/eval.csv (or --out); the protocol is rl.evaluation.evaluate's.
"""
import os

from absl import flags

from .config_checks import DEFAULT_CONFIG_FILE
from .agent import make_agent
from .evaluation import append_eval_csv, evaluate, format_eval, load_for_eval
from srwm_jax.training.cli import (define_defaults_flag, errors_exit_2, exit_with_error, run,
                                   start_cli)
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory made by rl.train.")
flags.DEFINE_integer("episodes", None,
                     "Episodes per game and split (default: config.eval_episodes).", lower_bound=1)
flags.DEFINE_bool("sampled", False, "Sample actions from the policy instead of the argmax.")
flags.DEFINE_string("out", None, "CSV the rows are appended to (default: DIR/eval.csv; e.g. "
                    "for a run on a read-only share).")
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    """Parses the flags and runs rl.evaluation.evaluate.

    Bad input exits with status 2 and one error line."""
    start_cli(argv)
    with errors_exit_2(FileNotFoundError, RuntimeError, ValueError):
        config, params, step = load_for_eval(FLAGS.workdir, load_config_file(_DEFAULTS.value))
    rows = evaluate(make_agent(config), params, config, episodes=FLAGS.episodes,
                    greedy=not FLAGS.sampled)
    print(f"step {step}\n" + format_eval(rows), flush=True)
    path = FLAGS.out or os.path.join(FLAGS.workdir, "eval.csv")
    try:
        append_eval_csv(path, step, rows)
    except OSError as e:  # after the result is printed: it is never lost to where it goes
        exit_with_error(f"could not write {path} ({e.strerror or e}): the result above is not "
                        "saved; pass --out PATH to write it elsewhere.", status=1)


if __name__ == "__main__":
    run(main)
