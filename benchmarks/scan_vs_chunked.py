"""Backends without our kernel: scan vs chunked delta rule vs fla's chunkwise reference.

    python benchmarks/scan_vs_chunked.py                 # every shape, 5 repeats
    python benchmarks/scan_vs_chunked.py --quick         # 3 repeats
    python benchmarks/scan_vs_chunked.py --only delta_rule --shapes table
    python benchmarks/scan_vs_chunked.py --before /work/main   # + the scan path of another checkout
    python benchmarks/scan_vs_chunked.py --crossover     # delta rule fwd+bwd, scan vs chunked grid

Prints one markdown table: per op and shape, the fastest of the repeated calls (CPU ms of this
process, one XLA thread by default: the least disturbed by other jobs on a shared machine) of
the forward and of
forward+backward (gradient of a sum of all outputs w.r.t. every input) for impl="scan",
impl="chunked" (delta rule only) and, when PyTorch and `flash-linear-attention` are installed,
fla's PyTorch chunkwise delta-rule reference (`fla.ops.delta_rule.naive`, no Triton), all in one
process, with the ratios the issue asks about: scan fwd+bwd / scan fwd, and fla / best.
Shapes: `benchmarks/ops.py`'s (d=16) and the issue's table (dk = dv = 64, B*H = 4 or 32).
"""
import argparse
import importlib.util
import os
import time

