"""Multi-process training with JAX's own distributed runtime (`jax.distributed`).

One process per host (or per GPU); every process runs the same program. After
`initialize`, `jax.devices()` lists the devices of all processes and the data-parallel mesh
(srwm_jax.training.mesh.DataParallel) spans them: parameters are replicated on every device,
the batch axis is split over all of them, and jit's gradient all-reduce crosses processes (NCCL
on GPUs, gloo on CPUs). Each process feeds only the batch rows of its own devices
(`DataParallel.process_rows`, `DataParallel.put_process_batch`).

    initialize(...)            start the runtime from flags / environment (no-op for 1 process)
    define_flags()             the CLIs' --coordinator_address, --num_processes, --process_id,
                               --distributed, --heartbeat_timeout_seconds,
                               --initialization_timeout_seconds
    initialize_from_flags()    initialize(...) from those flags
    is_main_process()          process 0: the one that writes logs, config.json, CSVs, plots
    main_process_only(name)    a block only process 0 runs (an evaluation) while the others wait
                               for it without a time limit
    agree(flags)               every process gets the OR of every process's flags (so all take
                               the same branch at a collective such as an orbax save)
    params_checksum(tree)      a bit-exact fingerprint of a (replicated) parameter tree
    check_identical(tree)      raises DivergedError unless every process holds the same tree
    devices_by_local_index()   the same local device indices on every process (RL learner)
    local_copy(tree)           a replicated global tree on this process's first device

When a process dies, the others stop with an error within about `heartbeat_timeout_seconds`
(the runtime's health check, or the collective's broken connection) instead of hanging.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import time
import zlib

import jax
import numpy as np

# Environment variables read when the flags are not given (JAX itself reads
# JAX_COORDINATOR_ADDRESS; the other two are ours, named alike).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class DistributedError(RuntimeError):
    """The distributed runtime cannot start or a process disagrees with the others."""


class DivergedError(DistributedError):
    """Processes hold different parameters (they must be bit-identical after every update)."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               heartbeat_timeout_seconds: int | None = None,
               initialization_timeout: int | None = None,
               shutdown_timeout_seconds: int | None = None) -> bool:
    """Starts jax.distributed for this process, or does nothing for a single process.

    Call before anything touches jax devices (after setting the CPU device count).

    Args:
      coordinator_address: "host:port" of process 0 (default: $JAX_COORDINATOR_ADDRESS).
      num_processes: processes in the job (default: $JAX_NUM_PROCESSES, else 1).
      process_id: this process's index in [0, num_processes) (default: $JAX_PROCESS_ID).
      auto: let jax detect everything from the cluster environment (SLURM, Open MPI, ...)
        when num_processes is not given.
      heartbeat_timeout_seconds: how long the runtime waits for a silent process before it
        stops the others (JAX's default, 100 s, when None).
      initialization_timeout: seconds to wait for all processes to connect (default 300):
        meanwhile a progress line on stderr every tenth of it (at most 30 s); past it one
        `error:` line naming the process(es) that never joined, and exit status 1.
      shutdown_timeout_seconds: how long a process that finished waits at exit for the others
        (JAX's default, 300 s, when None).
    Returns:
      True if the runtime was started (several processes), False for a single process.
    Raises:
      DistributedError: an inconsistent setting (the message names it).
    """
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None and not auto:
        if process_id is not None:
            raise DistributedError(f"process_id={process_id} given without num_processes; pass "
                                   "--num_processes (or set $JAX_NUM_PROCESSES).")
        return False
    if num_processes is not None and num_processes <= 1 and not auto:
        return False
    if num_processes is not None and not auto:
        if process_id is None or not 0 <= process_id < num_processes:
            raise DistributedError(f"process_id={process_id} with num_processes={num_processes}: "
                                   "pass --process_id in [0, num_processes).")
        if not coordinator_address:
            raise DistributedError("num_processes > 1 needs --coordinator_address host:port (the "
                                   "address of process 0), or $JAX_COORDINATOR_ADDRESS.")
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id, heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                  initialization_timeout=initialization_timeout,
                  shutdown_timeout_seconds=shutdown_timeout_seconds)
    # Our bound ends the wait with a message naming who is missing; jax's own deadline (which
    # aborts the process in C++ blaming "another task") is set past it.
    bound = float(initialization_timeout or DEFAULT_JOIN_TIMEOUT_SECONDS)
    kwargs["initialization_timeout"] = int(bound) + JOIN_MARGIN_SECONDS
    # Pass only what this jax version accepts (the timeouts are newer than the rest).
    accepted = inspect.signature(jax.distributed.initialize).parameters
    kwargs = {k: v for k, v in kwargs.items() if v is not None and k in accepted}
    _use_gloo_on_cpu()
    watch = _JoinWatch(bound, process_id, num_processes, coordinator_address)
    watch.start()
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:  # jax's XlaRuntimeError is a RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"jax.distributed could not start ({first}); check "
                               "--coordinator_address, --num_processes and --process_id (or the "
                               "cluster environment for --distributed).") from e
    finally:
        watch.stop()
    return jax.process_count() > 1


