"""FC100 5-way 5-shot, Conv-4 (32 channels, 32 px) + srwm (paper Table 1).

python -m fewshot.train --config configs/fewshot/fc100_srwm_5shot.py --config.data_dir=/path/to/cifar-100-python --workdir runs/fc100_srwm
"""
from configs.fewshot.default import get_config as _default


def get_config():
    c = _default()
    c.dataset = "fc100"
    c.data_dir = "data/cifar-100-python"
    c.image_size = 32
    c.rotations = "none"
    c.k_shot = 5
    c.model = "srwm"
    c.conv_channels = 32
    c.batch_size = 16
    c.total_steps = 600_000
    c.num_layers = 3 if c.model != "lstm" else 1
    c.ff_factor = 8
    c.dropout = 0.1
    c.vision_dropout = 0.1
    c.schedule = "warmup"
    return c
