"""Sebulba RL across processes on loopback (jax.distributed, CPU devices, gloo collectives).

- The learner update on fixed batches: 2 processes x 1 device, each feeding its rows of a
  batch that is a pure function of the update index, give the per-update losses and the
  parameters of 1 process x 2 devices (actors are timing-dependent, so the comparison of
  losses goes through the learner with identical batches), and bit-identical parameters in
  both processes after every update.
- The whole loop: 2 processes, each with its own actor threads and FakeEnvs, 300 env steps,
  parameters asserted bit-identical after every update (config.params_check_every_updates=1),
  the same final parameters in both, files written once.
- A killed process (here the coordinator, process 0) ends the other with an error, no hang.

Processes get the distributed settings from JAX_NUM_PROCESSES / JAX_PROCESS_ID /
JAX_COORDINATOR_ADDRESS (the CLIs' flags are tested in test_fewshot_distributed.py).
"""
import json
import os
import signal
import textwrap
import time

import numpy as np

from process_group import (HEARTBEAT, assert_survivor_fails, kill_all, launch, log_text, wait_all,
                           wait_until)

_PRELUDE = f"""
import json, sys
import numpy as np
import jax
from srwm_jax.training import distributed
distributed.initialize(heartbeat_timeout_seconds={HEARTBEAT})
from configs.rl import ff_cpu

def tiny_config(**overrides):
    c = ff_cpu.get_config()
    c.frame_shape = (16, 16, 3)
    c.num_actor_threads = 1
    c.unroll_length = 5
    c.batch_size = 4
    c.queue_size = 1
    c.max_minutes = 0.0
    c.eval_episodes = 0
    c.log_every_seconds = 0.0
    c.checkpoint_every_minutes = 100.0
    c.params_check_every_updates = 1
    c.update(overrides)
    return c
"""

FIXED_BATCHES = _PRELUDE + """
from rl.agent import make_agent
from rl.learner import Batch, Learner, init_params
UPDATES = 6
config = tiny_config()
agent = make_agent(config)
learner = Learner(agent, config, num_updates=UPDATES)
state = learner.init_state(init_params(agent, jax.random.key(0), config.frame_shape))
B, T, A = config.batch_size, config.unroll_length, config.num_actions
rows = learner.parallel.process_rows(B)
losses = []
for update in range(UPDATES):
    rng = np.random.default_rng([update])  # the global batch: a function of the update index
    batch = Batch(frames=rng.integers(0, 256, (B, T + 1, 16, 16, 3), dtype=np.uint8),
                  rewards=rng.uniform(-1, 1, (B, T + 1)).astype(np.float32),
                  firsts=rng.random((B, T + 1)) < 0.2,
                  actions=rng.integers(0, A, (B, T)).astype(np.int32),
                  behaviour_logits=rng.normal(size=(B, T, A)).astype(np.float32),
                  initial_state=jax.tree.map(np.asarray, agent.initial_state(B)))
    state, metrics = learner.update(state, jax.tree.map(lambda a: a[rows], batch))
    losses.append(float(metrics["loss"]))
    distributed.check_identical(state.params, f"parameters after update {update + 1}")
if jax.process_count() > 1:  # a process that drifts by one ulp is caught, in every process
    host = jax.tree.map(np.array, distributed.local_copy(state.params))
    leaf = jax.tree.leaves(host)[0].reshape(-1)
    if jax.process_index() == 1:
        leaf[0] = np.nextafter(leaf[0], np.float32(np.inf))
    try:
        distributed.check_identical(host)
    except distributed.DivergedError as e:
        print("DIVERGED " + str(e).splitlines()[0], flush=True)
if distributed.is_main_process():
    leaves = jax.tree.leaves(distributed.local_copy(state.params))
    np.save(sys.argv[1], np.concatenate([np.asarray(x).ravel() for x in leaves]))
    print("RESULT " + json.dumps({"losses": losses, "devices": jax.device_count(),
                                  "processes": jax.process_count()}), flush=True)
"""

LOOP = _PRELUDE + """
from rl.fake_env import FakeEnv
from rl.training import train_and_evaluate
config = tiny_config(total_steps=int(sys.argv[2]))
summary = train_and_evaluate(config, sys.argv[1], env_factory=lambda i: FakeEnv(2, seed=i),
                             use_tensorboard=False)
print("RESULT " + json.dumps({"updates": summary["updates"], "env_steps": summary["env_steps"],
                              "checksum":
                                  distributed.params_checksum(summary["train_state"].params),
                              "process": jax.process_index()}), flush=True)
"""


