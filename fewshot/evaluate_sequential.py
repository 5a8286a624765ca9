"""Test delayed-label sequential runs (paper Tables 2/7, Figs. 4/6).

  python -m fewshot.evaluate_sequential --workdir runs/sequential_srwm_cpu \
      --workdir runs/sequential_deltanet_cpu --out runs/sequential_cpu_eval

Writes DIR/eval_sequential_<split>.json per run and, in --out, table.md (Markdown tables),
curves.csv (accuracy per step and order for every run) and accuracy_curve.png (all runs on one
plot, task switch marked); the protocol is fewshot.evaluation.evaluate_sequential's.
"""
import os

from absl import flags

from .config_checks import DEFAULT_CONFIG_FILE
from .data import DatasetError
from .data.core import SPLITS
from .evaluation import evaluate_sequential, markdown_tables, write_outputs
from srwm_jax.training.cli import define_defaults_flag, errors_exit_2, run, start_cli
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", None,
                          "Run directory made by fewshot.train (repeat to compare).")
flags.DEFINE_multi_string("label", None,
                          "Legend label per --workdir (default: the config's model).")
flags.DEFINE_string("out", None, "Folder for table.md, curves.csv, accuracy_curve.png "
                                 "(default: the first workdir's eval_sequential/).")
flags.DEFINE_enum("split", "test", SPLITS, "Split whose classes the sequences draw from.")
flags.DEFINE_integer("num_sequences", 1000, "Fixed test sequences (half in each order).",
                     lower_bound=2)
flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: config.eval_batch_size).",
                     lower_bound=1)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to test.")
flags.DEFINE_integer("seed", None, "Seed of the test sequences (default: config.eval_seed + 1000).",
                     lower_bound=0)
flags.DEFINE_string("data_dir", None, "Override the config's data_dir.")
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    """Parses the flags and runs fewshot.evaluation.evaluate_sequential.

    Bad input exits with status 2 and one error line."""
    start_cli(argv)
    labels = FLAGS.label or []
    with errors_exit_2(DatasetError, FileNotFoundError, RuntimeError, ValueError):
        defaults = load_config_file(_DEFAULTS.value)
        results = [evaluate_sequential(w, FLAGS.split, FLAGS.num_sequences, FLAGS.checkpoint,
                                       FLAGS.seed, FLAGS.batch_size, FLAGS.data_dir, defaults)
                   for w in FLAGS.workdir]
    labels = labels + [r["model"] for r in results[len(labels):]]
    out = write_outputs(results, labels,
                        FLAGS.out or os.path.join(FLAGS.workdir[0], "eval_sequential"))
    for r, label in zip(results, labels):
        print(f"{label}: {r['split']} total accuracy {100 * r['total']:.2f}% over "
              f"{r['num_sequences']} sequences ({r['checkpoint']} checkpoint, step {r['step']})")
    print(markdown_tables(results, labels))
    print(f"wrote {out}/table.md, {out}/curves.csv, {out}/accuracy_curve.png")


if __name__ == "__main__":
    run(main)
