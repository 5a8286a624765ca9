"""Whole training programs compiled for an H100 without a GPU: memory and compile time.

    python -m benchmarks.h100_programs [--programs NAME,...|all] [--backends triton,mosaic]
    # the four SRWM programs on Triton by default, ~5 min; "all" adds the DeltaNet ones

Deviceless AOT compile (``tests/h100_gate.py``) of the library's own programs with the
Pallas kernels inside:
  fewshot_omniglot      few-shot train step, configs/fewshot/table1.py:omniglot,srwm,1
                        (5-way 1-shot, batch 128, Conv-4 64 channels, 2 x 256 SRWM, 16 heads)
  fewshot_miniimagenet  the same for configs/fewshot/table1.py:miniimagenet,srwm,5 (84 px,
                        5-shot, batch 16, Conv-4 32 channels, 3 x 256 SRWM, 16 heads)
  rl_learner            the IMPALA learner update of rl.learner.Learner (configs/rl/default.py:
                        32 unrolls x 50 steps, SRWM agent, 8 heads of 16) on the described H100
  rl_actor              the actor's single-step policy (rl.sebulba.make_policy_fn), one actor
                        thread's envs (envs_per_game x games)
  *_deltanet            each of the four with DeltaNet instead of SRWM (table1.py's
                        omniglot,deltanet,1 / miniimagenet,deltanet,5; configs/rl/default.py with
                        agent.core = "deltanet"): the programs the Mosaic GPU kernels can enter

Backends (``--backends``, each program compiled once per backend):
  triton  every kernel on Pallas Triton: few-shot impl="triton"; the RL agent's impl="auto"
          with SRWM_JAX_MOSAIC=0 (what a pre-Hopper GPU, or an H100 that opts out, runs)
  mosaic  what an H100 selects: few-shot impl="pallas", the RL agent's impl="auto", with the
          dispatch told the GPU is a Hopper, so Mosaic GPU runs wherever it supports the call
          (the delta rule without reset masks) and Triton elsewhere (SRWM; the RL agents' calls,
          which always pass reset masks). The "kernels" column names what went in.
The RL agent has no impl knob: its layers use impl="auto", which picks the kernels only when
the default backend is a GPU. Here the default backend is the CPU, so ``jax.default_backend``
is made to answer "gpu" while tracing (what a GPU machine would see), and for "mosaic"
``srwm_jax.dispatch._gpu_is_hopper`` answers True.

Prints, per program and backend: the kernels inside (Triton ``name``; Mosaic GPU ``name
(mosaic)``), their worst registers/spills (Triton: ptxas -v on XLA's PTX; Mosaic GPU: its own
ptxas report via ``MOSAIC_GPU_DUMP_PTXAS``, set up by this script before jax starts), XLA's
memory_analysis (argument, output, temp, alias bytes), the peak estimate
(argument + output + temp - alias) against 80 GB, and the trace+compile seconds. Exits non-zero
when a program does not fit or a kernel spills. Mosaic GPU needs jax >= 0.11 with the CUDA
plugin; on jax 0.10 the "mosaic" rows fall back to Triton (named in the kernels column).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from pathlib import Path
from unittest import mock

from tests import h100_gate as h100

PROGRAMS = ("fewshot_omniglot", "fewshot_miniimagenet", "rl_learner", "rl_actor")
DELTANET_PROGRAMS = tuple(f"{name}_deltanet" for name in PROGRAMS)
BACKENDS = ("triton", "mosaic")


def _fewshot(table1_row: str, backend: str):
    import jax
    import jax.numpy as jnp

    from fewshot.steps import init_state, make_train_step
    from fewshot.training import build

    config = importlib.import_module("configs.fewshot.table1").get_config(table1_row)
    config.impl = "triton" if backend == "triton" else "pallas"
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
    return make_train_step(model, optimizer, config), args, label, _gpu_dispatch(backend)


@contextlib.contextmanager
def _gpu_dispatch(backend: str):
    """The dispatch (impl "auto"/"pallas") decides on ``jax.default_backend()`` and the GPU's
    generation: answer "gpu", and Hopper for "mosaic" (SRWM_JAX_MOSAIC=0 for "triton")."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("srwm_jax.dispatch.jax.default_backend",
                                       return_value="gpu"))
        if backend == "mosaic":
            stack.enter_context(mock.patch("srwm_jax.dispatch._gpu_is_hopper",
                                           return_value=True))
        else:
            stack.enter_context(mock.patch.dict(os.environ, {"SRWM_JAX_MOSAIC": "0"}))
        yield


def _rl_config(core: str):
    from configs.rl.default import get_config
    config = get_config()
    config.agent.core = core
    return config


def _rl_learner(core: str, backend: str):
    import jax
    import jax.numpy as jnp

    from rl.agent import make_agent
    from rl.learner import Batch, Learner
    from rl.learner import init_params

    config = _rl_config(core)
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
    return learner._update, args, label, _gpu_dispatch(backend)


def _rl_actor(core: str, backend: str):
    import jax
    import jax.numpy as jnp

    from rl.agent import make_agent
    from rl.sebulba import make_policy_fn
    from rl.learner import init_params

    config = _rl_config(core)
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
    return make_policy_fn(agent), args, label, _gpu_dispatch(backend)


