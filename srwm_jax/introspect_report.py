"""CSV and PNG output for the introspection tools (fewshot.introspect, rl.introspect).

Holds only formatting: the statistics come from `srwm_jax.introspect`. Only the inspect tools
import this module, so `import srwm_jax` never loads matplotlib.
"""
import csv
import os

import numpy as np
# matplotlib's object API (Figure, not pyplot): files only, no backend to choose, no global state.
from matplotlib.figure import Figure


def layer_rows(layers, episode_columns, step_columns, episode_step_columns=None):
    """One row per (episode, layer, head, step) with every statistic of that layer as a column.

    layers: {layer path: {stat name: [B, T, H] array}} (srwm_jax.introspect.collect_layers);
    episode_columns: {column: length-B sequence} (e.g. episode index, correct);
    step_columns: {column: length-T sequence} (e.g. step index, phase);
    episode_step_columns: {column: [B, T] array} (e.g. the label shown, the reward).
    """
    episode_step_columns = {k: np.asarray(v) for k, v in (episode_step_columns or {}).items()}
    rows = []
    for layer, series in layers.items():
        arrays = {k: np.asarray(v) for k, v in series.items()}
        B, T, H = next(iter(arrays.values())).shape
        for b in range(B):
            ep = {k: _plain(v[b]) for k, v in episode_columns.items()}
            for t in range(T):
                st = {k: _plain(v[t]) for k, v in step_columns.items()}
                st.update({k: _plain(v[b, t]) for k, v in episode_step_columns.items()})
                for h in range(H):
                    row = {**ep, "layer": layer, "head": h, **st}
                    row.update({k: float(a[b, t, h]) for k, a in arrays.items()})
                    rows.append(row)
    return rows


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def write_csv(path, rows):
    """Rows (dicts) to `path`; the header is the union of the keys in first-seen order."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def line_grid(path, grid, x, *, xticks=None, xlabel="step", vlines=(), title=None, logy=False,
              col_width=3.6, row_height=2.4):
    """A grid of line panels. grid: rows of panels, each {"title": str, "ylabel": str (optional),
    "lines": [(label, y [len(x)], plot kwargs)]}; None leaves a panel empty. vlines: x positions
    of dashed markers (e.g. the query step, episode boundaries)."""
    n_rows, n_cols = len(grid), max(len(r) for r in grid)
    fig = Figure(figsize=(col_width * n_cols, row_height * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True)
    for r, row in enumerate(grid):
        for c in range(n_cols):
            ax = axes[r][c]
            panel = row[c] if c < len(row) else None
            if panel is None:
                ax.axis("off")
                continue
            for label, y, kw in panel["lines"]:
                ax.plot(x, np.asarray(y), label=label, **kw)
            for v in vlines:
                ax.axvline(v, color="gray", linestyle="--", linewidth=0.8)
            ax.set_title(panel["title"], fontsize=9)
            if panel.get("ylabel"):
                ax.set_ylabel(panel["ylabel"], fontsize=8)
            if logy:
                ax.set_yscale("log")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if panel.get("legend"):
                ax.legend(fontsize=6, loc="best")
            if r == n_rows - 1:
                ax.set_xlabel(xlabel, fontsize=8)
                if xticks is not None:
                    ax.set_xticks(x)
                    ax.set_xticklabels(xticks, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def heatmap(path, matrix, title, xlabel="output unit", ylabel="input unit"):
    """A symmetric-colour heat map of a [rows, cols] matrix (e.g. W_y,T - W_y,0 of one head)."""
    m = np.asarray(matrix)
    lim = float(np.abs(m).max()) or 1.0
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def ensure_dir(path):
    """Makes folder `path` if missing; returns it."""
    os.makedirs(path, exist_ok=True)
    return path
