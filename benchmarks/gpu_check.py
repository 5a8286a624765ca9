"""One command for a GPU machine: kernel correctness on the GPU, then the benchmarks; one report.

    python benchmarks/gpu_check.py OUT_DIR [--original-cuda PATH] [--skip STEP,...] [--dry-run]

Run from the repository root on a machine with an NVIDIA GPU and jax with CUDA
(``pip install -U "jax[cuda12]"``; for rl_throughput also ``bash rl/install_procgen.sh``).
Writes OUT_DIR/gpu_check.md: the device, jax version, and for each step its command, exit
status, wall time and output. Without an NVIDIA GPU it exits at once (status 2) with one line.

Steps, in order, each in its own process with a time limit. The limits add up to 480 s, so
the whole run ends within 8 minutes even when a step hangs; the estimates (~405 s in all) come
from each step's work (number of jit compiles at ~1-3 s each on a GPU host, timed loops), not
yet from a GPU run:
  kernels_gpu  pytest tests/test_kernels_gpu.py: 19 kernel code paths compiled by Triton and,
               on Hopper (sm_90+, jax >= 0.11), 5 Mosaic GPU delta-rule and 3 Mosaic GPU SRWM
               cases plus the dispatch check (impl="pallas" picks Mosaic there, Triton for
               reset masks), run (not interpreted) against the scan reference, forward and all
               gradients; each case is 4 compiles (kernel and scan, forward and grad)
                                                                        est. 135 s, limit 140 s
  kernels      python -m benchmarks.kernels --quick --ops srwm: SRWM Pallas vs scan at the
               paper's shapes (+ the IDSIA CUDA kernels with --original-cuda)
                                                                        est. 45 s, limit 60 s
  backends     python -m benchmarks.kernels --quick --ops delta_rule --backends
               scan,triton,mosaic: the delta rule on Mosaic GPU vs Triton vs the scan side by
               side, forward and fwd+bwd, at the few-shot, RL (T=50, T=1) and long (T=4096)
               shapes, with ratio columns (+ fla when importable); rows also in
               OUT_DIR/backends.json. Off Hopper the mosaic column says why it failed.
               24 compiles                                              est. 70 s, limit 90 s
  cells        python benchmarks/ops.py --quick: custom-VJP scan vs autodiff
                                                                        est. 25 s, limit 35 s
  fewshot      python benchmarks/fewshot_throughput.py --steps 10: images/s of SRWM, DeltaNet,
               LSTM at the paper's Omniglot setting (3 compiles of ~10 s)
                                                                        est. 45 s, limit 65 s
  rl           python benchmarks/rl_throughput.py --seconds 40 --agents ff,srwm with
               configs/rl/default.py (2 x 40 s of Sebulba training; needs procgen)
                                                                        est. 85 s, limit 90 s
A step over its limit is stopped and reported as such; the next step still runs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def steps(original_cuda: str | None, out_dir: str = "."):
    py = sys.executable
    kernels_cmd = [py, "-m", "benchmarks.kernels", "--quick", "--ops", "srwm"]
    if original_cuda:
        kernels_cmd += ["--original-cuda", original_cuda]
    return [  # (name, command, time limit in seconds)
        ("kernels_gpu", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                         "tests/test_kernels_gpu.py"], 140),
        ("kernels", kernels_cmd, 60),
        ("backends", [py, "-m", "benchmarks.kernels", "--quick", "--ops", "delta_rule",
                      "--backends", "scan,triton,mosaic",
                      "--json", str(Path(out_dir).resolve() / "backends.json")], 90),
        ("cells", [py, "benchmarks/ops.py", "--quick"], 35),
        ("fewshot", [py, "benchmarks/fewshot_throughput.py", "--steps", "10"], 65),
        ("rl", [py, "benchmarks/rl_throughput.py", "--seconds", "40", "--agents", "ff,srwm",
                "--config", "configs/rl/default.py"], 90),
    ]


STEP_NAMES = ("kernels_gpu", "kernels", "backends", "cells", "fewshot", "rl")
TIME_BUDGET_S = 480  # the 8 minutes the steps' limits add up to


def nvidia_gpus() -> list[str]:
    """GPUs that ``nvidia-smi -L`` lists (empty without a driver or GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.startswith("GPU ")]


def run_step(name, command, limit):
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=limit)
        status, output = str(proc.returncode), proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        status = f"stopped after {limit} s"
        output = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                  else (e.stdout or "")) + "\n[time limit reached]"
    return dict(name=name, command=" ".join(command), status=status,
                seconds=time.perf_counter() - start, output=output)


def report(results, header) -> str:
    lines = ["# GPU check", "", *header, "",
             "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} |" for r in results]
    for r in results:
        tail = r["output"].strip().splitlines()[-80:]
        lines += ["", f"## {r['name']}", "", f"`{r['command']}`", "", "```", *tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder for gpu_check.md (created if missing)")
    parser.add_argument("--original-cuda", metavar="PATH",
                        help="a checkout of IDSIA/modern-srwm: also time its CUDA kernels "
                             "(needs torch with CUDA)")
    parser.add_argument("--skip", default="", help=f"comma-separated steps of {STEP_NAMES}")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each step's limit and command, and the total; run nothing "
                             "(works without a GPU)")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STEP_NAMES):
        parser.error(f"--skip: unknown steps {sorted(skip - set(STEP_NAMES))}; "
                     f"choose from {STEP_NAMES}")
    if args.dry_run:
        planned = [s for s in steps(args.original_cuda, args.out_dir) if s[0] not in skip]
        for name, command, limit in planned:
            print(f"{name}\t{limit}\t{' '.join(command)}")
        print(f"total\t{sum(limit for _, _, limit in planned)}\t(budget {TIME_BUDGET_S} s)")
        return 0
    gpus = nvidia_gpus()
    if not gpus:
        print("gpu_check: no NVIDIA GPU here (nvidia-smi lists none); run it on a GPU machine.",
              file=sys.stderr)
        return 2
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.__version__, jax.default_backend(), "
         "jax.devices()[0].device_kind)"], capture_output=True, text=True, cwd=REPO)
    fields = probe.stdout.split(maxsplit=2)
    if probe.returncode != 0 or len(fields) < 3 or fields[1] != "gpu":
        print("gpu_check: jax does not see the GPU; install it with "
              "pip install -U \"jax[cuda12]\" (the same jax version).", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
              f"- device: {fields[2].strip()} ({'; '.join(gpus)})",
              f"- jax {fields[0]}", f"- command: `python benchmarks/gpu_check.py {args.out_dir}"
              + (f" --original-cuda {args.original_cuda}" if args.original_cuda else "") + "`"]
    results = []
    for name, command, limit in steps(args.original_cuda, args.out_dir):
        if name in skip:
            continue
        print(f"gpu_check: {name} (limit {limit} s) ...", flush=True)
        results.append(run_step(name, command, limit))
        (out_dir / "gpu_check.md").write_text(report(results, header))  # partial reports survive
        print(f"gpu_check: {name}: exit {results[-1]['status']}, "
              f"{results[-1]['seconds']:.0f} s", flush=True)
    print(f"gpu_check: report in {out_dir / 'gpu_check.md'}")
    return 0 if all(r["status"] == "0" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
