"""Delayed-label sequential task (paper Sec. 4.2) sized for a 2-core CPU (~30 min on a contended
CPU): Omniglot then "omniglot_transformed" or the reverse. omniglot_transformed is a STAND-IN
second domain
(Omniglot sheared and recoloured), NOT Mini-ImageNet, which is not available here.
CPU sizing: 28 px images (3 channels), 5 examples per class per segment (50 steps), small model.

python -m fewshot.train --config configs/fewshot/sequential_omniglot_transformed_srwm_cpu.py \
    --workdir runs/sequential_srwm_cpu
python -m fewshot.evaluate_sequential --workdir runs/sequential_srwm_cpu \
    [--workdir runs/sequential_deltanet_cpu] --out runs/sequential_cpu_eval
DeltaNet: same config with --config.model=deltanet.
"""
from configs.fewshot.default import get_config as _default


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _default()
    c.task = "sequential"
    c.dataset = "omniglot"
    c.second_dataset = "omniglot_transformed"
    c.rotations = "none"
    c.image_size = 28
    c.sequential_shots = 5
    c.max_trim = 10
    c.conv_channels = 16
    c.hidden_size = 64
    c.num_heads = 4
    c.num_layers = 2
    c.ff_factor = 2
    c.batch_size = 8
    c.total_steps = 1500
    c.learning_rate = 1e-3
    c.log_every_steps = 50
    c.eval_every_steps = 250
    c.val_episodes = 64
    c.eval_batch_size = 64
    c.checkpoint_every_steps = 250
    return c
