"""Sebulba loop: end to end (fake env and real ProcGen), failure propagation, resume, CLI errors,
and the data-parallel learner on several host devices."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs.rl import ff_cpu
from rl.envs import procgen_available
from rl.fake_env import FakeEnv
from rl.sebulba import ActorFailed
from rl.training import train_and_evaluate
from srwm_jax.training.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(**overrides):
    c = ff_cpu.get_config()
    c.frame_shape = (16, 16, 3)
    c.num_actor_threads = 2
    c.unroll_length = 5
    c.batch_size = 4
    c.queue_size = 1
    c.total_steps = 200
    c.max_minutes = 0.0
    c.eval_episodes = 0
    c.log_every_seconds = 0.0
    c.checkpoint_every_minutes = 100.0
    c.update(overrides)
    return c


def test_fake_env_loop_learns_resumes_and_bounds_policy_lag(tmp_path):
    config = _tiny_config(total_steps=1000)
    summary = train_and_evaluate(config, str(tmp_path), env_factory=lambda i: FakeEnv(2, seed=i),
                                 use_tensorboard=False)
    assert summary["env_steps"] == 1000 and summary["updates"] == 50
    # FakeEnv pays 1 for action 0 only; episodes last 5-6 steps. Random policy: ~5.5/15 = 0.37
    # per episode; the whole pipeline (actor logits/actions, V-trace alignment, loss signs)
    # must find action 0 within 50 updates (measured: 5.4 of 5.5).
    assert summary["progress"]["mean_returns"]["starpilot"] > 3.0
    # Back-pressure bounds the lag: queue_size + num_actor_threads + 1 (see rl/sebulba.py).
    assert summary["progress"]["policy_lag_max"] <= config.queue_size + config.num_actor_threads + 1
    assert os.path.exists(tmp_path / "train_returns.csv")
    assert os.path.exists(tmp_path / "learning_curves.png")
    # Resuming the finished run restores its env steps / update count and ends at once (its
    # final checkpoint step is already held: not saved twice).
    summary = train_and_evaluate(config, str(tmp_path), resume=True,
                                 env_factory=lambda i: FakeEnv(2, seed=i), use_tensorboard=False)
    assert summary["env_steps"] == 1000 and summary["updates"] == 50
    assert os.path.isdir(tmp_path / "tensorboard") is False  # use_tensorboard=False
    assert any(m["split"] == "loss" for m in read_metrics(tmp_path))
    # resume=False (--noresume) refuses a workdir that holds a run, as in few-shot.
    with pytest.raises(ValueError, match="already holds a run"):
        train_and_evaluate(config, str(tmp_path), resume=False,
                           env_factory=lambda i: FakeEnv(2, seed=i), use_tensorboard=False)


def test_actor_exception_stops_the_run(tmp_path):
    config = _tiny_config(total_steps=10_000)
    factory = lambda i: FakeEnv(2, fail_after=7 if i == 1 else None)  # noqa: E731
    with pytest.raises(ActorFailed, match="fake env exploded") as info:
        train_and_evaluate(config, str(tmp_path), env_factory=factory, use_tensorboard=False)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_bad_config_key_is_one_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rl.train", "--config", "configs/rl/ff_cpu.py",
         "--workdir", str(tmp_path), "--config.no_such_key=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown config key 'no_such_key'" in proc.stderr


@pytest.mark.skipif(not procgen_available()[0], reason=procgen_available()[1])
def test_procgen_two_actor_threads_end_to_end(tmp_path):
    config = ff_cpu.get_config()
    config.update(dict(num_actor_threads=2, envs_per_game=2, unroll_length=10, batch_size=4,
                       queue_size=1, total_steps=320, max_minutes=0.0, log_every_seconds=0.0,
                       eval_episodes=2, eval_max_steps=50, eval_splits=((1000, 200),)))
    summary = train_and_evaluate(config, str(tmp_path), use_tensorboard=False)
    assert summary["env_steps"] == 320
    assert np.isfinite(summary["progress"]["sps"])
    assert os.path.exists(tmp_path / "eval.csv")


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from rl.fake_env import FakeEnv
    from rl.agent import make_agent
    from rl.learner import Batch, Learner, init_params
    from rl.training import train_and_evaluate
    from test_rl_sebulba import _tiny_config
    n = len(jax.devices()); assert n == int(sys.argv[1]), jax.devices()
    config = _tiny_config(batch_size=n)
    agent = make_agent(config)
    params = init_params(agent, jax.random.key(0), config.frame_shape)
    rng = np.random.default_rng(0)
    B, T = n, 3
    batch = Batch(rng.integers(0, 256, (B, T + 1, 16, 16, 3), dtype=np.uint8),
                  rng.normal(size=(B, T + 1)).astype(np.float32),
                  rng.uniform(size=(B, T + 1)) < 0.2,
                  rng.integers(0, 15, (B, T)).astype(np.int32),
                  rng.normal(size=(B, T, 15)).astype(np.float32), ())
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        learner = Learner(agent, config, 10, devices=devices)
        state, _ = learner.update(learner.init_state(params), batch)
        results.append(jax.device_get(state.params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), *results)
    # Sebulba: actor on device 0, learner data parallel over all devices.
    config.actor_device_ids = (0,)
    config.learner_device_ids = tuple(range(n))
    config.total_steps = 5 * n * 4
    import tempfile
    summary = train_and_evaluate(config, tempfile.mkdtemp(), use_tensorboard=False,
                                 env_factory=lambda i: FakeEnv(n, seed=i))
    assert summary["updates"] == 4, summary
    print("OK", n)
""")


# 2 by default (CI time); e.g. RL_TEST_DEVICE_COUNTS=2,4,8 for more.
@pytest.mark.parametrize("num_devices", [int(n) for n in os.environ.get(
    "RL_TEST_DEVICE_COUNTS", "2").split(",")])
def test_data_parallel_learner_on_host_devices(num_devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(num_devices)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"OK {num_devices}" in proc.stdout


def test_eval_rows_print_sem_and_csv_keeps_its_columns(tmp_path):
    import csv

    from rl.evaluation import EVAL_FIELDS, append_eval_csv, format_eval
    rows = [dict(split="train_sampled", game="starpilot", mean_return=2.5, sem=0.25, normalized=0.0,
                 episodes=200),
            dict(split="train_sampled", game="ALL", mean_return=2.5, normalized=0.0, episodes=200)]
    text = format_eval(rows)
    assert "return     2.50 +- 0.25" in text and text.count("+-") == 1
    path = tmp_path / "eval.csv"
    append_eval_csv(path, 100, rows)
    append_eval_csv(path, 200, rows)
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == EVAL_FIELDS and len(read) == 4 and read[2]["step"] == "200"
