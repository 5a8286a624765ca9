"""The paper setting with the original code's computation where ours differs by default:
the gradient through the fast-weight state cut at every step (IDSIA/modern-srwm
reinforcement_learning/torchbeast/layer.py; README "Deviations from the original code").

    python -m rl.train --config configs/rl/original_code.py --workdir runs/rl_srwm_easy_original

Everything else of configs/rl/default.py is the original's already (torch initialisation,
sum_norm_eps 1e-5, RMSprop, V-trace, losses). The memory-distribution setting with the same
cut: `--config configs/rl/memory.py --config.agent.state_gradient=step`.
"""

from configs.rl import default


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = default.get_config()
    c.agent.state_gradient = "step"
    return c
