"""How fast a memory learns delayed-label binding, without images (seconds per variant, CPU).

    python benchmarks/delayed_binding_synthetic.py [--variants srwm:0:0,srwm:2:0,srwm:2:1]
        [--steps 2000]

Each variant is model:K:std (memory kind, ShortConv kernel size, std of its initial past taps;
K = 0: no short convolution). The task is the delayed-label stream of fewshot/sequential.py
with the conv net replaced by fixed "images": per sequence, 5 random class prototypes in R^16,
each step shows prototype + noise (std 0.3) of a uniformly drawn class together with the
previous step's label; 25 steps. The 1st occurrence of a class is a guess (20%); the 2nd
needs the image of one step bound to the label that arrives at the next. Prints the training
accuracy on 1st and 2nd occurrences (mean over the last 250 steps) every 250 steps, then a
table of the step at which 2nd-occurrence accuracy first exceeded 30%.
"""
import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fewshot.data.sequential_stream import occurrence_index
from fewshot.sequential import delayed_label_inputs
from srwm_jax.layers import MemoryStack, ShortConv

N_WAY, LENGTH, FEATURES, BATCH = 5, 25, 16, 32


class DelayedLearner(nn.Module):
    kind: str
    short_conv: int
    init_std: float

    @nn.compact
    def __call__(self, x):
        """x [B, T, F + N] -> logits [B, T, N]."""
        x = nn.Dense(64)(x)
        if self.short_conv:
            x, _ = ShortConv(self.short_conv, self.init_std)(x)
        x, _ = MemoryStack(self.kind, num_layers=2, hidden=64, num_heads=4, ff_dim=128)(x)
        return nn.Dense(N_WAY)(x)


def synthetic_batch(key):
    """-> inputs [B, T, F + N] (image, previous step's label), labels [B, T]."""
    k_proto, k_label, k_noise = jax.random.split(key, 3)
    prototypes = jax.random.normal(k_proto, (BATCH, N_WAY, FEATURES))
    labels = jax.random.randint(k_label, (BATCH, LENGTH), 0, N_WAY)
    images = (jnp.take_along_axis(prototypes, labels[..., None], 1)
              + 0.3 * jax.random.normal(k_noise, (BATCH, LENGTH, FEATURES)))
    return jnp.concatenate([images, delayed_label_inputs(labels, N_WAY)], -1), labels


def run(kind, short_conv, init_std, steps, log_every=250):
    """-> list of (step, 1st-occurrence accuracy, 2nd-occurrence accuracy)."""
    model = DelayedLearner(kind, short_conv, init_std)
    params = model.init(jax.random.key(0), synthetic_batch(jax.random.key(1))[0])
    optimizer = optax.adam(1e-3, 0.9, 0.995, 1e-9)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        inputs, labels = synthetic_batch(key)

        def loss_fn(p):
            logits = model.apply(p, inputs)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, logits.argmax(-1) == labels

        (_, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, correct, labels

    history, window, t0 = [], [], time.time()
    for i in range(steps):
        params, opt_state, correct, labels = train_step(params, opt_state, jax.random.key(i + 10))
        correct, occurrence = np.asarray(correct), occurrence_index(np.asarray(labels), N_WAY)
        window.append([correct[occurrence == 0].mean(), correct[occurrence == 1].mean()])
        if (i + 1) % log_every == 0:
            first, second = np.mean(window[-log_every:], 0)
            history.append((i + 1, float(first), float(second)))
            print(f"{kind} K={short_conv} std={init_std}: step {i + 1}: 1st {first:.3f} "
                  f"2nd {second:.3f} ({time.time() - t0:.0f} s)", flush=True)
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="srwm:0:0,srwm:2:0,srwm:2:1")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for variant in args.variants.split(","):
        kind, k, std = variant.split(":")
        history = run(kind, int(k), float(std), args.steps)
        above = next((s for s, _, second in history if second > 0.3), None)
        rows.append((variant, history[-1], above))
    print("\n| variant | steps | 1st | 2nd | 2nd > 30% at step |\n|---|---|---|---|---|")
    for variant, (step, first, second), above in rows:
        print(f"| {variant} | {step} | {100 * first:.1f} | {100 * second:.1f} | {above or '-'} |")


if __name__ == "__main__":
    main()
