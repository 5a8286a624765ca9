"""IMPALA + V-trace on ProcGen with a Sebulba actor-learner loop (command line).

    python -m rl.train --config configs/rl/default.py --workdir runs/rl_srwm_easy
    python -m rl.train --config configs/rl/ff_cpu.py --workdir runs/rl_ff_cpu \
        --config.total_steps=2000000 --config.games='("bigfish",)'

A run resumes from the latest checkpoint in --workdir by default, if its config is the run's
(only rl.config_checks.RESUMABLE_FIELDS may differ); `--noresume` refuses a workdir that holds a
run and `--overwrite` deletes it first. Ctrl-C saves a checkpoint and exits with status 0. Bad
input (config, used workdir, corrupt checkpoint) exits with status 2 and one error line; a
failed or hung actor with status 1, one error line and the actor's last frames. Several
processes (one command per host): add `--num_processes=P --process_id=I
--coordinator_address=HOST:PORT` (or `--distributed` under SLURM / Open MPI); see
rl.training. Intentionally kept short: the run itself is rl.training.train_and_evaluate.
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from .config_checks import validate_config
from .envs import procgen_available
from .sebulba import ActorFailed, ActorStalled
from .training import train_and_evaluate
from srwm_jax.training import distributed
from srwm_jax.training.checkpoints import CheckpointError, DiskFullError, NonFiniteError
from srwm_jax.training.cli import error_lines, errors_exit_2, exit_with_error, run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/rl/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, TB, CSV, PNG).")
_RESUME = flags.DEFINE_bool("resume", True, "Resume the run in --workdir if there is one (same "
                            "config).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the run already in --workdir (the whole "
                               "directory) and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
    """Parses the flags and runs rl.training.train_and_evaluate.

    Bad input exits with status 2 and one error line; a failed or hung actor with status 1."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save step at INFO
    with errors_exit_2(ValueError):
        validate_config(_CONFIG.value)  # fields, before the devices start and ProcGen is checked
    ok, why = procgen_available()
    if not ok:
        raise SystemExit(why)
    try:
        distributed.initialize_from_flags()
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value,
                                     overwrite=_OVERWRITE.value)
    except (NonFiniteError, DiskFullError) as e:
        exit_with_error(str(e), status=1)
    except (ValueError, CheckpointError, distributed.DistributedError) as e:
        exit_with_error(str(e))
    except (ActorFailed, ActorStalled) as e:
        print("\n".join(error_lines(e)), file=sys.stderr)
        sys.exit(1)
    logging.getLogger("rl").info("done: %d env steps, %d updates%s", summary["env_steps"],
                                 summary["updates"],
                                 " (interrupted)" if summary["interrupted"] else "")


if __name__ == "__main__":
    run(main)
