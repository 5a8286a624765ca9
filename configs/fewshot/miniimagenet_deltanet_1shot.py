"""Mini-ImageNet 5-way 1-shot, Conv-4 + deltanet (paper Table 1).

python -m fewshot.train --config configs/fewshot/miniimagenet_deltanet_1shot.py \
    --config.data_dir=/path/to/miniimagenet --workdir runs/mi_deltanet_1
"""
from configs.fewshot.table1 import miniimagenet


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    return miniimagenet("deltanet", k_shot=1)
