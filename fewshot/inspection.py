"""Looking inside trained few-shot runs: what the fast weights do over the steps of an episode
(CLI: fewshot.introspect).

`inspect` runs each run's model (best checkpoint by default) on the same fixed test episodes
(the first test set of fewshot.evaluation.evaluate: seed eval_seed + 1000) with the statistics
of srwm_jax.introspect recorded, and writes into `out` (default: the first workdir's inspect/):
  stats_<run>.csv         one row per (episode, layer, head, step): every statistic, the
                          label shown, whether the episode's query was answered correctly
  learning_rates_<run>.png  per layer, the four self-invented learning rates sigma(x' w_b)
                          (SRWM: b_y, b_q, b_k, b_b; DeltaNet: beta) over the support steps
                          and the query step, one line per head (mean over episodes)
  weight_change_<run>.png   per layer and matrix (W_y, W_q, W_k, w_b): the norm of each step's
                          update, and the distance from the start ||W_t - W_0||
                          (DeltaNet: ||v - kS|| and ||S_t||)
  heatmap_<run>.png       W_y,T - W_y,0 (DeltaNet: S_T) of `layer` / `head` after the episode
                          (the first correctly answered one)
  correct_vs_wrong_<run>.png  the same statistics (mean over heads) for episodes whose
                          query was answered correctly vs wrongly
  compare.png             with several workdirs: the runs side by side on the same episodes
  summary.json            accuracy and the means plotted above, per run

Delayed-label sequential runs (task = sequential) get the same over the whole sequence with the
task switch marked, on fixed_episodes' test sequences (those of
fewshot.evaluation.evaluate_sequential: stream seed eval_seed + 1000, the order A->B in even
batches, B->A in odd ones): orders_<run>.png replaces correct_vs_wrong (the accuracy at each
step and the statistics, per order), and the summary compares the first and the second segment.

Legend: E episodes (or sequences), T steps, H heads, d head dim.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from .finished_run import load_run, restore_run
from .models import sync_episode_inputs
from .sequential import SequentialEpisodeSampler, delayed_label_inputs
from .tasks import get_task
from srwm_jax.introspect import MATRICES, STATS_COLLECTION, collect_layers
from srwm_jax.introspect_report import ensure_dir, heatmap, layer_rows, line_grid, write_csv

FAST_WEIGHT_MODELS = ("srwm", "deltanet", "srdelta", "vsml")


class InspectError(ValueError):
    """A run this tool cannot inspect; the message says why and what to do."""


def load_run_config(workdir, defaults=None):
    """The config of the run in `workdir` (fewshot.train), checked to have fast weights.

    Args:
      workdir: the run directory.
      defaults: ConfigDict filling fields an older config.json lacks (the CLI passes
        configs/fewshot/default.py; see srwm_jax.training.run_config.load_config).
    Raises:
      FileNotFoundError: no config.json; InspectError: the model has no fast weights;
      ValueError: an RL run; fewshot.config_checks.ConfigError (a ValueError): a bad field
      (fewshot.finished_run.load_run).
    """
    config, _ = load_run(workdir, defaults)
    if config.model not in FAST_WEIGHT_MODELS:
        raise InspectError(f"{workdir} is a {config.model!r} run: only fast-weight models "
                           f"{FAST_WEIGHT_MODELS} have statistics to inspect.")
    return config


def restore_model(config, workdir, checkpoint="best"):
    """(model, variables) of the run `config` (load_run_config) in `workdir`
    (fewshot.finished_run.restore_run: the model built once).

    Raises:
      FileNotFoundError: no such checkpoint (checkpoint: best | latest); RuntimeError: it
      cannot be restored; fewshot.data.DatasetError: the run's data is missing.
    """
    task = get_task(config)
    run = restore_run(config, task, workdir, checkpoint,
                      task.make_sampler(config, "test", config.seed).sample(1, 0))
    return run.model, run.variables


def is_sequential(config):
    """Whether `config` is a delayed-label sequential run (a whole sequence per episode)."""
    return get_task(config).name == "sequential"


def fixed_episodes(config, num_episodes, batch_size=100, seed=None):
    """The fixed test episodes, in batches of at most `batch_size`.

    Sync and bootstrap runs: the first test set of fewshot.evaluation.evaluate (episode seed
    `seed`, default eval_seed + 1000). Sequential runs: the test sequences of
    fewshot.evaluation.evaluate_sequential (stream seed `seed`, default eval_seed + 1000; the
    order A->B in even batches, B->A in odd ones), in two batches at least so that both orders
    appear; called with the same batch size, evaluate_sequential sees the same sequences.
    """
    seed = config.eval_seed + 1000 if seed is None else seed
    if is_sequential(config):
        sequences = SequentialEpisodeSampler(config, "test", seed)
        return list(sequences.fixed_batches(num_episodes,
                                            min(batch_size, max(1, -(-num_episodes // 2)))))
    sampler = get_task(config).make_sampler(config, "test", config.seed)
    return list(sampler.iterate_fixed(num_episodes, seed, batch_size))


def _fast_weight_change(config, state, layer, head):
    """[B, d, d] change of W_y (SRWM, SR-DeltaNet) or the delta-rule state S_T after the episode;
    VSML: channel `head` of the cell states c_T [B, A, O] of VSML layer `layer`."""
    if config.model == "vsml":
        return state.lstm[layer].c[..., head]
    stack = state[1] if config.short_conv else state
    s = stack[layer]
    if config.model == "srwm":
        return s.y[:, head]
    if config.model == "srdelta":
        return s[0].y[:, head]
    return s[:, head]


def record(config, model, variables, batches, layer=0, head=0):
    """Runs the episodes with the statistics recorded.

    Args:
      config: from load_run_config; model, variables: from restore_model.
      batches: from fixed_episodes.
      layer, head: whose fast-weight change is returned.
    Returns:
      dict: layers {path: {stat: [E, T, H]}}, correct [E] bool ([E, T] for sequential runs),
      labels [E, T] (label shown at each step; -1 at the query), target [E] ([E, T]),
      change [E, d, d] (W_y,T - W_y,0 of SRWM and SR-DeltaNet, S_T of DeltaNet) for `layer` /
      `head`; sequential runs add first_segment [E] (1: dataset B first).
    """
    sequential = is_sequential(config)

    @jax.jit
    def run(batch):
        if sequential:  # every step is predicted; the label input is the previous step's label
            images, target = batch["images"], batch["labels"]
            labels_in = delayed_label_inputs(target, config.n_way)
        else:
            images, labels_in, target = sync_episode_inputs(batch, config.n_way, config.query_label)
        (logits, state), stats = model.apply(variables, images, labels_in, train=False,
                                             mutable=[STATS_COLLECTION])
        correct = (jnp.argmax(logits, -1) == target if sequential
                   else jnp.argmax(logits[:, -1], -1) == target)
        return (collect_layers(stats[STATS_COLLECTION]), correct, target,
                _fast_weight_change(config, state, layer, head))

    parts = [jax.device_get(run(b)) for b in batches]
    cat = lambda xs: np.concatenate(xs, axis=0)  # noqa: E731
    layers = {k: {n: cat([p[0][k][n] for p in parts]) for n in parts[0][0][k]} for k in parts[0][0]}
    rec = dict(layers=layers, correct=cat([p[1] for p in parts]), target=cat([p[2] for p in parts]),
               change=cat([p[3] for p in parts]))
    if sequential:
        rec["labels"] = rec["target"]
        rec["first_segment"] = cat([b["first_segment"] for b in batches])
        return rec
    labels = cat([b["support_labels"] for b in batches])
    rec["labels"] = np.concatenate([labels, -np.ones((len(labels), 1), labels.dtype)], axis=1)
    return rec


def _step_axis(config):
    """(x, tick labels or None, dashed marker positions, x label)."""
    if is_sequential(config):
        segment = config.n_way * config.sequential_shots
        return (np.arange(1, 2 * segment + 1), None, [segment + 0.5],
                "step (dashed: task switch)")
    n_support = config.n_way * config.k_shot
    x = np.arange(1, n_support + 2)
    ticks = [str(i) for i in range(1, n_support + 1)] + ["Q"]
    return x, ticks, [n_support + 0.5], "step (Q: query)"


def _groups(config, rec):
    """The episode groups compared in the split figures: correct vs wrong query (sync), or the
    two orders of the datasets (sequential). [(label, mask [E], colour)]."""
    if is_sequential(config):
        a, b = config.dataset, config.second_dataset
        first_b = rec["first_segment"] != 0
        return [(f"{a} -> {b}", ~first_b, "tab:blue"), (f"{b} -> {a}", first_b, "tab:orange")]
    return [("correct", rec["correct"], "tab:green"), ("wrong", ~rec["correct"], "tab:red")]


def _rate_names(series):
    if "state_change" in series:  # VSML (srwm_jax.vsml_layer.VSMLStats): no learning rate
        return ["state_change"]
    return [f"lr_{m}" for m in MATRICES] if "lr_y" in series else ["beta"]


def _change_names(series):
    if "state_change" in series:
        return ["state_change"], ["distance"]
    if "update_y" in series:
        return [f"update_{m}" for m in MATRICES], [f"dist_{m}" for m in MATRICES]
    return ["error_norm"], ["state_norm"]


_TITLES = {**{f"lr_{m}": f"learning rate b_{m}" for m in MATRICES},
           **{f"update_{m}": f"||update of {'w_b' if m == 'b' else 'W_' + m}||" for m in MATRICES},
           **{f"dist_{m}": f"||{'w_b' if m == 'b' else 'W_' + m},t - start||" for m in MATRICES},
           "beta": "learning rate beta", "error_norm": "||v - k S||", "state_norm": "||S_t||",
           "entropy_q": "entropy of q (nats)", "entropy_k": "entropy of k (nats)",
           "state_change": "||c_t - c_t-1|| (VSML)", "distance": "||c_t - c_fresh|| (VSML)"}


def _per_head_panel(name, a):
    """a [E, T, H] -> one thin line per head (mean over episodes) and the bold mean."""
    m = a.mean(axis=0)
    lines = [(None, m[:, h], dict(linewidth=0.7, alpha=0.6)) for h in range(m.shape[1])]
    lines.append(("mean", m.mean(axis=1), dict(color="black", linewidth=2)))
    return {"title": _TITLES.get(name, name), "lines": lines}


def _split_panel(name, a, groups):
    """Mean over heads and episodes, per episode group (see _groups)."""
    lines = []
    for label, mask, color in groups:
        if mask.any():
            lines.append((f"{label} ({int(mask.sum())})", a[mask].mean(axis=(0, 2)),
                          dict(color=color, linewidth=1.5)))
    return {"title": _TITLES.get(name, name), "lines": lines, "legend": True}


def plot_run(name, config, rec, out, layer, head):
    """The per-run figures (see the module docstring). Returns their paths."""
    x, ticks, marks, xlabel = _step_axis(config)
    kw = dict(xticks=ticks, vlines=marks, xlabel=xlabel)
    layers = rec["layers"]
    paths = []
    grid = []
    for path, s in layers.items():
        grid.append([_per_head_panel(n, s[n]) for n in _rate_names(s)])
        grid[-1][0]["ylabel"] = path.split("/")[-2]
    paths.append(line_grid(os.path.join(out, f"learning_rates_{name}.png"), grid, x,
                           title=f"{name}: learning rates per head (mean over "
                           f"{len(rec['correct'])} episodes)", **kw))
    grid = []
    for path, s in layers.items():
        for names in _change_names(s):
            grid.append([_per_head_panel(n, s[n]) for n in names])
            grid[-1][0]["ylabel"] = path.split("/")[-2]
    paths.append(line_grid(os.path.join(out, f"weight_change_{name}.png"), grid, x,
                           title=f"{name}: fast-weight change per step", **kw))
    groups = _groups(config, rec)
    grid = []
    if is_sequential(config):
        grid.append([{"title": "accuracy at each step (%)", "legend": True,
                      "lines": [(label, 100 * rec["correct"][m].mean(0), dict(color=c))
                                for label, m, c in groups if m.any()]}])
    for path, s in layers.items():
        names = _rate_names(s) + [n for group in _change_names(s) for n in group[:1]]
        grid.append([_split_panel(n, s[n], groups) for n in names])
        grid[-1][0]["ylabel"] = path.split("/")[-2]
    split = "orders" if is_sequential(config) else "correct_vs_wrong"
    paths.append(line_grid(os.path.join(out, f"{split}_{name}.png"), grid, x,
                           title=f"{name}: {' vs '.join(g[0] for g in groups)} "
                           "(mean over heads and episodes)", **kw))
    final_correct = rec["correct"].reshape(len(rec["correct"]), -1)[:, -1]
    idx = int(np.argmax(final_correct)) if final_correct.any() else 0
    what = {"deltanet": "S_T", "vsml": "cell state c_T (A x O)"}.get(config.model, "W_y,T - W_y,0")
    paths.append(heatmap(os.path.join(out, f"heatmap_{name}.png"), rec["change"][idx],
                         f"{name}: {what}, layer {layer}, head {head}, episode {idx} "
                         f"(last step {'correct' if final_correct[idx] else 'wrong'})"))
    return paths


def plot_compare(runs, out):
    """Runs side by side on the same episodes: rate, update and distance of the first layer."""
    names = list(runs)
    config, rec = runs[names[0]]
    x, ticks, marks, xlabel = _step_axis(config)
    rows = []
    for which in ("rate", "update", "distance"):
        row = []
        for n in names:
            layers = runs[n][1]["layers"]
            path = next(iter(layers))
            s = layers[path]
            stat = {"rate": _rate_names(s)[0], "update": _change_names(s)[0][0],
                    "distance": _change_names(s)[1][0]}[which]
            panel = _split_panel(stat, s[stat], _groups(runs[n][0], runs[n][1]))
            panel["title"] = f"{n}: {_TITLES[stat]} ({path.split('/')[-2]})"
            row.append(panel)
        rows.append(row)
    return line_grid(os.path.join(out, "compare.png"), rows, x, xticks=ticks, vlines=marks,
                     xlabel=xlabel, title="same test episodes, first memory layer, mean over heads",
                     col_width=4.2)


def summarize(config, rec):
    """Accuracy and mean statistics (support steps vs query step, correct vs wrong; for the
    sequential task, the first vs the second segment)."""
    out = {"accuracy": float(rec["correct"].mean()), "episodes": int(len(rec["correct"])),
           "model": config.model, "layers": {}}
    if is_sequential(config):
        half = rec["correct"].shape[1] // 2
        out["accuracy_segments"] = [float(rec["correct"][:, :half].mean()),
                                    float(rec["correct"][:, half:].mean())]
        for path, s in rec["layers"].items():
            out["layers"][path] = {n: {"segment_means": [float(a[:, :half].mean()),
                                                         float(a[:, half:].mean())],
                                       "per_head_mean": [round(float(v), 4)
                                                         for v in a.mean(axis=(0, 1))]}
                                   for n, a in s.items()}
        return out
    for path, s in rec["layers"].items():
        layer = {}
        for n, a in s.items():
            layer[n] = {"support_mean": float(a[:, :-1].mean()),
                        "query_mean": float(a[:, -1].mean()),
                        "per_head_mean": [round(float(v), 4) for v in a.mean(axis=(0, 1))]}
            if rec["correct"].any() and (~rec["correct"]).any():
                layer[n]["query_correct"] = float(a[rec["correct"], -1].mean())
                layer[n]["query_wrong"] = float(a[~rec["correct"], -1].mean())
        out["layers"][path] = layer
    return out


def inspect(workdirs, out=None, num_episodes=200, layer=0, head=0, checkpoint="best", seed=None,
            defaults=None):
    """Writes the CSVs, figures and summary.json of the module docstring.

    Args:
      workdirs: run directories of fewshot.train (the first one's episodes are used for all;
        they must share task, dataset, way, shots and image size).
      out: output folder (default: <first workdir>/inspect).
      num_episodes: fixed test episodes (sequences) to run.
      layer, head: the memory layer / head of the heat map.
      checkpoint: best | latest.
      seed: episode seed (see fixed_episodes).
      defaults: ConfigDict filling fields an older config.json lacks.
    Returns:
      The summary: {"episodes", "files", <run name>: summarize(...)} (run name: the workdir's
      base name).
    Raises:
      InspectError (runs that differ, or layer / head out of range) and those of
      load_run_config and restore_model.
    """
    out = ensure_dir(out or os.path.join(workdirs[0], "inspect"))
    configs = {}
    for w in workdirs:
        name = os.path.basename(os.path.normpath(w))
        while name in configs:
            name += "_"
        configs[name] = (w, load_run_config(w, defaults))
    first = next(iter(configs.values()))[1]
    for name, (_, config) in configs.items():  # every check before the checkpoints are read
        for key in ("task", "dataset", "n_way", "k_shot", "image_size", "second_dataset",
                    "sequential_shots"):
            if config.get(key) != first.get(key):
                raise InspectError(f"run {name} has {key}={config.get(key)!r}, the first run "
                                   f"{first.get(key)!r}: compared runs must share the episodes.")
        if not 0 <= layer < config.num_layers or not 0 <= head < config.num_heads:
            raise InspectError(f"--layer {layer} / --head {head} out of range for {name} "
                               f"({config.num_layers} layers, {config.num_heads} heads).")
    batches = fixed_episodes(first, num_episodes, seed=seed)
    runs, summary = {}, {"episodes": num_episodes, "files": []}
    for name, (workdir, config) in configs.items():
        model, variables = restore_model(config, workdir, checkpoint)
        rec = record(config, model, variables, batches, layer, head)
        runs[name] = (config, rec)
        x, _, marks, _ = _step_axis(config)
        episodes = np.arange(len(rec["correct"]))
        if is_sequential(config):
            rows = layer_rows(rec["layers"],
                              {"episode": episodes, "first_segment": rec["first_segment"]},
                              {"step": x, "segment": (x > marks[0]).astype(int) + 1},
                              {"label": rec["labels"], "correct": rec["correct"].astype(int)})
        else:
            rows = layer_rows(rec["layers"],
                              {"episode": episodes, "correct": rec["correct"].astype(int)},
                              {"step": x, "phase": ["support"] * (len(x) - 1) + ["query"]},
                              {"label_shown": rec["labels"]})
        summary["files"].append(write_csv(os.path.join(out, f"stats_{name}.csv"), rows))
        summary["files"] += plot_run(name, config, rec, out, layer, head)
        summary[name] = summarize(config, rec)
    if len(runs) > 1:
        summary["files"].append(plot_compare(runs, out))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