DEFAULT_JOIN_TIMEOUT_SECONDS = 300  # jax's own default initialization_timeout
JOIN_MARGIN_SECONDS = 30


class _JoinWatch(threading.Thread):
    """While jax.distributed connects: a progress line every `bound / 10` seconds (at most 30),
    and at `bound` one `error:` line naming the process(es) that never joined, then exit 1
    (jax would abort later, in C++, blaming "another task")."""

    def __init__(self, bound, process_id, num_processes, address):
        super().__init__(daemon=True, name="srwm_jax_join_watch")
        self.bound, self.address = bound, address or "the cluster's coordinator"
        self.process_id, self.num_processes = process_id, num_processes
        self._done = threading.Event()

    def missing(self) -> str:
        if self.process_id is None or self.num_processes is None:
            return "at least one process"
        if self.process_id != 0:
            return (f"process 0 (the coordinator, {self.address}) or another of the "
                    f"{self.num_processes} processes")
        others = list(range(1, self.num_processes))
        return (f"process {others[0]}" if len(others) == 1 else
                f"one or more of processes {others[0]}..{others[-1]}")

    def run(self):
        start = time.monotonic()
        every = max(1.0, min(30.0, self.bound / 10))
        who = f"process {self.process_id if self.process_id is not None else '?'}"
        while not self._done.wait(every):
            elapsed = time.monotonic() - start
            if elapsed >= self.bound:
                print(f"error: jax.distributed: {self.missing()} never joined within "
                      f"{self.bound:g} s ({who} of {self.num_processes or '?'} waited at "
                      f"{self.address}). Check that it was started, with the same "
                      "--coordinator_address and --num_processes and its own --process_id, and "
                      "that it can reach that address (firewall, host name); raise the bound with "
                      "--initialization_timeout_seconds.", file=sys.stderr, flush=True)
                os._exit(1)
            print(f"jax.distributed: {who} waiting for {self.missing()} to join at "
                  f"{self.address} ({elapsed:.0f} s of {self.bound:g} s)", file=sys.stderr,
                  flush=True)

    def stop(self):
        self._done.set()


def _use_gloo_on_cpu() -> None:
    # Cross-process collectives of CPU devices need an implementation; gloo is jax's default
    # in recent versions, set explicitly where an older default is "none".
    try:
        if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:
        pass


def define_flags() -> None:
    """Defines the distributed absl flags of the training CLIs (call once, at import)."""
    from absl import flags  # noqa: PLC0415 - absl only for the CLIs

    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process "
                        "training (default: $JAX_COORDINATOR_ADDRESS).")
    flags.DEFINE_integer("num_processes", None, "Processes in a multi-process job (default: "
                         "$JAX_NUM_PROCESSES, else 1 = no jax.distributed).")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) "
                         "(default: $JAX_PROCESS_ID).")
    flags.DEFINE_bool("distributed", False, "Start jax.distributed from the cluster environment "
                      "(SLURM, Open MPI, ...), which fills the three flags above.")
    flags.DEFINE_integer("initialization_timeout_seconds", DEFAULT_JOIN_TIMEOUT_SECONDS,
                         "Seconds to wait for every process to join jax.distributed before "
                         "stopping with the missing process named (progress lines meanwhile).")
    flags.DEFINE_integer("heartbeat_timeout_seconds", None, "Seconds before the others stop when "
                         "a process goes silent (JAX's default when unset: 100).")


def requested_processes(flag_values) -> int:
    """The process count that --num_processes or $JAX_NUM_PROCESSES asks for (1 when neither
    is set, e.g. before --distributed's cluster detection), known before jax starts."""
    n = flag_values.num_processes
    if n is None and os.environ.get(ENV_NUM_PROCESSES, "").isdigit():
        n = int(os.environ[ENV_NUM_PROCESSES])
    return max(1, n or 1)


