"""Runs a trainer in a subprocess that the fault-injection tests kill
(tests/test_fault_injection.py).

    python tests/killable.py fewshot.train --config ... --workdir DIR ...  # the CLI as it is
    python tests/killable.py rl DIR TOTAL_STEPS                             # rl.training on FakeEnv

With SRWM_TEST_STALL_COMMIT=N, the N-th periodic checkpoint commit (orbax's rename of a step's
temporary folder to its final name, the last act of a save) first touches the file
SRWM_TEST_STALL_MARKER, then sleeps for a minute: a SIGKILL sent once the marker exists lands in
the middle of a save, with every file of that step written and the step not yet committed.
Nothing else is changed.

Importable too: `python_env` and `run_bounded` are the subprocess helpers of the tests that
start trainers and CLIs (every run has a timeout and is killed on failure).
"""
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))


def python_env(cache_dir=None, **extra) -> dict:
    """Environment of a test subprocess: this checkout first on the path, CPU only, and (if
    `cache_dir`) a persistent compilation cache shared by the runs of one test session."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    if cache_dir is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_bounded(args, env, timeout=180) -> subprocess.CompletedProcess:
    """Runs `python *args` in the checkout; a run past `timeout` seconds is killed (with its
    process group) and raises subprocess.TimeoutExpired."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def install_commit_stall(n: int, marker: str) -> None:
    from etils import epath  # noqa: PLC0415 - orbax's path library

    path_type = type(epath.Path(REPO))
    original, lock, commits = path_type.rename, threading.Lock(), [0]

    def rename(self, target):
        if "orbax-checkpoint-tmp" in str(self) and self.parent.name == "checkpoints":
            with lock:
                commits[0] += 1
                stall = commits[0] == n
            if stall:
                with open(marker, "w") as f:
                    f.write(str(target))
                time.sleep(60)
        return original(self, target)
    path_type.rename = rename


def run_rl(workdir: str, total_steps: int) -> None:
    import logging  # noqa: PLC0415

    from rl.fake_env import FakeEnv  # noqa: PLC0415
    from rl.training import train_and_evaluate  # noqa: PLC0415
    from test_rl_sebulba import _tiny_config  # noqa: PLC0415
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    config = _tiny_config(total_steps=total_steps, checkpoint_every_minutes=0.002)
    summary = train_and_evaluate(config, workdir, use_tensorboard=False,
                                 env_factory=lambda i: FakeEnv(2, seed=i, act_delay=0.002))
    print(json.dumps({"env_steps": summary["env_steps"], "updates": summary["updates"]}))


if __name__ == "__main__":
    if os.environ.get("SRWM_TEST_STALL_COMMIT"):
        install_commit_stall(int(os.environ["SRWM_TEST_STALL_COMMIT"]),
                             os.environ["SRWM_TEST_STALL_MARKER"])
    if sys.argv[1] == "rl":
        run_rl(sys.argv[2], int(sys.argv[3]))
    else:
        module = sys.argv[1]
        sys.argv = [module] + sys.argv[2:]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
