"""Shape and dtype checks of the public operators' arguments (one clear ValueError each).

The layers' own argument checks are in srwm_jax.layer_inputs.
"""
import jax.numpy as jnp


def check_float(name, a):
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}.")


def check_shape(name, a, expected, legend):
    """Raise if `a.shape` differs from `expected` (a tuple of ints, None = any size)."""
    shape = tuple(a.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        want = "[" + ", ".join("?" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{name} has shape {list(shape)}, expected {want} ({legend}).")


def check_reset(reset, B, T):
    """Raise unless `reset` is None or a bool [B, T] mask."""
    if reset is None:
        return
    if reset.dtype != jnp.bool_:
        raise ValueError(f"reset must be a bool array [B, T], got dtype {reset.dtype}.")
    check_shape("reset", reset, (B, T), "B batch, T time; True = reset the state before step t")
