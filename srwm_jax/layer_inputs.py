"""The recurrent layers' argument check (`check_layer_inputs`), one clear ValueError each.

Layer inputs follow the contract of `srwm_jax.layers`: batch-major x [B, T, D], reset [B, T]
bool, and a state shaped like `layer.initial_state(B)`. The operators' own checks are in
srwm_jax.ops._validate.
"""
import jax
import jax.numpy as jnp


def _describe(a):
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        return f"a {type(a).__name__} (not an array)"
    return f"shape {list(a.shape)} and dtype {jnp.dtype(a.dtype).name}"


def check_layer_inputs(layer, x, state, reset, *, width=None, width_doc="num_heads * head_dim",
                       state_doc=None, initial_state=None):
    """Checks a recurrent layer's `x`, `state` and `reset`; raises one ValueError per problem.

    Args:
      layer: the Flax module (for its name, and `layer.initial_state(B)` unless given).
      x: must be a floating-point [B, T, D] array; D == width when width is given.
      state: None, or a pytree with the structure of initial_state(B) whose every leaf is a
        floating-point array of the same shape.
      reset: None, or a bool [B, T] array: exactly x's leading two axes. Layers are
        batch-major, so a time-major [T, B] mask is refused (unless T == B, when no check on
        shapes can tell it apart; the layers' docstrings say reset is [B, T]).
      width: the required D, or None for any; width_doc names it.
      state_doc: the state's shapes in words for the message (default: the class's
        STATE_DOC).
      initial_state: callable B -> fresh state (default: layer.initial_state).
    Raises:
      ValueError: naming the argument, the expected shape with its legend and what was given.
    """
    name = type(layer).__name__
    if not (hasattr(x, "shape") and hasattr(x, "dtype")) or x.ndim != 3 or not jnp.issubdtype(
            x.dtype, jnp.floating):
        raise ValueError(f"{name}: x has {_describe(x)}, expected a floating-point [B, T, D] "
                         "array (B batch, T time, D width; batch-major).")
    B, T, D = x.shape
    if width is not None and D != width:
        raise ValueError(f"{name}: x has shape {list(x.shape)}, expected [B, T, D] with D = "
                         f"{width} ({width_doc}; B batch, T time).")
    if reset is not None and not (hasattr(reset, "shape") and tuple(reset.shape) == (B, T)
                                  and jnp.dtype(reset.dtype) == jnp.bool_):
        raise ValueError(f"{name}: reset has {_describe(reset)}, expected bool [B, T] = [{B}, {T}] "
                         "(B batch, T time of x; batch-major like x, True at [b, t] resets "
                         "sequence b before step t). Pass None for no resets; for a time-major "
                         "mask pass reset.T, for 0/1 values reset.astype(bool).")
    if state is None:
        return
    doc = state_doc or getattr(type(layer), "STATE_DOC", "as layer.initial_state(B)")
    fresh = jax.eval_shape(lambda: (initial_state or layer.initial_state)(B))
    hint = "Pass None for a fresh sequence, or the state the previous call returned."
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(fresh)
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(state)
    if got_tree != want_tree:
        raise ValueError(f"{name}: state has structure {got_tree}, expected {want_tree} ({doc}; "
                         f"B = {B} from x). {hint}")
    for (path, got), (_, want) in zip(got_leaves, want_leaves):
        if not (hasattr(got, "shape") and hasattr(got, "dtype")
                and tuple(got.shape) == tuple(want.shape)
                and jnp.issubdtype(got.dtype, jnp.floating)):
            raise ValueError(f"{name}: state{jax.tree_util.keystr(path)} has {_describe(got)}, "
                             f"expected a floating-point {list(want.shape)} array ({doc}; B = {B} "
                             f"from x). {hint}")
