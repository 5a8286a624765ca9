"""IMPALA + V-trace on ProcGen with a Sebulba actor-learner loop (command line).

    python -m rl.impala --config configs/rl/default.py --workdir runs/rl_srwm_easy
    python -m rl.impala --config configs/rl/ff_cpu.py --workdir runs/rl_ff_cpu \
        --config.total_steps=2000000 --config.games='("bigfish",)'
    python -m rl.impala ... --resume        # continue from the latest checkpoint in --workdir

Ctrl-C saves a checkpoint and exits with status 0; an exception in any actor thread or the
learner ends the run with that error and a non-zero status.
"""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/rl/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, TB, CSV, PNG).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save step at INFO
    from .envs import procgen_available
    ok, why = procgen_available()
    if not ok:
        raise SystemExit(why)
    from .training import train_and_evaluate
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value)
    logging.getLogger("rl").info("done: %d env steps, %d updates%s", summary["env_steps"],
                                 summary["updates"],
                                 " (interrupted)" if summary["interrupted"] else "")


def check_config_overrides(argv) -> None:
    """Exits with one clear message if a `--config.a.b=...` names a key the config lacks.

    (ml_collections would otherwise raise a bare AttributeError traceback during flag parsing.)
    """
    import importlib.util
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None or not os.path.exists(path.split(":")[0]):
        return  # absl reports the missing/bad --config itself
    spec = importlib.util.spec_from_file_location("_rl_config", path.split(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config."):].split("=", 1)[0]
        node = config
        for i, part in enumerate(dotted.split(".")):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(dotted.split(".")[:i]) or "<top level>"
                valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none)"
                sys.exit(f"error: unknown config key {dotted!r} in {path}: {where!r} has no "
                         f"field {part!r}. Valid fields there: {valid}")
            node = node[part]


if __name__ == "__main__":
    check_config_overrides(sys.argv[1:])
    app.run(main)
