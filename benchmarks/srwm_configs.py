"""H100 registers and occupancy of one SRWM kernel case under block configs other than the default.

    python -m benchmarks.srwm_configs --d 64 --masked --softmax --program forward \
        --config 1,8,8,256 --config 1,16,8,256 --config 1,4,8,256 --config 1,8,8,256,2
    python -m benchmarks.srwm_configs --d 16 --softmax --seq-len 4096 --program grad \
        --config 1,1,1,64 --config 1,1,2,64

Each ``--config`` is ``block_seqs,num_warps,num_warps_bwd,chunk[,num_stages]`` (an
``SRWMBlockConfig``; ``num_stages`` of ``kernels._common.triton_params``, default 1). The case is
the H100 gate's (``tests/h100_gate.py``: B=128 H=16, T=76 unless ``--seq-len``), compiled
without a GPU (XLA + Triton + ptxas for sm_90a) with the spill gate off, so spilling configs
are reported instead of failing. Prints one table row per Pallas kernel: registers per thread,
threads per block, resident blocks and warps per SM, spilled bytes. The source of the
"Configs tried" table in kernels/README.md (H100 occupancy per jax version).
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from tests import h100_gate as h100


@contextlib.contextmanager
def _config(config, num_stages: int):
    """Makes ``srwm_pallas`` (called without ``config``) use ``config`` and ``num_stages``."""
    from srwm_jax.kernels import _common
    from srwm_jax.kernels.srwm import ops
    default, params = ops.default_srwm_config, _common.triton_params
    ops.default_srwm_config = lambda *args, **kwargs: config
    _common.triton_params = lambda num_warps, num_stages=num_stages: params(num_warps, num_stages)
    try:
        yield
    finally:
        ops.default_srwm_config, _common.triton_params = default, params


def rows(case, configs, programs):
    """[(config label, program, KernelResources or None, error or None)]."""
    from srwm_jax.kernels.srwm import SRWMBlockConfig
    out = []
    for values in configs:
        block_seqs, warps, warps_bwd, chunk, *rest = values
        stages = rest[0] if rest else 1
        config = SRWMBlockConfig(block_seqs, warps, warps_bwd, chunk)
        label = f"BB={block_seqs} warps={warps}/{warps_bwd} chunk={chunk} stages={stages}"
        with _config(config, stages):
            for name, (fn, args) in h100.case_programs(case).items():
                if name not in programs:
                    continue
                try:
                    program = h100.compile_for(fn, *args, fail_on_spills=False)
                except Exception as e:  # a config that does not compile is a result too
                    out.append((label, name, None, f"{type(e).__name__}: {e}".splitlines()[0]))
                    continue
                out.extend((label, name, k, None) for k in program.pallas_kernels())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, required=True, help="head dim: 16, 32 or 64")
    parser.add_argument("--seq-len", type=int, default=76)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--softmax", action="store_true", help="input_softmax=True")
    parser.add_argument("--masked", action="store_true", help="with a reset mask")
    parser.add_argument("--program", action="append", choices=("forward", "grad"),
                        help="forward (no residuals) and/or grad (forward + residuals, "
                             "backward); default both")
    parser.add_argument("--config", action="append", required=True,
                        help="block_seqs,num_warps,num_warps_bwd,chunk[,num_stages]")
    args = parser.parse_args(argv)
    h100.use_cpu_platform()
    if not h100.cuda_plugin_installed():
        sys.exit("benchmarks.srwm_configs: jax's CUDA plugin is not installed; run "
                 "benchmarks/install_cuda_plugin.sh")
    import jax
    case = h100.KernelCase("srwm", args.d, seq_len=args.seq_len, dtype=args.dtype,
                           input_softmax=args.softmax, reset=args.masked)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.config]
    print(f"jax {jax.__version__}, {case.name}, described H100 (sm_90a)")
    print("| config | program | kernel | regs/thread | threads | blocks/SM | warps/SM "
          "| spill st/ld (B) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, program, k, error in rows(case, configs, args.program or ("forward", "grad")):
        if k is None:
            print(f"| {label} | {program} | - | {error} | | | | |")
            continue
        occ = h100.occupancy(k.registers, k.threads, k.shared_bytes)
        print(f"| {label} | {program} | {k.name} | {k.registers} | {k.threads} "
              f"| {occ.blocks_per_sm} | {occ.warps_per_sm} | {k.spill_stores}/{k.spill_loads} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
