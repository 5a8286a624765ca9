"""Run directories and checkpoints (issue 15): a used workdir is resumed only with its own
config (`--overwrite` deletes it, `--noresume` refuses it), a checkpoint step is never saved
twice (RL final save on a periodic step, few-shot Ctrl-C right after a checkpoint), every
checkpoint carries its config's fingerprint and a restore under another config.json is refused,
and a corrupt checkpoint or a hung actor ends the CLIs with one error line. Subprocesses run
with a timeout (tests/killable.py run_bounded)."""
import json
import logging
import os
import re
import shutil
import sys

import numpy as np
import pytest

from conftest import OMNIGLOT_DIR, REPO_ROOT
from killable import python_env, run_bounded

from configs.fewshot.default import get_config as fewshot_defaults
from configs.fewshot.omniglot_smoke import get_config as smoke_config
from configs.rl.default import get_config as rl_defaults
from fewshot import config_checks as fewshot_checks
from fewshot import training as fewshot_training
from rl import config_checks as rl_checks
from rl.config_checks import RESUMABLE_FIELDS as RL_RESUMABLE
from rl.evaluation import load_for_eval
from rl.fake_env import FakeEnv
from rl.sebulba import ActorFailed
from rl.training import train_and_evaluate as rl_train
from srwm_jax.training.checkpoints import CheckpointError, Checkpoints
from srwm_jax.training.cli import error_lines
from srwm_jax.training import run_context
from srwm_jax.training.metrics import read_metrics
from srwm_jax.training.run_config import RunConfigError, load_config, workdir_fingerprint
from srwm_jax.training.workdir import open_run_dir

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_rl_sebulba import _tiny_config  # noqa: E402


def tree(v):
    return {"w": np.full((3,), v, np.float32), "step": np.asarray(v, np.int64)}


