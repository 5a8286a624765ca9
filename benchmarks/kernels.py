"""Times the Pallas kernels against the scan reference (and, optionally, the originals).

Usage:
    python -m benchmarks.kernels                  # GPU: every shape below
    python -m benchmarks.kernels --quick          # fewer shapes and repeats
    python -m benchmarks.kernels --quick --interpret   # CPU: Pallas rows in interpret mode
    python -m benchmarks.kernels --original-cuda /path/to/modern-srwm   # + IDSIA CUDA (torch)
    python -m benchmarks.kernels --ops delta_rule --backends scan,triton,mosaic [--json OUT]
                                                  # GPU: backends side by side (see below)
    python -m benchmarks.kernels --from-json OUT  # print a saved --backends table again

Shapes (B batch, H heads, d head dim, T time; delta rule uses dk = dv = d):
    few-shot  B=128 H=16 d=16 T=6, 26, 76
    rl        B=32, 64  H=8 d=16 T=50, 1
    long      B=8 H=16 d=16, 64 T=4096

Columns, per operator, shape and mode (fwd = forward; fwd+bwd = forward and the
gradient w.r.t. every input):
    ms        median wall time of a jitted call (after compile and one warm-up)
    GB/s      compulsory bytes / median time: each input read once and each output
              written once (fwd+bwd adds the cotangents read and gradients written);
              residual traffic is not counted, so this is a lower bound on real traffic
    MiB       the executable's arguments + outputs + temporaries (XLA memory analysis);
              ``torch`` rows report torch.cuda.max_memory_allocated
    x scan    scan time / this row's time (above 1: faster than the scan reference)

Without a GPU, Pallas rows are skipped unless ``--interpret`` is given (interpret
mode is a correctness tool: its timings say nothing about the GPU kernels; it
also caps B at 2 to stay quick). ``--original-cuda PATH`` times IDSIA/modern-srwm's
``self_ref_v0`` CUDA kernel when torch with CUDA is importable and PATH holds
``supervised_learning/self_ref_v0`` (that code is loaded from PATH, never copied
here). fla's ``fused_recurrent_delta_rule`` is timed when ``fla`` is importable.

``--backends a,b,...`` (any of scan, triton, mosaic; the kernels' interpreters with
``--interpret``) times each backend at the backend-comparison shapes (few-shot B=128 H=16
d=16 T=26, RL B=32 H=8 d=16 T=50 and T=1, long B=8 H=16 d=16 T=4096; ``--list`` shows them),
forward and fwd+bwd, all in this process, and prints one row per shape and mode: each
backend's median ms, then one ratio column per pair "a/b" = a's ms / b's ms (above 1: b is
faster; "-" where either failed, with the reason at the end of the row; fla's time there too
when importable). Mosaic GPU runs on
Hopper (sm_90+) only; its kernels cover the delta rule, not SRWM (kernels/README.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Leave GPU memory to torch too when the original kernels are timed in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import srwm_jax  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    group: str
    B: int
    H: int
    d: int
    T: int

    def label(self):
        return f"{self.group} B={self.B} H={self.H} d={self.d} T={self.T}"


def all_cases(quick: bool) -> list[Case]:
    cases = [Case("few-shot", 128, 16, 16, T) for T in (6, 26, 76)]
    cases += [Case("rl", B, 8, 16, T) for B in (32, 64) for T in (50, 1)]
    cases += [Case("long", 8, 16, d, 4096) for d in (16, 64)]
    if quick:
        keep = {("few-shot", 128, 26), ("rl", 32, 50), ("rl", 32, 1)}
        cases = [c for c in cases if (c.group, c.B, c.T) in keep]
    return cases


# --- inputs and functions ----------------------------------------------------------------------

def srwm_inputs(case: Case, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((case.B, case.T, case.H, case.d)), dtype)
    W = srwm_jax.SRWMWeights(*(
        jnp.asarray(rng.standard_normal((case.B, case.H, case.d, n)) / np.sqrt(case.d),
                    jnp.float32) for n in (case.d, case.d, case.d, 4)))
    return (x, W)


def delta_inputs(case: Case, dtype):
    rng = np.random.default_rng(0)
    shape = (case.B, case.T, case.H, case.d)
    q = jax.nn.softmax(jnp.asarray(rng.standard_normal(shape), jnp.float32), -1).astype(dtype)
    k = jax.nn.softmax(jnp.asarray(rng.standard_normal(shape), jnp.float32), -1).astype(dtype)
    v = jnp.asarray(rng.standard_normal(shape), dtype)
    beta = jax.nn.sigmoid(jnp.asarray(rng.standard_normal(shape[:3]), jnp.float32)).astype(dtype)
    S0 = jnp.zeros((case.B, case.H, case.d, case.d), jnp.float32)
    return (q, k, v, beta, S0)


def op_fn(op: str, impl: str):
    if op == "srwm":
        return lambda x, W: srwm_jax.srwm(x, W, impl=impl)
    return lambda *a: srwm_jax.delta_rule(*a, impl=impl)


def with_grad(fn, num_args):
    def loss(*args):
        y, state = fn(*args)
        return jnp.sum(y.astype(jnp.float32)) + sum(jnp.sum(s) for s in jax.tree.leaves(state))
    return jax.grad(loss, argnums=tuple(range(num_args)))


def nbytes(tree) -> int:
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


# --- timing ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    ms: float | None = None
    gbps: float | None = None
    mib: float | None = None
    note: str = ""


def time_jax(fn, args, compulsory_bytes, repeats) -> Result:
    compiled = jax.jit(fn).lower(*args).compile()
    mib = None
    try:
        mem = compiled.memory_analysis()
        mib = (mem.argument_size_in_bytes + mem.output_size_in_bytes
               + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
    except Exception:  # memory analysis is best-effort on some backends
        pass
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return Result(ms=seconds * 1e3, gbps=compulsory_bytes / seconds / 1e9, mib=mib)


def time_torch(step, repeats) -> Result:
    import torch  # noqa: PLC0415
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return Result(ms=statistics.median(times) * 1e3,
                  mib=torch.cuda.max_memory_allocated() / 2**20)


def bench_jax(op, impl, case, mode, dtype, repeats) -> Result:
    args = srwm_inputs(case, dtype) if op == "srwm" else delta_inputs(case, dtype)
    fn = op_fn(op, impl)
    outputs = jax.eval_shape(fn, *args)
    compulsory = nbytes(args) + nbytes(outputs)
    if mode == "fwd+bwd":
        fn = with_grad(fn, len(args))
        compulsory = 2 * compulsory   # + cotangents read (= outputs) + gradients (= inputs)
    try:
        return time_jax(fn, args, compulsory, repeats)
    except Exception as e:  # report and keep going: one failing row must not hide the rest
        return Result(note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")


# --- optional torch baselines ------------------------------------------------------------------

def load_original_srwm(path):
    """IDSIA/modern-srwm's self_ref_v0 (x [B, H, T, d] already input-softmaxed or not)."""
    try:
        import torch  # noqa: PLC0415
        if not torch.cuda.is_available():
            return None, "torch has no CUDA device"
        for candidate in (os.path.join(path, "supervised_learning"), path):
            if os.path.isdir(os.path.join(candidate, "self_ref_v0")):
                sys.path.insert(0, candidate)
                from self_ref_v0 import self_ref_v0  # noqa: PLC0415
                return self_ref_v0, ""
        return None, f"no self_ref_v0/ under {path}"
    except Exception as e:
        return None, f"could not load the original kernel: {type(e).__name__}: {e}"


