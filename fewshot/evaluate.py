"""Test a trained few-shot run: `python -m fewshot.evaluate --workdir DIR`.

Sync and bootstrap runs (delayed-label runs: fewshot.evaluate_sequential). Writes
DIR/eval_<split>.json (or --out) and prints a Markdown row in the format of the paper's Table 1; the
protocol is fewshot.evaluation.evaluate's.
"""

from absl import flags

from .config_checks import DEFAULT_CONFIG_FILE
from .data import DatasetError
from .data.core import SPLITS
from .evaluation import evaluate
from srwm_jax.training.cli import (define_defaults_flag, errors_exit_2, exit_with_error, run,
                                   start_cli)
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory of a run made by fewshot.train.")
flags.DEFINE_enum("split", "test", SPLITS, "Split whose classes the episodes draw from.")
flags.DEFINE_integer("num_sets", 5, "Number of independent sets of test episodes (the 95% "
                     "interval needs two or more).", lower_bound=1)
flags.DEFINE_integer("episodes_per_set", 1000, "Episodes in each set.", lower_bound=1)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to test.")
flags.DEFINE_integer("seed", None, "Seed of the test episodes (default: the config's eval_seed).",
                     lower_bound=0)
flags.DEFINE_string("out", None, "Where to write the result as JSON (default: "
                    "DIR/eval_<split>.json; e.g. for a run on a read-only share).")
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    """Parses the flags and runs fewshot.evaluation.evaluate.

    Bad input exits with status 2 and one error line; a result that cannot be written is
    printed, then one error line and status 1."""
    start_cli(argv)
    with errors_exit_2(DatasetError, FileNotFoundError, RuntimeError, ValueError):
        r = evaluate(FLAGS.workdir, FLAGS.split, FLAGS.num_sets, FLAGS.episodes_per_set,
                     FLAGS.checkpoint, FLAGS.seed, defaults=load_config_file(_DEFAULTS.value),
                     out=FLAGS.out)
    print(f"{r['split']} accuracy over {r['num_sets']} x {r['episodes_per_set']} episodes "
          f"({r['checkpoint']} checkpoint, step {r['step']}): {100 * r['accuracy']:.2f}% "
          f"± {100 * r['ci95']:.2f} (95% Student-t CI over the sets: t_0.975,n-1 * s / sqrt(n))")
    print("set accuracies (%): " + ", ".join(f"{100 * a:.2f}" for a in r["set_accuracies"]))
    print("| dataset | model | accuracy (%) |\n|---|---|---|")
    print(r["markdown"], flush=True)
    if "write_error" in r:  # printed after the result, which is never lost to it
        exit_with_error(r["write_error"], status=1)


if __name__ == "__main__":
    run(main)
