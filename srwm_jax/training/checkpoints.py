"""orbax checkpoints of any pytree: periodic (newest `keep` kept) and best on validation.

    workdir/checkpoints/<step>/   periodic; a run resumes from the newest
    workdir/best/<step>/          the best validation result so far (max_to_keep 1)
    workdir/best/best.json        {"step": ..., "val_accuracy": ...} of that checkpoint

Saves are atomic (orbax writes a temporary folder and renames it: a killed run keeps the last
complete step; a writer removes the temporary folders a killed save left behind) and
asynchronous: `close()` waits for them. A step already held is never saved again (`save`
returns False): the same step of the same run is the same state, and orbax refuses to
overwrite one. The saved tree is whatever the trainer passes, so scalars beside the
parameters (RL: env steps and the RNG key data) are restored with them.

Config fingerprints: a trainer passes the fingerprint of its run's config
(srwm_jax.training.run_config.config_fingerprint); it is stored in each step's orbax metadata
(`custom_metadata["config_fingerprint"]`). An evaluator passes the fingerprint of the
config.json beside the checkpoints; `restore` refuses a step whose fingerprint differs (a
checkpoint of another run) and warns for steps written before fingerprints were stored.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback

import jax
import orbax.checkpoint as ocp

FINGERPRINT_KEY = "config_fingerprint"
GLOB_CHARACTERS = "[]*?"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _orbax_quiet():
    """Holds back orbax's own ERROR logs (absl) inside: a checkpoint it cannot read is reported
    once, as a CheckpointError with orbax's message, instead of as log lines before it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# Exceptions of orbax's background save threads, taken from its error logs (orbax logs some
# of them and does not raise them again): Checkpoints reports them after each wait.
_BACKGROUND_ERRORS: list[BaseException] = []
_BACKGROUND_LOG = (("future.py", "raised an exception"), ("async_checkpointer.py", "Failed to run"),
                   ("checkpoint_manager.py", "Save Finalize thread"))


class _DropBackgroundSaveErrors(logging.Filter):
    """Keeps orbax's error logs of a failed background save (with their tracebacks) out of the
    output and records their exceptions: Checkpoints raises them where the save is waited for,
    once (one line for a full disk)."""

    def filter(self, record):
        text = str(record.msg)
        if record.levelno >= logging.ERROR and any(
                record.pathname.endswith(f) and w in text for f, w in _BACKGROUND_LOG):
            error = record.exc_info[1] if record.exc_info else None
            _BACKGROUND_ERRORS.append(error if error is not None else RuntimeError(
                record.getMessage()))
            return False
        return True


def _drop_background_save_errors() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropBackgroundSaveErrors) for f in logger.filters):
        logger.addFilter(_DropBackgroundSaveErrors())


def _raise_background_errors() -> None:
    """Raises the first exception a background save logged since the last call (if any)."""
    if _BACKGROUND_ERRORS:
        errors = list(_BACKGROUND_ERRORS)
        _BACKGROUND_ERRORS.clear()
        raise next((e for e in errors if disk_full(e)), errors[0])


def _summary(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut at `limit` characters (TensorStore's messages
    run to a hundred lines of its spec)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(" See full TensorStore details")[0]
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(error).__name__}: {text}"


def _hide_orbax_unraisable() -> None:
    """Installed before a restore: if it fails, orbax's other array reads of the step fail too, in
    coroutines whose exceptions nobody retrieves; Python prints each as "Exception ignored in"
    with a TensorStore spec of a hundred lines when they are collected (often at exit). The
    one CheckpointError already reports the step, so those are dropped; every other
    unraisable exception still reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_hides_orbax", False):
        return

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        if _loop_closed(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
            return
        previous(unraisable)
    hook._hides_orbax = True
    sys.unraisablehook = hook

    # TensorStore's reader threads then hand their results to orbax's asyncio loop, which the
    # failed restore has closed: "RuntimeError: Event loop is closed", printed through
    # sys.excepthook. Only that error, raised in asyncio's call_soon_threadsafe, is dropped.
    previous_excepthook = sys.excepthook

    def excepthook(kind, value, tb):
        if not _loop_closed(kind, value, tb):
            previous_excepthook(kind, value, tb)
    sys.excepthook = excepthook


def _loop_closed(kind, value, tb) -> bool:
    """RuntimeError("Event loop is closed") raised in asyncio's call_soon_threadsafe."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    return (kind is RuntimeError and str(value) == "Event loop is closed" and bool(frames)
            and frames[-1].name in ("call_soon_threadsafe", "_check_closed"))


class CheckpointError(RuntimeError):
    """A checkpoint cannot be restored (corrupt, another model, or another run's config); the
    message names the step folder and what to do."""


class NonFiniteError(RuntimeError):
    """Training diverged: a loss or a parameter is NaN or infinite. Raised instead of saving
    such a tree, so every checkpoint on disk holds finite values only."""


