"""Bootstrapped few-shot learning (Irie & Schmidhuber, ICLR 2023 workshop): Mini-ImageNet 5-way,
K = 10 support shots, F = 5 future shots per class; Conv-4 (32 channels, 84 px) + SRWM as the
Mini-ImageNet 5-shot model of paper Table 1. Loss: CE(10-shot) + 10 * KL(15-shot teacher ||
10-shot student) + CE(15-shot) (fewshot/bootstrap.py); evaluated as a 10-shot learner.

python -m fewshot.train --config configs/fewshot/miniimagenet_10shot_5bootstrap_srwm.py \
    --config.data_dir=/path/to/miniimagenet --workdir runs/mi_srwm_10shot_5bootstrap
python -m fewshot.evaluate --workdir runs/mi_srwm_10shot_5bootstrap
Plain baseline: the same with --config.task=sync.
"""
from configs.fewshot.table1 import get_config as _table1


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _table1("miniimagenet,srwm,5")
    c.task = "bootstrap"
    c.k_shot = 10
    c.future_shots = 5
    c.bootstrap_weight = 10.0
    c.ff_factor = 8
    return c
