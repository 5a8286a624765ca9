"""VSML on the delayed-label sequential task (srwm_jax.vsml_layer; Kirsch & Schmidhuber 2021),
sized for a 2-core CPU, the same data and budget as sequential_omniglot_transformed_srwm_cpu:
Omniglot then "omniglot_transformed" (a stand-in second domain) or the reverse, 5 examples
per class per segment. Conv-4 features (16 channels -> 16 input units) feed a VSML network
16 -> 5 whose shared LSTM gets the previous step's label as error feedback.

python -m fewshot.train --config configs/fewshot/sequential_omniglot_transformed_vsml_cpu.py \
    --workdir runs/sequential_vsml_cpu
python -m fewshot.evaluate_sequential --workdir runs/sequential_vsml_cpu \
    --workdir runs/sequential_srwm_cpu --out runs/sequential_cpu_eval
"""
from configs.fewshot.sequential_omniglot_transformed_srwm_cpu import get_config as _cpu


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _cpu()
    c.model = "vsml"
    c.vsml_msg_size = 4
    c.vsml_state_size = 8
    c.vsml_micro_ticks = 1
    c.vsml_hidden_units = 0
    c.vsml_gate_offset = 1.0
    c.learning_rate = 3e-3
    c.clip_grad_norm = 1.0
    return c
