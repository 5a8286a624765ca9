"""orbax checkpoints of any pytree: periodic (newest `keep` kept) and best on validation.

    workdir/checkpoints/<step>/   periodic; a run resumes from the newest
    workdir/best/<step>/          the best validation result so far (max_to_keep 1)
    workdir/best/best.json        {"step": ..., "val_accuracy": ...} of that checkpoint

Saves are atomic (a killed run keeps the last complete step) and asynchronous: `close()`
waits for them. The saved tree is whatever the trainer passes, so scalars beside the
parameters (RL: env steps and the RNG key data) are restored with them.
"""
from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Periodic and (optionally) best checkpoints under `workdir`.

    Args:
      workdir: run directory; `checkpoints/` (and `best/`) are made inside it.
      keep: periodic checkpoints kept (older ones are deleted).
      best: also keep a best-on-validation checkpoint in `best/`.
    """

    def __init__(self, workdir: str, keep: int = 2, best: bool = True):
        workdir = os.path.abspath(workdir)
        self._best_info = os.path.join(workdir, "best", "best.json")
        self.periodic = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self.best = None
        if best:
            self.best = ocp.CheckpointManager(
                os.path.join(workdir, "best"),
                options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    @property
    def directory(self) -> str:
        return str(self.periodic.directory)

    def latest_step(self) -> int | None:
        """Newest periodic step, or None if there is none."""
        return self.periodic.latest_step()

    def save(self, step: int, tree, force: bool = False) -> None:
        """Saves `tree` as periodic checkpoint `step` (asynchronous; see `close`).

        force: overwrite policy checks (orbax skips a step it already holds otherwise)."""
        self.periodic.save(int(step), args=ocp.args.StandardSave(tree), force=force)

    def best_accuracy(self) -> float:
        """Validation accuracy of the best checkpoint, -1.0 if there is none yet."""
        if not os.path.exists(self._best_info):
            return -1.0
        with open(self._best_info) as f:
            return json.load(f)["val_accuracy"]

    def save_best(self, step: int, tree, val_accuracy: float) -> None:
        """Replaces the best checkpoint with `tree` at `step` and records `val_accuracy`."""
        if self.best is None:
            raise ValueError("this Checkpoints was made with best=False")
        self.best.save(int(step), args=ocp.args.StandardSave(tree), force=True)
        self.best.wait_until_finished()
        if jax.process_index() == 0:  # several processes: one writer, then all read it back
            with open(self._best_info, "w") as f:
                json.dump({"step": int(step), "val_accuracy": float(val_accuracy)}, f)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415
            multihost_utils.sync_global_devices("srwm_jax best.json written")

    def restore(self, target, which: str = "latest", step: int | None = None):
        """Restores a checkpoint into the structure, dtypes and shardings of `target`.

        Args:
          target: a pytree like the saved one (arrays or ShapeDtypeStructs).
          which: "latest" (periodic) or "best".
          step: a specific step (default: the newest of `which`).
        Returns:
          The restored pytree.
        Raises:
          FileNotFoundError: there is no such checkpoint.
          RuntimeError: the files are corrupt or belong to a different model/config.
        """
        if which not in ("latest", "best"):
            raise ValueError(f"which={which!r}: choose 'latest' or 'best'.")
        manager = self.periodic if which == "latest" else self.best
        if manager is None:
            raise FileNotFoundError("no best checkpoints are kept for this run")
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            return manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for truncated / mismatched files
            raise RuntimeError(
                f"checkpoint {manager.directory}/{step} could not be restored ({type(e).__name__}: "
                f"{e}). It may be corrupt or from a different config; delete that step folder to "
                "fall back to an older one, or start a fresh --workdir.") from e

    def wait_until_finished(self) -> None:
        for manager in (self.periodic, self.best):
            if manager is not None:
                manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the managers."""
        self.wait_until_finished()
        for manager in (self.periodic, self.best):
            if manager is not None:
                manager.close()
