"""Tiny Omniglot 5-way 1-shot run for CI: a few hundred steps, asserts it learns above chance."""
from configs.fewshot.omniglot_srwm_cpu import get_config as _cpu


def get_config():
    c = _cpu()
    c.conv_channels = 16
    c.hidden_size = 32
    c.num_heads = 4
    c.batch_size = 16
    c.total_steps = 300
    c.learning_rate = 3e-3
    c.log_every = 50
    c.eval_every = 150
    c.val_episodes = 200
    c.checkpoint_every = 100
    return c
