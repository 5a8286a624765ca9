"""FC100 5-way 5-shot, Conv-4 + srwm (paper Table 1).

python -m fewshot.train --config configs/fewshot/fc100_srwm_5shot.py \
    --config.data_dir=/path/to/cifar-100-python --workdir runs/fc100_srwm
"""
from configs.fewshot.table1 import fc100


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    return fc100("srwm")