def bench_original_srwm(kernel, case, mode, repeats) -> Result:
    import torch  # noqa: PLC0415
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(case.B, case.H, case.T, case.d, device="cuda", generator=g)
    weights = [torch.randn(case.B, case.H, case.d, n, device="cuda", generator=g) / case.d**0.5
               for n in (case.d, case.d, case.d, 4)]
    grad = mode == "fwd+bwd"
    if grad:
        x.requires_grad_(True)

    def step():
        # The kernel writes W_T into its weight inputs in place: give it fresh copies.
        ws = [w.clone().requires_grad_(grad) for w in weights]
        y = kernel(x, *ws)
        if grad:
            y.sum().backward()

    try:
        return time_torch(step, repeats)
    except Exception as e:
        return Result(note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")


def load_fla():
    try:
        from fla.ops.delta_rule import fused_recurrent_delta_rule  # noqa: PLC0415
        import torch  # noqa: PLC0415
        if not torch.cuda.is_available():
            return None, "torch has no CUDA device"
        return fused_recurrent_delta_rule, ""
    except Exception as e:
        return None, f"fla not importable ({type(e).__name__})"


def bench_fla(fn, case, mode, dtype, repeats) -> Result:
    import torch  # noqa: PLC0415
    tdtype = torch.bfloat16 if dtype == jnp.bfloat16 else torch.float32
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (case.B, case.T, case.H, case.d)
    q = torch.randn(*shape, device="cuda", generator=g).softmax(-1).to(tdtype)
    k = torch.randn(*shape, device="cuda", generator=g).softmax(-1).to(tdtype)
    v = torch.randn(*shape, device="cuda", generator=g).to(tdtype)
    beta = torch.rand(*shape[:3], device="cuda", generator=g).to(tdtype)
    S0 = torch.zeros(case.B, case.H, case.d, case.d, device="cuda")
    grad = mode == "fwd+bwd"
    for t in (q, k, v, beta, S0):
        t.requires_grad_(grad)

    def step():
        y, S = fn(q, k, v, beta, scale=1.0, initial_state=S0, output_final_state=True)
        if grad:
            (y.float().sum() + S.sum()).backward()

    try:
        return time_torch(step, repeats)
    except Exception as e:
        return Result(note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")


# --- backends side by side --------------------------------------------------------------------

BACKENDS = ("scan", "triton", "mosaic")


def backend_cases() -> list[Case]:
    """The shapes of the backend comparison: few-shot, RL (a learner unroll and an actor step)
    and long T, all at d = 16 (the configs' head size; Mosaic GPU takes dk <= 32)."""
    return [Case("few-shot", 128, 16, 16, 26), Case("rl", 32, 8, 16, 50),
            Case("rl", 32, 8, 16, 1), Case("long", 8, 16, 16, 4096)]


def backend_impl(backend: str, interpret: bool) -> str:
    """The ``impl`` string that runs ``backend`` (its interpreter when ``interpret``)."""
    return f"{backend}_interpret" if interpret and backend != "scan" else backend


def compare_backends(op, cases, backends, dtype, repeats, interpret=False, log=print,
                     others=None):
    """Times ``op`` with every backend at every case, forward and fwd+bwd, in this process.

    others: optional {name: f(case, mode) -> Result} timed beside them (fla's kernel).
    Returns rows ``{"op", "shape", "mode", "ms": {backend: ms or None},
    "notes": {backend or other: why it has no time, or the other's time}}`` (the --json
    format); ``log`` gets each formatted row as it is measured.
    """
    rows = []
    for case in cases:
        for mode in ("fwd", "fwd+bwd"):
            row = dict(op=op, shape=case.label(), mode=mode, ms={}, notes={})
            for backend in backends:
                result = bench_jax(op, backend_impl(backend, interpret), case, mode, dtype,
                                   repeats)
                row["ms"][backend] = result.ms
                if result.note:
                    row["notes"][backend] = result.note
            for name, bench in (others or {}).items():
                result = bench(case, mode)
                row["notes"][name] = (f"{result.ms:.3f}ms" if result.ms is not None
                                      else result.note)
            rows.append(row)
            log(format_backend_rows([row], backends, header=False))
    return rows


def backend_pairs(backends) -> list[tuple[str, str]]:
    """Every ordered pair (a, b) with a listed before b: the ratio columns a/b."""
    return [(a, b) for i, a in enumerate(backends) for b in backends[i + 1:]]


def format_backend_rows(rows, backends, header=True) -> str:
    """The backend table as text: ms per backend, then a/b = a's ms / b's ms for every pair
    (above 1: b is faster); '-' where a backend has no time, its note at the end of the row."""
    pairs = backend_pairs(backends)
    lines = []
    if header:
        head = (f"{'op':<10} {'shape':<34} {'mode':<8} | "
                + " ".join(f"{b + ' ms':>11}" for b in backends) + " | "
                + " ".join(f"{a + '/' + b:>13}" for a, b in pairs) + " | notes")
        lines += [head, "-" * len(head)]
    for row in rows:
        ms = row["ms"]
        ratios = [ms[a] / ms[b] if ms.get(a) and ms.get(b) else None for a, b in pairs]
        notes = "; ".join(f"{b} {note}" for b, note in row["notes"].items())
        lines.append(f"{row['op']:<10} {row['shape']:<34} {row['mode']:<8} | "
                     + " ".join(fmt(ms.get(b), "11.3f") for b in backends) + " | "
                     + " ".join(fmt(r, "13.3g") for r in ratios) + f" | {notes}")
    return "\n".join(lines)


def _parse_backends(text, parser):
    backends = tuple(b for b in text.split(",") if b)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or len(set(backends)) != len(backends) or not backends:
        parser.error(f"--backends: give distinct backends of {BACKENDS}, got {text!r}")
    return backends


# --- main --------------------------------------------------------------------------------------

def fmt(value, spec):
    if value is None:
        width = spec.split(".")[0]
        return "-".rjust(int(width) if width else 1)
    return format(value, spec)


def describe(name, result: Result, pallas: Result) -> str:
    """'name 1.234ms x0.50 1.0MiB' for a torch baseline (x: its time / the Pallas time)."""
    if result.ms is None:
        return f"{name} {result.note}"
    speedup = result.ms / pallas.ms if pallas.ms else None
    return f"{name} {result.ms:.3f}ms x{fmt(speedup, '.2f')} {fmt(result.mib, '.1f')}MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--list", action="store_true",
                        help="print the shapes (group B H d T, one a line) and exit")
    parser.add_argument("--interpret", action="store_true",
                        help="without a GPU, run Pallas rows in interpret mode (B capped at 2)")
    parser.add_argument("--original-cuda", metavar="PATH",
                        help="IDSIA/modern-srwm checkout: also time its self_ref_v0 CUDA kernel")
    parser.add_argument("--ops", default="srwm,delta_rule", help="comma-separated operators")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--backends", metavar="A,B,...",
                        help=f"time these backends side by side (of {', '.join(BACKENDS)}) at "
                             "the backend-comparison shapes")
    parser.add_argument("--json", metavar="PATH", help="with --backends: also write the rows here")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print the table of rows saved by --backends --json; time nothing")
    args = parser.parse_args(argv)
    backends = _parse_backends(args.backends, parser) if args.backends else None
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(saved["header"])
        print(format_backend_rows(saved["rows"], tuple(saved["backends"])))
        return
    if args.list:
        for c in backend_cases() if backends else all_cases(args.quick):
            print(c.group, c.B, c.H, c.d, c.T)
        return

    on_gpu = jax.default_backend() == "gpu"
    dtype = jnp.dtype(args.dtype)
    repeats = args.repeats or (3 if args.quick else 20)
    pallas_impl = "pallas" if on_gpu else ("pallas_interpret" if args.interpret else None)
    cases = all_cases(args.quick)
    if not on_gpu and args.interpret:
        cases = [dataclasses.replace(c, B=min(c.B, 2)) for c in cases]

    if backends:
        if not on_gpu and not args.interpret:
            parser.error("--backends: no GPU here (pass --interpret for the interpreters)")
        cases = backend_cases()
        if not on_gpu:
            cases = [dataclasses.replace(c, B=min(c.B, 2)) for c in cases]
        header = (f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
                  f"jax {jax.__version__}, dtype {dtype.name}, repeats {repeats}"
                  + (", INTERPRET mode (correctness only, not GPU timings)" if not on_gpu
                     else ""))
        print(header)
        print(format_backend_rows([], backends))
        fla_fn, fla_why = load_fla()
        if fla_fn is None:
            print(f"fla skipped: {fla_why}")
        rows = []
        for op in args.ops.split(","):
            others = ({"fla": lambda c, m: bench_fla(fla_fn, c, m, dtype, repeats)}
                      if fla_fn is not None and op == "delta_rule" else None)
            rows += compare_backends(op, cases, backends, dtype, repeats,
                                     interpret=not on_gpu, log=lambda t: print(t, flush=True),
                                     others=others)
        print("a/b = a's ms / b's ms (above 1: b is faster).")
        if args.json:
            Path(args.json).write_text(json.dumps(
                dict(header=header, backends=list(backends), rows=rows), indent=1))
        return

    original, original_why = (None, "not requested")
    if args.original_cuda:
        original, original_why = load_original_srwm(args.original_cuda)
    fla_fn, fla_why = load_fla()

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}, dtype {dtype.name}, repeats {repeats}")
    if pallas_impl is None:
        print("pallas rows skipped: no GPU (pass --interpret to run them in interpret mode)")
    elif pallas_impl == "pallas_interpret":
        print("pallas rows in INTERPRET mode: correctness only, timings are not GPU numbers")
    if args.original_cuda and original is None:
        print(f"original CUDA rows skipped: {original_why}")
    if fla_fn is None:
        print(f"fla rows skipped: {fla_why}")

    header = (f"{'op':<10} {'shape':<34} {'mode':<8} | {'pallas ms':>9} {'GB/s':>7} {'MiB':>8}"
              f" | {'scan ms':>9} {'GB/s':>7} {'MiB':>8} | {'x scan':>6} | {'other':<28}")
    print(header)
    print("-" * len(header))
    for op in args.ops.split(","):
        for case in cases:
            for mode in ("fwd", "fwd+bwd"):
                scan = bench_jax(op, "scan", case, mode, dtype, repeats)
                pallas = (bench_jax(op, pallas_impl, case, mode, dtype, repeats)
                          if pallas_impl else Result(note="skipped"))
                speedup = (scan.ms / pallas.ms) if (scan.ms and pallas.ms) else None
                other = []
                if op == "srwm" and original is not None:
                    other.append(describe("orig",
                                          bench_original_srwm(original, case, mode, repeats),
                                          pallas))
                if op == "delta_rule" and fla_fn is not None:
                    other.append(describe("fla", bench_fla(fla_fn, case, mode, dtype, repeats),
                                          pallas))
                notes = [n for n in (pallas.note and f"pallas {pallas.note}",
                                     scan.note and f"scan {scan.note}") if n]
                print(f"{op:<10} {case.label():<34} {mode:<8} | {fmt(pallas.ms, '9.3f')}"
                      f" {fmt(pallas.gbps, '7.2f')} {fmt(pallas.mib, '8.1f')}"
                      f" | {fmt(scan.ms, '9.3f')} {fmt(scan.gbps, '7.2f')} {fmt(scan.mib, '8.1f')}"
                      f" | {fmt(speedup, '6.2f')} | {'; '.join(other + notes)}", flush=True)
    print("x scan and the x in 'other' are speedups of the Pallas kernel over that row "
          "(above 1: Pallas is faster).")


if __name__ == "__main__":
    main()
