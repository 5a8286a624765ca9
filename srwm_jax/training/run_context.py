"""The life of one training run, shared by both trainers (fewshot.training, rl.training).

`RunContext` owns what every run does around its loop:

    with RunContext(workdir, config, resume=..., overwrite=..., resumable=...) as run:
        state = ... run.checkpoints.restore(...) ...
        for step in ...:
            ...
            if run.stop_requested():          # SIGTERM / SIGUSR1 (any process), agreed by all
                run.checkpoints.save(step, state)
                break

On entry (in this order): the workdir is checked to be usable (`check_workdir_path`), its lock
is taken (`RunLock`: one trainer per workdir), the run directory is opened (workdir.open_run_dir:
resumed, refused or overwritten), then the checkpoints (`Checkpoints`, whose saves refuse
non-finite values and report a full disk in one line), the metric writer (process 0) and the
stop-signal handlers (`StopSignals`) are set up. On exit all of it is closed and released in
reverse order, whatever ended the block.

Guarantees (README "Runs"):
  - SIGTERM or SIGUSR1 (schedulers send them before killing a job): the loop stops at the next
    step, saves a checkpoint of that step and the program exits with status 0; if that takes
    longer than `stop_grace_seconds`, the program exits with 128 + signal number and the
    previous checkpoint is the resume point. The same command resumes.
  - One trainer per workdir: a second one is refused in one line naming the holder (host, pid).
    A lock left by a killed trainer is taken over (the kernel releases it with its process).
    Evaluation takes no lock.
  - Non-finite loss or parameters (divergence): `NonFiniteError`, and no checkpoint (periodic,
    best, or on a signal) is ever written with a non-finite value.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time

import jax

from . import distributed
from .checkpoints import Checkpoints, DiskFullError, NonFiniteError
from .metrics import MetricWriter, NullWriter
from .run_config import RunConfigError
from .workdir import LOCK_FILE, open_run_dir

__all__ = ["RunContext", "RunLock", "RunLockError", "StopSignals", "NonFiniteError",
           "DiskFullError", "check_workdir_path", "check_finite_scalars"]

# Seconds from a stop signal to the program's exit (checkpoint saved or not). SLURM waits 30 s
# (KillWait) and Kubernetes 30 s (terminationGracePeriodSeconds) before SIGKILL.
DEFAULT_STOP_GRACE_SECONDS = 25.0
ENV_STOP_GRACE = "SRWM_JAX_STOP_GRACE_SECONDS"


class RunLockError(RunConfigError):
    """The workdir is in use by another trainer (the message names its host and pid)."""


def check_workdir_path(workdir) -> str:
    """`workdir` as a usable directory path, or RunConfigError (one line) when it is empty,
    names a regular file, lies under a file, or cannot be written (read-only mount, another
    user's folder: tried with a probe file, removed at once). Nothing else is created."""
    if workdir is None or not str(workdir).strip():
        raise RunConfigError("--workdir is empty: name a directory for the run.")
    workdir = str(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise RunConfigError(f"--workdir {workdir} is a file, not a directory: name a directory "
                             "for the run.")
    parent = os.path.abspath(workdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RunConfigError(f"--workdir {workdir} lies under {parent}, which is a file: name a "
                             "directory for the run.")
    target = workdir if os.path.exists(workdir) else parent
    try:  # a real write: permission bits say nothing on a read-only mount, or to root
        fd, probe = tempfile.mkstemp(prefix=".srwm_jax_write_probe_", dir=target)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise RunConfigError(f"--workdir {workdir}: cannot write in {os.path.abspath(target)} "
                             f"({e.strerror or e}): choose a writable --workdir.") from None
    return workdir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on `workdir/run.lock` for the life of a trainer.

    The lock is an flock(2) on that file, so the kernel releases it when the holder dies
    (kill -9 included); the file records the holder's host, pid and start time for the message
    of a refused start. A file left by a dead holder is taken over (reported in `taken_over`).

    Raises (from `acquire`):
      RunLockError: another live process holds it (one line: host, pid, since when).
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None
        self.taken_over: dict | None = None

    def _holder(self) -> dict:
        try:
            with open(self.path) as f:
                return json.loads(f.read() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = self._holder()
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
                raise RunLockError(
                    f"{os.path.dirname(self.path)} is in use by another trainer (host "
                    f"{holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {since}): "
                    "wait for it to end or stop it, or use another --workdir (evaluating the run "
                    "meanwhile is fine).") from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a deleted file; start again on the current one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = self._holder()
        if old.get("pid") is not None:
            self.taken_over = old
        info = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None


class StopSignals:
    """SIGTERM and SIGUSR1 handlers that ask the training loop to stop (`requested`).

    The handler only records the signal (the loop saves at its next step); it also starts a
    watchdog: if the program has not exited `grace_seconds` later, it prints one line and exits
    with 128 + the signal number (the newest complete checkpoint stays the resume point).
    Installed only from the main thread (Python's rule for signal handlers)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, grace_seconds: float | None = None):
        if grace_seconds is None:
            grace_seconds = float(os.environ.get(ENV_STOP_GRACE, DEFAULT_STOP_GRACE_SECONDS))
        self.grace_seconds = grace_seconds
        self.received: str | None = None
        self._previous: dict = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
            # A write past the file-size limit then fails with EFBIG (reported as a full disk
            # by Checkpoints) instead of killing the process without a word.
            self._previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        timer = threading.Timer(self.grace_seconds, self._expire, args=(signum,))
        timer.daemon = True
        timer.start()

    def _expire(self, signum):
        print(f"error: {self.received}: no checkpoint could be saved within "
              f"{self.grace_seconds:g} s ({ENV_STOP_GRACE}); exiting, the newest complete "
              "checkpoint stays the resume point.", file=sys.stderr, flush=True)
        os._exit(128 + signum)


def check_finite_scalars(scalars, where: str) -> None:
    """Raises NonFiniteError naming the non-finite entries of {name: float} (e.g. the loss)."""
    bad = {k: v for k, v in scalars.items() if not math.isfinite(float(v))}
    if bad:
        raise NonFiniteError(f"training diverged at {where}: "
                             + ", ".join(f"{k} = {v}" for k, v in sorted(bad.items()))
                             + "; no checkpoint was written with it (the newest checkpoint is the "
                             "last good state). Lower the learning rate or add gradient clipping, "
                             "and start a fresh --workdir or resume from that checkpoint.")


class RunContext:
    """Opens a run directory for training and owns its lifecycle (see the module docstring).

    Args:
      workdir: the run directory (made if missing).
      config: the full config of the run (validated by the caller).
      resume, overwrite, resumable, locked, kind: as workdir.open_run_dir.
      best: keep a best-on-validation checkpoint too.
      tensorboard: write TensorBoard events besides metrics.jsonl (process 0).
    Attributes (inside the block): checkpoints (Checkpoints), writer (MetricWriter on process 0,
      NullWriter elsewhere), main (process 0), changes (resumable fields changed on resume),
      stop (StopSignals).
    Raises (on entry): RunConfigError (bad workdir, used workdir, another config), RunLockError.
    """

    def __init__(self, workdir: str, config, *, resume: bool, overwrite: bool, resumable,
                 locked=None, kind: str | None = None, best: bool = True,
                 tensorboard: bool = True):
        self.workdir = workdir
        self.config = config
        self._open_args = dict(resume=resume, overwrite=overwrite, resumable=resumable,
                               locked=locked, kind=kind)
        self._best = best
        self._tensorboard = tensorboard
        self.main = distributed.is_main_process()
        self.lock: RunLock | None = None
        self.checkpoints: Checkpoints | None = None
        self.writer = NullWriter()
        self.stop = StopSignals()
        self.changes: list[str] = []

    def _take_lock(self) -> None:
        error = None
        if self.main:
            try:
                self.lock = RunLock(self.workdir).acquire()
            except RunLockError as e:
                error = e
        if jax.process_count() > 1 and distributed.agree({"refused": error is not None})[
                "refused"] and error is None:
            if self.lock is not None:
                self.lock.release()
            raise RunLockError(f"{self.workdir} is in use by another trainer (see process 0).")
        if error is not None:
            raise error
        if self.lock is not None and self.lock.taken_over:
            old = self.lock.taken_over
            print(f"Took over the lock of {self.workdir} left by a trainer that ended (host "
                  f"{old.get('host', '?')}, pid {old.get('pid', '?')}).", flush=True)

    def __enter__(self) -> RunContext:
        self.workdir = check_workdir_path(self.workdir)
        self._take_lock()
        try:
            fingerprint, self.changes = open_run_dir(self.workdir, self.config,
                                                     **self._open_args)
            self.checkpoints = Checkpoints(self.workdir, keep=self.config.keep_checkpoints,
                                           best=self._best, fingerprint=fingerprint)
            if self.main:
                self.writer = MetricWriter(self.workdir, tensorboard=self._tensorboard)
            self.stop.install()
        except BaseException:
            self._close()
            raise
        return self

    def stop_requested(self) -> str | None:
        """The stop signal's name if any process received one (all processes get the same
        answer: with several, one small all-gather; call at the same point in each)."""
        if jax.process_count() > 1:
            if distributed.agree({"stop": self.stop.received is not None})["stop"]:
                return self.stop.received or "a stop signal (another process)"
            return None
        return self.stop.received

    def _close(self) -> None:
        self.stop.restore()
        try:
            self.writer.close()
            if self.checkpoints is not None:
                self.checkpoints.close()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __exit__(self, *exc) -> None:
        self._close()

