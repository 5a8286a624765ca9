"""Omniglot 5-way 1-shot, Conv-4 + 2-layer SRWM (paper Table 1; README of the original code).

python -m fewshot.train --config configs/fewshot/omniglot_srwm.py --workdir runs/omniglot_srwm
"""
from configs.fewshot.default import get_config as _default, original_code_settings


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    return original_code_settings(_default())  # beta_init 0.0, torch dense init
