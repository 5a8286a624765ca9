"""Test a trained few-shot run: `python -m fewshot.evaluate --workdir DIR`.

Mean accuracy over `num_sets` sets of `episodes_per_set` fixed test episodes, with a 95%
confidence interval 1.96 * std / sqrt(num_sets) over the set means (the original code divides
by num_sets instead of its square root, which understates the interval). The episodes are a
function of --seed only, so every model is tested on the same episodes. Writes
DIR/eval_<split>.json and prints a Markdown row in the format of the paper's Table 1.
"""
import json
import os
import sys

import ml_collections
import numpy as np
from absl import app, flags, logging

from .checkpointing import Checkpoints
from .data import DatasetError
from .train import build, episode_accuracy, initial_state, make_sampler


def evaluate(workdir, split="test", num_sets=5, episodes_per_set=1000, checkpoint="best",
             seed=None, batch_size=None):
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: --workdir must be a directory written by fewshot.train.")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("task", "sync") == "sequential":
        raise RuntimeError(f"{workdir} is a delayed-label sequential run: test it with "
                           f"python -m fewshot.evaluate_sequential --workdir {workdir}")
    seed = config.eval_seed if seed is None else seed
    batch_size = batch_size or config.eval_batch_size
    sampler = make_sampler(config, split, config.seed)
    model, optimizer, mesh, _, eval_step = build(config)
    state = initial_state(config, model, optimizer, mesh, sampler.sample(1, 0))
    checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
    try:
        state = checkpoints.restore(state, which=checkpoint)
    finally:
        checkpoints.close()
    # Set i uses seed + 1000 * (i + 1): disjoint from the validation episodes (seed itself).
    set_acc = [episode_accuracy(eval_step, mesh, state, sampler, episodes_per_set, seed + 1000 * (i + 1),
                                batch_size) for i in range(num_sets)]
    mean = float(np.mean(set_acc))
    ci95 = float(1.96 * np.std(set_acc) / np.sqrt(num_sets)) if num_sets > 1 else float("nan")
    result = {"accuracy": mean, "ci95": ci95, "set_accuracies": set_acc, "split": split,
              "num_sets": num_sets, "episodes_per_set": episodes_per_set, "checkpoint": checkpoint,
              "step": int(state.step), "model": config.model, "dataset": config.dataset,
              "n_way": config.n_way, "k_shot": config.k_shot, "seed": seed}
    result["markdown"] = (f"| {config.dataset} {config.n_way}-way {config.k_shot}-shot | {config.model} "
                          f"| {100 * mean:.2f} ± {100 * ci95:.2f} |")
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags (defined only when run as a program, so the module stays importable)."""
    flags.DEFINE_string("workdir", None, "Directory of a run made by fewshot.train.")
    flags.DEFINE_string("split", "test", "test | val | train")
    flags.DEFINE_integer("num_sets", 5, "Number of independent sets of test episodes.")
    flags.DEFINE_integer("episodes_per_set", 1000, "Episodes in each set.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to test.")
    flags.DEFINE_integer("seed", None, "Seed of the test episodes (default: the config's eval_seed).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required.")
    try:
        r = evaluate(FLAGS.workdir, FLAGS.split, FLAGS.num_sets, FLAGS.episodes_per_set,
                     FLAGS.checkpoint, FLAGS.seed)
    except (DatasetError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{r['split']} accuracy over {r['num_sets']} x {r['episodes_per_set']} episodes "
          f"({r['checkpoint']} checkpoint, step {r['step']}): {100 * r['accuracy']:.2f}% "
          f"± {100 * r['ci95']:.2f} (95% CI = 1.96 std / sqrt(num_sets))")
    print("| dataset | model | accuracy (%) |\n|---|---|---|")
    print(r["markdown"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
