"""rl.plot: per-run learning curves and the side-by-side comparison of several runs."""
import csv
import os

import matplotlib.image
import pytest

from rl.plots import plot_comparison, plot_learning_curves
from rl.training import TRAIN_RETURN_FIELDS


def _write_run(workdir, returns):
    os.makedirs(workdir)
    with open(os.path.join(workdir, "train_returns.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, TRAIN_RETURN_FIELDS)
        writer.writeheader()
        for step, (game, value) in enumerate(returns):
            writer.writerow(dict(step=1000 * step, game=game, mean_return=value, episodes=step,
                                 sps=10.0, policy_lag_mean=1.0))


def test_comparison_plots_every_run_and_game(tmp_path):
    a, b = str(tmp_path / "unroll"), str(tmp_path / "step")
    _write_run(a, [("starpilot", 1.0), ("bigfish", 2.0), ("starpilot", "nan"), ("starpilot", 3.0)])
    _write_run(b, [("starpilot", 1.5), ("starpilot", 2.5)])
    out = plot_comparison([a, b], str(tmp_path / "cmp.png"))
    image = matplotlib.image.imread(out)
    # Two games -> two panels side by side (width 2 x 5 in at 100 dpi, height 3.6 in).
    assert image.shape[:2] == (360, 1000)
    assert plot_learning_curves(a).endswith("learning_curves.png")


def test_comparison_refuses_a_run_without_returns(tmp_path):
    a, empty = str(tmp_path / "a"), str(tmp_path / "empty")
    _write_run(a, [("starpilot", 1.0)])
    os.makedirs(empty)
    with pytest.raises(ValueError, match="no training returns in .*empty"):
        plot_comparison([a, empty], str(tmp_path / "cmp.png"))
