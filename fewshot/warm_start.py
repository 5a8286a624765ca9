"""Start a run from another run's weights (`config.init_from = "runs/<dir>"`).

Typical use: a delayed-label sequential learner initialised from a synchronous-label few-shot
run of the same architecture, so the sequential run starts with a trained image encoder and
label-binding memory instead of learning both from scratch.

Every parameter (and BatchNorm statistic) whose path and shape match is copied; a convolution
kernel that differs only in its input channels, 1 in the source and C here (grayscale
Omniglot -> 3-channel images), is repeated over the C channels and divided by C, which gives
the same output on a grayscale image replicated to C channels. Everything else keeps its fresh
initialisation, and the optimiser state and step start from zero.
"""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from srwm_jax import jax_compat


class WarmStartError(ValueError):
    """The source run cannot be read; the message says which path and what to do."""


def source_step_dir(workdir, which="best"):
    """-> the checkpoint folder of `workdir` to read: its best (default) or latest step."""
    root = os.path.join(os.path.abspath(workdir), "best" if which == "best" else "checkpoints")
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
        raise WarmStartError(f"config.init_from={workdir!r}: no {which} checkpoint under {root}; "
                             "point it at a workdir written by fewshot.train.")
    return os.path.join(root, str(steps[-1]), "default")


def read_arrays(step_dir):
    """A checkpointed train state as a dict of host numpy arrays, whatever devices wrote it."""
    checkpointer = ocp.StandardCheckpointer()
    try:
        meta = checkpointer.metadata(step_dir)
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        cpu = jax_compat.single_device_sharding(jax.local_devices(backend="cpu")[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), tree)
        restored = checkpointer.restore(step_dir, target)
    except Exception as e:  # orbax raises many types for missing / truncated files
        raise WarmStartError(f"could not read the checkpoint {step_dir} ({type(e).__name__}: {e}); "
                             "it may be corrupt: pick another run for config.init_from.") from e
    finally:
        checkpointer.close()
    return jax.tree.map(np.asarray, restored)


def _flat(tree):
    return {jax.tree_util.keystr(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def transfer(target, source):
    """Copies source leaves into the pytree `target` where the paths match.

    -> (new tree, copied names, kept names). A 4-D kernel [h, w, 1, O] going to [h, w, C, O]
    is repeated over C and divided by C."""
    src = _flat(source)
    copied, kept = [], []

    def pick(path, leaf):
        name = jax.tree_util.keystr(path)
        value = src.get(name)
        if value is not None and value.shape == leaf.shape:
            copied.append(name)
            return np.asarray(value, leaf.dtype)
        if (value is not None and value.ndim == 4 and leaf.ndim == 4 and value.shape[2] == 1
                and value.shape[:2] + value.shape[3:] == leaf.shape[:2] + leaf.shape[3:]):
            copied.append(name)
            channels = leaf.shape[2]
            return np.asarray(np.repeat(value, channels, axis=2) / channels, leaf.dtype)
        kept.append(name)
        return leaf

    return jax.tree_util.tree_map_with_path(pick, target), copied, kept


def warm_start(state, workdir, which="best"):
    """-> (state with params and batch_stats taken from `workdir` where they fit, report line).

    Raises WarmStartError if nothing fits (a different architecture: check hidden_size,
    num_heads, conv_channels against the source's config.json)."""
    source = read_arrays(source_step_dir(workdir, which))
    params, copied, kept = transfer(state.params, source["params"])
    if not copied:
        raise WarmStartError(f"config.init_from={workdir!r}: no parameter matches this model in "
                             "path and shape; use a source run with the same model sizes.")
    stats, stats_copied, _ = transfer(state.batch_stats, source.get("batch_stats", {}))
    report = (f"Warm start from {workdir} ({which}): {len(copied)} parameter arrays and "
              f"{len(stats_copied)} BatchNorm statistics copied, {len(kept)} kept fresh"
              + (f" ({', '.join(kept)})" if kept else ""))
    return state.replace(params=params, batch_stats=stats), report
