"""Deviceless ahead-of-time compile of the chunked delta rule for a TPU v5e and an H100.

    python -m tests.deviceless_chunked --target tpu     # needs the libtpu wheel
    python -m tests.deviceless_chunked --target h100    # needs benchmarks/install_cuda_plugin.sh

Compiles `srwm_jax.delta_rule(..., impl="chunked")` forward and forward+backward (gradient
w.r.t. every input) for a described device on this CPU machine and prints, per case, the
compile seconds and XLA's memory analysis (argument, output and temporary bytes).

TPU: `jax.experimental.topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu")`
describes a v5e slice; one of its devices makes a one-device mesh. A program too big for the
chip's memory (or VMEM) fails its compile. Works with jax 0.11.2 + the libtpu wheel that
`pip install "jax[tpu]==0.11.2"` brings (Python 3.12 venv here; see benchmarks/RESULTS.md).
H100: the mesh and compile of `tests/h100_gate.py` (XLA's whole GPU pipeline, no GPU needed).
"""
import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the plugins must not look for real devices
# Several processes may load libtpu at once (tests beside a benchmark); no chip is opened.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import srwm_jax  # noqa: E402

CASES = [  # (name, B, T, H, d, dtype)
    ("BH=32 T=4096 d=64 f32", 1, 4096, 32, 64, jnp.float32),
    ("B=8 T=1024 H=16 d=64 bf16", 8, 1024, 16, 64, jnp.bfloat16),
    ("B=128 T=76 H=16 d=16 f32", 128, 76, 16, 16, jnp.float32),
]


def tpu_mesh():
    """A one-device mesh of a described (absent) TPU v5e."""
    from jax.experimental import topologies  # noqa: PLC0415

    topo = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu")
    return jax.sharding.Mesh(np.array(topo.devices[:1]), ("x",))


def structs(mesh, B, T, H, d, dtype):
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    s = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)  # noqa: E731
    return (s((B, T, H, d)), s((B, T, H, d)), s((B, T, H, d)), s((B, T, H)),
            s((B, H, d, d), jnp.float32))


def programs(chunk_size):
    def fwd(*a):
        return srwm_jax.delta_rule(*a, impl="chunked", chunk_size=chunk_size)

    def loss(*a):
        y, S = fwd(*a)
        return jnp.sum(y.astype(jnp.float32)) + jnp.sum(S)

    return {"fwd": fwd, "fwd+bwd": jax.grad(loss, argnums=(0, 1, 2, 3, 4))}


def compile_case(target, mesh, fn, args):
    start = time.perf_counter()
    if target == "h100":
        from tests.h100_gate import compile_for  # noqa: PLC0415

        # Plain XLA, no Pallas kernel of ours: every launch is XLA's own fusions, whose
        # registers are not ours to tune (as benchmarks/h100_programs.py's whole programs).
        compiled = compile_for(fn, *args, pallas_only=False, fail_on_spills=False).compiled
    else:
        compiled = jax.jit(fn).trace(*args).lower().compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    return seconds, mem


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["tpu", "h100"], default="tpu")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="one small case (for the tests)")
    args = parser.parse_args(argv)
    if args.target == "h100":
        from tests.h100_gate import h100_mesh  # noqa: PLC0415

        mesh = h100_mesh()
    else:
        mesh = tpu_mesh()
    print(f"jax {jax.__version__}, target {args.target} ({mesh.devices.flat[0].device_kind}), "
          f"chunk {args.chunk}")
    print("| case | program | compile s | argument MiB | output MiB | temp MiB |")
    print("|---|---|---|---|---|---|")
    rows = []
    cases = [("B=2 T=300 H=2 d=64 bf16", 2, 300, 2, 64, jnp.bfloat16)] if args.small else CASES
    for name, B, T, H, d, dtype in cases:
        for prog, fn in programs(args.chunk).items():
            seconds, mem = compile_case(args.target, mesh, fn, structs(mesh, B, T, H, d, dtype))
            mib = lambda n: n / 2**20  # noqa: E731
            row = (name, prog, seconds, mib(mem.argument_size_in_bytes),
                   mib(mem.output_size_in_bytes), mib(mem.temp_size_in_bytes))
            rows.append(row)
            print("| {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} |".format(*row), flush=True)
    return rows


if __name__ == "__main__":
    main()
