"""Tiny Omniglot run for CI (about a minute on 2 CPU cores): asserts the pipeline learns.

2-way 1-shot: sequence learners sit at chance for a while before they learn to bind labels to
images (5-way runs take thousands of steps to leave chance level); with two ways a tiny SRWM
leaves chance within a few hundred steps, so a broken pipeline fails CI quickly.
"""
from configs.fewshot.omniglot_srwm_cpu import get_config as _cpu


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = _cpu()
    c.n_way = 2
    c.train_queries = 1
    c.conv_channels = 16
    c.hidden_size = 32
    c.num_heads = 4
    c.batch_size = 32
    c.total_steps = 700
    c.learning_rate = 1e-3
    c.query_label = "class0"
    c.schedule = "constant"
    c.cpu_devices = 1
    c.log_every_steps = 50
    c.eval_every_steps = 350
    c.val_episodes = 300
    c.checkpoint_every_steps = 350
    return c
