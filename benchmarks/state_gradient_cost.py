"""Cost of the RL memory core's gradient: state_gradient "unroll" vs "step" (the original's
per-step cut).

    python benchmarks/state_gradient_cost.py [--kinds srwm,deltanet,srdelta] [--sizes 8x20,32x50]
        [--repeats 5]

Times the jitted gradient (forward + backward) of `rl.agent.MemoryCore` (Linear 257 -> 128,
2 x [memory layer, 8 heads x 16, + FF 512]) on a random [B, T, 257] input with resets, for
each kind and B x T (8 x 20: the CPU learning check; 32 x 50: the paper's learner batch), in
both modes in the same process. Prints ms per gradient (median of --repeats after one
compile-and-warm-up call) and the ratio step / unroll. Only the core: the ResNet stem, the
same in both modes, is left out.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rl.agent import MemoryCore


def gradient_ms(kind, mode, B, T, repeats):
    core = MemoryCore(kind=kind, state_gradient=mode, dense_init="torch")
    kx, kr, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (B, T, 257))
    reset = jax.random.bernoulli(kr, 0.02, (B, T))
    state = core.initial_state(B)
    params = core.init(kp, x, state, reset)

    @jax.jit
    def grad(p):
        return jax.grad(lambda p: jnp.sum(core.apply(p, x, state, reset)[0] ** 2))(p)

    jax.block_until_ready(grad(params))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(params))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="srwm,deltanet,srdelta")
    parser.add_argument("--sizes", default="8x20,32x50")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    print("| kind | B x T | unroll ms | step ms | step / unroll |\n|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        for size in args.sizes.split(","):
            B, T = (int(n) for n in size.split("x"))
            unroll = gradient_ms(kind, "unroll", B, T, args.repeats)
            step = gradient_ms(kind, "step", B, T, args.repeats)
            print(f"| {kind} | {B} x {T} | {unroll:.1f} | {step:.1f} | {step / unroll:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
