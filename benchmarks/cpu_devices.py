"""Few-shot train-step time on a CPU host split into 1 vs N JAX devices (config.cpu_devices).

    python benchmarks/cpu_devices.py [--config configs/fewshot/omniglot_srwm_cpu.py] [--devices 1,2]
        [--steps 10]

XLA's CPU convolutions use little more than one core within one device; data parallelism over
per-core devices is what uses the others. Each device count runs in its own subprocess (the
count is fixed when the backend starts) on the same synthetic batch; prints ms/step, images/s
and the speed-up over the first count. Measure on an otherwise idle machine.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(config_path, devices, steps):
    import importlib.util

    import jax
    jax.config.update("jax_num_cpu_devices", devices)  # before the backend starts
    from benchmarks.fewshot_throughput import seconds_per_step
    spec = importlib.util.spec_from_file_location("cfg", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seconds, images = seconds_per_step(module.get_config(), steps)
    print(json.dumps({"devices": jax.device_count(), "seconds": seconds, "images": images}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/fewshot/omniglot_srwm_cpu.py"))
    parser.add_argument("--devices", default="1,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.config, args.worker, args.steps)
    rows = []
    for n in (int(d) for d in args.devices.split(",")):
        out = subprocess.run([sys.executable, __file__, "--config", args.config,
                              "--steps", str(args.steps), "--worker", str(n)],
                             cwd=REPO, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"config {Path(args.config).name}\n"
          "| CPU devices | ms/step | images/s | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {1e3 * r['seconds']:.0f} | {r['images'] / r['seconds']:,.0f} | "
              f"{rows[0]['seconds'] / r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
