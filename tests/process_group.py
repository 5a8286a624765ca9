"""Launching the processes of a multi-process test on loopback, and always cleaning them up.

Each process gets `JAX_PLATFORMS=cpu`, `--xla_force_host_platform_device_count`, its own log
file and its own process group (killed as a whole); the distributed settings come as the
training CLIs' flags or as the environment variables srwm_jax.training.distributed reads.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO_ROOT

HEARTBEAT = 10  # seconds: how soon the runtime notices a dead process (JAX's default is 100)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(num_processes, devices_per_process, args, log_prefix, via="flags"):
    """Starts `python *args` once per process. via: "flags" (--num_processes ...) or "env"
    (JAX_NUM_PROCESSES ...). Returns the Popen list; output goes to `{log_prefix}.{i}.log`."""
    base_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu",
                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    port = free_port()
    procs = []
    for i in range(num_processes):
        env, extra = dict(base_env), []
        if num_processes > 1 and via == "flags":
            extra = [f"--num_processes={num_processes}", f"--process_id={i}",
                     f"--coordinator_address=127.0.0.1:{port}",
                     f"--heartbeat_timeout_seconds={HEARTBEAT}"]
        elif num_processes > 1:
            env.update(JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(i),
                       JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
        out = open(f"{log_prefix}.{i}.log", "w")  # noqa: SIM115 - closed in kill_all
        proc = subprocess.Popen([sys.executable, *args, *extra], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_file = out
        procs.append(proc)
    return procs


def kill_all(procs):
    """SIGKILLs every process (group) still running, then closes the log files."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.log_file.close()


def log_text(proc) -> str:
    with open(proc.log_file.name) as f:
        return f.read()


def wait_all(groups, timeout):
    """Waits for every process of every group (lists of Popen); asserts each exited 0 (with
    its log's tail); kills them all in any case."""
    deadline = time.monotonic() + timeout
    try:
        for procs in groups:
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
                assert p.returncode == 0, log_text(p)[-4000:]
    finally:
        for procs in groups:
            kill_all(procs)


def wait_until(condition, procs, timeout, what):
    """Polls `condition()` every 0.5 s; fails (with process 0's log) if a process exits first
    or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (f"no {what} after {timeout} s:\n"
                                             + log_text(procs[0])[-3000:])
        for p in procs:
            assert p.poll() is None, f"a process exited before {what}:\n" + log_text(p)[-3000:]
        time.sleep(0.5)


def assert_survivor_fails(survivor, killed_at, bound):
    """The survivor must exit non-zero within `bound` seconds of the kill, with the runtime's
    message about the dead process. Returns the seconds it took."""
    survivor.wait(timeout=bound)
    waited = time.monotonic() - killed_at
    out = log_text(survivor)
    assert survivor.returncode != 0, out[-3000:]
    assert ("another task died" in out or "Connection closed by peer" in out
            or "unhealthy" in out), out[-3000:]
    return waited
