"""Shared settings of the paper's Table 1 rows for Mini-ImageNet and FC100 (appendix B).

Each row has its own small config file (its docstring holds the launch command) that calls
`miniimagenet(model, k_shot)` or `fc100(model)`.
"""
from configs.fewshot.default import get_config as _default, original_code_settings


def _common(model):
    c = original_code_settings(_default())  # beta_init 0.0, torch dense init (see default.py)
    c.model = model
    c.rotations = "none"
    c.conv_channels = 32
    c.batch_size = 16
    c.total_steps = 600_000
    c.num_layers = 1 if model == "lstm" else 3
    c.dropout = 0.1
    c.vision_dropout = 0.1
    c.schedule = "warmup"
    return c


def miniimagenet(model, k_shot):
    """Ravi split, 84 px; feed-forward x4 (1-shot) / x8 (5-shot)."""
    c = _common(model)
    c.dataset = "miniimagenet"
    c.data_dir = "data/miniimagenet"
    c.image_size = 84
    c.k_shot = k_shot
    c.ff_factor = 4 if k_shot == 1 else 8
    return c


def fc100(model):
    """CIFAR-100 by superclass (60/20/20 classes), 32 px, 5-shot."""
    c = _common(model)
    c.dataset = "fc100"
    c.data_dir = "data/cifar-100-python"
    c.image_size = 32
    c.k_shot = 5
    c.ff_factor = 8
    return c
