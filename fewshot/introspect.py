"""Look inside trained few-shot runs: what the fast weights do over the steps of an episode.

    python -m fewshot.introspect --workdir runs/omniglot_srwm_cpu
        [--workdir runs/omniglot_deltanet_cpu]
        [--episodes 200] [--out DIR] [--layer 0] [--head 0] [--checkpoint best]

Repeat --workdir to compare runs on the same episodes. Writes per-run CSVs and figures, a
comparison figure and summary.json into --out (default: <first workdir>/inspect/) and prints the
summary; the outputs and the episodes are fewshot.inspection.inspect's.
"""

from absl import flags

from .config_checks import DEFAULT_CONFIG_FILE
from .data import DatasetError
from .inspection import inspect
from srwm_jax.training.cli import define_defaults_flag, errors_exit_2, run, start_cli
from srwm_jax.training.run_config import load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", None,
                          "Run(s) made by fewshot.train (repeat the flag to compare).")
flags.DEFINE_integer("episodes", 200, "Fixed test episodes (sequences) to run.", lower_bound=1)
flags.DEFINE_string("out", None, "Output folder (default: <first workdir>/inspect).")
flags.DEFINE_integer("layer", 0, "Memory layer of the heat map.", lower_bound=0)
flags.DEFINE_integer("head", 0, "Head of the heat map.", lower_bound=0)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to load.")
flags.DEFINE_integer("seed", None, "Seed of the episodes (default: eval_seed + 1000, test set 1).")
_DEFAULTS = define_defaults_flag(DEFAULT_CONFIG_FILE)
flags.mark_flags_as_required(["workdir"])


def print_summary(summary):
    """Prints inspect's summary: accuracy per run, then per layer each statistic's support-step
    -> query-step mean (sequential runs: first -> second segment), then the files written."""
    for name, s in summary.items():
        if not isinstance(s, dict) or "accuracy" not in s:
            continue
        print(f"{name} ({s['model']}): accuracy {100 * s['accuracy']:.1f}% "
              f"on {s['episodes']} episodes")
        for path, layer in s["layers"].items():
            means = lambda v: v.get("segment_means") or [v["support_mean"], v["query_mean"]]  # noqa: E731
            print(f"  {path}: " + ", ".join(f"{n} " + "->".join(f"{m:.3g}" for m in means(v))
                                           for n, v in layer.items()
                                           if not n.startswith("entropy")))
    print("(sync: support-step mean -> query-step mean; sequential: first -> second segment)\n"
          "wrote:\n  " + "\n  ".join(summary["files"]))


def main(argv):
    """Parses the flags and runs fewshot.inspection.inspect.

    Bad input exits with status 2 and one error line."""
    start_cli(argv)
    with errors_exit_2(DatasetError, FileNotFoundError, RuntimeError, ValueError):
        summary = inspect(FLAGS.workdir, FLAGS.out, FLAGS.episodes, FLAGS.layer, FLAGS.head,
                          FLAGS.checkpoint, FLAGS.seed, defaults=load_config_file(_DEFAULTS.value))
    print_summary(summary)


if __name__ == "__main__":
    run(main)
