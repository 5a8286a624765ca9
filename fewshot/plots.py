"""Plots of the delayed-label sequential evaluation (paper Figs. 4 and 6 style)."""
import numpy as np
# matplotlib's object API (Figure, not pyplot): files only, no backend to choose, no global state.
from matplotlib.figure import Figure


def plot_accuracy_curves(curves, orders, switch_step, path, title=None, chance=None):
    """One panel per order; one line per model: accuracy (%) at every step, the task switch marked.

    curves: {model label: float [num orders, T] accuracy in [0, 1]}; orders: panel titles, e.g.
    ["omniglot->omniglot_transformed", ...]; switch_step: first step of the second segment."""
    fig = Figure(figsize=(6 * len(orders), 4))
    axes = fig.subplots(1, len(orders), squeeze=False, sharey=True)
    for o, (ax, order) in enumerate(zip(axes[0], orders)):
        for label, curve in curves.items():
            acc = 100 * np.asarray(curve)[o]
            ax.plot(np.arange(1, len(acc) + 1), acc, label=label, linewidth=1.2)
        if chance is not None:
            ax.axhline(100 * chance, color="gray", linestyle=":", linewidth=1)
        ax.axvline(switch_step + 0.5, color="gray", linestyle="--", linewidth=1)
        ax.text(switch_step + 1, 5, "task switch", color="gray", fontsize=8)
        ax.set_title(order.replace("->", " \u2192 "))
        ax.set_xlabel("step (image index in the sequence)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
