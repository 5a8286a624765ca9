"""Run metrics: `workdir/metrics.jsonl` (one JSON object per write), TensorBoard events in
`workdir/tensorboard/`, and CSV tables appended row by row."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Writes scalars to metrics.jsonl and (if `tensorboard`) TensorBoard.

    Args:
      workdir: run directory (made if missing).
      tensorboard: also write TensorBoard events to `workdir/tensorboard/`.
    """

    def __init__(self, workdir: str, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 - optional: tests run without it
            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, scalars: Mapping[str, float], prefix: str, jsonl: bool = True):
        """Logs `scalars` ({name: float}) as `prefix/name` at `step`.

        The jsonl record is {"step", "time", "split": prefix, name: value, ...} (strict JSON:
        a NaN or infinite value is written as null); jsonl=False
        writes TensorBoard only (for high-rate series such as per-episode returns)."""
        record = {"step": int(step), "time": time.time(), "split": prefix}
        for name, value in scalars.items():
            value = float(value)
            # Strict JSON has no NaN / Infinity: a non-finite value is written as null.
            record[name] = value if math.isfinite(value) else None
            if self._tb is not None:
                self._tb.add_scalar(f"{prefix}/{name}", value, int(step))
        if jsonl:
            self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            self.flush()

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class NullWriter:
    """A MetricWriter that writes nothing (the processes other than 0 of a multi-process run)."""

    def write(self, step, scalars, prefix, jsonl=True):
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(workdir: str) -> list[dict]:
    """All records of `workdir/metrics.jsonl`, in write order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_csv(path: str, fieldnames: Sequence[str], rows: Iterable[Mapping]) -> None:
    """Appends `rows` (dicts; keys outside `fieldnames` are dropped) to the CSV at `path`,
    writing the header first if the file is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)
