"""H100 occupancy of the Pallas kernels, beside the original IDSIA/modern-srwm CUDA kernels.

    python -m benchmarks.occupancy                 # ~2 min of compiles on 2 CPU cores
    python -m benchmarks.occupancy --alternatives  # + SRWM block configs other than the defaults
    python -m benchmarks.occupancy --json OUT      # also write our rows (with the jax version)
    python -m benchmarks.occupancy --compare A.json B.json ...   # per-version table, no compile

Compiles every kernel for an H100 without a GPU (``tests/h100_gate.py``: XLA + Triton + ptxas
for sm_90a), reads registers per thread, threads per block and shared memory per block, and
computes resident blocks and warps per SM from the H100's limits (65,536 registers, 2,048
threads, 32 blocks, 228 KB shared memory per SM; 1 KB reserved per block; 132 SMs) and the
number of waves (grid blocks / (blocks per SM x 132)) at the paper's shapes:

  few-shot   B=128 H=16 d=16 T=6     (Omniglot 5-way 1-shot, batch 128, 16 heads of 16)
  RL         B=32 / 64 H=8 d=16 T=50 (IMPALA unrolls of 50 steps, 8 heads of 16)
  long       B=16 H=16 d=16 T=4096   (a long-sequence stress shape; waves do not depend on T)
  gate T=76  B=128 H=16 T=76         (the H100 gate's shape: SRWM d=16 with input softmax and
                                      d=64 masked with input softmax, whose registers jax 0.12
                                      changed)

The original kernels (supervised_learning/self_ref_v0/self_ref_v0.cu and
fast_weight/fast_weight_cuda.cu) are not compiled here (they need PyTorch's headers); their
launch configuration and dynamic shared memory are computed from the formulas in their
launchers, so their occupancy is an upper bound from threads and shared memory alone
(registers "-"). One block per (batch, head) sequence; the SRWM launchers size their time
chunk so that the block's shared memory fills the 227 KB opt-in limit, the DeltaNet ones fill
48 KB.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from tests import h100_gate as h100

SHAPES = {  # name: (batch, heads, seq_len)
    "few-shot": (128, 16, 6),
    "RL B=32": (32, 8, 50),
    "RL B=64": (64, 8, 50),
    "long": (16, 16, 4096),
}
PROGRAM_LABEL = {("forward", "fwd"): "forward", ("grad", "fwd"): "forward + residuals",
                 ("grad", "bwd"): "backward"}


def our_cases():
    """(shape name, KernelCase): every head size at the few-shot shape, d=16 at all shapes,
    and two input-softmax SRWM kernels at the gate's shape."""
    cases = []
    for shape, (b, h, t) in SHAPES.items():
        for d in ((16, 32, 64) if shape == "few-shot" else (16,)):
            cases.append((shape, h100.KernelCase("srwm", d, seq_len=t, batch=b, heads=h,
                                                 input_softmax=False)))
        for d in ((16, 32, 64, 128) if shape == "few-shot" else (16,)):
            cases.append((shape, h100.KernelCase("delta", d, d, seq_len=t, batch=b, heads=h)))
    # The two kernels whose registers moved with jax 0.12's Triton (kernels/README.md, occupancy
    # per jax version), at the H100 gate's shape (B=128 H=16 T=76, tests/h100_gate.py).
    cases.append(("gate T=76", h100.KernelCase("srwm", 16, input_softmax=True)))
    cases.append(("gate T=76", h100.KernelCase("srwm", 64, input_softmax=True, reset=True)))
    return cases


# --- the original CUDA kernels: launch configuration from their launchers --------------------

@dataclasses.dataclass(frozen=True)
class Launch:
    kernel: str
    blocks: int
    threads: int
    shared_bytes: int


