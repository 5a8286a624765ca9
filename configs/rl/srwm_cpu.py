"""CPU learning check: SRWM agent on starpilot (easy), <= 60 minutes on a 2-core machine.

    python -m rl.train --config configs/rl/srwm_cpu.py --workdir runs/rl_srwm_cpu
"""

from configs.rl import ff_cpu


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = ff_cpu.get_config()
    c.agent.core = "srwm"
    return c
