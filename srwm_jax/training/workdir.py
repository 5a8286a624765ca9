"""Opening a run directory for training: a used one is resumed, refused or deleted, never mixed.

A workdir *holds a run* when it has a config.json or a checkpoint step (checkpoints/<n>/ or
best/<n>/). `open_run_dir`, called by both trainers before anything is written:

  - fresh directory (or one without a run): writes config.json;
  - holds a run and `overwrite`: deletes the directory's contents first, then as fresh;
  - holds a config.json that is not ours (no marker; not beside metrics or checkpoints): refused,
    with or without `overwrite` (a project folder is never trained into nor deleted);
  - holds a run and not `resume`: refused;
  - holds a run and `resume`: the new config must be the run's config. Only the fields the
    trainer lists as `resumable` (logging / checkpoint intervals, data location, ...) may
    differ; they are updated in config.json and reported. Any other differing field is refused
    in one line naming each field with the run's and the new value. config.json is therefore
    never rewritten with a config that computes something else, and its fingerprint
    (run_config.config_fingerprint, which leaves the resumable fields out) stays the same for
    the whole life of the run: every checkpoint carries it (checkpoints.Checkpoints).

Several processes (jax.distributed): every process checks (the same refusals everywhere,
nothing written), then process 0 alone deletes / writes, between two barriers.

Fields of the new config that the run's config.json lacks (added to the code after the run was
made) are not compared and are not added to config.json: evaluation fills them from defaults,
as for any older run.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence

import jax
import ml_collections

from .run_config import (CONFIG_FILE, RunConfigError, config_data, config_fingerprint, flatten,
                         read_config_data, save_config, write_config_data)

CHECKPOINT_DIRS = ("checkpoints", "best")
# Written at a run's creation: {"kind": "fewshot" | "rl"}; what makes a folder ours.
MARKER_FILE = "srwm_jax_run.json"
LOCK_FILE = "run.lock"  # the trainer's lock (run_context.RunLock); kept by --overwrite
# Commands that train and evaluate each kind of run (for messages naming the right tool).
KIND_COMMANDS = {"fewshot": ("fewshot.train", "fewshot.evaluate"),
                 "rl": ("rl.impala", "rl.evaluate")}


def run_kind(workdir: str) -> str | None:
    """"fewshot" or "rl" for a run directory of ours (its marker, or for runs made before the
    marker, the fields of its config.json), None otherwise."""
    try:
        with open(os.path.join(workdir, MARKER_FILE)) as f:
            return json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        pass
    data = read_config_data(workdir) if is_ours(workdir) else None
    if not isinstance(data, dict):
        return None
    if "games" in data and "agent" in data:
        return "rl"
    if "n_way" in data and "model" in data:
        return "fewshot"
    return None


def is_ours(workdir: str) -> bool:
    """True if `workdir` was made by a trainer of this project: it has the marker, or (runs
    made before the marker) metrics or checkpoints."""
    if os.path.exists(os.path.join(workdir, MARKER_FILE)):
        return True
    return any(os.path.exists(os.path.join(workdir, d))
               for d in ("metrics.jsonl", *CHECKPOINT_DIRS))


def check_kind(workdir: str, kind: str) -> None:
    """Raises RunConfigError if `workdir` holds a run of another kind than `kind`, naming its
    kind and the command that evaluates it."""
    found = run_kind(workdir)
    if found is not None and found != kind and found in KIND_COMMANDS:
        train, evaluate = KIND_COMMANDS[found]
        raise RunConfigError(f"{workdir} holds a {found} run (trained by {train}), not a {kind} "
                             f"run: evaluate it with `python -m {evaluate} --workdir {workdir}`.")


def _check_ours(workdir: str, kind: str | None) -> None:
    """Refuses (RunConfigError) a `workdir` holding a run that is not ours, or of another kind."""
    if not is_ours(workdir):
        raise RunConfigError(f"{workdir} holds a {CONFIG_FILE} that no trainer of this project "
                             "wrote (no run marker, metrics or checkpoints): it is not a run "
                             "directory, so it is neither trained into nor deleted; use another "
                             "--workdir.")
    found = run_kind(workdir)
    if kind is not None and found is not None and found != kind:
        train, _ = KIND_COMMANDS.get(found, ("?", "?"))
        raise RunConfigError(f"{workdir} holds a {found} run (trained by {train}), not a {kind} "
                             "run: use another --workdir.")


def _write_marker(workdir: str, kind: str | None) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MARKER_FILE), "w") as f:
        json.dump({"kind": kind}, f)


def _clear(workdir: str) -> None:
    """Deletes everything in `workdir` but the trainer's lock file."""
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name == LOCK_FILE:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def holds_run(workdir: str) -> bool:
    """True if `workdir` has a config.json or a checkpoint step folder."""
    if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        return True
    for sub in CHECKPOINT_DIRS:
        path = os.path.join(workdir, sub)
        if os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path)):
            return True
    return False