def _srwm_original(d: int, sequences: int, optin_bytes: int) -> list[Launch]:
    """self_ref_v0.cu: forward (1024-thread cap) and backward (768-thread cap) launchers.

    threads = min(cap, d*d) rounded down to a multiple of d; E_block = d rows per sub-block
    pass; the time chunk T is the largest that fits the opt-in shared memory:
    forward:  const = 3*E_block*d + 4d + 4(3d+4) + 4 floats, per step E_block floats;
    backward: const = 2(3*E_block*d + 4d) + 2(3d+4) + 1,     per step 2(3d+4) + E_block.
    """
    limit = optin_bytes // 4
    launches = []
    for name, cap in (("self_ref_forward", 1024), ("self_ref_backward", 768)):
        threads = min(cap, d * d) // d * d
        e_block = (threads // d) * -(-(d * d) // threads)
        if name == "self_ref_forward":
            const, per_step = 3 * e_block * d + 4 * d + 4 * (3 * d + 4) + 4, e_block
        else:
            const = 2 * (3 * e_block * d + 4 * d) + 2 * (3 * d + 4) + 1
            per_step = 2 * (3 * d + 4) + e_block
        chunk = (limit - const) // per_step
        launches.append(Launch(name, sequences, threads, (chunk * per_step + const) * 4))
    return launches


def _delta_original(dk: int, dv: int, sequences: int) -> list[Launch]:
    """fast_weight_cuda.cu: forward, backward (value/beta part, query/key part); 48 KB each.

    forward:   threads = min(1024, dk*dv) down to a multiple of dv; const (E_block+3)*dv,
               per step dv + 2*E_block + 1 floats (E_block = dk rows per pass);
    bwd value: same threads; const (E_block+1)*dv + 1, per step 3dv + 2*E_block + 1;
    bwd q/k:   threads multiple of dk, grid sequences x ceil(dk*dv/threads) blocks;
               const 2*dk*(1 + dv_per_block), per step 2dk + 5*dv_per_block + 1.
    """
    limit = 12 * 1024  # floats: the launchers' fixed 48 KB
    threads_v = min(1024, dk * dv) // dv * dv
    e_block = (threads_v // dv) * -(-(dk * dv) // threads_v)
    threads_k = min(1024, dk * dv) // dk * dk
    sub_k = -(-(dk * dv) // threads_k)
    dv_block = threads_k // dk
    parts = [("fast_weight_forward", sequences, threads_v, (e_block + 3) * dv,
              dv + 2 * e_block + 1),
             ("fast_weight_backward_value_beta", sequences, threads_v, (e_block + 1) * dv + 1,
              3 * dv + 2 * e_block + 1),
             ("fast_weight_backward_query_key", sequences * sub_k, threads_k,
              2 * dk * (1 + dv_block), 2 * dk + 5 * dv_block + 1)]
    launches = []
    for name, blocks, threads, const, per_step in parts:
        chunk = (limit - const) // per_step
        launches.append(Launch(name, blocks, threads, (chunk * per_step + const) * 4))
    return launches


def original_rows():
    rows = []
    for shape, (b, h, _) in SHAPES.items():
        n = b * h
        for d in ((16, 32, 64) if shape == "few-shot" else (16,)):
            for launch in _srwm_original(d, n, h100.H100.shared_per_block_optin):
                rows.append((shape, f"srwm d={d}", launch))
        for d in ((16, 32, 64, 128) if shape == "few-shot" else (16,)):
            for launch in _delta_original(d, d, n):
                rows.append((shape, f"delta {d}x{d}", launch))
    return rows


def alternative_configs():
    """SRWM block configs to compare with the defaults at the few-shot shape (B*H = 2048):
    (d, block_seqs, num_warps, num_warps_bwd). Chosen around the two tight spots of the
    default table: d=16 backward ((16, 2, 1, 2) was the default before 2026-11-29: 168
    registers, 6 blocks/SM) and d=64 backward (128 registers x 512 threads: the whole register
    file, 1 block/SM)."""
    return [(16, 2, 1, 2), (16, 2, 1, 4), (16, 4, 2, 4), (32, 1, 2, 2), (64, 1, 4, 8),
            (64, 1, 8, 32)]


def alternative_rows(log):
    import jax
    import jax.numpy as jnp

    from srwm_jax import kernels
    from srwm_jax.kernels.srwm import SRWMBlockConfig
    from srwm_jax import SRWMWeights
    b, h, t = SHAPES["few-shot"]
    rows = []
    for d, block_seqs, warps, warps_bwd in alternative_configs():
        config = SRWMBlockConfig(block_seqs=block_seqs, num_warps=warps, num_warps_bwd=warps_bwd,
                                 chunk=4 * d)
        mat = h100.on_h100((b, h, d, d), jnp.float32)
        args = (h100.on_h100((b, t, h, d), jnp.float32),
                SRWMWeights(y=mat, q=mat, k=mat, b=h100.on_h100((b, h, d, 4), jnp.float32)))

        def loss(x, W, config=config):
            y, W_T = kernels.srwm_pallas(x, W, input_softmax=False, config=config)
            return sum(jnp.sum(a) for a in jax.tree.leaves((y, W_T)))
        label = f"srwm d={d} BB={block_seqs} warps={warps}/{warps_bwd}"
        try:
            program = h100.compile_for(jax.grad(loss, argnums=(0, 1)), *args)
        except Exception as e:  # a config that does not compile is a result too
            rows.append((label, None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"))
            continue
        for k in program.pallas_kernels():
            rows.append((label, k, None))
        log(f"{label}: {program.seconds:.1f} s")
    return rows


def alternatives_table(rows) -> str:
    head = ("| config (few-shot shape) | kernel | grid | threads | regs/thread | spill st/ld (B) "
            "| blocks/SM | warps/SM | waves |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, k, error in rows:
        if k is None:
            lines.append(f"| {label} | compile error: {error} | | | | | | | |")
            continue
        occ = h100.occupancy(k.registers, k.threads, k.shared_bytes)
        lines.append(f"| {label} | {k.name.split('__')[0]} | {k.blocks} | {k.threads} "
                     f"| {k.registers} | {k.spill_stores}/{k.spill_loads} | {occ.blocks_per_sm} "
                     f"| {occ.warps_per_sm} | {occ.waves(k.blocks):.2f} |")
    return "\n".join(lines)


def _case_label(case):
    if case.op != "srwm":
        return f"delta {case.d}x{case.dv}"
    return (f"srwm d={case.d}" + (" input softmax" if case.input_softmax else "")
            + (" masked" if case.reset else ""))


def _part(kernel: str) -> str:
    """"fwd" or "bwd" from a kernel name (``srwm_fwd``, ``srwm_bwd_reset__1``, ...)."""
    return "fwd" if "fwd" in kernel.split("__")[0] else "bwd"


def table(rows_ours, rows_original) -> str:
    head = ("| shape | kernel | code | launch | grid | threads | regs/thread | shared (B) "
            "| blocks/SM | warps/SM | limited by | waves |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for shape, case, r in rows_ours:
        occ = h100.Occupancy(r["blocks_per_sm"], r["warps_per_sm"], r["limited_by"])
        part = _part(r["kernel"])
        launch = PROGRAM_LABEL[(r["program"], part)]
        lines.append(f"| {shape} | {_case_label(case)} | ours | {launch} "
                     f"| {r['grid']} | {r['threads']} | {r['registers']} | {r['shared_bytes']} "
                     f"| {occ.blocks_per_sm} | {occ.warps_per_sm} | {occ.limited_by} "
                     f"| {occ.waves(r['grid']):.2f} |")
    for shape, label, launch in rows_original:
        # Registers unknown (not compiled): the bound from threads and shared memory alone.
        occ = h100.occupancy(1, launch.threads, launch.shared_bytes)
        lines.append(f"| {shape} | {label} | original | {launch.kernel} | {launch.blocks} "
                     f"| {launch.threads} | - | {launch.shared_bytes} | {occ.blocks_per_sm} "
                     f"| {occ.warps_per_sm} | {occ.limited_by} | {occ.waves(launch.blocks):.2f} |")
    return "\n".join(lines)


def compare_table(runs: list[dict]) -> str:
    """Side-by-side registers / blocks per SM / warps per SM of our kernels, one column group per
    jax version (runs: the ``--json`` files of :func:`main`)."""
    versions = [r["jax"] for r in runs]
    keyed = []
    for run in runs:
        keyed.append({(r["shape"], r["label"], r["launch"]): r for r in run["rows"]})
    keys = list(dict.fromkeys(k for run in keyed for k in run))
    head = ("| shape | kernel | launch | "
            + " | ".join(f"jax {v}: regs, blocks/SM, warps/SM, spills" for v in versions) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key in keys:
        cells = []
        for run in keyed:
            r = run.get(key)
            cells.append("-" if r is None else
                         f"{r['registers']}, {r['blocks_per_sm']}, {r['warps_per_sm']}, "
                         f"{r['spill_stores'] + r['spill_loads']}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    import json
    from pathlib import Path
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alternatives", action="store_true",
                        help="also compile the SRWM block configs of alternative_configs()")
    parser.add_argument("--json", help="write our kernels' rows and the jax version here")
    parser.add_argument("--compare", nargs="+", metavar="JSON",
                        help="print the per-version table of these --json files and exit")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare_table([json.loads(Path(f).read_text()) for f in args.compare]))
        return 0
    h100.use_cpu_platform()
    if not h100.cuda_plugin_installed():
        sys.exit("benchmarks.occupancy: jax's CUDA plugin is not installed; run "
                 "benchmarks/install_cuda_plugin.sh")
    import jax
    rows_ours, failures = [], []
    for shape, case in our_cases():
        for r in h100.compile_cases([case], log=lambda s: print(s, file=sys.stderr, flush=True)):
            if "error" in r:
                failures.append(f"{shape} {case.name} {r['program']}: {r['error'].splitlines()[0]}")
            else:
                rows_ours.append((shape, case, r))
    print(f"H100 SXM (described; sm_90a via deviceless compile), jax {jax.__version__}")
    print(table(rows_ours, original_rows()))
    if args.json:
        rows = []
        for shape, case, r in rows_ours:
            part = _part(r["kernel"])
            rows.append(dict(r, shape=shape, label=_case_label(case),
                             launch=PROGRAM_LABEL[(r["program"], part)]))
        Path(args.json).write_text(json.dumps({"jax": jax.__version__, "rows": rows}, indent=1))
    if args.alternatives:
        print()
        print(alternatives_table(alternative_rows(
            log=lambda s: print(s, file=sys.stderr, flush=True))))
    for f in failures:
        print("COMPILE ERROR", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
