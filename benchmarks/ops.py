"""Custom-VJP scan cells vs plain autodiff of the same scan: time per call and saved residuals.

    python benchmarks/ops.py            # paper shapes + T=1024, on the default backend
    python benchmarks/ops.py --quick    # fewer repeats

Prints one table: for each shape, forward and forward+backward median time of the custom-VJP
`srwm` / `delta_rule` (impl="scan") and of `lax.scan` autodiffed directly (which saves every
intermediate state), the bytes each keeps for the backward, and their ratios.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import srwm_jax

SHAPES = [  # (name, B, T, H, d)
    ("few-shot T=6", 128, 6, 16, 16),
    ("few-shot T=26", 128, 26, 16, 16),
    ("few-shot T=76", 128, 76, 16, 16),
    ("RL T=50", 32, 50, 8, 16),
    ("long T=1024", 8, 1024, 16, 16),
]


def plain_srwm(x, W):
    W_T, ys = jax.lax.scan(lambda w, xt: srwm_jax.srwm_step(w, xt, False), W, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(ys, 0, 1), W_T


def plain_delta(q, k, v, beta, S0):
    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    S, ys = jax.lax.scan(lambda s, i: srwm_jax.delta_rule_step(s, *i), S0,
                         (tm(q), tm(k), tm(v), tm(beta)))
    return tm(ys), S


def median_time(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def residual_bytes(fn, args):
    _, vjp = jax.vjp(fn, *args)
    return sum(leaf.nbytes for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "nbytes"))


def measure(fn, args, repeats):
    fwd = jax.jit(fn)
    loss = lambda *a: sum(jnp.sum(o) for o in jax.tree.leaves(fn(*a)))  # noqa: E731
    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    return (median_time(fwd, args, repeats), median_time(fwd_bwd, args, repeats),
            residual_bytes(fn, args))


def srwm_args(B, T, H, d, key):
    ks = jax.random.split(key, 5)
    W = srwm_jax.SRWMWeights(*(jax.random.normal(k, (B, H, d, n)) / d ** 0.5
                               for k, n in zip(ks[1:], (d, d, d, 4))))
    return jax.random.normal(ks[0], (B, T, H, d)), W


def delta_args(B, T, H, d, key):
    ks = jax.random.split(key, 4)
    q = jax.nn.softmax(jax.random.normal(ks[0], (B, T, H, d)), -1)
    k = jax.nn.softmax(jax.random.normal(ks[1], (B, T, H, d)), -1)
    return q, k, jax.random.normal(ks[2], (B, T, H, d)), jax.nn.sigmoid(
        jax.random.normal(ks[3], (B, T, H))), jnp.zeros((B, H, d, d))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device {jax.devices()[0].device_kind}")
    header = ("| op | shape | B,T,H,d | custom fwd ms | plain fwd ms | custom fwd+bwd ms "
              "| plain fwd+bwd ms | fwd+bwd ratio plain/custom | custom saved MiB "
              "| plain saved MiB | saved ratio plain/custom |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    key = jax.random.key(0)
    for op, make, custom, plain in (
            ("srwm", srwm_args, lambda x, W: srwm_jax.srwm(x, W, impl="scan"), plain_srwm),
            ("delta_rule", delta_args, lambda *a: srwm_jax.delta_rule(*a, impl="scan"),
             plain_delta)):
        for name, B, T, H, d in SHAPES:
            inputs = make(B, T, H, d, key)
            cf, cfb, cb = measure(custom, inputs, repeats)
            pf, pfb, pb = measure(plain, inputs, repeats)
            print(f"| {op} | {name} | {B},{T},{H},{d} | {1e3 * cf:.2f} | {1e3 * pf:.2f} "
                  f"| {1e3 * cfb:.2f} | {1e3 * pfb:.2f} | {pfb / cfb:.2f} | {cb / 2**20:.2f} "
                  f"| {pb / 2**20:.2f} | {pb / cb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
