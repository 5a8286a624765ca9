"""Whole training programs compiled for an H100 without a GPU: memory and compile time.

    python -m benchmarks.h100_programs [--programs NAME,...]   # all four by default, ~5 min

Deviceless AOT compile (``tests/h100_gate.py``) of the library's own programs with the
Pallas kernels inside:
  fewshot_omniglot      few-shot train step, configs/fewshot/table1.py:omniglot,srwm,1
                        (5-way 1-shot, batch 128, Conv-4 64 channels, 2 x 256 SRWM, 16 heads),
                        impl="pallas"
  fewshot_miniimagenet  the same for configs/fewshot/table1.py:miniimagenet,srwm,5 (84 px,
                        5-shot, batch 16, Conv-4 32 channels, 3 x 256 SRWM, 16 heads)
  rl_learner            the IMPALA learner update of rl.learner.Learner (configs/rl/default.py:
                        32 unrolls x 50 steps, SRWM agent, 8 heads of 16) on the described H100
  rl_actor              the actor's single-step policy (rl.sebulba.make_policy_fn), one actor
                        thread's envs (envs_per_game x games)
The RL agent has no impl knob: its layers use impl="auto", which picks the kernels only when
the default backend is a GPU. Here the default backend is the CPU, so for the RL programs
``jax.default_backend`` is made to answer "gpu" while tracing (what a GPU machine would see).

Prints, per program: Pallas kernels inside, their worst registers/spills, XLA's
memory_analysis (argument, output, temp, alias bytes), the peak estimate
(argument + output + temp - alias) against 80 GB, and the trace+compile seconds. Exits non-zero
when a program does not fit or a kernel spills.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from unittest import mock

from tests import h100_gate as h100

PROGRAMS = ("fewshot_omniglot", "fewshot_miniimagenet", "rl_learner", "rl_actor")


def _fewshot(table1_row: str):
    import jax
    import jax.numpy as jnp

    from fewshot.steps import init_state, make_train_step
    from fewshot.training import build

    config = importlib.import_module("configs.fewshot.table1").get_config(table1_row)
    config.impl = "pallas"
    model, optimizer, *_ = build(config)
    n, k, size = config.n_way, config.k_shot, config.image_size
    channels = 1 if config.dataset == "omniglot" else 3
    queries = config.get("train_queries", 1)

    def batch(b):
        image = (size, size, channels)
        return {"support_images": jax.ShapeDtypeStruct((b, n * k, *image), jnp.float32),
                "support_labels": jax.ShapeDtypeStruct((b, n * k), jnp.int32),
                "query_images": jax.ShapeDtypeStruct((b, queries, *image), jnp.float32),
                "query_labels": jax.ShapeDtypeStruct((b, queries), jnp.int32)}

    key = jax.random.key(0)
    example = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch(1))
    state = jax.eval_shape(lambda: init_state(model, optimizer, config, example, key))
    args = (h100.abstract_like(state), h100.abstract_like(batch(config.batch_size)),
            h100.on_h100((), key.dtype))
    label = (f"B={config.batch_size} {n}-way {k}-shot {size}px conv{config.conv_channels} "
             f"{config.num_layers}x{config.hidden_size} {config.model} H={config.num_heads}")
    return make_train_step(model, optimizer, config), args, label, contextlib.nullcontext()


def _gpu_dispatch():
    """impl="auto" inside the agent decides on ``jax.default_backend()``: answer "gpu"."""
    return mock.patch("srwm_jax.dispatch.jax.default_backend", return_value="gpu")


def _rl_config():
    from configs.rl.default import get_config
    config = get_config()
    config.agent.core = "srwm"
    return config


def _rl_learner():
    import jax
    import jax.numpy as jnp

    from rl.agent import make_agent
    from rl.learner import Batch, Learner
    from rl.learner import init_params

    config = _rl_config()
    agent = make_agent(config)
    learner = Learner(agent, config, num_updates=1000, devices=list(h100.h100_mesh().devices.flat))
    params = jax.eval_shape(lambda: init_params(agent, jax.random.key(0), config.frame_shape))
    opt_state = jax.eval_shape(learner.optimizer.init, params)
    b, t = config.batch_size, config.unroll_length
    f32 = jnp.float32
    batch = Batch(frames=jax.ShapeDtypeStruct((b, t + 1) + tuple(config.frame_shape), jnp.uint8),
                  rewards=jax.ShapeDtypeStruct((b, t + 1), f32),
                  firsts=jax.ShapeDtypeStruct((b, t + 1), jnp.bool_),
                  actions=jax.ShapeDtypeStruct((b, t), jnp.int32),
                  behaviour_logits=jax.ShapeDtypeStruct((b, t, config.num_actions), f32),
                  initial_state=jax.eval_shape(lambda: agent.initial_state(b)))
    from rl.learner import TrainState
    state = TrainState(params, opt_state, jax.ShapeDtypeStruct((), jnp.int32))
    # Learner.update = device_put + the jitted update; the jitted update is what runs on the GPU.
    args = (h100.abstract_like(state), h100.abstract_like(batch))
    label = f"{b} unrolls x {t} steps, {config.agent.core} agent, H={config.agent.num_heads}"
    return learner._update, args, label, _gpu_dispatch()


def _rl_actor():
    import jax
    import jax.numpy as jnp

    from rl.agent import make_agent
    from rl.sebulba import make_policy_fn
    from rl.learner import init_params

    config = _rl_config()
    agent = make_agent(config)
    n = config.envs_per_game * len(config.games)
    params = jax.eval_shape(lambda: init_params(agent, jax.random.key(0), config.frame_shape))
    key = jax.random.key(0)
    args = (h100.abstract_like(params),
            h100.abstract_like(jax.eval_shape(lambda: agent.initial_state(n))),
            h100.on_h100((n,) + tuple(config.frame_shape), jnp.uint8),
            h100.on_h100((n,), jnp.float32), h100.on_h100((n,), jnp.bool_),
            h100.on_h100((), key.dtype))
    label = f"{n} envs x 1 step, {config.agent.core} agent"
    return make_policy_fn(agent), args, label, _gpu_dispatch()


BUILDERS = {
    "fewshot_omniglot": lambda: _fewshot("omniglot,srwm,1"),
    "fewshot_miniimagenet": lambda: _fewshot("miniimagenet,srwm,5"),
    "rl_learner": _rl_learner,
    "rl_actor": _rl_actor,
}


def compile_program(name: str) -> dict:
    """Compiles one program of :data:`PROGRAMS` for the described H100; returns a result row."""
    fn, args, label, context = BUILDERS[name]()
    start = time.perf_counter()
    with context:
        # Our kernels' spills are the kernel-case gate's (tests.h100_gate); a whole program also
        # holds XLA's own fusions, which are not ours to tune, so spills do not fail it here.
        program = h100.compile_for(fn, *args, fail_on_spills=False)
    seconds = time.perf_counter() - start
    mem = program.compiled.memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)
    kernels = program.pallas_kernels()
    return dict(program=name, shape=label, seconds=seconds,
                argument=mem.argument_size_in_bytes, output=mem.output_size_in_bytes,
                temp=mem.temp_size_in_bytes, alias=mem.alias_size_in_bytes, peak=peak,
                fits=peak <= h100.H100.memory_bytes,
                kernels=sorted({k.name.split("__")[0] for k in kernels}),
                max_registers=max((k.registers for k in kernels), default=0),
                spills=sum(k.spill_stores + k.spill_loads for k in kernels))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def format_rows(rows) -> str:
    head = ("| program | shape | Pallas kernels | max regs | spills (B) | argument MiB "
            "| output MiB | temp MiB | peak MiB | fits 80 GB | compile s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['program']} | {r['shape']} | {', '.join(r['kernels']) or 'none'} "
                     f"| {r['max_registers']} | {r['spills']} | {_mb(r['argument'])} "
                     f"| {_mb(r['output'])} | {_mb(r['temp'])} | {_mb(r['peak'])} "
                     f"| {'yes' if r['fits'] else 'NO'} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", default=",".join(PROGRAMS),
                        help=f"comma-separated subset of {', '.join(PROGRAMS)}")
    args = parser.parse_args(argv)
    names = args.programs.split(",")
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown programs {unknown}; choose from {', '.join(PROGRAMS)}")
    h100.use_cpu_platform()
    if not h100.cuda_plugin_installed():
        sys.exit("benchmarks.h100_programs: jax's CUDA plugin is not installed; run "
                 "benchmarks/install_cuda_plugin.sh")
    import jax
    rows = []
    for name in names:
        rows.append(compile_program(name))
        print(f"{name}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(f"H100 SXM 80 GB (described; deviceless compile), jax {jax.__version__}")
    print(format_rows(rows))
    bad = [r["program"] for r in rows if not r["fits"] or r["spills"]]
    if bad:
        print(f"FAILED (does not fit 80 GB or spills): {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
