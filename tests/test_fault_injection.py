"""kill -9 at several points of both trainers (issue 15), including in the middle of an orbax
save, then the same command again: the rerun resumes from the newest complete checkpoint, loses
at most one checkpoint interval to a kill outside a save, and runs to the end; few-shot ends
with exactly the parameters, optimiser state and best checkpoint of an uninterrupted run.

The trainers run as subprocesses of tests/killable.py (the few-shot CLI as it is; RL's
train_and_evaluate on rl.fake_env.FakeEnv). `SRWM_TEST_STALL_COMMIT=N` holds the N-th periodic
checkpoint's final rename (its files are all written) until the kill lands. Every wait is
bounded and a subprocess is killed whatever happens; the runs share one compilation cache.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR
from killable import REPO, python_env

from fewshot.warm_start import read_arrays
from srwm_jax.training.metrics import read_metrics

KILLABLE = os.path.join(REPO, "tests", "killable.py")
BOUND = 150.0  # seconds any one wait may take before it counts as a hang


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


class Trainer:
    """A killable.py subprocess with its stdout and stderr in files."""

    def __init__(self, args, env, log_path):
        self.log_path = str(log_path)
        self._out = open(self.log_path + ".out", "w")  # noqa: SIM115 - closed in wait/kill
        self._err = open(self.log_path + ".err", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, KILLABLE, *map(str, args)], cwd=REPO, env=env,
                                     stdout=self._out, stderr=self._err, start_new_session=True)

    def output(self):
        with open(self.log_path + ".out") as f, open(self.log_path + ".err") as g:
            return f.read(), g.read()

    def wait_for(self, condition, what):
        """Polls `condition()` until true; fails (after killing) if the process ends first."""
        deadline = time.monotonic() + BOUND
        while not condition():
            if self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"trainer ended before {what}:\n" + "\n".join(self.output())[-3000:])
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {BOUND:.0f} s:\n" + "\n".join(self.output())[-3000:])
            time.sleep(0.02)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=BOUND)
        self._out.close()
        self._err.close()

    def finish(self):
        try:
            self.proc.wait(timeout=BOUND)
        finally:
            self.kill()
        out, err = self.output()
        assert self.proc.returncode == 0, (out + err)[-3000:]
        return out, err


def complete_steps(checkpoints):
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) \
        if checkpoints.exists() else []


def pending_saves(checkpoints):
    return ([p.name for p in checkpoints.iterdir() if "tmp" in p.name]
            if checkpoints.exists() else [])


# --- few-shot ---------------------------------------------------------------------------------

FEWSHOT_EVERY = 4
FEWSHOT_ARGS = ["fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
                f"--config.data_dir={OMNIGLOT_DIR}", "--config.total_steps=16",
                f"--config.checkpoint_every_steps={FEWSHOT_EVERY}", "--config.log_every_steps=1",
                "--config.eval_every_steps=8", "--config.val_episodes=20",
                "--config.conv_channels=8", "--config.hidden_size=16", "--config.batch_size=8",
                # dropout on: the resumed run must draw the same masks (a key per step)
                "--config.dropout=0.1", "--config.vision_dropout=0.1"]


def _resumed_from(out):
    found = re.findall(r"Resumed from .*/checkpoints/(\d+)", out)
    return int(found[-1]) if found else 0


def _logged_steps(workdir):
    return [m["step"] for m in read_metrics(workdir) if m["split"] == "train"] \
        if (workdir / "metrics.jsonl").exists() else []


@pytest.mark.omniglot
def test_fewshot_killed_anywhere_ends_bit_identical(tmp_path, cache_dir):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    env = python_env(cache_dir)
    # 1. Killed in the middle of the save of step 8 (its files written, not yet committed).
    marker = tmp_path / "stalled"
    run = Trainer([*FEWSHOT_ARGS, "--workdir", killed],
                  python_env(cache_dir, SRWM_TEST_STALL_COMMIT=2, SRWM_TEST_STALL_MARKER=marker),
                  tmp_path / "run1")
    run.wait_for(marker.exists, "the stalled save of step 8")
    run.kill()
    # The uninterrupted reference, beside the rest (it finds the steps compiled in the cache).
    ref = Trainer([*FEWSHOT_ARGS, "--workdir", reference], env, tmp_path / "reference")
    assert complete_steps(killed / "checkpoints") == [4] and pending_saves(killed / "checkpoints")

    # 2. The same command: resumes from step 4 (the leftover is removed); killed as soon as
    # its next checkpoint is complete.
    logged_by_run1 = len(_logged_steps(killed))
    run = Trainer([*FEWSHOT_ARGS, "--workdir", killed], env, tmp_path / "run2")
    run.wait_for(lambda: max(complete_steps(killed / "checkpoints"), default=0) > 4,
                 "a checkpoint after step 4")
    run.kill()
    assert _resumed_from(run.output()[0]) == 4
    newest = complete_steps(killed / "checkpoints")[-1]
    done_by_run2 = max(_logged_steps(killed)[logged_by_run1:])
    assert 0 <= done_by_run2 - newest <= FEWSHOT_EVERY  # at most one interval lost

    # 3. The same command again: resumes from the newest complete step, runs to the end.
    out, _ = Trainer([*FEWSHOT_ARGS, "--workdir", killed], env, tmp_path / "run3").finish()
    assert _resumed_from(out) == newest
    ref.finish()
    assert not pending_saves(killed / "checkpoints")
    assert (complete_steps(killed / "checkpoints")[-1]
            == complete_steps(reference / "checkpoints")[-1] == 16)
    # The whole saved state (step, params, BatchNorm statistics, Adam moments) bit for bit.
    for sub in ("checkpoints/16",
                f"best/{json.loads((reference / 'best/best.json').read_text())['step']}"):
        a, b = (jax.tree_util.tree_leaves_with_path(read_arrays(str(run / sub / "default")))
                for run in (reference, killed))
        assert [path for path, _ in a] == [path for path, _ in b] and len(a) > 10
        for (path, x), (_, y) in zip(a, b):
            np.testing.assert_array_equal(x, y, err_msg=f"{sub} {jax.tree_util.keystr(path)}")
    assert (reference / "best/best.json").read_text() == (killed / "best/best.json").read_text()


# --- RL ---------------------------------------------------------------------------------------

RL_TOTAL = 400  # env steps: 20 updates of 20; a checkpoint every 0.12 s (killable.py)


def _resumed_env_steps(out):
    found = re.findall(r"resumed from .* at (\d+) env steps", out)
    return int(found[-1]) if found else 0


def test_rl_killed_anywhere_resumes_and_finishes(tmp_path, cache_dir):
    workdir = tmp_path / "run"
    args = ["rl", workdir, RL_TOTAL]
    # 1. Killed in the middle of its 3rd periodic save.
    marker = tmp_path / "stalled"
    run = Trainer(args,
                  python_env(cache_dir, SRWM_TEST_STALL_COMMIT=3, SRWM_TEST_STALL_MARKER=marker),
                  tmp_path / "run1")
    run.wait_for(marker.exists, "the stalled 3rd save")
    run.kill()
    stalled = int(os.path.basename(marker.read_text()))
    first = complete_steps(workdir / "checkpoints")
    assert len(first) == 2 and stalled not in first and pending_saves(workdir / "checkpoints")

    # 2. Rerun: resumes from the newest complete checkpoint; killed once it has saved another.
    run = Trainer(args, python_env(cache_dir), tmp_path / "run2")
    run.wait_for(lambda: max(complete_steps(workdir / "checkpoints")) > first[-1],
                 "a checkpoint after the resume")
    run.kill()
    assert _resumed_env_steps(run.output()[0]) == first[-1]
    newest = complete_steps(workdir / "checkpoints")[-1]

    # 3. Rerun: resumes from the newest complete checkpoint again and finishes.
    out, _ = Trainer(args, python_env(cache_dir), tmp_path / "run3").finish()
    assert _resumed_env_steps(out) == newest
    assert json.loads(out.strip().splitlines()[-1]) == {"env_steps": RL_TOTAL,
                                                        "updates": RL_TOTAL // 20}
    assert complete_steps(workdir / "checkpoints")[-1] == RL_TOTAL
    assert not pending_saves(workdir / "checkpoints")
