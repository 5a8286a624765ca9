"""CPU learning check: FF agent on starpilot (easy), <= 60 minutes on a 2-core machine.

    python -m rl.train --config configs/rl/ff_cpu.py --workdir runs/rl_ff_cpu

Smaller unrolls and batches than the paper so that a 2-core CPU (~30-40 learner frames/s for
this network) makes many updates within the hour; the agent and the loss are the paper's.
"""

from configs.rl import default


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = default.get_config()
    c.games = ("starpilot",)
    c.agent.core = "ff"
    c.num_actor_threads = 2
    c.envs_per_game = 4               # 8 envs in all (the learner is the bottleneck on CPU)
    c.unroll_length = 20
    c.batch_size = 8                  # 160 steps per update
    c.queue_size = 1
    c.total_steps = 200_000           # LR-decay horizon; a 2-core CPU makes ~30-40 steps/s
    c.max_minutes = 55.0
    c.eval_splits = ((1000, 200),)
    c.eval_episodes = 32
    c.eval_every_steps = 0
    c.log_every_seconds = 60.0
    c.checkpoint_every_minutes = 10.0
    return c
