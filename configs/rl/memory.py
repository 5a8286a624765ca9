"""Appendix C.1: 4 ProcGen memory-distribution games, 500 training levels, hard constants.

    python -m rl.train --config configs/rl/memory.py --workdir runs/rl_srwm_memory
"""

from configs.rl import default
from rl.envs import MEMORY_GAMES


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = default.get_config()
    c.games = MEMORY_GAMES
    c.distribution_mode = "memory"
    c.num_levels = 500
    c.envs_per_game = 6               # 2 threads x 4 games x 6 = 48 envs
    c.total_steps = 800_000_000
    return c