BUILDERS = {
    "fewshot_omniglot": lambda backend: _fewshot("omniglot,srwm,1", backend),
    "fewshot_miniimagenet": lambda backend: _fewshot("miniimagenet,srwm,5", backend),
    "rl_learner": lambda backend: _rl_learner("srwm", backend),
    "rl_actor": lambda backend: _rl_actor("srwm", backend),
    "fewshot_omniglot_deltanet": lambda backend: _fewshot("omniglot,deltanet,1", backend),
    "fewshot_miniimagenet_deltanet": lambda backend: _fewshot("miniimagenet,deltanet,5", backend),
    "rl_learner_deltanet": lambda backend: _rl_learner("deltanet", backend),
    "rl_actor_deltanet": lambda backend: _rl_actor("deltanet", backend),
}


def compile_program(name: str, backend: str = "triton", mosaic_dump: Path | None = None) -> dict:
    """Compiles one program of :data:`BUILDERS` for the described H100 with ``backend`` (of
    :data:`BACKENDS`); returns a result row. ``mosaic_dump``: the ``MOSAIC_GPU_DUMP_TO``
    folder (``tests.mosaic_h100_gate.setup_dump``), where Mosaic GPU kernels' ptxas reports
    are read; without it a Mosaic kernel's registers are unknown (reported as an error)."""
    from tests.mosaic_h100_gate import read_kernel
    fn, args, label, context = BUILDERS[name](backend)
    before = set(mosaic_dump.glob("*.ptxas")) if mosaic_dump else set()
    start = time.perf_counter()
    with context:
        # Our kernels' spills are the kernel-case gate's (tests.h100_gate); a whole program also
        # holds XLA's own fusions, which are not ours to tune, so spills do not fail it here.
        program = h100.compile_for(fn, *args, fail_on_spills=False)
    seconds = time.perf_counter() - start
    mem = program.compiled.memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)
    kernels = [(k.name.split("__")[0], k.registers, k.spill_stores + k.spill_loads)
               for k in program.pallas_kernels()]
    mosaic_calls = program.compiled.as_text().count('custom_call_target="mosaic_gpu')
    new = sorted(set(mosaic_dump.glob("*.ptxas")) - before) if mosaic_dump else []
    mosaic = [read_kernel(mosaic_dump, path.stem) for path in new]
    kernels += [(f"{k['kernel']} (mosaic)", k["registers"], k["spill_stores"] + k["spill_loads"])
                for k in mosaic]
    if mosaic_calls and not mosaic:
        raise RuntimeError(f"{name}: {mosaic_calls} Mosaic GPU calls in the program but no "
                           "ptxas report: run through main() (it sets MOSAIC_GPU_DUMP_PTXAS)")
    return dict(program=name, backend=backend, shape=label, seconds=seconds,
                argument=mem.argument_size_in_bytes, output=mem.output_size_in_bytes,
                temp=mem.temp_size_in_bytes, alias=mem.alias_size_in_bytes, peak=peak,
                fits=peak <= h100.H100.memory_bytes,
                kernels=sorted({k[0] for k in kernels}),
                max_registers=max((k[1] for k in kernels), default=0),
                spills=sum(k[2] for k in kernels))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def format_rows(rows) -> str:
    head = ("| program | backend | shape | kernels | max regs | spills (B) | argument MiB "
            "| output MiB | temp MiB | peak MiB | fits 80 GB | compile s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['program']} | {r['backend']} | {r['shape']} "
                     f"| {', '.join(r['kernels']) or 'none'} "
                     f"| {r['max_registers']} | {r['spills']} | {_mb(r['argument'])} "
                     f"| {_mb(r['output'])} | {_mb(r['temp'])} | {_mb(r['peak'])} "
                     f"| {'yes' if r['fits'] else 'NO'} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _choose(text, valid, what, parser, everything=None):
    chosen = list(everything or valid) if text == "all" else [x for x in text.split(",") if x]
    unknown = [x for x in chosen if x not in valid]
    if unknown or not chosen:
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(valid)} or all")
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", default=",".join(PROGRAMS),
                        help=f"comma-separated subset of {', '.join(BUILDERS)}, or all")
    parser.add_argument("--backends", default="triton",
                        help=f"comma-separated subset of {', '.join(BACKENDS)}, or all")
    parser.add_argument("--mosaic-dump", metavar="DIR",
                        help="folder for Mosaic GPU's ptxas dumps (default: a new temporary one)")
    args = parser.parse_args(argv)
    names = _choose(args.programs, tuple(BUILDERS), "programs", parser)
    backends = _choose(args.backends, BACKENDS, "backends", parser)
    h100.use_cpu_platform()
    mosaic_dump = None
    if "mosaic" in backends:  # before jax starts: Mosaic GPU reads these when it compiles
        from tests.mosaic_h100_gate import setup_dump
        mosaic_dump = setup_dump(args.mosaic_dump)
    if not h100.cuda_plugin_installed():
        sys.exit("benchmarks.h100_programs: jax's CUDA plugin is not installed; run "
                 "benchmarks/install_cuda_plugin.sh")
    import jax
    rows = []
    for name in names:
        for backend in backends:
            rows.append(compile_program(name, backend, mosaic_dump))
            print(f"{name} [{backend}]: {rows[-1]['seconds']:.1f} s", file=sys.stderr,
                  flush=True)
    print(f"H100 SXM 80 GB (described; deviceless compile), jax {jax.__version__}")
    print(format_rows(rows))
    bad = [f"{r['program']} [{r['backend']}]" for r in rows if not r["fits"] or r["spills"]]
    if bad:
        print(f"FAILED (does not fit 80 GB or spills): {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
