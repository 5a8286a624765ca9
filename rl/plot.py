"""Learning curves of RL runs (command line).

    python -m rl.plot WORKDIR                                  # WORKDIR/learning_curves.png
    python -m rl.plot WORKDIR WORKDIR ... --compare OUT.png    # the runs' training curves together

Intentionally kept short: the figures are rl.plots.plot_learning_curves / plot_comparison.
"""
from absl import app, flags

from .plots import plot_comparison, plot_learning_curves
from srwm_jax.training.cli import run

_COMPARE = flags.DEFINE_string("compare", None,
                               "Write one PNG overlaying the training curves of all "
                               "WORKDIRs to this path.")


def main(argv):
    """`python -m rl.plot WORKDIR`: writes WORKDIR/learning_curves.png.
    `python -m rl.plot WORKDIR WORKDIR... --compare OUT.png`: the runs' training curves together."""
    if _COMPARE.value:
        if len(argv) < 2:
            raise app.UsageError("usage: python -m rl.plot WORKDIR [WORKDIR ...] --compare OUT.png")
        print(plot_comparison(argv[1:], _COMPARE.value))
        return
    if len(argv) != 2:
        raise app.UsageError("usage: python -m rl.plot WORKDIR  (several: add --compare OUT.png)")
    print(plot_learning_curves(argv[1]))


if __name__ == "__main__":
    run(main)
