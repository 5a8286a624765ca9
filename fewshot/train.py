"""Few-shot training: `python -m fewshot.train --config configs/fewshot/<name>.py --workdir DIR`.

Dotted overrides: `--config.batch_size=64 --config.model=deltanet`. A run resumes from the
latest checkpoint in DIR by default, if its config is DIR's (only the fields
fewshot.trainer.RESUMABLE_FIELDS may differ); `--noresume` refuses a DIR that holds a run and
`--overwrite` deletes it first.
Intentionally kept short: the run itself is fewshot.trainer.train_and_evaluate.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from .data import DatasetError
from .trainer import ConfigError, configure_cpu_devices, train_and_evaluate
from .warm_start import WarmStartError
from srwm_jax.training.checkpoints import CheckpointError
from srwm_jax.training.cli import errors_exit_2, start_cli
from srwm_jax.training.run_config import RunConfigError, check_config_overrides

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/fewshot/.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard events.")
flags.DEFINE_bool("resume", True, "Resume the run in --workdir if there is one (same config).")
flags.DEFINE_bool("overwrite", False, "Delete the run already in --workdir (the whole directory) "
                  "and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Parses the flags and runs fewshot.trainer.train_and_evaluate.

    Bad input exits with status 2 and one error line."""
    start_cli(argv)
    configure_cpu_devices(FLAGS.config)
    with errors_exit_2(DatasetError, ConfigError, WarmStartError, RunConfigError, CheckpointError):
        train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
                           overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    check_config_overrides(sys.argv[1:])
    app.run(main)
