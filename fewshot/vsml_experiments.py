"""The VSML experiments at CPU scale, each writing a table (table.md, results.json) and a plot.

  python -m fewshot.vsml_experiments within --out runs/vsml_within [--steps 2000]
      Learning within an episode and transfer of the learned learning algorithm: VSML, an LSTM
      and an SRWM (same episodes, same number of meta-training steps and batch) meta-trained
      on online 5-way episodes of Omniglot's background (Vinyals train) alphabets, inputs
      reduced to 16 features by one fixed random projection; tested on fixed episodes of
      held-out alphabets (Vinyals test), of the shifted domain omniglot_transformed (test
      classes) and of synthetic Gaussian classes: accuracy on the k-th occurrence of a class.
      `--mnist_family fashion_mnist=DIR` (repeatable) adds MNIST-family test sets read by
      fewshot/data/mnist.py, as the paper's transfer to Fashion-MNIST (no such data here).

  python -m fewshot.vsml_experiments sgd --out runs/vsml_sgd [--steps 1500]
      Backpropagation in forward mode (paper Sec. 4.1): the shared LSTM of a one-layer VSML
      network (8 inputs -> 3 outputs) is meta-trained to imitate online SGD on a linear
      softmax classifier (its forward messages must equal SGD's logits, its inputs are SGD's
      error and label feedback), on synthetic Gaussian tasks. Then it runs free (its own
      errors as feedback) on tasks never seen, beside real SGD: learning curves (accuracy per
      step) on synthetic tasks with another noise level and on Omniglot test alphabets.

Shared machine: wall times are those of a contended 2-core CPU. Bad flags exit with status 2
and one `error:` line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from srwm_jax.ops.vsml import VSMLParams, init_network_state, init_vsml_params, vsml_network

from .data import load_split
from .data.mnist import MNIST_FAMILY, as_class_images, load_mnist_family
from .online import (ImageEpisodes, OnlineConfig, SyntheticEpisodes, meta_train, num_params,
                     occurrence_accuracy)

K_COLUMNS = (1, 2, 3, 5, 10)


def _load(name, split, data_dir):
    return load_split(name, data_dir, split, image_size=28, channels=1 if name == "omniglot"
                      else 3, rotations="none")


def run_within(args):
    n_way, length, dim = 5, 50, 16
    train = ImageEpisodes(_load("omniglot", "train", args.data_dir), n_way, length, dim, seed=1)
    tests = {
        "omniglot held-out alphabets": ImageEpisodes(_load("omniglot", "test", args.data_dir),
                                                     n_way, length, dim, seed=2),
        "omniglot_transformed (test)": ImageEpisodes(
            _load("omniglot_transformed", "test", args.data_dir), n_way, length, dim, seed=3),
        "synthetic Gaussian classes": SyntheticEpisodes(n_way, length, dim, noise=0.5, seed=4),
    }
    for name, folder in args.mnist_family:   # the paper's MNIST-family transfer, data permitting
        x, y = load_mnist_family(name, folder, "test")
        tests[f"{name} (test)"] = ImageEpisodes(as_class_images(name, "test", x, y), n_way,
                                                length, dim, seed=5)
    configs = {
        "vsml": OnlineConfig(kind="vsml", n_way=n_way, length=length, dim=dim, msg_size=8,
                             state_size=16, steps=args.steps, batch_size=16, learning_rate=3e-3),
        "lstm": OnlineConfig(kind="lstm", n_way=n_way, length=length, dim=dim, hidden=64,
                             steps=args.steps, batch_size=16, learning_rate=3e-3),
        "srwm": OnlineConfig(kind="srwm", n_way=n_way, length=length, dim=dim, hidden=32,
                             num_heads=4, num_layers=1, steps=args.steps, batch_size=16,
                             learning_rate=1e-3),
    }
    results = {}
    for name in args.models:
        start = time.time()
        model, params, history = meta_train(configs[name], train, log=print, log_every=100)
        wall = time.time() - start
        evals = {}
        for test_name, episodes in tests.items():
            acc, count, total = occurrence_accuracy(model, params, episodes, num_batches=4,
                                                    batch_size=64)
            evals[test_name] = {"by_occurrence": [None if np.isnan(a) else float(a) for a in acc],
                                "total": total}
        results[name] = {"params": num_params(params), "train_seconds": wall,
                         "final_train_loss": history[-1][1], "evals": evals}
        print(name, json.dumps(results[name]["evals"]))
    lines = [f"Online {n_way}-way episodes of {length} steps, {args.steps} meta-training steps of "
             "16 episodes each (Omniglot background alphabets, 16-feature random projection); "
             "accuracy on the k-th occurrence of a class, 256 fixed test episodes. Chance "
             f"{1 / n_way:.2f}.", ""]
    header = "| test data | model | params | train s | " + " | ".join(
        f"k={k}" for k in K_COLUMNS) + " | all |"
    lines += [header, "|" + "---|" * (5 + len(K_COLUMNS))]
    for test_name in tests:
        for name, r in results.items():
            e = r["evals"][test_name]
            cols = " | ".join(f"{e['by_occurrence'][k - 1]:.3f}" for k in K_COLUMNS)
            lines.append(f"| {test_name} | {name} | {r['params']} | {r['train_seconds']:.0f} | "
                         f"{cols} | {e['total']:.3f} |")
    _write(args.out, lines, results)
    _plot_within(args.out, results, tests, n_way)


def _plot_within(out, results, tests, n_way):
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tests), figsize=(5 * len(tests), 3.6), sharey=True)
    for ax, test_name in zip(axes, tests):
        for name, r in results.items():
            acc = r["evals"][test_name]["by_occurrence"]
            ax.plot(range(1, len(acc) + 1), acc, marker="o", label=name)
        ax.axhline(1 / n_way, color="grey", ls=":", label="chance")
        ax.set_title(test_name)
        ax.set_xlabel("occurrence k of the class in the episode")
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_by_occurrence.png"), dpi=120)
    print(f"wrote {out}/accuracy_by_occurrence.png")


# --- backpropagation in forward mode -------------------------------------------------------

def sgd_run(x, labels, n_way, lr):
    """Online SGD on a linear softmax classifier from W = 0: logits_t = x_t W_{t-1}, then
    W_t = W_{t-1} - lr x_t^T (softmax(logits_t) - y_t). x [B, T, A], labels [B, T] ->
    logits [B, T, N] and the feedback each step gets (error, label of the previous step)
    [B, T, N, 2]."""
    B, T, A = x.shape
    onehot = jax.nn.one_hot(labels, n_way)

    def step(W, inp):
        x_t, y_t = inp
        logits = jnp.einsum("ba,ban->bn", x_t, W)
        err = jax.nn.softmax(logits) - y_t
        return W - lr * x_t[:, :, None] * err[:, None, :], (logits, err)

    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    _, (logits, err) = jax.lax.scan(step, jnp.zeros((B, A, n_way)), (tm(x), tm(onehot)))
    logits, err = tm(logits), tm(err)
    fb = jnp.stack([err, onehot], -1)                        # about step t ...
    fb = jnp.concatenate([jnp.zeros_like(fb[:, :1]), fb[:, :-1]], 1)   # ... fed at step t + 1
    return logits, fb


def run_sgd(args):
    n_way, length, dim, lr, m, s = 3, 30, 8, 0.5, 4, 8
    train = SyntheticEpisodes(n_way, length, dim, noise=0.3, seed=10)
    kw = dict(forget_offset=1.0, input_offset=-1.0, chunk=10)

    def vsml_logits(params, x, feedback, error_feedback):
        B = x.shape[0]
        fresh = init_network_state(B, (dim, n_way), m, s)
        fwd = jnp.pad(x[..., None], [(0, 0)] * 3 + [(0, m - 1)])
        if not error_feedback:
            feedback = jnp.pad(feedback, [(0, 0)] * 3 + [(0, m - 2)])
        out, _, _ = vsml_network((params,), fwd, feedback, fresh, error_feedback=error_feedback,
                                 **kw)
        return out[..., 0]

    def imitation_loss(params, x, labels):
        target, fb = sgd_run(x, labels, n_way, lr)
        pred = vsml_logits(params, x, fb, False)             # teacher forcing: SGD's feedback
        return jnp.mean(jnp.sum((pred - target) ** 2, (1, 2)))

    params = init_vsml_params(jax.random.key(0), m, s)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, labels):
        loss, g = jax.value_and_grad(imitation_loss)(params, x, labels)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    start, history = time.time(), []
    for i in range(args.steps):
        x, labels = train.sample(32, i)
        params, opt_state, loss = step(params, opt_state, x, labels)
        if (i + 1) % 250 == 0 or i + 1 == args.steps:
            history.append((i + 1, float(loss)))
            print(f"imitation step {i + 1}: loss {float(loss):.4f} ({time.time() - start:.0f} s)")
    wall = time.time() - start
    params = VSMLParams(*params)
    tests = {
        "synthetic, noise 0.6 (unseen)": SyntheticEpisodes(n_way, length, dim, noise=0.6,
                                                           seed=11),
        "omniglot held-out alphabets": ImageEpisodes(_load("omniglot", "test", args.data_dir),
                                                     n_way, length, dim, seed=12),
    }
    free = jax.jit(lambda p, x, y: vsml_logits(p, x, jax.nn.one_hot(
        jnp.concatenate([jnp.zeros_like(y[:, :1]), y[:, :-1]], 1), n_way), True))
    curves = {}
    for test_name, episodes in tests.items():
        x, labels = episodes.sample(256, 10**6)
        sgd_logits, _ = sgd_run(jnp.asarray(x), jnp.asarray(labels), n_way, lr)
        v_logits = free(params, x, labels)
        curves[test_name] = {
            "sgd": np.asarray(jnp.mean(jnp.argmax(sgd_logits, -1) == labels, 0)).tolist(),
            "vsml": np.asarray(jnp.mean(jnp.argmax(v_logits, -1) == labels, 0)).tolist(),
            "logit_mse": float(jnp.mean((v_logits - sgd_logits) ** 2)),
            "logit_var": float(jnp.var(sgd_logits))}
    results = {"train_seconds": wall, "history": history, "curves": curves,
               "setting": dict(n_way=n_way, length=length, dim=dim, sgd_lr=lr, msg_size=m,
                               state_size=s, steps=args.steps)}
    lines = [f"VSML (one layer, {dim} -> {n_way}, m={m}, s={s}) meta-trained {args.steps} steps "
             f"({wall:.0f} s) to imitate online SGD (lr {lr}) of a linear softmax classifier; "
             "then free-running on unseen tasks (256 episodes of "
             f"{length} steps). Accuracy averaged over steps 1-5, 6-15, 16-{length}.", "",
             "| test tasks | learner | steps 1-5 | 6-15 | 16-30 "
             "| logit MSE vs SGD (SGD logit var) |",
             "|---|---|---|---|---|---|"]
    for test_name, c in curves.items():
        for learner in ("sgd", "vsml"):
            a = np.asarray(c[learner])
            extra = f"{c['logit_mse']:.3f} ({c['logit_var']:.3f})" if learner == "vsml" else ""
            lines.append(f"| {test_name} | {learner} | {a[:5].mean():.3f} | {a[5:15].mean():.3f} "
                         f"| {a[15:].mean():.3f} | {extra} |")
    _write(args.out, lines, results)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), sharey=True)
    for ax, (test_name, c) in zip(axes, curves.items()):
        ax.plot(np.arange(1, length + 1), c["sgd"], label="SGD")
        ax.plot(np.arange(1, length + 1), c["vsml"], label="VSML (imitating SGD)")
        ax.axhline(1 / n_way, color="grey", ls=":", label="chance")
        ax.set_title(test_name)
        ax.set_xlabel("step in the episode")
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "learning_curves.png"), dpi=120)
    print(f"wrote {args.out}/learning_curves.png")


def _pyplot():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (after choosing the file backend)
    return plt


def _write(out, lines, results):
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))
    print(f"wrote {out}/table.md and {out}/results.json")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fewshot.vsml_experiments",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("within", "sgd"))
    parser.add_argument("--out", required=True, help="folder for table.md, results.json, plot")
    parser.add_argument("--steps", type=int, default=2000, help="meta-training steps per model")
    parser.add_argument("--models", nargs="+", default=["vsml", "lstm", "srwm"],
                        choices=("vsml", "lstm", "srwm"), help="(within) models to compare")
    parser.add_argument("--data_dir", default="", help="folder of the Omniglot data")
    parser.add_argument("--mnist_family", action="append", default=[], metavar="NAME=DIR",
                        help=f"(within) also test on NAME in {MNIST_FAMILY} (its test set, read "
                             "by fewshot.data.mnist from DIR); repeatable")
    args = parser.parse_args(argv)
    pairs = []
    for item in args.mnist_family:
        name, _, folder = item.partition("=")
        if name not in MNIST_FAMILY or not folder:
            print(f"error: --mnist_family={item!r}: expected NAME=DIR with NAME one of "
                  f"{MNIST_FAMILY}.", file=sys.stderr)
            return 2
        pairs.append((name, folder))
    args.mnist_family = pairs
    if args.steps < 1:
        print(f"error: --steps={args.steps} must be >= 1.", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    {"within": run_within, "sgd": run_sgd}[args.experiment](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
