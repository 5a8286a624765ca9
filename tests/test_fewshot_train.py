"""Few-shot training end to end on the real Omniglot data: learns, resumes exactly, splits over
devices with the same loss, and reports bad input clearly."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import OMNIGLOT_DIR, REPO_ROOT

from configs.fewshot.omniglot_smoke import get_config as smoke_config
from srwm_jax.training.metrics import read_metrics

REPO, DATA = REPO_ROOT, OMNIGLOT_DIR
pytestmark = pytest.mark.omniglot


def run(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.update(kw.pop("env", {}))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 900), **kw)


def config(**overrides):
    c = smoke_config()
    c.data_dir = str(DATA)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_smoke_training_learns_and_evaluates(tmp_path):
    """The CI smoke run: a tiny SRWM learns 2-way 1-shot Omniglot clearly above chance (50%)."""
    workdir = tmp_path / "run"
    r = run(["-m", "fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             "--workdir", str(workdir), f"--config.data_dir={DATA}"])
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = read_metrics(workdir)
    valid = [m["accuracy"] for m in metrics if m["split"] == "valid"]
    assert valid and max(valid) >= 0.65, valid
    r = run(["-m", "fewshot.evaluate", "--workdir", str(workdir), "--num_sets", "2",
             "--episodes_per_set", "200"])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((workdir / "eval_test.json").read_text())
    assert result["accuracy"] >= 0.65 and result["num_sets"] == 2
    assert "| omniglot 2-way 1-shot | srwm |" in r.stdout
    assert any(p.name.startswith("events") for p in (workdir / "tensorboard").iterdir())


def test_resume_gives_identical_results(tmp_path):
    """Stopping after a checkpoint and resuming reproduces the uninterrupted run exactly."""
    from fewshot.training import train_and_evaluate
    kw = dict(total_steps=20, log_every_steps=5, eval_every_steps=10, checkpoint_every_steps=10,
              val_episodes=50, conv_channels=8, hidden_size=16)
    full = train_and_evaluate(config(**kw), str(tmp_path / "full"))
    train_and_evaluate(config(**dict(kw, total_steps=10)), str(tmp_path / "split"))
    resumed = train_and_evaluate(config(**kw), str(tmp_path / "split"))
    assert int(resumed.step) == 20
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    last = lambda d: [m for m in read_metrics(d) if m["split"] == "train"][-1]  # noqa: E731
    assert last(tmp_path / "full")["loss"] == last(tmp_path / "split")["loss"]


def test_data_parallel_matches_single_device(tmp_path):
    """One train step on 4 CPU devices gives the loss and parameters of one device."""
    script = r"""
import json, sys, jax, numpy as np
from configs.fewshot.omniglot_smoke import get_config
from fewshot.training import build, initial_state, make_sampler
c = get_config(); c.data_dir = sys.argv[1]; c.batch_size = 8
c.conv_channels = 8; c.hidden_size = 16
sampler = make_sampler(c, "train", c.seed)
model, opt, mesh, train_step, _ = build(c)
state = initial_state(c, model, opt, mesh, sampler.sample(1, 0))
state, m = train_step(state, mesh.put_batch(sampler.sample(c.batch_size, 0)), jax.random.key(0))
leaf = np.asarray(jax.tree.leaves(state.params)[0]).ravel()[:8].tolist()
print(json.dumps({"devices": jax.device_count(), "loss": float(m["loss"]), "leaf": leaf}))
"""
    outs = []
    for n in (1, 4):
        r = run(["-c", script, str(DATA)],
                env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"})
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert [o["devices"] for o in outs] == [1, 4]
    np.testing.assert_allclose(outs[0]["loss"], outs[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(outs[0]["leaf"], outs[1]["leaf"], rtol=1e-4, atol=1e-6)


def test_bad_inputs_give_one_clear_error(tmp_path):
    r = run(["-m", "fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             "--workdir", str(tmp_path / "a"), "--config.data_dir=/nonexistent/omniglot"])
    assert r.returncode == 2 and "error:" in r.stderr and "/nonexistent/omniglot" in r.stderr
    r = run(["-m", "fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             "--workdir", str(tmp_path / "b"), "--config.bogus_key=3"])
    assert r.returncode != 0 and "bogus_key" in r.stderr
    r = run(["-m", "fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             "--workdir", str(tmp_path / "c"), f"--config.data_dir={DATA}", "--config.model=gru"])
    assert r.returncode == 2 and "config.model='gru'" in r.stderr
    r = run(["-m", "fewshot.train", "--config", "configs/fewshot/omniglot_smoke.py",
             "--workdir", str(tmp_path / "d"), f"--config.data_dir={DATA}",
             "--config.train_queries=0"])
    assert r.returncode == 2 and "config.train_queries=0" in r.stderr
    r = run(["-m", "fewshot.evaluate", "--workdir", str(tmp_path / "missing")])
    assert r.returncode == 2 and "config.json" in r.stderr


def test_corrupt_checkpoint_is_reported(tmp_path):
    from fewshot.training import train_and_evaluate
    kw = dict(total_steps=4, log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=2,
              val_episodes=20, conv_channels=8, hidden_size=16)
    train_and_evaluate(config(**kw), str(tmp_path))
    latest = max((tmp_path / "checkpoints").iterdir(),
                 key=lambda p: int(p.name) if p.name.isdigit() else -1)
    for f in latest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="could not be restored"):
        train_and_evaluate(config(**dict(kw, total_steps=6)), str(tmp_path))
