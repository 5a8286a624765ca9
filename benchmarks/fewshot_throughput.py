"""Images/s of a few-shot training step at the paper's Omniglot setting.

    python benchmarks/fewshot_throughput.py [--steps 20] [--batch_size 128]
        [--models srwm,deltanet,lstm]

Paper setting: 5-way 1-shot Omniglot, batch 128 episodes, Conv-4 (64 channels), 2 x 256 SRWM
with 16 heads and feed-forward 1024. Images/s counts B * (N*K + 1) images per step, as the
original code does (paper: ~8,000 images/s on a P100). Batches are synthetic (random pixels
of the right shape), so the figure is the model's, not the data loader's (the episode sampler
is measured by benchmarks/episode_sampler.py). Prints a table with the ratio to the LSTM row.
"""
import argparse
import time

import jax
import numpy as np

from configs.fewshot.table1 import get_config
from fewshot.tasks import get_task
from fewshot.training import build, initial_state


def synthetic_batch(config, batch_size, rng):
    N, K, Q, S = config.n_way, config.k_shot, config.train_queries, config.image_size
    return {"support_images": rng.random((batch_size, N * K, S, S, 1), np.float32),
            "support_labels": rng.integers(0, N, (batch_size, N * K)).astype(np.int32),
            "query_images": rng.random((batch_size, Q, S, S, 1), np.float32),
            "query_labels": rng.integers(0, N, (batch_size, Q)).astype(np.int32)}


def seconds_per_step(config, steps):
    """Mean wall time of one jitted train step of `config` on a fixed synthetic batch, and the
    images in that batch (B * (N*K + train_queries))."""
    model, optimizer, mesh, train_step, _ = build(config)
    rng = np.random.default_rng(0)
    state = initial_state(config, model, optimizer, mesh, synthetic_batch(config, 1, rng))
    batch = mesh.put_batch(synthetic_batch(config, config.batch_size, rng))
    key = jax.random.key(0)
    state, metrics = train_step(state, batch, key)  # compile
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, batch, key)
    jax.block_until_ready(metrics)
    return ((time.perf_counter() - t) / steps,
            config.batch_size * get_task(config).images_per_episode(config))


def images_per_second(model_name, batch_size, steps):
    config = get_config()
    config.model = model_name
    config.batch_size = batch_size
    if model_name == "lstm":
        config.num_layers = 1
    seconds, images = seconds_per_step(config, steps)
    return images / seconds, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--models", default="srwm,deltanet,lstm")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}")
    rows = {m: images_per_second(m, args.batch_size, args.steps) for m in args.models.split(",")}
    base = rows.get("lstm", next(iter(rows.values())))[0]
    print("| model | batch | ms/step | images/s | ratio to lstm |\n|---|---|---|---|---|")
    for m, (ips, sec) in rows.items():
        print(f"| {m} | {args.batch_size} | {1e3 * sec:.1f} | {ips:,.0f} | {ips / base:.2f} |")


if __name__ == "__main__":
    main()
