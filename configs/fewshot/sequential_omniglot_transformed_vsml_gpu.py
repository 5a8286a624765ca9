"""VSML on the delayed-label sequential task at the paper's scale, for one GPU (not run here).

Kirsch & Schmidhuber 2021 use message size 8, LSTM state 16 (their `slow_size`), two micro
ticks and dense VSML layers on (randomly projected) inputs; here the inputs are Conv-4
features (64 channels -> 64 input units) of Omniglot and "omniglot_transformed", 15 examples
per class per segment (150 steps), with one hidden VSML layer of 32 units.

python -m fewshot.train --config configs/fewshot/sequential_omniglot_transformed_vsml_gpu.py \
    --workdir runs/sequential_vsml_gpu
"""
from configs.fewshot.default import get_config as _default


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _default()
    c.task = "sequential"
    c.dataset = "omniglot"
    c.second_dataset = "omniglot_transformed"
    c.rotations = "none"
    c.sequential_shots = 15
    c.max_trim = 60
    c.model = "vsml"
    c.conv_channels = 64
    c.vsml_msg_size = 8
    c.vsml_state_size = 16
    c.vsml_micro_ticks = 2
    c.vsml_hidden_units = 32
    c.vsml_gate_offset = 1.0
    c.batch_size = 64
    c.total_steps = 50_000
    c.learning_rate = 1e-3
    c.clip_grad_norm = 1.0
    return c
