"""Multi-process data parallelism: bytes all-reduced per update, and 1- vs 2-process step times.

    python benchmarks/multi_process.py [--steps 10] [--rl_steps 4] [--only bytes|time]

1. Bytes: parameters of the paper's models (few-shot Omniglot and Mini-ImageNet SRWM configs,
   the RL SRWM agent of configs/rl/default.py) and the float32 gradient bytes one
   data-parallel update all-reduces (the parameters' size; BatchNorm's batch statistics add a
   few KB). Shapes only (jax.eval_shape), nothing is run.
2. Times: the same jitted update on the same total of 2 CPU devices, once as 1 process x 2
   devices and once as 2 processes x 1 device on loopback (jax.distributed, gloo), each
   process feeding its half of a fixed synthetic batch: the few-shot step of
   configs/fewshot/omniglot_srwm_cpu.py (32 episodes) and the RL learner update of
   configs/rl/srwm_cpu.py (8 unrolls x 20 steps of 64x64 frames). The ratio (2 processes / 1)
   is the cost of crossing processes (gloo over TCP instead of in-process copies, one
   process's Python per device); on one machine it shows correctness and overhead, not
   speed-up. Process 0's mean over `--steps` steps after one compile step is reported.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script from a checkout: import this checkout's packages
# jax and the training modules are imported inside the functions: a worker process must start
# jax.distributed before anything touches a device.
# name in the table -> the row of configs/fewshot/table1.py
FEWSHOT_CONFIGS = {"omniglot_srwm": "omniglot,srwm,1",
                   "miniimagenet_srwm_1shot": "miniimagenet,srwm,1",
                   "miniimagenet_srwm_5shot": "miniimagenet,srwm,5"}


def _fewshot_example(config, batch_size):
    """A synthetic sync-task batch of `config` (random pixels, the right shapes)."""
    rng = np.random.default_rng(0)
    N, K, Q, S, C = (config.n_way, config.k_shot, config.train_queries, config.image_size,
                     3 if config.dataset != "omniglot" else 1)
    return {"support_images": rng.random((batch_size, N * K, S, S, C), np.float32),
            "support_labels": rng.integers(0, N, (batch_size, N * K)).astype(np.int32),
            "query_images": rng.random((batch_size, Q, S, S, C), np.float32),
            "query_labels": rng.integers(0, N, (batch_size, Q)).astype(np.int32)}


def fewshot_param_count(name):
    import importlib  # noqa: PLC0415

    import jax  # noqa: PLC0415
    import ml_collections  # noqa: PLC0415

    from fewshot.models import SequenceLearner  # noqa: PLC0415
    from fewshot.steps import make_optimizer  # noqa: PLC0415
    from fewshot.tasks import get_task  # noqa: PLC0415

    config = importlib.import_module("configs.fewshot.table1").get_config(FEWSHOT_CONFIGS[name])
    model = SequenceLearner(ml_collections.FrozenConfigDict(config))
    example = _fewshot_example(config, 1)
    state = jax.eval_shape(lambda k: get_task(config).init_state(
        model, make_optimizer(config), config, example, k), jax.random.key(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)), config


def rl_param_count():
    import jax  # noqa: PLC0415

    from configs.rl.default import get_config  # noqa: PLC0415
    from rl.agent import make_agent  # noqa: PLC0415
    from rl.learner import init_params  # noqa: PLC0415

    config = get_config()
    agent = make_agent(config)
    params = jax.eval_shape(lambda k: init_params(agent, k, config.frame_shape),
                            jax.random.key(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)), config


def bytes_table():
    rows = []
    for name in FEWSHOT_CONFIGS:
        n, c = fewshot_param_count(name)
        rows.append((f"few-shot {name}", f"{c.batch_size} episodes", n))
    n, c = rl_param_count()
    rows.append((f"RL configs/rl/default.py ({c.agent.core})",
                 f"{c.batch_size} unrolls x {c.unroll_length}", n))
    print("| model | global batch | parameters | float32 gradient bytes all-reduced per update |")
    print("|---|---|---|---|")
    for model, batch, n in rows:
        print(f"| {model} | {batch} | {n:,} | {4 * n / 2**20:.2f} MiB |")


# --- timing ------------------------------------------------------------------------------

def _worker(kind, steps):
    """One process of a timed run (distributed settings from the environment)."""
    from srwm_jax.training import distributed  # noqa: PLC0415

    distributed.initialize()
    import jax  # noqa: PLC0415

    if kind == "fewshot":
        from configs.fewshot.omniglot_srwm_cpu import get_config  # noqa: PLC0415
        from fewshot.training import build, initial_state  # noqa: PLC0415

        config = get_config()
        model, optimizer, mesh, train_step, _ = build(config)
        batch = _fewshot_example(config, config.batch_size)
        state = initial_state(config, model, optimizer, mesh, jax.tree.map(lambda a: a[:1], batch))
        rows = mesh.process_rows(config.batch_size)
        local = mesh.put_process_batch(jax.tree.map(lambda a: a[rows], batch))
        key = jax.random.key(0)

        def step(state):
            return train_step(state, local, key)
    else:
        from configs.rl.srwm_cpu import get_config  # noqa: PLC0415
        from rl.agent import make_agent  # noqa: PLC0415
        from rl.learner import Batch, Learner, init_params  # noqa: PLC0415

        config = get_config()
        agent = make_agent(config)
        learner = Learner(agent, config, num_updates=1000)
        state = learner.init_state(init_params(agent, jax.random.key(0), config.frame_shape))
        B, T, A = config.batch_size, config.unroll_length, config.num_actions
        rng = np.random.default_rng(0)
        batch = Batch(frames=rng.integers(0, 256, (B, T + 1, *config.frame_shape), dtype=np.uint8),
                      rewards=rng.uniform(-1, 1, (B, T + 1)).astype(np.float32),
                      firsts=rng.random((B, T + 1)) < 0.02,
                      actions=rng.integers(0, A, (B, T)).astype(np.int32),
                      behaviour_logits=rng.normal(size=(B, T, A)).astype(np.float32),
                      initial_state=jax.tree.map(np.asarray, agent.initial_state(B)))
        rows = learner.parallel.process_rows(B)
        local = learner.shard_batch(jax.tree.map(lambda a: a[rows], batch))

        def step(state):
            return learner._update(state, local)
    state, metrics = step(state)  # compile
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - t) / steps
    distributed.check_identical(state.params)
    if distributed.is_main_process():
        print("RESULT " + json.dumps({"seconds": seconds, "loss": float(metrics["loss"]),
                                      "processes": jax.process_count(),
                                      "devices": jax.device_count()}), flush=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_run(kind, steps, num_processes, devices_per_process, timeout=1200):
    """Launches the workers, returns process 0's RESULT dict (kills them all on any failure)."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    port, procs = _free_port(), []
    try:
        for i in range(num_processes):
            penv = dict(env)
            if num_processes > 1:
                penv.update(JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(i),
                            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", kind, "--steps",
                 str(steps)], cwd=REPO, env=penv, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}):\n{out[-3000:]}")
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def time_table(steps, rl_steps):
    print("| update | processes x devices | ms/update | loss after the timed steps | "
          "ratio to 1 process |")
    print("|---|---|---|---|---|")
    for kind, n in (("fewshot", steps), ("rl", rl_steps)):
        one = timed_run(kind, n, 1, 2)
        two = timed_run(kind, n, 2, 1)
        label = ("few-shot omniglot_srwm_cpu.py, 32 episodes" if kind == "fewshot"
                 else "RL learner srwm_cpu.py, 8 x 20 steps")
        for r in (one, two):
            print(f"| {label} | {r['processes']} x {r['devices'] // r['processes']} | "
                  f"{1e3 * r['seconds']:.1f} | {r['loss']:.6f} | "
                  f"{r['seconds'] / one['seconds']:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed few-shot steps")
    parser.add_argument("--rl_steps", type=int, default=4, help="timed RL learner updates")
    parser.add_argument("--only", choices=("bytes", "time"), default=None)
    parser.add_argument("--worker", choices=("fewshot", "rl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker, args.steps)
    import jax  # noqa: PLC0415

    print(f"jax {jax.__version__}, {os.cpu_count()} CPU cores, "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average "
          f"{os.getloadavg()[0]:.1f}")
    if args.only in (None, "bytes"):
        bytes_table()
    if args.only in (None, "time"):
        time_table(args.steps, args.rl_steps)
        print(f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share the CPU)")


if __name__ == "__main__":
    main()
