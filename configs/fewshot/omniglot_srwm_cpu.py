"""Omniglot 5-way 1-shot, SRWM, sized for a 2-core CPU (<= 30 minutes; acceptance run).

python -m fewshot.train --config configs/fewshot/omniglot_srwm_cpu.py --workdir runs/omniglot_srwm_cpu
python -m fewshot.evaluate --workdir runs/omniglot_srwm_cpu
Same config with --config.model=deltanet or --config.model=lstm --config.num_layers=1.
"""
from configs.fewshot.default import get_config as _default


def get_config():
    c = _default()
    c.conv_channels = 32
    c.hidden_size = 128
    c.num_heads = 8
    c.ff_factor = 2
    c.batch_size = 32
    c.total_steps = 5000
    c.learning_rate = 1e-3
    c.log_every = 50
    c.eval_every = 1000
    c.val_episodes = 500
    c.checkpoint_every = 500
    return c
