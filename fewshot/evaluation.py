"""Testing finished few-shot runs (CLIs: fewshot.evaluate, fewshot.evaluate_sequential).

`evaluate` (sync and bootstrap runs): mean accuracy over `num_sets` sets of `episodes_per_set`
fixed test episodes, with the 95% Student-t confidence interval t_{0.975, num_sets-1} * s /
sqrt(num_sets) over the set means (s = sample std; srwm_jax.stats.t_interval); the set
accuracies are returned and printed too. (The original code uses 1.96 * population std /
num_sets, which understates it.) The episodes are a function of the seed only, so every model
is tested on the same episodes. Writes workdir/eval_<split>.json and a Markdown row in the
format of Table 1.

`evaluate_sequential` (delayed-label runs, Tables 2/7, Figs. 4/6): total accuracy per dataset
segment and instance-level accuracy of the 1st, 2nd, 3rd, 5th and 10th occurrence of each class,
for each order (A then B, B then A) and pooled over both, on `num_sequences` fixed test sequences
(half in each order). Writes workdir/eval_sequential_<split>.json; `write_outputs` adds table.md,
curves.csv and accuracy_curve.png for several runs.

Runs are read back by fewshot.finished_run (config merged onto `defaults`, the CLIs' default
config file, so older runs load with today's fields).
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from .config_checks import check_split_name, validate_config
from .finished_run import load_run, restore_run
from .plots import plot_accuracy_curves
from .sequential import INSTANCE_OCCURRENCES, SequentialEpisodeSampler, evaluate_sequences
from .tasks import episode_accuracy
from srwm_jax.stats import t_interval

COLUMNS = tuple(str(j + 1) for j in INSTANCE_OCCURRENCES)


def evaluate(workdir, split="test", num_sets=5, episodes_per_set=1000, checkpoint="best",
             seed=None, batch_size=None, defaults=None, out=None):
    """Tests a sync or bootstrap run on fixed episodes (see the module docstring).

    Args:
      workdir: run directory written by fewshot.train.
      split: test | val | train.
      num_sets, episodes_per_set: set i holds episodes of seed + 1000 * (i + 1).
      checkpoint: best | latest.
      seed: episode seed (default: the run's eval_seed).
      batch_size: episodes per call (default: the run's eval_batch_size).
      defaults: ConfigDict filling fields an older config.json lacks.
      out: path of the result's JSON file (default: workdir/eval_<split>.json).
    Returns:
      Result dict: accuracy, ci95, set_accuracies, markdown row, run facts; also written to
      `out` as JSON. If that fails (a read-only run directory, say) the result is still
      returned, with result["write_error"] saying where and why (never raised).
    Raises:
      FileNotFoundError, ValueError (fewshot.finished_run.load_run), RuntimeError (checkpoint),
      fewshot.config_checks.ConfigError (a field of the run's config, or its episodes do not
      fit the split's data), fewshot.data.DatasetError (data missing).
    """
    config, task = load_run(workdir, defaults, evaluator="fewshot.evaluate")
    check_split_name(split)
    validate_config(config, splits=(split,), allow_extra=True)
    seed = config.eval_seed if seed is None else seed
    batch_size = batch_size or config.eval_batch_size
    sampler = task.make_sampler(config, split, config.seed)
    run = restore_run(config, task, workdir, checkpoint, sampler.sample(1, 0))
    # Set i uses seed + 1000 * (i + 1): disjoint from the validation episodes (seed itself).
    set_acc = [episode_accuracy(run.eval_step, run.mesh, run.state, sampler, episodes_per_set,
                                seed + 1000 * (i + 1), batch_size) for i in range(num_sets)]
    mean, ci95 = t_interval(set_acc, 0.95)[:2]  # ci95: nan for a single set
    result = {"accuracy": mean, "ci95": ci95, "set_accuracies": set_acc, "split": split,
              "num_sets": num_sets, "episodes_per_set": episodes_per_set, "checkpoint": checkpoint,
              "step": int(run.state.step), "model": config.model, "dataset": config.dataset,
              "n_way": config.n_way, "k_shot": config.k_shot, "seed": seed}
    result["markdown"] = (f"| {config.dataset} {config.n_way}-way {config.k_shot}-shot "
                          f"| {config.model} | {100 * mean:.2f} ± {100 * ci95:.2f} |")
    write_result(result, out or os.path.join(workdir, f"eval_{split}.json"))
    return result


def write_result(result: dict, path: str) -> None:
    """Writes `result` as JSON to `path`; on an OSError (read-only or full disk, missing folder)
    sets result["write_error"] to a one-line message naming the path instead of raising: an
    evaluation's figure must not be lost to where it is saved."""
    try:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    except OSError as e:
        result["write_error"] = (f"could not write {path} ({e.strerror or e}): the result above is "
                                 "not saved; pass --out PATH to write it elsewhere.")


def evaluate_sequential(workdir, split="test", num_sequences=1000, checkpoint="best", seed=None,
                        batch_size=None, data_dir=None, defaults=None):
    """Tests a delayed-label sequential run (see the module docstring).

    Args:
      workdir: run directory written by fewshot.train with config.task = "sequential".
      split: test | val | train.
      num_sequences: fixed test sequences (half in each order).
      checkpoint: best | latest.
      seed: sequence seed (default: the run's eval_seed + 1000, disjoint from validation).
      batch_size: sequences per call (default: the run's eval_batch_size).
      data_dir: overrides the run's data_dir.
      defaults: ConfigDict filling fields an older config.json lacks.
    Returns:
      Result dict (fewshot.sequential.SequentialAccuracy.summary plus run facts and the
      accuracy curves [2 orders, T]); also written to workdir/eval_sequential_<split>.json.
    Raises:
      FileNotFoundError, ValueError (fewshot.finished_run.load_run), RuntimeError (checkpoint),
      fewshot.config_checks.ConfigError (a field of the run's config, or its episodes do not
      fit the split's data), fewshot.data.DatasetError (data missing).
    """
    config, task = load_run(workdir, defaults, evaluator="fewshot.evaluate_sequential")
    if data_dir:
        config.data_dir = data_dir
    check_split_name(split)
    validate_config(config, splits=(split,), allow_extra=True)
    # Test sequences: seed eval_seed + 1000, disjoint from the validation stream (eval_seed).
    seed = config.eval_seed + 1000 if seed is None else seed
    batch_size = batch_size or config.eval_batch_size
    sequences = SequentialEpisodeSampler(config, split, seed)
    run = restore_run(config, task, workdir, checkpoint, sequences.sample(1, 0, train=False))
    acc = evaluate_sequences(run.eval_step, run.mesh, run.state, sequences, num_sequences,
                             batch_size)
    result = acc.summary(sequences.names)
    result.update(split=split, num_sequences=num_sequences, checkpoint=checkpoint,
                  step=int(run.state.step), model=config.model, datasets=list(sequences.names),
                  seed=seed, n_way=config.n_way, segment_length=sequences.length // 2,
                  curves=[[None if np.isnan(a) else float(a) for a in row] for row in acc.curves()])
    write_result(result, os.path.join(workdir, f"eval_sequential_{split}.json"))
    return result


def _percent(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_tables(results, labels):
    """Table 2/7 layout: one table per order (and pooled), a row per model."""
    names = results[0]["datasets"]
    head = "| model | " + " | ".join(f"{n} total | " + " | ".join(f"{n} {c}" for c in COLUMNS)
                                     for n in names) + " |"
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
                cells += [_percent(e["total"])] + [_percent(e["instance"][c]) for c in COLUMNS]
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
        blocks.append(f"**{title}** (accuracy %, instance columns = k-th occurrence of a class)\n\n"
                      + "\n".join([head, rule] + rows))
    return "\n\n".join(blocks) + "\n"


def write_outputs(results, labels, out):
    """Writes table.md, curves.csv and accuracy_curve.png for `results` of
    evaluate_sequential (one per run, legend `labels`) into folder `out`. Returns `out`."""
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
    plot_accuracy_curves({label: np.asarray(r["curves"], float)
                          for r, label in zip(results, labels)},
                         orders, results[0]["segment_length"],
                         os.path.join(out, "accuracy_curve.png"),
                         title=f"Delayed-label sequential task ({results[0]['split']} split; "
                               "dotted: chance)",
                         chance=1 / results[0].get("n_way", 5))
    return out


