"""Learning-curve PNG per game from a workdir's train_returns.csv (+ eval.csv, random baseline).

Command line: rl.plot."""

import csv
import json
import math
import os
from collections import defaultdict



def _read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _training_returns(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """{game: [(env steps, running mean return), ...]} from workdir/train_returns.csv."""
    train = defaultdict(list)
    for row in _read_csv(os.path.join(workdir, "train_returns.csv")):
        if row["mean_return"] not in ("nan", ""):
            train[row["game"]].append((int(row["step"]), float(row["mean_return"])))
    return train


def _plot_panels(games, draw, out_path: str, title=lambda game: game) -> str:
    """One panel per game (3 per row), `draw(ax, game)` filling each; saves `out_path`."""
    # matplotlib's object API (Figure, not pyplot): files only, no backend, no global state.
    from matplotlib.figure import Figure  # noqa: PLC0415 - a heavy import only plots need

    cols = min(3, len(games))
    rows = math.ceil(len(games) / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, game in zip(axes.flat, games):
        draw(ax, game)
        ax.set_title(title(game), fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(games):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def plot_learning_curves(workdir: str, out_path: str | None = None) -> str:
    """Plots train_returns.csv (running mean return), eval.csv (evaluations) and
    random_baseline.json (dashed line) of `workdir`, one panel per game.

    Returns:
      The path of the PNG written (default: workdir/learning_curves.png).
    Raises:
      ValueError: the workdir has nothing to plot.
    """
    train = _training_returns(workdir)
    evals = defaultdict(lambda: defaultdict(list))
    for row in _read_csv(os.path.join(workdir, "eval.csv")):
        if row["game"] != "ALL":
            evals[row["game"]][row["split"]].append((int(row["step"]), float(row["mean_return"])))
    random_path = os.path.join(workdir, "random_baseline.json")
    random_returns = {}
    if os.path.exists(random_path):
        with open(random_path) as f:
            random_returns = json.load(f)
    games = sorted(set(train) | set(evals))
    if not games:
        raise ValueError(f"nothing to plot in {workdir}")

    def draw(ax, game):
        if train[game]:
            steps, values = zip(*train[game])
            ax.plot(steps, values, label="train (running mean, sampled actions)")
        for split, points in sorted(evals[game].items()):
            steps, values = zip(*points)
            name, how = ((split[:-len("_sampled")], "sampled") if split.endswith("_sampled")
                         else (split, "argmax"))
            ax.plot(steps, values, "o", label=f"eval {name} ({how})")
        if game in random_returns:
            ax.axhline(random_returns[game], color="gray", ls="--", label="random policy")

    return _plot_panels(games, draw, out_path or os.path.join(workdir, "learning_curves.png"))


def plot_comparison(workdirs, out_path: str) -> str:
    """Overlays the training curves (train_returns.csv running means) of several runs, one panel
    per game, one line per run labelled by its directory name (runs with different switches
    side by side, e.g. agent.state_gradient "unroll" vs "step").

    Returns:
      `out_path`, the PNG written.
    Raises:
      ValueError: a workdir has no train_returns.csv rows.
    """
    curves = {}
    for workdir in workdirs:
        per_game = _training_returns(workdir)
        if not per_game:
            raise ValueError(f"no training returns in {workdir}/train_returns.csv")
        curves[os.path.basename(os.path.normpath(workdir))] = per_game
    games = sorted({g for per_game in curves.values() for g in per_game})

    def draw(ax, game):
        for label, per_game in curves.items():
            if per_game[game]:
                steps, values = zip(*per_game[game])
                ax.plot(steps, values, label=label)

    return _plot_panels(games, draw, out_path,
                        title=lambda game: f"{game}: training return "
                                           "(running mean, sampled actions)")
