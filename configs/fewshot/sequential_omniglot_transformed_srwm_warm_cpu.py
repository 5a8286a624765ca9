"""Delayed-label sequential task on a 2-core CPU, started from the synchronous-label CPU run.

Same stream as sequential_omniglot_transformed_srwm_cpu.py (Omniglot then the
"omniglot_transformed" STAND-IN, not Mini-ImageNet; 28 px, 5 examples per class per segment),
with two departures from the paper that make it leave the "unused label" plateau within a CPU
budget (measured, benchmarks/RESULTS.md):
- init_from: every weight of the sync 5-way 1-shot run (configs/fewshot/omniglot_srwm_cpu.py,
  same model sizes) copied in: a trained image encoder and label-binding memory;
- short_conv=2 with random past taps: each step also sees the previous step's input, so the
  image of step t-1 and the label that arrives at step t meet in one memory write.

python -m fewshot.train --config configs/fewshot/omniglot_srwm_cpu.py \
    --workdir runs/omniglot_srwm_cpu
python -m fewshot.train --config configs/fewshot/sequential_omniglot_transformed_srwm_warm_cpu.py \
    --workdir runs/sequential_srwm_warm_cpu
python -m fewshot.evaluate_sequential --workdir runs/sequential_srwm_warm_cpu \
    --out runs/sequential_warm_eval
"""
from configs.fewshot.sequential_omniglot_transformed_srwm_cpu import get_config as _sequential


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _sequential()
    # The sync CPU run's sizes, so all of its weights fit.
    c.conv_channels = 32
    c.hidden_size = 128
    c.num_heads = 8
    c.ff_factor = 2
    c.init_from = "runs/omniglot_srwm_cpu"
    c.short_conv = 2
    c.short_conv_init_std = 1.0
    c.batch_size = 16
    c.total_steps = 3000
    c.cpu_devices = 0
    return c