def initialize_from_flags(flag_values=None) -> bool:
    """`initialize` from the flags of `define_flags` (default: absl's FLAGS). Returns whether
    several processes run."""
    if flag_values is None:
        from absl import flags  # noqa: PLC0415

        flag_values = flags.FLAGS
    return initialize(flag_values.coordinator_address, flag_values.num_processes,
                      flag_values.process_id, auto=flag_values.distributed,
                      heartbeat_timeout_seconds=flag_values.heartbeat_timeout_seconds,
                      initialization_timeout=flag_values.initialization_timeout_seconds)


def is_main_process() -> bool:
    """True in process 0 (and in a single-process run)."""
    return jax.process_index() == 0


# Long enough for any evaluation; a process that dies meanwhile is caught by the heartbeat.
MAIN_ONLY_TIMEOUT_MS = 7 * 24 * 3600 * 1000


@contextlib.contextmanager
def main_process_only(name: str):
    """`with main_process_only("final evaluation") as main: if main: ...`: the block's work is
    done by process 0 alone; every other process waits at the end of the block until process 0
    has left it. The wait is on the runtime's key-value store, not a collective, so it has no
    time limit of its own (a collective, or jax's exit barrier, would give up after minutes
    while process 0 still evaluates). `name` must be unique within the job.
    """
    if jax.process_count() == 1:
        yield True
        return
    from jax._src import distributed as jax_distributed  # noqa: PLC0415 - no public KV API

    client = jax_distributed.global_state.client
    key = f"srwm_jax/main_process_only/{name}"
    if is_main_process():
        try:
            yield True
        finally:
            client.key_value_set(key, "done")
    else:
        yield False
        client.blocking_key_value_get(key, MAIN_ONLY_TIMEOUT_MS)


def agree(flags: dict[str, bool]) -> dict[str, bool]:
    """Every process gets, per key, whether any process set it (one small all-gather).

    For decisions taken from local state (wall clock, Ctrl-C) that lead into a collective
    (an orbax save, the end of the loop): all processes must take the same branch. Every
    process must call this at the same point with the same keys. Single process: `flags`."""
    if jax.process_count() == 1:
        return dict(flags)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    names = sorted(flags)
    local = np.asarray([bool(flags[n]) for n in names], np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(local))  # [P, len(names)]
    return {n: bool(gathered[:, i].any()) for i, n in enumerate(names)}


def params_checksum(tree) -> int:
    """CRC-32 of the bytes of every leaf (this process's first local copy), in tree order.

    Bit-exact: equal checksums mean identical parameters (up to a 2^-32 collision chance)."""
    crc = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            leaf = leaf.addressable_data(0)
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), crc)
    return crc


def check_identical(tree, what: str = "parameters") -> int:
    """Raises DivergedError unless every process holds bit-identical `tree` (replicated
    arrays); one all-gather of a checksum. Single process: no check. Returns this process's
    checksum."""
    crc = params_checksum(tree)
    if jax.process_count() == 1:
        return crc
    from jax.experimental import multihost_utils  # noqa: PLC0415

    sums = np.asarray(multihost_utils.process_allgather(np.asarray([crc], np.int64))).reshape(-1)
    if len(set(sums.tolist())) != 1:
        raise DivergedError(f"{what} differ between processes (CRC-32 per process: "
                            f"{sums.tolist()}); the runs have diverged. Check that every "
                            "process runs the same code, config and jax version.")
    return crc


def devices_by_local_index(ids) -> list:
    """The devices at local indices `ids` of every process (all devices if `ids` is empty),
    ordered by process: e.g. `(1, 2, 3)` on 2 hosts of 4 GPUs is GPUs 1-3 of each host.

    Raises:
      ValueError: an index beyond a process's local device count."""
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    out = []
    for p in sorted(by_process):
        local = by_process[p]
        if not ids:
            out += local
            continue
        bad = [i for i in ids if not 0 <= i < len(local)]
        if bad:
            raise ValueError(f"device ids {bad} out of range: process {p} has {len(local)} "
                             "local devices.")
        out += [local[i] for i in ids]
    return out


def local_copy(tree):
    """A replicated global tree -> the same values on this process's first local device
    (what a single-device jit, e.g. an RL actor, can take)."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)
