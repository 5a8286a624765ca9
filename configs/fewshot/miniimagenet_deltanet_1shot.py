"""Mini-ImageNet 5-way 1-shot, Conv-4 (32 channels, 84 px) + deltanet (paper Table 1).

python -m fewshot.train --config configs/fewshot/miniimagenet_deltanet_1shot.py --config.data_dir=/path/to/miniimagenet --workdir runs/mi_deltanet_1
"""
from configs.fewshot.default import get_config as _default


def get_config():
    c = _default()
    c.dataset = "miniimagenet"
    c.data_dir = "data/miniimagenet"
    c.image_size = 84
    c.rotations = "none"
    c.k_shot = 1
    c.model = "deltanet"
    c.conv_channels = 32
    c.batch_size = 16
    c.total_steps = 600_000
    c.num_layers = 3 if c.model != "lstm" else 1
    c.ff_factor = 4 if c.k_shot == 1 else 8
    c.dropout = 0.1
    c.vision_dropout = 0.1
    c.schedule = "warmup"
    return c
