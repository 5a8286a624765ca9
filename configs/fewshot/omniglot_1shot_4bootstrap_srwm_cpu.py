"""Bootstrapped few-shot learning on Omniglot, sized for a 2-core CPU: 5-way, K = 1 support shot,
F = 4 future shots per class (the teacher sees 5 shots). Loss: CE(1-shot) + 10 * KL(5-shot
teacher || 1-shot student) + CE(5-shot) (fewshot/bootstrap.py); evaluated as a 1-shot learner.

python -m fewshot.train --config configs/fewshot/omniglot_1shot_4bootstrap_srwm_cpu.py \
    --workdir runs/omniglot_1shot_4bootstrap_cpu
python -m fewshot.evaluate --workdir runs/omniglot_1shot_4bootstrap_cpu
Plain baseline (same model, data and steps):
--config.task=sync --workdir runs/omniglot_1shot_plain_cpu.
Both score train_queries = 5 queries per training episode (inherited from omniglot_srwm_cpu).
"""
from configs.fewshot.omniglot_srwm_cpu import get_config as _cpu


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _cpu()
    c.task = "bootstrap"
    c.k_shot = 1
    c.future_shots = 4
    c.bootstrap_weight = 10.0
    c.conv_channels = 32
    c.hidden_size = 64
    c.num_heads = 4
    c.batch_size = 16
    c.total_steps = 1000
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    return c
