"""Issue 24: the run layer (srwm_jax.training.run_context) under divergence, stop signals, a
second trainer on the same workdir, foreign or unusable workdirs, a full disk, glob characters.

Trainers run as real subprocesses (tests/killable.py) where a signal or a second process is
the point; every wait is bounded and every subprocess is killed whatever happens.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR
from killable import REPO, python_env, run_bounded

from configs.fewshot.omniglot_smoke import get_config as smoke_config
from fewshot import training as fewshot_training
from rl.fake_env import FakeEnv
from rl.training import train_and_evaluate as rl_train
from srwm_jax.training.checkpoints import Checkpoints, NonFiniteError
from srwm_jax.training.metrics import MetricWriter
from srwm_jax.training.run_config import RunConfigError
from srwm_jax.training.run_context import RunLock, RunLockError
from srwm_jax.training.workdir import LOCK_FILE, MARKER_FILE, open_run_dir
from test_rl_sebulba import _tiny_config

KILLABLE = os.path.join(REPO, "tests", "killable.py")
BOUND = 150.0  # seconds any one wait may take before it counts as a hang

FEWSHOT_FLAGS = ["--config", "configs/fewshot/omniglot_smoke.py",
                 f"--config.data_dir={OMNIGLOT_DIR}", "--config.log_every_steps=1",
                 "--config.eval_every_steps=1000", "--config.val_episodes=20",
                 "--config.conv_channels=8", "--config.hidden_size=16", "--config.batch_size=8",
                 "--config.model=lstm"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def strict_json_lines(path):
    """Every line of a .jsonl file, parsed by a strict parser (NaN / Infinity refused)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    with open(path) as f:
        return [json.loads(line, parse_constant=refuse) for line in f if line.strip()]


def one_error_line(stderr):
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 700, stderr[-3000:]
    return errors[0]


def step_dirs(path):
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def nan_tree():
    return {"w": np.array([1.0, np.nan], np.float32), "step": np.asarray(3, np.int64)}


# --- kind 1: divergence ---------------------------------------------------------------------

def test_non_finite_trees_are_never_saved_and_metrics_stay_strict_json(tmp_path):
    ckpt = Checkpoints(tmp_path, keep=3)
    assert ckpt.save(1, {"w": np.ones(2, np.float32), "step": np.asarray(1, np.int64)})
    with pytest.raises(NonFiniteError, match="step 3 holds NaN or infinite"):
        ckpt.save(3, nan_tree())
    with pytest.raises(NonFiniteError):
        ckpt.save_best(4, {"w": np.array([np.inf], np.float32)}, 0.9)
    ckpt.close()
    assert step_dirs(tmp_path / "checkpoints") == [1] and step_dirs(tmp_path / "best") == []

    writer = MetricWriter(str(tmp_path), tensorboard=False)
    writer.write(5, {"loss": float("nan"), "accuracy": 0.5, "grad_norm": float("inf")}, "train")
    writer.close()
    (record,) = strict_json_lines(tmp_path / "metrics.jsonl")
    assert record["loss"] is None and record["grad_norm"] is None and record["accuracy"] == 0.5


def _fewshot_config(**overrides):
    c = smoke_config()
    c.data_dir = str(OMNIGLOT_DIR)
    c.update(dict(total_steps=12, log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=4,
                  val_episodes=20, conv_channels=8, hidden_size=16, batch_size=8, model="lstm"))
    c.update(overrides)
    return c


@pytest.mark.omniglot
def test_fewshot_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_build = fewshot_training.build

    def build_that_diverges_after_step_5(config, task=None):
        model, optimizer, mesh, train_step, eval_step = real_build(config, task)

        def step(state, batch, key):
            state, metrics = train_step(state, batch, key)
            if int(state.step) >= 5:
                state = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
            return state, metrics
        return model, optimizer, mesh, step, eval_step

    monkeypatch.setattr(fewshot_training, "build", build_that_diverges_after_step_5)
    with pytest.raises(NonFiniteError, match=r"diverged at steps 5\.\.6: loss = nan"):
        fewshot_training.train_and_evaluate(_fewshot_config(), str(tmp_path))
    assert step_dirs(tmp_path / "checkpoints") == [4]  # no step 6, 8, ... nor a final save
    assert step_dirs(tmp_path / "best") == [4]
    records = strict_json_lines(tmp_path / "metrics.jsonl")
    assert [r["loss"] is None for r in records if r["split"] == "train"] == [False, False, True]
    assert not (tmp_path / LOCK_FILE).exists()  # released on the way out


