"""Metrics to `workdir/metrics.jsonl` (one JSON object per line) and TensorBoard event files."""
import json
import os
import time

from tensorboardX import SummaryWriter


class MetricWriter:
    def __init__(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step, scalars, prefix):
        """scalars: {name: float}; logged as `prefix/name` at `step`."""
        record = {"step": int(step), "time": time.time(), "split": prefix}
        for name, value in scalars.items():
            value = float(value)
            record[name] = value
            self._tb.add_scalar(f"{prefix}/{name}", value, int(step))
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self):
        self._jsonl.close()
        self._tb.close()


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
