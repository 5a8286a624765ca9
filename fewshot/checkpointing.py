"""Periodic and best-on-validation checkpoints with orbax (atomic: a killed run keeps the last one)."""
import json
import os

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """`workdir/checkpoints/<step>` (periodic, newest `keep` kept) and `workdir/best/<step>`."""

    def __init__(self, workdir, keep=2):
        workdir = os.path.abspath(workdir)
        self._best_info = os.path.join(workdir, "best", "best.json")
        self.periodic = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self.best = ocp.CheckpointManager(
            os.path.join(workdir, "best"), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def latest_step(self):
        return self.periodic.latest_step()

    def save(self, step, state):
        self.periodic.save(int(step), args=ocp.args.StandardSave(state))

    def best_accuracy(self):
        if not os.path.exists(self._best_info):
            return -1.0
        with open(self._best_info) as f:
            return json.load(f)["val_accuracy"]

    def save_best(self, step, state, val_accuracy):
        self.best.save(int(step), args=ocp.args.StandardSave(state), force=True)
        self.best.wait_until_finished()
        with open(self._best_info, "w") as f:
            json.dump({"step": int(step), "val_accuracy": float(val_accuracy)}, f)

    def restore(self, abstract_state, which="latest"):
        """Restores into the structure/shardings of `abstract_state`; which: latest | best."""
        manager = self.periodic if which == "latest" else self.best
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            return manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for truncated / mismatched files
            raise RuntimeError(
                f"checkpoint {manager.directory}/{step} could not be restored ({type(e).__name__}: {e}). "
                "It may be corrupt or from a different config; delete that step folder to fall back "
                "to an older one, or start a fresh --workdir.") from e

    def close(self):
        self.periodic.wait_until_finished()
        self.best.wait_until_finished()
        self.periodic.close()
        self.best.close()