def result(proc) -> dict:
    lines = [line for line in log_text(proc).splitlines() if line.startswith("RESULT ")]
    assert lines, log_text(proc)[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def script(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_learner_on_fixed_batches_two_processes_match_one(tmp_path):
    worker = script(tmp_path, "fixed", FIXED_BATCHES)
    one = launch(1, 2, [worker, str(tmp_path / "one.npy")], str(tmp_path / "one"), via="env")
    two = launch(2, 1, [worker, str(tmp_path / "two.npy")], str(tmp_path / "two"), via="env")
    wait_all([one, two], timeout=400)
    r1, r2 = result(one[0]), result(two[0])
    assert (r1["devices"], r1["processes"], r2["devices"], r2["processes"]) == (2, 1, 2, 2)
    # Bit-identical after every update (check_identical raised otherwise), and a one-ulp
    # difference planted in process 1 afterwards is reported by both processes.
    for p in two:
        assert "DIVERGED parameters differ between processes" in log_text(p), log_text(p)[-2000:]
    # Same global batches on 2 devices: same loss (sum over T and B; float32 rounding of the
    # differently ordered all-reduce only).
    np.testing.assert_allclose(r2["losses"], r1["losses"], rtol=1e-5)
    p1, p2 = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    diff = float(np.max(np.abs(p1 - p2)))
    print(f"RL learner 2x1 vs 1x2 after 6 updates: max |param diff| {diff:.2e}")
    assert diff < 1e-5, diff


def test_sebulba_loop_on_two_processes(tmp_path):
    worker = script(tmp_path, "loop", LOOP)
    workdir = tmp_path / "run"
    procs = launch(2, 1, [worker, str(workdir), "300"], str(workdir), via="env")
    wait_all([procs], timeout=400)
    results = [result(p) for p in procs]
    # 300 env steps of 20 per update (unroll 5 x global batch 4: 2 unrolls per process).
    assert [r["updates"] for r in results] == [15, 15]
    assert [r["env_steps"] for r in results] == [300, 300]
    # Bit-identical after every update (else DivergedError would have ended the run) and at
    # the end.
    assert results[0]["checksum"] == results[1]["checksum"]
    # Written once: one loss record per update (log_every_seconds=0), one CSV header.
    with open(workdir / "metrics.jsonl") as f:
        loss_records = [r for r in map(json.loads, f) if r["split"] == "loss"]
    assert len(loss_records) == 16  # 15 updates + the final report
    with open(workdir / "train_returns.csv") as f:
        assert sum(line.startswith("step,") for line in f) == 1
    assert "300" in os.listdir(workdir / "checkpoints")


def test_killed_process_ends_the_rl_run(tmp_path):
    worker = script(tmp_path, "loop", LOOP)
    workdir = tmp_path / "run"
    procs = launch(2, 1, [worker, str(workdir), "10000000"], str(workdir), via="env")
    try:
        def trained():
            if not (workdir / "metrics.jsonl").exists():
                return False
            with open(workdir / "metrics.jsonl") as f:
                return any('"split": "loss"' in line for line in f)
        wait_until(trained, procs, 300, "learner update")
        # Here the coordinator (process 0) dies; test_fewshot_distributed kills process 1.
        os.killpg(procs[0].pid, signal.SIGKILL)
        waited = assert_survivor_fails(procs[1], time.monotonic(), HEARTBEAT + 60)
        print(f"RL survivor exited {waited:.1f} s after the kill (heartbeat {HEARTBEAT} s)")
    finally:
        kill_all(procs)


MAIN_ONLY_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax
    from srwm_jax.training import distributed
    # A short exit barrier: a process that leaves before process 0 has finished its block
    # would give up there and abort.
    distributed.initialize(heartbeat_timeout_seconds=10, shutdown_timeout_seconds=3)
    with distributed.main_process_only("slow evaluation") as main:
        if main:
            time.sleep(8)
    print("left", jax.process_index(), time.time(), flush=True)
""")


def test_other_processes_wait_for_process_0s_evaluation(tmp_path):
    """An evaluation longer than jax's exit barrier (shortened to 3 s here; 300 s by default)
    on process 0 alone: the other process waits for it, and both exit cleanly."""
    procs = launch(2, 1, ["-c", MAIN_ONLY_SCRIPT], str(tmp_path / "main_only"), via="env")
    logs = []
    try:
        wait_all([procs], timeout=120)
    finally:
        logs = [log_text(p) for p in procs]
    left = [float(next(line for line in text.splitlines() if line.startswith("left")).split()[2])
            for text in logs]
    assert left[1] >= left[0] - 0.5, logs  # process 1 left the block only after process 0
