"""Episode sampler speed on real Omniglot (CPU only).

    python benchmarks/episode_sampler.py [--data_dir ../shared/data/omniglot] [--steps 200]
                                         [--sequential]

Prints one row per configuration: milliseconds per batch, episodes/s and
images/s (images = B (N K + Q), the original's throughput count). "sample" calls
``EpisodeSampler.sample`` in a loop (median time per call); "prefetch" reads ``sampler.iterate``
(background threads) with a consumer that does nothing, i.e. the producer's
throughput; "wait@10ms" is the mean time ``next()`` blocks when the consumer
spends 10 ms per step (sleeping, which releases the GIL as a device step does)
-- ~0 means training never waits for data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot.data import EpisodeSampler, SequentialStream, load_split  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def _time_sample(make, steps):
    """Median seconds per call (robust to other load on a shared machine)."""
    make(0)  # warm-up
    times = []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        make(step)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _time_prefetch(iterate, steps, consumer_s=0.0, **kw):
    it = iterate(start_step=0, num_steps=steps + 1, **kw)
    next(it)
    waits = []
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        next(it)
        waits.append(time.perf_counter() - t)
        if consumer_s:
            time.sleep(consumer_s)
    total = (time.perf_counter() - t0) / steps
    it.close()
    return total, float(np.mean(waits))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--sequential", action="store_true",
                        help="also time the delayed-label stream")
    args = parser.parse_args()

    t0 = time.perf_counter()
    ds = load_split("omniglot", args.data_dir, "train")
    print(f"load omniglot train (28 px, rotations): {time.perf_counter() - t0:.2f} s, {ds}")
    B = args.batch_size
    header = (f"{'config':<24}{'mode':<22}{'ms/batch':>10}{'episodes/s':>12}{'images/s':>12}"
              f"{'wait ms':>9}")
    print(header)
    print("-" * len(header))
    for n_way, k_shot in ((5, 1), (5, 5)):
        sampler = EpisodeSampler(ds, n_way, k_shot, num_queries=1, seed=0)
        imgs = B * (n_way * k_shot + 1)
        name = f"{n_way}w{k_shot}s B={B}"
        rows = [("sample", _time_sample(lambda s: sampler.sample(B, s), args.steps), float("nan"))]
        for threads in (1, 2):
            t, w = _time_prefetch(
                lambda **kw: sampler.iterate(B, **kw), args.steps, prefetch=4, num_threads=threads
            )
            rows.append((f"prefetch {threads} thread", t, w))
        t, w = _time_prefetch(
            lambda **kw: sampler.iterate(B, **kw), min(args.steps, 100), consumer_s=0.01, prefetch=4
        )
        rows.append(("prefetch, 10 ms step", t, w))
        for mode, t, w in rows:
            print(f"{name:<24}{mode:<22}{t * 1e3:>10.2f}{B / t:>12,.0f}{imgs / t:>12,.0f}"
                  f"{w * 1e3:>9.3f}")

    if args.sequential:
        t0 = time.perf_counter()
        a = load_split("omniglot", args.data_dir, "train", image_size=84, channels=3)
        b = load_split("omniglot_transformed", args.data_dir, "train")
        print(f"load 84 px omniglot + omniglot_transformed train: {time.perf_counter() - t0:.1f} s")
        stream = SequentialStream(a, b, n_way=5, shots=15, max_trim=60, normalize=True)
        Bs = 16
        t = _time_sample(lambda s: stream.sample(Bs, s), max(args.steps // 10, 5))
        print(f"{'sequential 5w15s B=16':<24}{'sample':<22}{t * 1e3:>10.2f}{Bs / t:>12,.0f}"
              f"{Bs * 120 / t:>12,.0f}")
        t, w = _time_prefetch(lambda **kw: stream.iterate(Bs, **kw), max(args.steps // 10, 5),
                              num_threads=2)
        print(f"{'sequential 5w15s B=16':<24}{'prefetch 2 thread':<22}{t * 1e3:>10.2f}"
              f"{Bs / t:>12,.0f}{Bs * 120 / t:>12,.0f}{w * 1e3:>9.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