def _set_dotted(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data[p]
    data[last] = value


def open_run_dir(workdir: str, config: ml_collections.ConfigDict, *, resume: bool,
                 overwrite: bool, resumable: Sequence[str],
                 locked: Mapping[str, str] | None = None,
                 kind: str | None = None) -> tuple[str, list[str]]:
    """Prepares `workdir` for training `config` (see the module docstring); with several
    processes, all check and process 0 writes (arguments, returns and errors as `_open`)."""
    kwargs = dict(resume=resume, overwrite=overwrite, resumable=resumable, locked=locked,
                  kind=kind)
    if jax.process_count() == 1:
        return _open(workdir, config, write=True, **kwargs)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    result = _open(workdir, config, write=False, **kwargs)
    multihost_utils.sync_global_devices("srwm_jax: run directory checked")
    if jax.process_index() == 0:
        _open(workdir, config, write=True, **kwargs)
    multihost_utils.sync_global_devices("srwm_jax: run directory written")
    return result


def _open(workdir: str, config: ml_collections.ConfigDict, *, resume: bool, overwrite: bool,
          resumable: Sequence[str], locked: Mapping[str, str] | None, kind: str | None,
          write: bool) -> tuple[str, list[str]]:
    """Checks `workdir` for `config` and, if `write`, deletes / writes what the module
    docstring says (write=False: the same checks and return value, nothing touched).

    Args:
      workdir: the run directory (made if missing).
      config: the full config of the new run.
      resume: continue a run already in `workdir` (False refuses a used workdir).
      overwrite: delete a run already in `workdir` (the whole directory) and start afresh.
      resumable: dotted fields a resumed run may change; the fingerprint leaves them out.
      locked: {field: why it cannot change} for fields refused on resume with a reason (they
        may also be in `resumable`, which they then override for this config).
      kind: "fewshot" | "rl", recorded in the marker of a new run; a run of another kind is
        refused.
    Returns:
      (fingerprint of the run's config for Checkpoints, ["field: old -> new", ...] the
      resumable fields this resume changed).
    Raises:
      RunConfigError: a used workdir without resume, a resume with a different config, or
        checkpoints without a config.json (one line naming the fields / what to do).
    """
    locked = dict(locked or {})
    new = config_data(config)
    fingerprint = config_fingerprint(new, resumable)
    if holds_run(workdir) and overwrite:
        nested = [d for d in sorted(os.listdir(workdir))
                  if os.path.isdir(os.path.join(workdir, d))
                  and holds_run(os.path.join(workdir, d))]
        if nested:  # e.g. a mistyped --workdir naming the parent folder of several runs
            raise RunConfigError(f"--overwrite would delete {workdir}, which also holds other runs "
                                 f"({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''}); "
                                 "check --workdir, or delete it yourself.")
        _check_ours(workdir, kind)
        if not write:
            return fingerprint, []
        _clear(workdir)  # (the lock file stays: this trainer holds it)
    if not holds_run(workdir):
        if write:
            _write_marker(workdir, kind)
            save_config(workdir, config)
        return fingerprint, []
    _check_ours(workdir, kind)
    if not resume:
        raise RunConfigError(f"{workdir} already holds a run (config.json or checkpoints): resume "
                             "it (without --noresume), pass --overwrite to delete it, or use a "
                             "fresh --workdir.")
    old = read_config_data(workdir)
    if old is None:
        raise RunConfigError(f"{workdir} holds checkpoints but no {CONFIG_FILE}, so they cannot be "
                             "checked against this config: pass --overwrite to delete them, or use "
                             "a fresh --workdir.")
    old_flat, new_flat = flatten(old), flatten(new)
    differing = [k for k in old_flat if k in new_flat and old_flat[k] != new_flat[k]]
    refused = [k for k in differing if k not in resumable or k in locked]
    if refused:
        fields = "; ".join(f"{k}: run {old_flat[k]!r}, now {new_flat[k]!r}" +
                           (f" ({locked[k]})" if k in locked else "") for k in refused)
        raise RunConfigError(
            f"{workdir} holds a run with a different config ({fields}). A resumed run must keep "
            f"its config (only {', '.join(sorted(resumable)) or 'no field'} may change): repeat "
            f"the run's values (see {os.path.join(workdir, CONFIG_FILE)}), pass --overwrite to "
            "delete the run, or use a fresh --workdir.")
    changes = [f"{k}: {old_flat[k]!r} -> {new_flat[k]!r}" for k in differing]
    if differing and write:
        for k in differing:
            _set_dotted(old, k, new_flat[k])
        write_config_data(workdir, old)
    return config_fingerprint(old, resumable), changes
