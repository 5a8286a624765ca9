"""Few-shot training: `python -m fewshot.train --config configs/fewshot/<name>.py --workdir DIR`.

Dotted overrides: `--config.batch_size=64 --config.model=deltanet`. A run resumes from the
latest checkpoint in DIR by default, if its config is DIR's (only the fields
fewshot.config_checks.RESUMABLE_FIELDS may differ); `--noresume` refuses a DIR that holds a run and
`--overwrite` deletes it first. Several processes (one command per host): add
`--num_processes=P --process_id=I --coordinator_address=HOST:PORT` (or `--distributed` under
SLURM / Open MPI); config.batch_size stays the global batch.
Intentionally kept short: the run itself is fewshot.training.train_and_evaluate.
"""
from absl import flags
from ml_collections import config_flags

from .config_checks import ConfigError, validate_config
from .data import DatasetError
from .training import configure_cpu_devices, train_and_evaluate
from .warm_start import WarmStartError
from srwm_jax.training import distributed
from srwm_jax.training.checkpoints import CheckpointError
from srwm_jax.training.cli import errors_exit_2, run, run_failures_exit_1, start_cli
from srwm_jax.training.run_config import RunConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/fewshot/.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard events.")
flags.DEFINE_bool("resume", True, "Resume the run in --workdir if there is one (same config).")
flags.DEFINE_bool("overwrite", False, "Delete the run already in --workdir (the whole directory) "
                  "and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    """Parses the flags and runs fewshot.training.train_and_evaluate.

    Bad input exits with status 2 and one error line; a diverged run or a full disk with
    status 1 and one line. SIGTERM / SIGUSR1 save a checkpoint and exit with status 0."""
    start_cli(argv)
    with run_failures_exit_1(), errors_exit_2(DatasetError, ConfigError, WarmStartError,
                                              RunConfigError, CheckpointError,
                                              distributed.DistributedError):
        # Fields and data before anything touches the devices (cpu_devices is used next).
        validate_config(FLAGS.config, splits=("train", "val"))
        configure_cpu_devices(FLAGS.config, distributed.requested_processes(FLAGS))
        distributed.initialize_from_flags(FLAGS)
        train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
                           overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    run(main)