class DiskFullError(OSError):
    """A checkpoint could not be written because its disk (or the process's file-size limit)
    is full; the message names the folder. Older checkpoints are intact (saves are atomic)."""


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")


def disk_full(error: BaseException | None) -> bool:
    """True if `error` or an exception in its cause / context chain is a full disk (ENOSPC,
    EDQUOT, or EFBIG from a file-size limit), as an errno or in the message (TensorStore
    reports the OS error as text)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(error) for t in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def finite(tree) -> bool:
    """True if every floating-point leaf of `tree` is finite (NaN and +-inf are not)."""
    import jax.numpy as jnp  # noqa: PLC0415

    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype")
              and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
              and jnp.issubdtype(x.dtype, jnp.inexact)]
    return all(bool(jnp.isfinite(x).all()) for x in leaves)


class Checkpoints:
    """Periodic and (optionally) best checkpoints under `workdir`.

    Args:
      workdir: run directory; `checkpoints/` (and `best/`) are made inside it.
      keep: periodic checkpoints kept (older ones are deleted).
      best: also keep a best-on-validation checkpoint in `best/`.
      fingerprint: the run's config fingerprint: stored with every save, and `restore` refuses
        a step stored with another one (None: nothing stored, nothing checked).
      read_only: open for restoring only (evaluators): creates nothing, and leaves alone the
        temporary folders of saves that may be under way in a running trainer.
    """

    def __init__(self, workdir: str, keep: int = 2, best: bool = True,
                 fingerprint: str | None = None, read_only: bool = False):
        workdir = os.path.abspath(workdir)
        self._workdir, self._alias_dir = workdir, None
        if any(c in workdir for c in GLOB_CHARACTERS):
            # orbax finds a step's files with glob patterns joined onto the folder's path, so
            # a folder named like "run[1]" saves but never restores: it works through a
            # symlink with a plain name instead (removed by close()).
            if not read_only:
                os.makedirs(workdir, exist_ok=True)
            self._alias_dir = tempfile.mkdtemp(prefix="srwm_jax_run_")
            os.symlink(workdir, os.path.join(self._alias_dir, "run"))
            workdir = os.path.join(self._alias_dir, "run")
        self._opened_as = workdir
        self.fingerprint = fingerprint
        self._pending: dict[int, int] = {}  # id(manager) -> step of its newest save
        # A failed save (a full disk) leaves TensorStore threads printing the same failure
        # many times over; the one DiskFullError line reports it.
        _hide_orbax_unraisable()
        _drop_background_save_errors()
        self._best_info = os.path.join(workdir, "best", "best.json")

        def manager(sub, max_to_keep):
            # (Not orbax's own read_only option: it logs three warnings at every start.)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=not read_only,
                cleanup_tmp_directories=not read_only)
            with _orbax_quiet():  # it logs each step whose metadata it cannot parse
                return ocp.CheckpointManager(os.path.join(workdir, sub), options=options,
                                             item_handlers=ocp.StandardCheckpointHandler())
        self.periodic = manager("checkpoints", keep)
        self.best = manager("best", 1) if best else None

    @property
    def directory(self) -> str:
        return self._shown(self.periodic.directory)

    def _shown(self, path) -> str:
        """`path` under the run directory's own name (not the glob-free alias)."""
        return str(path).replace(self._opened_as, self._workdir, 1)

    def latest_step(self) -> int | None:
        """Newest periodic step, or None if there is none."""
        return self.periodic.latest_step()

    @contextlib.contextmanager
    def _disk_errors(self, manager, step=None):
        """A full disk inside (a save, or the wait for an asynchronous one) as DiskFullError."""
        try:
            yield
        except DiskFullError:
            raise
        except Exception as e:  # noqa: BLE001 - orbax / TensorStore wrap the OS error variously
            if not disk_full(e):
                raise
            where = self._shown(manager.directory)
            try:
                free = f", {shutil.disk_usage(where).free / 2**20:.1f} MiB free"
            except OSError:
                free = ""
            step = self._pending.get(id(manager)) if step is None else step
            what = f"checkpoint {step}" if step is not None else "a checkpoint"
            if step is not None:
                self._drop_failed_step(manager, step)
            raise DiskFullError(
                f"the disk is full: {what} could not be written to {where} "
                f"({_summary(e, 120)}{free}); older checkpoints are intact. Free space there (or "
                "raise the file-size limit) and run the same command to resume.") from None

    def _drop_failed_step(self, manager, step: int) -> None:
        """Removes step's directory if it exists although a write of that save failed (a CI run
        under load once left it in place after a full disk, tests/test_run_reliability.py), so
        that a resume never reads a checkpoint with a missing or short array file."""
        path = os.path.join(str(manager.directory), str(step))
        if jax.process_index() == 0 and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(Exception):  # orbax's cached step list
            manager.reload()

    def _save(self, manager, step: int, tree) -> bool:
        if step in manager.all_steps():
            return False
        if not finite(tree):
            raise NonFiniteError(
                f"training diverged: the state at step {step} holds NaN or infinite values, so "
                "it was not saved (the newest checkpoint is the last good state). Lower the "
                "learning rate or clip gradients, then start a fresh --workdir.")
        metadata = {FINGERPRINT_KEY: self.fingerprint} if self.fingerprint else None
        # force: bypasses orbax's save-interval policy (which would skip any step below the
        # newest); the check above is what keeps a step from being written twice.
        # A failed earlier (asynchronous) save surfaces here, reported with its own step.
        with self._disk_errors(manager), _orbax_quiet():
            manager.wait_until_finished()
            _raise_background_errors()
        self._pending[id(manager)] = step
        with self._disk_errors(manager, step), _orbax_quiet():
            return manager.save(step, args=ocp.args.StandardSave(tree), force=True,
                                custom_metadata=metadata)

    def save(self, step: int, tree) -> bool:
        """Saves `tree` as periodic checkpoint `step` (asynchronous; see `close`).

        Returns False (and writes nothing) if `step` is already held."""
        return self._save(self.periodic, int(step), tree)

    def best_accuracy(self) -> float:
        """Validation accuracy of the best checkpoint, -1.0 if there is none yet."""
        if not os.path.exists(self._best_info):
            return -1.0
        with open(self._best_info) as f:
            return json.load(f)["val_accuracy"]

    def save_best(self, step: int, tree, val_accuracy: float) -> bool:
        """Replaces the best checkpoint with `tree` at `step` and records `val_accuracy`.

        Returns False if `step` is already the best one: it is not saved again, only its
        accuracy is recorded (a run killed between the save and that record, then resumed)."""
        if self.best is None:
            raise ValueError("this Checkpoints was made with best=False")
        saved = self._save(self.best, int(step), tree)
        with self._disk_errors(self.best, step):
            self.best.wait_until_finished()
            _raise_background_errors()
        if jax.process_index() == 0:  # several processes: one writer, then all read it back
            tmp = f"{self._best_info}.tmp"
            with open(tmp, "w") as f:
                json.dump({"step": int(step), "val_accuracy": float(val_accuracy)}, f)
            os.replace(tmp, self._best_info)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415
            multihost_utils.sync_global_devices("srwm_jax best.json written")
        return saved

    def restore(self, target, which: str = "latest", step: int | None = None):
        """Restores a checkpoint into the structure, dtypes and shardings of `target`.

        Args:
          target: a pytree like the saved one (arrays or ShapeDtypeStructs).
          which: "latest" (periodic) or "best".
          step: a specific step (default: the newest of `which`).
        Returns:
          The restored pytree.
        Raises:
          FileNotFoundError: there is no such checkpoint.
          CheckpointError (a RuntimeError): the files are corrupt or belong to a different
            model, or the step was stored with a fingerprint other than `self.fingerprint`.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which={which!r}: choose 'latest' or 'best'.")
        manager = self.periodic if which == "latest" else self.best
        if manager is None:
            raise FileNotFoundError("no best checkpoints are kept for this run")
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint in {self._shown(manager.directory)}")
        where = f"{self._shown(manager.directory)}/{step}"
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        _hide_orbax_unraisable()
        try:
            with _orbax_quiet():
                self._check_fingerprint(manager, step, where)
                return manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - orbax raises many types for truncated / mismatched files
            raise CheckpointError(
                f"checkpoint {where} could not be restored ({_summary(e)}). It may be "
                "corrupt or from a different model; delete that step folder to fall back to an "
                "older one, or start a fresh --workdir.") from e

    def _check_fingerprint(self, manager, step, where) -> None:
        if self.fingerprint is None:
            return
        stored = (manager.metadata(step).custom_metadata or {}).get(FINGERPRINT_KEY)
        if stored is None:
            log.warning("checkpoint %s has no config fingerprint (written before they were "
                        "stored): cannot check that it belongs to the config.json beside it.",
                        where)
        elif stored != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {where} was made under another config (fingerprint {stored}) than "
                f"the config.json of its run directory ({self.fingerprint}): the directory mixes "
                "two runs. Evaluate it with its own config.json, or delete the stale checkpoints.")

    def wait_until_finished(self) -> None:
        """Waits for the asynchronous saves. Raises DiskFullError if one hit a full disk."""
        for manager in (self.periodic, self.best):
            if manager is not None:
                with self._disk_errors(manager), _orbax_quiet():
                    manager.wait_until_finished()
                    _raise_background_errors()

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the managers."""
        try:
            self.wait_until_finished()
        finally:
            for manager in (self.periodic, self.best):
                if manager is not None:
                    with contextlib.suppress(Exception):  # after a failed save: its error is out
                        manager.close()
            if self._alias_dir is not None:
                shutil.rmtree(self._alias_dir, ignore_errors=True)  # the symlink, not the run
                self._alias_dir = None
