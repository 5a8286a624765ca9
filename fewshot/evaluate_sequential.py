"""Test delayed-label sequential runs (paper Tables 2/7, Figs. 4/6).

  python -m fewshot.evaluate_sequential --workdir runs/sequential_srwm_cpu \
      --workdir runs/sequential_deltanet_cpu --out runs/sequential_cpu_eval

For each run: total accuracy per dataset segment and instance-level accuracy of the 1st, 2nd,
3rd, 5th and 10th occurrence of each class, for each order (A then B, B then A) and pooled over
both, on `num_sequences` fixed test sequences (half in each order; a function of --seed only, so
every model sees the same ones). Writes DIR/eval_sequential_<split>.json per run and, in --out,
table.md (Markdown tables), curves.csv (accuracy per step and order for every run) and
accuracy_curve.png (all runs on one plot, task switch marked).
"""
import csv
import json
import os
import sys

import ml_collections
import numpy as np
from absl import app, flags, logging

from .checkpointing import Checkpoints
from .data import DatasetError
from .plots import plot_accuracy_curves
from .sequential import INSTANCE_OCCURRENCES, SequentialTask, evaluate_sequences
from .train import build, initial_state

COLUMNS = tuple(str(j + 1) for j in INSTANCE_OCCURRENCES)


def load_config(workdir):
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be a directory written by fewshot.train.")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("task", "sync") != "sequential":
        raise ValueError(f"{workdir} is a {config.get('task', 'sync')!r} run; use fewshot.evaluate for it.")
    return config


def evaluate(workdir, split="test", num_sequences=1000, checkpoint="best", seed=None, batch_size=None,
             data_dir=None):
    """-> result dict (also written to workdir/eval_sequential_<split>.json)."""
    config = load_config(workdir)
    if data_dir:
        config.data_dir = data_dir
    # Test sequences: seed eval_seed + 1000, disjoint from the validation stream (eval_seed).
    seed = config.eval_seed + 1000 if seed is None else seed
    batch_size = batch_size or config.eval_batch_size
    task = SequentialTask(config, split, seed)
    model, optimizer, mesh, _, eval_step = build(config)
    state = initial_state(config, model, optimizer, mesh, task.sample(1, 0, train=False))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    try:
        state = checkpoints.restore(state, which=checkpoint)
    finally:
        checkpoints.close()
    acc = evaluate_sequences(eval_step, mesh, state, task, num_sequences, batch_size)
    result = acc.summary(task.names)
    result.update(split=split, num_sequences=num_sequences, checkpoint=checkpoint, step=int(state.step),
                  model=config.model, datasets=list(task.names), seed=seed, n_way=config.n_way,
                  segment_length=task.length // 2,
                  curves=[[None if np.isnan(a) else float(a) for a in row] for row in acc.curves()])
    with open(os.path.join(workdir, f"eval_sequential_{split}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_tables(results, labels):
    """Table 2/7 layout: one table per order (and pooled), a row per model."""
    names = results[0]["datasets"]
    head = "| model | " + " | ".join(f"{n} total | " + " | ".join(f"{n} {c}" for c in COLUMNS) for n in names) + " |"
    rule = "|---" * (1 + 2 * (1 + len(COLUMNS))) + "|"
    blocks = []
    sections = [(order, lambda r, o=order: r["orders"][o]) for order in results[0]["orders"]]
    sections.append(("pooled over both orders", lambda r: r["pooled"]))
    for title, get in sections:
        rows = []
        for r, label in zip(results, labels):
            cells = []
            for n in names:
                e = get(r)[n]
                cells += [_pct(e["total"])] + [_pct(e["instance"][c]) for c in COLUMNS]
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
        blocks.append(f"**{title}** (accuracy %, instance columns = k-th occurrence of a class)\n\n"
                      + "\n".join([head, rule] + rows))
    return "\n\n".join(blocks) + "\n"


def write_outputs(results, labels, out):
    os.makedirs(out, exist_ok=True)
    orders = list(results[0]["orders"])
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(markdown_tables(results, labels))
    with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "order", "step", "segment", "accuracy"])
        for r, label in zip(results, labels):
            seg_len = r["segment_length"]
            for o, order in enumerate(orders):
                first, second = order.split("->")
                for t, a in enumerate(r["curves"][o]):
                    w.writerow([label, order, t + 1, first if t < seg_len else second,
                                "" if a is None or np.isnan(a) else f"{a:.4f}"])
    plot_accuracy_curves({label: np.asarray(r["curves"], float) for r, label in zip(results, labels)},
                         orders, results[0]["segment_length"], os.path.join(out, "accuracy_curve.png"),
                         title=f"Delayed-label sequential task ({results[0]['split']} split; dotted: chance)",
                         chance=1 / results[0].get("n_way", 5))
    return out


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_multi_string("workdir", None, "Run directory made by fewshot.train (repeat to compare).")
    flags.DEFINE_multi_string("label", None, "Legend label per --workdir (default: the config's model).")
    flags.DEFINE_string("out", None, "Folder for table.md, curves.csv, accuracy_curve.png "
                                     "(default: the first workdir's eval_sequential/).")
    flags.DEFINE_string("split", "test", "test | val | train")
    flags.DEFINE_integer("num_sequences", 1000, "Fixed test sequences (half in each order).")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: config.eval_batch_size).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to test.")
    flags.DEFINE_integer("seed", None, "Seed of the test sequences (default: config.eval_seed + 1000).")
    flags.DEFINE_string("data_dir", None, "Override the config's data_dir.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required.")
    labels = FLAGS.label or []
    try:
        results = [evaluate(w, FLAGS.split, FLAGS.num_sequences, FLAGS.checkpoint, FLAGS.seed,
                            FLAGS.batch_size, FLAGS.data_dir) for w in FLAGS.workdir]
    except (DatasetError, FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    labels = labels + [r["model"] for r in results[len(labels):]]
    out = write_outputs(results, labels, FLAGS.out or os.path.join(FLAGS.workdir[0], "eval_sequential"))
    for r, label in zip(results, labels):
        print(f"{label}: {r['split']} total accuracy {100 * r['total']:.2f}% over {r['num_sequences']} "
              f"sequences ({r['checkpoint']} checkpoint, step {r['step']})")
    print(markdown_tables(results, labels))
    print(f"wrote {out}/table.md, {out}/curves.csv, {out}/accuracy_curve.png")


if __name__ == "__main__":
    define_flags()
    app.run(main)