def step_dirs(path):
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def snapshot(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def one_error_line(stderr):
    """The CLI's message: exactly one `error:` line, no traceback, no orbax log lines (jax's
    start-up lines about CUDA may come before it)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not re.search(r"^([EW]\d{4} |ERROR:absl|WARNING:absl)", stderr, re.M), stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 600, stderr[-3000:]
    return errors[0]


# --- checkpoints: a step is saved once; fingerprints; leftovers of killed saves ------------

def test_a_step_already_held_is_not_saved_again(tmp_path):
    ckpt = Checkpoints(tmp_path, keep=3, fingerprint="f1")
    assert ckpt.save(4, tree(4)) is True
    ckpt.wait_until_finished()
    assert ckpt.save(4, tree(99)) is False  # orbax: StepAlreadyExistsError before
    assert ckpt.save_best(4, tree(4), 0.5) is True
    assert ckpt.save_best(4, tree(99), 0.9) is False  # not saved; its accuracy is recorded
    ckpt.close()
    ckpt = Checkpoints(tmp_path, keep=3, fingerprint="f1")  # a later process, same run
    assert ckpt.save(4, tree(98)) is False
    assert step_dirs(tmp_path / "checkpoints") == [4]
    assert float(ckpt.restore(tree(0))["w"][0]) == 4.0
    assert float(ckpt.restore(tree(0), which="best")["w"][0]) == 4.0
    assert ckpt.best_accuracy() == 0.9
    ckpt.close()


def test_restore_refuses_another_configs_checkpoint_and_warns_without_one(tmp_path, caplog):
    ckpt = Checkpoints(tmp_path / "a", fingerprint="aaaa")
    ckpt.save(1, tree(1))
    ckpt.close()
    reader = Checkpoints(tmp_path / "a", fingerprint="bbbb", read_only=True)
    with pytest.raises(CheckpointError,
                       match=r"made under another config \(fingerprint aaaa\).*\(bbbb\)"):
        reader.restore(tree(0))
    reader.close()
    old = Checkpoints(tmp_path / "old")  # no fingerprint: as checkpoints written before them
    old.save(1, tree(1))
    old.close()
    reader = Checkpoints(tmp_path / "old", fingerprint="bbbb", read_only=True)
    with caplog.at_level(logging.WARNING):
        assert float(reader.restore(tree(0))["w"][0]) == 1.0
    assert "has no config fingerprint" in caplog.text
    reader.close()


def test_a_killed_saves_leftover_is_removed_by_the_next_writer_only(tmp_path):
    ckpt = Checkpoints(tmp_path)
    ckpt.save(2, tree(2))
    ckpt.close()
    leftover = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1234567"
    leftover.mkdir()
    reader = Checkpoints(tmp_path, read_only=True)  # an evaluator beside a running trainer
    assert reader.latest_step() == 2 and leftover.exists()
    reader.close()
    assert not (tmp_path / "x").exists()
    reader = Checkpoints(tmp_path / "x", read_only=True)  # creates nothing
    assert reader.latest_step() is None and not (tmp_path / "x").exists()
    reader.close()
    writer = Checkpoints(tmp_path)  # orbax removes leftovers in the background, before a save
    assert writer.save(4, tree(4))
    writer.close()
    assert not leftover.exists()
    assert step_dirs(tmp_path / "checkpoints") == [2, 4]


# --- used workdirs: refused, resumed with the run's own config, or overwritten --------------

def test_used_workdir_is_refused_resumed_only_with_its_config_or_overwritten(tmp_path):
    run = tmp_path / "run"
    fingerprint, changes = open_run_dir(run, rl_defaults(), resume=True, overwrite=False,
                                        resumable=RL_RESUMABLE)
    assert changes == [] and load_config(run, rl_defaults()).to_dict() == rl_defaults().to_dict()
    assert workdir_fingerprint(run, RL_RESUMABLE) == fingerprint
    (run / "checkpoints" / "5").mkdir(parents=True)
    with pytest.raises(RunConfigError, match="already holds a run.*--overwrite"):
        open_run_dir(run, rl_defaults(), resume=False, overwrite=False, resumable=RL_RESUMABLE)
    assert open_run_dir(run, rl_defaults(), resume=True, overwrite=False,
                        resumable=RL_RESUMABLE) == (fingerprint, [])

    before = (run / "config.json").read_text()
    other = rl_defaults()
    other.agent.core, other.learning_rate, other.log_every_seconds = "lstm", 1e-3, 5.0
    with pytest.raises(RunConfigError) as info:
        open_run_dir(run, other, resume=True, overwrite=False, resumable=RL_RESUMABLE)
    message = str(info.value)
    assert "\n" not in message
    assert "agent.core: run 'srwm', now 'lstm'" in message
    assert "learning_rate: run 0.0006, now 0.001" in message
    assert "log_every_seconds: run" not in message  # resumable: not a reason to refuse
    longer = rl_defaults()
    longer.total_steps *= 2
    with pytest.raises(RunConfigError, match="total_steps: run 300000000, now 600000000 "
                                             r"\(the learning rate decays"):
        open_run_dir(run, longer, resume=True, overwrite=False, resumable=RL_RESUMABLE,
                     locked=rl_checks.locked_fields(longer))
    assert (run / "config.json").read_text() == before  # never rewritten with another config

    tweaked = rl_defaults()
    tweaked.log_every_seconds, tweaked.max_minutes = 5.0, 30.0
    same, changes = open_run_dir(run, tweaked, resume=True, overwrite=False, resumable=RL_RESUMABLE)
    assert same == fingerprint and sorted(changes) == ["log_every_seconds: 30.0 -> 5.0",
                                                       "max_minutes: 0.0 -> 30.0"]
    assert load_config(run).log_every_seconds == 5.0
    assert workdir_fingerprint(run, RL_RESUMABLE) == fingerprint  # old checkpoints still match

    new, _ = open_run_dir(run, other, resume=True, overwrite=True, resumable=RL_RESUMABLE)
    assert new != fingerprint and not (run / "checkpoints").exists()
    assert load_config(run).agent.core == "lstm"

    orphan = tmp_path / "orphan"
    (orphan / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(RunConfigError, match="no config.json"):
        open_run_dir(orphan, rl_defaults(), resume=True, overwrite=False, resumable=RL_RESUMABLE)

    # --overwrite never deletes a folder that holds other runs (a mistyped parent --workdir).
    (tmp_path / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(RunConfigError, match=r"also holds other runs \(orphan, run\)"):
        open_run_dir(tmp_path, rl_defaults(), resume=True, overwrite=True, resumable=RL_RESUMABLE)
    assert (run / "config.json").exists() and (orphan / "checkpoints" / "3").exists()


@pytest.mark.parametrize("schedule, may_extend", [("constant", True), ("warmup", True),
                                                  ("cosine", False), ("decay_end", False)])
def test_fewshot_total_steps_may_change_only_without_a_schedule_over_it(tmp_path, schedule,
                                                                        may_extend):
    config = fewshot_defaults()
    config.schedule = schedule
    kw = dict(resumable=fewshot_checks.RESUMABLE_FIELDS,
              locked=fewshot_checks.locked_fields(config))
    open_run_dir(tmp_path, config, resume=True, overwrite=False, **kw)
    longer = fewshot_defaults()
    longer.schedule, longer.total_steps = schedule, config.total_steps + 1000
    if may_extend:
        open_run_dir(tmp_path, longer, resume=True, overwrite=False, **kw)
        assert load_config(tmp_path).total_steps == config.total_steps + 1000
    else:
        with pytest.raises(RunConfigError, match=f"total_steps: .*the {schedule} learning-rate"):
            open_run_dir(tmp_path, longer, resume=True, overwrite=False, **kw)


# --- RL: a periodic save on the final step; a second run; another run's config.json ---------

def _rl_factory(i):
    return FakeEnv(2, seed=i)


def _rl_config(**overrides):
    # checkpoint_every_minutes=0: a periodic save after every update, the last one on the
    # final env step, where the final save used to raise StepAlreadyExistsError.
    return _tiny_config(**dict(dict(total_steps=100, checkpoint_every_minutes=0.0), **overrides))


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    """A finished tiny RL run (FakeEnv) whose last periodic save is on its final step."""
    workdir = tmp_path_factory.mktemp("rl_run")
    summary = rl_train(_rl_config(), str(workdir), env_factory=_rl_factory, use_tensorboard=False)
    return workdir, summary


def test_rl_periodic_save_on_the_final_step_and_no_mixed_runs(rl_run, tmp_path):
    factory = _rl_factory
    workdir, summary = rl_run
    assert summary["env_steps"] == 100 and not summary["interrupted"]
    assert step_dirs(workdir / "checkpoints")[-1] == 100
    assert (workdir / "learning_curves.png").exists()  # what comes after the final save ran
    shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)

    before = snapshot(tmp_path)
    shorter = _rl_config(total_steps=60)
    with pytest.raises(RunConfigError, match="total_steps: run 100, now 60"):
        rl_train(shorter, str(tmp_path), env_factory=factory, use_tensorboard=False)
    assert snapshot(tmp_path) == before  # refused before anything was written

    _, _, env_steps = load_for_eval(str(tmp_path), rl_defaults())
    assert env_steps == 100
    data = json.loads((tmp_path / "config.json").read_text())
    data["learning_rate"] = 0.5  # as if another run's config.json landed beside these checkpoints
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="made under another config"):
        load_for_eval(str(tmp_path), rl_defaults())

    summary = rl_train(shorter, str(tmp_path), env_factory=factory, use_tensorboard=False,
                       overwrite=True)  # --overwrite: the old run is deleted first
    assert summary["env_steps"] == 60 and step_dirs(tmp_path / "checkpoints")[-1] == 60
    assert load_config(tmp_path).total_steps == 60
    assert max(m["step"] for m in read_metrics(tmp_path)) == 60  # the old run's metrics are gone


def _corrupt_latest(checkpoints_dir, only_arrays=False):
    """Overwrites every file of the newest step with garbage, or (only_arrays) truncates the
    array data files only, leaving the metadata readable (TensorStore fails on them)."""
    latest = checkpoints_dir / str(step_dirs(checkpoints_dir)[-1])
    for f in latest.rglob("*"):
        if not f.is_file() or f.stat().st_size == 0:
            continue
        if not only_arrays:
            f.write_bytes(b"garbage")
        elif f.parent.name == "d" and f.parent.parent.name.startswith("ocdbt"):
            f.write_bytes(f.read_bytes()[:64])


def test_rl_corrupt_checkpoint_is_one_error_line_in_both_clis(rl_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(rl_run[0], workdir)
    _corrupt_latest(workdir / "checkpoints", only_arrays=True)
    config_file = tmp_path / "tiny.py"  # the same config through the CLI's --config
    config_file.write_text(f"import sys\nsys.path.insert(0, {str(REPO_ROOT / 'tests')!r})\n"
                           "from test_rl_sebulba import _tiny_config\n\n\n"
                           "def get_config():\n"
                           "    return _tiny_config(total_steps=100, "
                           "checkpoint_every_minutes=0.0)\n")
    env = python_env()
    r = run_bounded(["-m", "rl.train", "--config", config_file, "--workdir", workdir], env)
    assert r.returncode == 2
    assert "could not be restored" in one_error_line(r.stderr) and str(workdir) in r.stderr
    r = run_bounded(["-m", "rl.evaluate", "--workdir", workdir], env)
    assert r.returncode == 2
    assert "could not be restored" in one_error_line(r.stderr)


HUNG_CLI = """
import sys
from absl import app
import rl.train as cli
import rl.training
from rl.fake_env import FakeEnv
factory = lambda i: FakeEnv(2, seed=i, hang_after=1)  # no unroll at all: nothing to compile
cli.procgen_available = lambda: (True, "")
cli.train_and_evaluate = lambda c, w, **kw: rl.training.train_and_evaluate(
    c, w, env_factory=factory, use_tensorboard=False, **kw)
sys.argv = ["rl.train", "--config", sys.argv[1], "--workdir", sys.argv[2],
            "--config.unroll_timeout_seconds=6"]
app.run(cli.main)
"""


def test_rl_impala_hung_actor_is_one_error_line(tmp_path):
    config_file = tmp_path / "tiny.py"
    config_file.write_text(f"import sys\nsys.path.insert(0, {str(REPO_ROOT / 'tests')!r})\n"
                           "from test_rl_sebulba import _tiny_config\n\n\n"
                           "def get_config():\n    return _tiny_config(total_steps=100_000)\n")
    r = run_bounded(["-c", HUNG_CLI, config_file, tmp_path / "run"], python_env(), timeout=150)
    assert r.returncode == 1, r.stderr[-3000:]
    line = one_error_line(r.stderr)
    assert line.startswith("error: actor-0 delivered no unroll") and "limit 6 s" in line


def test_actor_failure_lines_name_the_cause_and_its_last_frames():
    def act():
        raise RuntimeError("fake env exploded")
    try:
        try:
            act()
        except RuntimeError as e:
            raise ActorFailed(
                "actor-1 failed with RuntimeError: fake env exploded\nTraceback ...") from e
    except ActorFailed as e:
        lines = error_lines(e)
    assert lines[0] == "error: actor-1 failed with RuntimeError: fake env exploded"
    assert len(lines) == 3 and lines[-1].endswith('in act: raise RuntimeError("fake env exploded")')
    assert "test_workdirs.py" in lines[-1]


# --- few-shot: Ctrl-C right after a checkpoint; corrupt checkpoints in the CLIs ----------------

def _fewshot_config(**overrides):
    c = smoke_config()
    c.data_dir = str(OMNIGLOT_DIR)
    c.update(dict(total_steps=8, log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=4,
                  val_episodes=20, conv_channels=8, hidden_size=16, batch_size=8,
                  model="lstm"))  # (the quickest to compile; the model does not matter here)
    c.update(overrides)
    return c


FEWSHOT_FLAGS = ["--config", "configs/fewshot/omniglot_smoke.py",
                 f"--config.data_dir={OMNIGLOT_DIR}",
                 "--config.total_steps=8", "--config.log_every_steps=2",
                 "--config.eval_every_steps=4",
                 "--config.checkpoint_every_steps=4", "--config.val_episodes=20",
                 "--config.conv_channels=8", "--config.hidden_size=16", "--config.batch_size=8",
                 "--config.model=lstm"]


@pytest.mark.omniglot
def test_fewshot_ctrl_c_after_a_checkpoint_then_corrupt_checkpoints(tmp_path, monkeypatch):
    interrupts = []

    class InterruptAfterStep4(Checkpoints):
        def save(self, step, tree):  # Ctrl-C lands just after the periodic save of step 4
            saved = super().save(step, tree)
            if step == 4 and not interrupts:
                interrupts.append(step)
                raise KeyboardInterrupt
            return saved

    monkeypatch.setattr(run_context, "Checkpoints", InterruptAfterStep4)
    state = fewshot_training.train_and_evaluate(_fewshot_config(), str(tmp_path))
    assert interrupts == [4] and int(state.step) == 4  # the Ctrl-C save found step 4 held
    assert step_dirs(tmp_path / "checkpoints") == [4]
    monkeypatch.setattr(run_context, "Checkpoints", Checkpoints)
    with pytest.raises(RunConfigError, match="already holds a run"):
        fewshot_training.train_and_evaluate(_fewshot_config(), str(tmp_path), resume=False)
    with pytest.raises(RunConfigError, match="hidden_size: run 16, now 32"):
        fewshot_training.train_and_evaluate(_fewshot_config(hidden_size=32), str(tmp_path))
    # (Resuming runs on is tests/test_fault_injection.py's.)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path, corrupt, ignore=shutil.ignore_patterns("tensorboard"))
    _corrupt_latest(corrupt / "checkpoints")
    _corrupt_latest(corrupt / "best")
    env = python_env()
    r = run_bounded(["-m", "fewshot.train", *FEWSHOT_FLAGS, "--config.total_steps=12",
                     "--workdir", corrupt], env)
    assert r.returncode == 2 and "could not be restored" in one_error_line(r.stderr)
    r = run_bounded(["-m", "fewshot.evaluate", "--workdir", corrupt, "--num_sets", "2",
                     "--episodes_per_set", "10"], env)
    assert r.returncode == 2 and "could not be restored" in one_error_line(r.stderr)


UNRAISABLE = """
import types
from srwm_jax.training import checkpoints

@types.coroutine
def suspend():
    yield

def dropped_read(filename):
    # A suspended coroutine whose clean-up raises when it is collected: Python reports it as
    # "Exception ignored in: <coroutine ...>" with a traceback (what orbax's array reads do
    # after the first one failed).
    ns = {"suspend": suspend}
    exec(compile("async def read():\\n    try:\\n        await suspend()\\n    finally:\\n"
                 "        raise Exception('secondary read failed')\\n", filename, "exec"), ns)
    coro = ns["read"]()
    coro.send(None)
    del coro

checkpoints._hide_orbax_unraisable()
dropped_read("/site-packages/orbax/checkpoint/serialization.py")
dropped_read("/elsewhere/mine.py")
"""


def test_orbax_secondary_read_failures_are_not_printed(tmp_path):
    """After a failed restore, orbax's unretrieved coroutine errors are dropped (one error line
    stays one line); any other unraisable exception is still printed."""
    r = run_bounded(["-c", UNRAISABLE], python_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("secondary read failed") == 1, r.stderr[-2000:]
    assert "mine.py" in r.stderr and "orbax" not in r.stderr, r.stderr[-2000:]
