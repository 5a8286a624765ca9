"""Sebulba liveness: a hung env stops the run with an error naming the actor (and the process
exits non-zero without saving), an actor error is always the cause whatever the timing, and
actors end when the learner is gone. Every wait here is bounded (get_batch timeout, subprocess
timeout, join deadlines), so a regression fails instead of hanging CI."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from rl.agent import make_agent
from rl.fake_env import FakeEnv
from rl.sebulba import ActorFailed, ActorStalled, SebulbaRunner, unroll_timeout
from rl.learner import init_params

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_rl_sebulba import REPO, _tiny_config  # noqa: E402

BOUND = 30.0  # seconds any single wait in these tests may take before it counts as a hang


@pytest.fixture(scope="module")
def agent_params():
    config = _tiny_config()
    agent = make_agent(config)
    return agent, init_params(agent, jax.random.key(0), config.frame_shape)


def _runner(agent_params, env_factory, **overrides):
    agent, params = agent_params
    runner = SebulbaRunner(agent, _tiny_config(**overrides), params, env_factory=env_factory)
    # Compile the policy before the actors start, so that compile time (slow on a loaded CI
    # machine) never counts against the short unroll timeouts used here.
    n, put = 2, lambda x: jax.device_put(x, runner.actor_devices[0])  # as the actors call it
    jax.block_until_ready(runner._policy(
        put(params), put(agent.initial_state(n)), put(np.zeros((n, 16, 16, 3), np.uint8)),
        put(np.zeros(n, np.float32)), put(np.ones(n, bool)),
        jax.random.fold_in(jax.random.key(0), 0)))
    return runner


def _threads_end(threads, seconds):
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


def test_timeout_default_scales_with_the_unroll_and_config_overrides_it():
    c = _tiny_config(unroll_timeout_seconds=0.0, unroll_length=50, envs_per_game=24)
    assert unroll_timeout(c) == pytest.approx(180 + 0.05 * 50 * 24)
    c.unroll_length = 100
    assert unroll_timeout(c) == pytest.approx(180 + 0.05 * 100 * 24)
    c.unroll_timeout_seconds = 7.5
    assert unroll_timeout(c) == 7.5


def test_hung_env_is_named_and_the_other_actors_end(agent_params):
    release = threading.Event()  # lets the hung thread finish once the test is done
    factory = lambda i: FakeEnv(2, seed=i, hang_after=7 if i == 1 else None,  # noqa: E731
                                release=release, act_delay=0.02)
    runner = _runner(agent_params, factory, unroll_timeout_seconds=3.0)
    t0 = time.monotonic()
    try:
        with runner, pytest.raises(ActorStalled) as info:
            while True:  # actor 0 keeps delivering; actor 1 hangs in its 7th env.act (unroll 1)
                runner.get_batch(2, timeout=BOUND)
        elapsed = time.monotonic() - t0
        message = str(info.value)
        assert "actor-1 delivered no unroll" in message, message
        assert "env.act (step 2 of 5, unroll 1)" in message, message
        assert "limit 3 s" in message and "unroll_timeout_seconds" in message
        assert 3.0 < elapsed < 3.0 + 10.0, elapsed
        # The healthy actor ended with close() (the `with` exit); the hung one is still in act.
        assert _threads_end(runner._threads[:1], 5.0) == []
        assert runner._threads[1].is_alive()
    finally:
        release.set()
    assert _threads_end(runner._threads, BOUND) == []


def test_slow_but_live_actors_are_not_stalled(agent_params):
    # Unrolls of 5 acts x up to 0.1 s each take < 1 s: far below the 4 s limit, with injected
    # delays in the learner too (actors then wait on the full queue, which does not count).
    factory = lambda i: FakeEnv(2, seed=i, act_delay=0.1)  # noqa: E731
    rng = np.random.default_rng(1)
    with _runner(agent_params, factory, unroll_timeout_seconds=4.0) as runner:
        for i in range(4):
            runner.get_batch(2, timeout=BOUND)
            time.sleep(1.5 if i == 1 else rng.uniform(0, 0.2))


class _RacyRunner(SebulbaRunner):
    """check_errors() passes, then an actor fails before the learner looks at `stop`."""

    def check_errors(self):
        super().check_errors()
        assert self.stop.wait(timeout=BOUND)


@pytest.mark.parametrize("seed", range(3))
def test_actor_error_is_the_cause_whatever_the_timing(agent_params, seed):
    rng = np.random.default_rng(seed)
    failing, fail_after = int(rng.integers(2)), int(rng.integers(1, 25))
    if seed == 0:  # the racy learner takes nothing before the failure: fail in the 1st unroll
        fail_after = 3
    factory = lambda i: FakeEnv(2, seed=i, act_delay=0.01,  # noqa: E731
                                fail_after=fail_after if i == failing else None)
    agent, params = agent_params
    # Seed 0: the error lands exactly between the learner's check_errors() and its stop check
    # (the window that used to give a bare "runner stopped"); other seeds: random step, random
    # learner delays.
    cls = _RacyRunner if seed == 0 else SebulbaRunner
    runner = cls(agent, _tiny_config(unroll_timeout_seconds=BOUND), params, env_factory=factory)
    with runner, pytest.raises(ActorFailed, match="fake env exploded") as info:
        for _ in range(100):
            runner.get_batch(2, timeout=BOUND)
            time.sleep(rng.uniform(0, 0.05))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "fake env exploded"
    assert f"actor-{failing} failed" in str(info.value)


def test_actors_on_a_full_queue_end_when_the_learner_thread_dies(agent_params):
    holder = {}

    def learner():  # starts the actors, takes one batch
        runner = holder["runner"] = _runner(agent_params, lambda i: FakeEnv(2, seed=i))
        runner.start()
        runner.get_batch(2, timeout=BOUND)
        # ... and ends here as if it had crashed: no close(), no stop.

    thread = threading.Thread(target=learner)
    thread.start()
    thread.join(timeout=BOUND)
    assert not thread.is_alive()
    runner = holder["runner"]
    assert _threads_end(runner._threads, 10.0) == []
    assert runner.stop.is_set()


HUNG_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    from rl.fake_env import FakeEnv
    from rl.training import train_and_evaluate
    from test_rl_sebulba import _tiny_config
    config = _tiny_config(total_steps=100_000, unroll_timeout_seconds=6.0)
    train_and_evaluate(config, sys.argv[1], use_tensorboard=False,
                       env_factory=lambda i: FakeEnv(2, seed=i, hang_after=30 if i == 0 else None))
""")


def test_hung_env_ends_the_training_process_nonzero_without_saving(tmp_path):
    # The process must end although a daemon thread is stuck in env.act for ever, with the
    # stall as its error, and without the final checkpoint (no periodic ones in 100 minutes).
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HUNG_RUN, str(tmp_path)], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode != 0
    assert "ActorStalled: actor-0 delivered no unroll" in proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 150
    checkpoints = tmp_path / "checkpoints"
    assert not checkpoints.exists() or os.listdir(checkpoints) == [], os.listdir(checkpoints)