# One thread, as in the table, unless XLA_FLAGS says otherwise (before jax starts).
os.environ.setdefault("XLA_FLAGS",
                      "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import srwm_jax  # noqa: E402
from benchmarks.ops import SHAPES as CELL_SHAPES  # noqa: E402
from benchmarks.ops import delta_args, srwm_args  # noqa: E402

TABLE_SHAPES = [  # (name, B, T, H, d): the table, B*H in {4, 32}, dk = dv = 64
    ("BH=4 T=256", 1, 256, 4, 64),
    ("BH=4 T=1024", 1, 1024, 4, 64),
    ("BH=4 T=4096", 1, 4096, 4, 64),
    ("BH=32 T=1024", 1, 1024, 32, 64),
    ("BH=32 T=4096", 1, 4096, 32, 64),
]


# CPU seconds of this process: on a machine shared with other jobs, waiting for a core is not
# counted (wall time was off by 2-10x here at load 20 on 2 cores). --wall switches to wall time.
CLOCK = time.process_time


def best_ms(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = CLOCK()
        jax.block_until_ready(fn(*args))
        times.append(CLOCK() - t)
    return 1e3 * float(np.min(times))


def fwd_and_fwd_bwd(fn, args, repeats):
    fwd = jax.jit(fn)
    loss = lambda *a: sum(jnp.sum(o.astype(jnp.float32)) for o in jax.tree.leaves(fn(*a)))  # noqa: E731
    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    return best_ms(fwd, args, repeats), best_ms(fwd_bwd, args, repeats)


def load_before(checkout):
    """The scan ops (`srwm_scan`, `delta_rule_scan`) of another checkout, e.g. before a change.

    Loads the scan modules themselves (they import only jax): loading the public `srwm.py` /
    `delta_rule.py` would import this checkout's scan modules through `srwm_jax`."""
    mods = {}
    for name in ("srwm", "delta_rule"):
        spec = importlib.util.spec_from_file_location(
            f"before_{name}", os.path.join(checkout, "srwm_jax", "ops", f"{name}_scan.py"))
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    return mods["srwm"].srwm_scan, mods["delta_rule"].delta_rule_scan


def fla_reference():
    """fla's chunkwise delta rule in plain PyTorch (no Triton), or None when not installed."""
    try:
        import torch  # noqa: PLC0415 (optional peer)
        # Only the file: fla's package __init__ imports Triton, absent on CPU-only installs.
        spec = importlib.util.find_spec("fla")
        naive = os.path.join(os.path.dirname(spec.origin), "ops", "delta_rule", "naive.py")
        spec = importlib.util.spec_from_file_location("fla_delta_rule_naive", naive)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        delta_rule_chunkwise = module.delta_rule_chunkwise
    except Exception:  # noqa: BLE001 (any import failure = peer absent)
        return None
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    return torch, delta_rule_chunkwise


def time_fla(peer, q, k, v, beta, repeats, chunk):
    torch, chunkwise = peer
    # fla's layout: [B, H, T, d]; the same values as ours ([B, T, H, d]).
    t = [torch.tensor(np.asarray(jnp.swapaxes(a, 1, 2)), requires_grad=True) for a in (q, k, v)]
    b = torch.tensor(np.asarray(jnp.swapaxes(beta, 1, 2)), requires_grad=True)

    def fwd():
        with torch.no_grad():
            chunkwise(*t, b, chunk_size=chunk)

    def fwd_bwd():
        o, _ = chunkwise(*t, b, chunk_size=chunk)[:2]
        o.sum().backward()

    out = []
    for f in (fwd, fwd_bwd):
        f()
        times = []
        for _ in range(repeats):
            s = CLOCK()
            f()
            times.append(CLOCK() - s)
        out.append(1e3 * float(np.min(times)))
    return out


def crossover(repeats):
    """Delta rule fwd+bwd, scan vs chunked (L = 32, 64) over d, B*H and T: where chunked wins."""
    print("| d | B*H | T | scan fwd+bwd | chunked L=32 | chunked L=64 | chunked best / scan |")
    print("|---|---|---|---|---|---|---|")
    key = jax.random.key(0)
    for d in (16, 64, 128):
        for bh in (4, 32):
            for T in (256, 1024):
                inputs = delta_args(1, T, bh, d, key)
                scan = fwd_and_fwd_bwd(lambda *a: srwm_jax.delta_rule(*a, impl="scan"), inputs,
                                       repeats)[1]
                ch = [fwd_and_fwd_bwd(
                    lambda *a, L=L: srwm_jax.delta_rule(*a, impl="chunked", chunk_size=L),
                    inputs, repeats)[1] for L in (32, 64)]
                print(f"| {d} | {bh} | {T} | {scan:.2f} | {ch[0]:.2f} | {ch[1]:.2f} "
                      f"| {min(ch) / scan:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    parser.add_argument("--only", choices=["srwm", "delta_rule"], default=None)
    parser.add_argument("--shapes", choices=["cells", "table", "all"], default="all")
    parser.add_argument("--chunk", type=int, default=64,
                        help="chunk size of impl='chunked' and fla")
    parser.add_argument("--names", default="",
                        help="comma-separated shape names to keep (default all)")
    parser.add_argument("--before", default=None, help="a checkout whose scan path is timed too")
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of CPU time")
    parser.add_argument("--crossover", action="store_true", help="only the scan-vs-chunked grid")
    args = parser.parse_args()
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    repeats = 3 if args.quick else 5
    shapes = {"cells": CELL_SHAPES, "table": TABLE_SHAPES,
              "all": CELL_SHAPES + TABLE_SHAPES}[args.shapes]
    if args.crossover:
        print(f"jax {jax.__version__}, backend {jax.default_backend()}; best CPU ms of {repeats}, "
              f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
        return crossover(repeats)
    if args.names:
        shapes = [s for s in shapes if s[0] in args.names.split(",")]
    peer = fla_reference()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device {jax.devices()[0].device_kind}, fla {'present' if peer else 'absent'}; "
          f"best (min) {'wall' if args.wall else 'CPU'} ms of {repeats} "
          f"calls, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    before = load_before(args.before) if args.before else None
    header = ("| op | shape | B,T,H,d | before fwd+bwd | scan fwd | scan fwd+bwd "
              "| scan (fwd+bwd)/fwd | chunked fwd | chunked fwd+bwd | fla fwd | fla fwd+bwd "
              "| fla / best fwd+bwd |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    key = jax.random.key(0)
    ops = ("srwm", "delta_rule") if args.only is None else (args.only,)
    for op in ops:
        for name, B, T, H, d in shapes:
            if op == "srwm":
                inputs = srwm_args(B, T, H, d, key)
                sf, sfb = fwd_and_fwd_bwd(lambda x, W: srwm_jax.srwm(x, W, impl="scan"), inputs,
                                          repeats)
                bfb = fwd_and_fwd_bwd(before[0], inputs, repeats)[1] if before else float("nan")
                cf = cfb = ff = ffb = float("nan")
            else:
                inputs = delta_args(B, T, H, d, key)
                sf, sfb = fwd_and_fwd_bwd(lambda *a: srwm_jax.delta_rule(*a, impl="scan"), inputs,
                                          repeats)
                bfb = fwd_and_fwd_bwd(before[1], inputs, repeats)[1] if before else float("nan")
                cf = cfb = ff = ffb = float("nan")
                if "chunked" in srwm_jax.dispatch.IMPLS:
                    cf, cfb = fwd_and_fwd_bwd(
                        lambda *a: srwm_jax.delta_rule(*a, impl="chunked", chunk_size=args.chunk),
                        inputs, repeats)
                if peer is not None:
                    ff, ffb = time_fla(peer, *inputs[:4], repeats, args.chunk)
            best = np.nanmin([sfb, cfb])
            print(f"| {op} | {name} | {B},{T},{H},{d} | {bfb:.2f} | {sf:.2f} | {sfb:.2f} "
                  f"| {sfb / sf:.2f} | {cf:.2f} | {cfb:.2f} | {ff:.2f} | {ffb:.2f} "
                  f"| {ffb / best:.2f} |", flush=True)


if __name__ == "__main__":
    main()