@pytest.mark.omniglot
def test_fewshot_cli_divergence_is_one_line_exit_1(tmp_path, cache_dir):
    r = run_bounded(["-m", "fewshot.train", *FEWSHOT_FLAGS, "--config.total_steps=6",
                     "--config.checkpoint_every_steps=3", "--config.learning_rate=1e30",
                     "--workdir", tmp_path / "run"], python_env(cache_dir))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "training diverged" in one_error_line(r.stderr)
    assert step_dirs(tmp_path / "run" / "checkpoints") == []
    strict_json_lines(tmp_path / "run" / "metrics.jsonl")


def test_rl_divergence_stops_without_a_checkpoint(tmp_path):
    config = _tiny_config(total_steps=400, learning_rate=1e30, checkpoint_every_minutes=0.0)
    with pytest.raises(NonFiniteError, match="diverged at update"):
        rl_train(config, str(tmp_path), use_tensorboard=False,
                 env_factory=lambda i: FakeEnv(2, seed=i))
    # (Saves before the divergence hold finite values: Checkpoints refuses any other tree.)
    strict_json_lines(tmp_path / "metrics.jsonl")
    assert not (tmp_path / LOCK_FILE).exists()


# --- kinds 2 and 3: stop signals and the workdir lock, on real subprocesses --------------------

class Trainer:
    """A CLI subprocess (through tests/killable.py) with its output in files."""

    def __init__(self, args, env, log_path):
        self.log_path = str(log_path)
        self._out = open(self.log_path + ".out", "w")  # noqa: SIM115 - closed in finish/kill
        self._err = open(self.log_path + ".err", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, KILLABLE, *map(str, args)], cwd=REPO,
                                     env=env, stdout=self._out, stderr=self._err,
                                     start_new_session=True)

    def output(self):
        with open(self.log_path + ".out") as f, open(self.log_path + ".err") as g:
            return f.read() + g.read()

    def wait_for(self, condition, what):
        deadline = time.monotonic() + BOUND
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what}:\n" + self.output()[-3000:])
            time.sleep(0.05)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=BOUND)
        self._out.close()
        self._err.close()

    def finish(self, timeout=BOUND):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        return self.proc.returncode, self.output()


def _logged_steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [r["step"] for r in strict_json_lines(path) if r["split"] == "train"]


