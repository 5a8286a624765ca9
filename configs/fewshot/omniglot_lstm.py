"""Omniglot 5-way 1-shot, Conv-4 + LSTM baseline (paper Table 1)."""
from configs.fewshot.default import get_config as _default, original_code_settings


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = original_code_settings(_default())  # beta_init 0.0, torch dense init
    c.model = "lstm"
    c.num_layers = 1
    return c
