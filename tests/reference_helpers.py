"""Test helpers: float64 conversion, relative error, and the split-at-resets reference.

The operator definitions themselves live in the package (`srwm_jax.reference`), the one
reference every implementation and kernel is tested against.
"""
import jax
import jax.numpy as jnp
import numpy as np


def to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)


def rel_err(a, b):
    """Relative L2 error of a against reference b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def segments(reset_row):
    """[(start, end, fresh)] pieces of one sequence cut before every reset step.

    fresh: the piece starts from the reset state (it begins at a reset) rather than the
    initial one.
    """
    reset_row = np.asarray(reset_row)
    T = reset_row.shape[0]
    cuts = [t for t in range(T) if reset_row[t]]
    starts = sorted(set([0] + cuts))
    ends = starts[1:] + [T]
    return [(s, e, bool(reset_row[s])) for s, e in zip(starts, ends)]


def run_split_at_resets(run, inputs, state0, reset_state, reset):
    """One-call-with-resets reference built from calls without resets.

    run(inputs_piece, state) -> (y_piece, state_end) runs one sequence piece (batch 1, no
    resets); inputs: tuple of [B, T, ...] arrays; state0 / reset_state: pytrees of [B, ...].
    Every sequence is cut before each of its resets and the pieces are run separately, each
    from the reset state (or state0 for a first piece that does not start with a reset).
    Returns y [B, T, ...] and the final state, both stacked over B.
    """
    reset = np.asarray(reset)  # concrete: the cut points are fixed when tracing
    ys, finals = [], []
    for b in range(reset.shape[0]):
        take = lambda tree, b=b: jax.tree.map(lambda a: a[b:b + 1], tree)  # noqa: E731
        pieces, state = [], take(state0)
        for s, e, fresh in segments(reset[b]):
            if fresh:
                state = take(reset_state)
            y, state = run(tuple(a[b:b + 1, s:e] for a in inputs), state)
            pieces.append(y)
        ys.append(jnp.concatenate(pieces, axis=1))
        finals.append(state)
    return (jnp.concatenate(ys, axis=0),
            jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *finals))


def random_reset(key, B, T, p=0.2):
    """A random bool [B, T] mask with at least one reset at t = 0 and one mid-sequence."""
    reset = np.array(jax.random.bernoulli(key, p, (B, T)))
    reset[0, 0] = True
    reset[-1, T // 2] = True
    return jnp.asarray(reset)