@pytest.mark.omniglot
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_fewshot_stop_signal_saves_and_a_second_trainer_is_refused(tmp_path, cache_dir, signum):
    workdir = tmp_path / "run[1] x"  # glob characters and a space (kind 6) on the way
    args = ["fewshot.train", *FEWSHOT_FLAGS, "--config.total_steps=100000",
            "--config.checkpoint_every_steps=100000", "--workdir", workdir]
    env = python_env(cache_dir)
    first = Trainer(args, env, tmp_path / "first")
    try:
        first.wait_for(lambda: len(_logged_steps(workdir)) >= 2, "training steps")
        second = run_bounded(["-m", *args], env)  # kind 3: refused, naming the holder
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"pid {first.proc.pid}" in line and "in use by another trainer" in line
        os.kill(first.proc.pid, signum)
        t0 = time.monotonic()
        code, out = first.finish(timeout=60)
    finally:
        first.kill()
    assert code == 0, out[-3000:]
    assert time.monotonic() - t0 < 60
    (saved,) = step_dirs(workdir / "checkpoints")
    assert saved >= max(_logged_steps(workdir)) >= 2
    assert f"{signal.Signals(signum).name}: saving a checkpoint at step {saved}" in out
    assert not (workdir / LOCK_FILE).exists()
    # The same command resumes from that step (here to an earlier end: total_steps is
    # resumable under the smoke config's constant schedule).
    r = run_bounded(["-m", *args, f"--config.total_steps={saved + 2}"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resumed from {workdir}/checkpoints/{saved}" in r.stdout
    assert step_dirs(workdir / "checkpoints") == [saved, saved + 2]


def _hold_lock_in_subprocess(workdir):
    code = ("import sys, time; sys.path.insert(0, %r); "
            "from srwm_jax.training.run_context import RunLock; "
            "RunLock(%r).acquire(); print('held', flush=True); time.sleep(120)") % (REPO,
                                                                                    str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    holder = _hold_lock_in_subprocess(tmp_path)
    try:
        with pytest.raises(RunLockError, match=rf"host \S+, pid {holder.pid}, since"):
            RunLock(str(tmp_path)).acquire()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=BOUND)
    assert (tmp_path / LOCK_FILE).exists()  # left behind by the kill -9
    lock = RunLock(str(tmp_path)).acquire()
    assert lock.taken_over["pid"] == holder.pid
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_rl_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path, cache_dir):
    workdir = tmp_path / "rl"
    env = python_env(cache_dir)
    # checkpoint_every_minutes=0.002 in killable.run_rl: periodic saves too; the one after the
    # signal is the newest and holds the env steps the run had reached.
    first = Trainer(["rl", workdir, 10_000_000], env, tmp_path / "rl1")
    try:
        first.wait_for(lambda: len(step_dirs(workdir / "checkpoints")) >= 1, "a checkpoint")
        os.kill(first.proc.pid, signal.SIGTERM)
        t0 = time.monotonic()
        code, out = first.finish(timeout=60)
    finally:
        first.kill()
    assert code == 0, out[-3000:]
    assert time.monotonic() - t0 < 60
    stopped = int(re.search(r"SIGTERM: saving a checkpoint at (\d+) env steps", out).group(1))
    assert max(step_dirs(workdir / "checkpoints")) == stopped
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip().endswith("}") else None
    assert summary is None or summary["env_steps"] == stopped
    # The same command resumes there (and stops again on the next SIGTERM).
    second = Trainer(["rl", workdir, 10_000_000], env, tmp_path / "rl2")
    try:
        second.wait_for(lambda: f"at {stopped} env steps" in second.output(), "the resume")
        os.kill(second.proc.pid, signal.SIGTERM)
        code, out = second.finish(timeout=60)
    finally:
        second.kill()
    assert code == 0 and re.search(rf"resumed from .* at {stopped} env steps", out), out[-3000:]


# --- kind 11: foreign folders, files and empty paths as --workdir ---------------------------

def test_overwrite_deletes_only_our_runs_and_foreign_folders_are_refused(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"name": "my web app"}')
    (project / "main.py").write_text("print('hi')")
    config = _tiny_config()
    for overwrite in (False, True):
        with pytest.raises(RunConfigError, match="no trainer of this project wrote"):
            open_run_dir(str(project), config, resume=True, overwrite=overwrite, resumable=(),
                         kind="rl")
    assert sorted(os.listdir(project)) == ["config.json", "main.py"]

    run = tmp_path / "run"
    open_run_dir(str(run), config, resume=True, overwrite=False, resumable=(), kind="rl")
    assert json.loads((run / MARKER_FILE).read_text()) == {"kind": "rl"}
    (run / "notes.txt").write_text("x")
    open_run_dir(str(run), config, resume=True, overwrite=True, resumable=(), kind="rl")
    assert sorted(os.listdir(run)) == ["config.json", MARKER_FILE]
    with pytest.raises(RunConfigError, match="holds a rl run .*not a fewshot run"):
        open_run_dir(str(run), _fewshot_config(), resume=True, overwrite=True, resumable=(),
                     kind="fewshot")


@pytest.mark.parametrize("what", ["file", "empty", "under_file"])
def test_fewshot_train_refuses_a_file_or_empty_workdir_in_one_line(tmp_path, what):
    (tmp_path / "f").write_text("x")
    workdir = {"file": tmp_path / "f", "empty": "", "under_file": tmp_path / "f" / "run"}[what]
    r = run_bounded(["-m", "fewshot.train", *FEWSHOT_FLAGS, f"--workdir={workdir}"], python_env())
    assert r.returncode == 2
    assert re.search(r"is empty|is a file|which is a file", one_error_line(r.stderr))
    assert (tmp_path / "f").read_text() == "x"


# --- kind 4: a full disk during a save -----------------------------------------------------

def test_a_full_disk_during_a_save_is_one_line_and_older_checkpoints_stay(tmp_path):
    small = {"w": np.ones(4, np.float32), "step": np.asarray(1, np.int64)}
    ckpt = Checkpoints(tmp_path, keep=3)
    assert ckpt.save(1, small)
    ckpt.wait_until_finished()
    code = f"""
import resource, signal, sys
sys.path.insert(0, {REPO!r})
import numpy as np
from srwm_jax.training.checkpoints import Checkpoints, DiskFullError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
ckpt = Checkpoints({str(tmp_path)!r}, keep=3)
try:
    w = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)  # incompressible
    ckpt.save(2, {{"w": w, "step": np.asarray(2, np.int64)}})
    ckpt.close()
except DiskFullError as e:
    print("DISKFULL", e)
    sys.exit(1)
print("SAVED")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=BOUND, env=python_env())
    assert "DISKFULL the disk is full: checkpoint 2 could not be written to" in r.stdout, \
        (r.stdout + r.stderr)[-3000:]
    assert str(tmp_path / "checkpoints") in r.stdout and r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert step_dirs(tmp_path / "checkpoints") == [1]
    restored = Checkpoints(tmp_path, read_only=True).restore(small)
    assert float(restored["w"][0]) == 1.0


def test_a_save_whose_error_surfaces_after_its_directory_exists_leaves_no_directory(
        tmp_path, monkeypatch):
    """An asynchronous save's full-disk error can surface at the next wait, when the failed
    step's directory may already be there: it is removed, so a resume reads the older one."""
    import errno  # noqa: PLC0415

    from srwm_jax.training.checkpoints import DiskFullError  # noqa: PLC0415
    tree = {"w": np.ones(4, np.float32), "step": np.asarray(1, np.int64)}
    ckpt = Checkpoints(tmp_path, keep=3)
    assert ckpt.save(1, tree)
    assert ckpt.save(2, {**tree, "w": np.full(4, 2.0, np.float32)})
    ckpt.periodic.wait_until_finished()  # step 2 is on disk, as a committed directory
    assert step_dirs(tmp_path / "checkpoints") == [1, 2]

    def full_disk():
        raise OSError(errno.EFBIG, "File too large")
    monkeypatch.setattr(ckpt.periodic, "wait_until_finished", full_disk)
    with pytest.raises(DiskFullError, match="checkpoint 2 could not be written"):
        ckpt.save(3, tree)
    assert step_dirs(tmp_path / "checkpoints") == [1]
    monkeypatch.undo()
    assert float(Checkpoints(tmp_path, read_only=True).restore(tree)["w"][0]) == 1.0


# --- kind 6: glob characters in the workdir ---------------------------------------------------

@pytest.mark.parametrize("name", ["sweep[1]", "lr*2 ?a", "[ab] ünï"])
def test_a_workdir_with_glob_characters_saves_and_restores(tmp_path, name):
    workdir = tmp_path / name
    ckpt = Checkpoints(workdir, keep=2, fingerprint="f")
    tree = {"w": np.arange(3, dtype=np.float32), "step": np.asarray(7, np.int64)}
    assert ckpt.save(7, tree) and ckpt.save_best(7, tree, 0.5)
    ckpt.close()
    assert step_dirs(workdir / "checkpoints") == [7]
    ckpt = Checkpoints(workdir, keep=2, fingerprint="f", read_only=True)
    assert ckpt.directory == str(workdir / "checkpoints")
    for which in ("latest", "best"):
        assert np.array_equal(ckpt.restore(tree, which=which)["w"], tree["w"])
    ckpt.close()
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing else left behind


# --- kinds 5 and 13: read-only places; the wrong evaluator on a run ---------------------------

@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fewshot_run") / "run"
    fewshot_training.train_and_evaluate(_fewshot_config(total_steps=4), str(workdir))
    return workdir


@contextlib.contextmanager
def read_only_copy(src, dst):
    """A copy of `src` at `dst` on a read-only place: a tmpfs remounted read-only when this
    process may mount (root), else the copy with its write permissions removed."""
    dst.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(dst)],
                             capture_output=True).returncode == 0
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tensorboard"))
    try:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(dst)], check=True)
        else:
            if os.geteuid() == 0:
                pytest.skip("root without mount: permissions cannot make a folder read-only")
            for path in [dst, *dst.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
        yield dst
    finally:
        if mounted:
            subprocess.run(["umount", str(dst)], check=True)
        else:
            for path in [dst, *dst.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.omniglot
def test_read_only_run_evaluates_prints_first_and_training_refuses(fewshot_run, tmp_path):
    env = python_env()
    with read_only_copy(fewshot_run, tmp_path / "share") as share:
        args = ["-m", "fewshot.evaluate", "--workdir", share, "--num_sets", "2",
                "--episodes_per_set", "8"]
        r = run_bounded(args, env)
        assert r.returncode == 1 and "test accuracy over 2 x 8 episodes" in r.stdout, r.stderr
        line = one_error_line(r.stderr)
        assert f"could not write {share}/eval_test.json" in line and "--out" in line
        r = run_bounded([*args, "--out", tmp_path / "result.json"], env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads((tmp_path / "result.json").read_text())["num_sets"] == 2

        r = run_bounded(["-m", "fewshot.train", *FEWSHOT_FLAGS, "--workdir", share / "new"], env)
        assert r.returncode == 2 and "cannot write in" in one_error_line(r.stderr)
        assert not (share / "new").exists()


@pytest.mark.omniglot
def test_the_wrong_evaluator_names_the_kind_of_run_and_its_command(fewshot_run, tmp_path):
    rl_run = tmp_path / "rl_run"
    open_run_dir(str(rl_run), _tiny_config(), resume=True, overwrite=False, resumable=(),
                 kind="rl")
    legacy = tmp_path / "legacy_fewshot"  # made before the marker: known by its fields
    shutil.copytree(fewshot_run, legacy, ignore=shutil.ignore_patterns("tensorboard"))
    (legacy / MARKER_FILE).unlink()
    env = python_env()
    r = run_bounded(["-m", "fewshot.evaluate", "--workdir", rl_run], env)
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "holds a rl run" in line
    assert f"python -m rl.evaluate --workdir {rl_run}" in line
    for run in (fewshot_run, legacy):
        r = run_bounded(["-m", "rl.evaluate", "--workdir", run], env)
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and "holds a fewshot run" in line
        assert f"python -m fewshot.evaluate --workdir {run}" in line


# --- kind 12: a jax.distributed peer that never starts ----------------------------------------

def test_a_peer_that_never_joins_is_named_with_progress_meanwhile():
    import socket  # noqa: PLC0415

    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("from srwm_jax.training import distributed; "
            f"distributed.initialize('127.0.0.1:{port}', 2, 0, initialization_timeout=6)")
    t0 = time.monotonic()
    r = run_bounded(["-c", code], python_env(), timeout=60)
    assert time.monotonic() - t0 < 40  # the bound (6 s), not jax's 300 s
    assert r.returncode == 1, r.stderr[-3000:]
    progress = [line for line in r.stderr.splitlines()
                if line.startswith("jax.distributed: process 0 waiting for process 1 to join")]
    assert len(progress) >= 2, r.stderr[-3000:]
    line = one_error_line(r.stderr)
    assert "process 1 never joined within 6 s" in line
    assert "--initialization_timeout_seconds" in line
    assert "another task died" not in r.stderr


@pytest.mark.omniglot
def test_fewshot_cli_stops_on_a_full_disk_with_one_line(tmp_path, cache_dir):
    """The file-size limit (RLIMIT_FSIZE) stands in for a full disk: a checkpoint's array file
    cannot be written; the trainer stops there with one line and exit 1."""
    import resource  # noqa: PLC0415

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
    workdir = tmp_path / "run"
    args = [sys.executable, "-m", "fewshot.train", *FEWSHOT_FLAGS, "--config.total_steps=12",
            "--config.checkpoint_every_steps=4", "--workdir", str(workdir)]
    r = subprocess.run(args, cwd=REPO, env=python_env(), capture_output=True, text=True,
                       timeout=BOUND * 2, preexec_fn=limit)
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    line = one_error_line(r.stderr)
    failed = int(re.search(r"the disk is full: checkpoint (\d+) could not be written", line)[1])
    assert str(workdir / "checkpoints") in line
    # (Which save hits the limit first depends on how TensorStore batches its writes.)
    held = step_dirs(workdir / "checkpoints")
    assert all(s < failed for s in held), (failed, held, line)  # older ones intact
    assert max(_logged_steps(workdir)) <= failed + 4  # stopped at the failed save
