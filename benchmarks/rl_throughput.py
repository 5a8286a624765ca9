"""Env steps/s of the full Sebulba actor-learner loop (ProcGen starpilot) for FF and SRWM agents.

    python benchmarks/rl_throughput.py [--seconds 120] [--agents ff,srwm]
        [--config configs/rl/ff_cpu.py]

Each agent runs `train_and_evaluate` for --seconds of wall time (compilation included); the
reported steps/s (learner-consumed env steps) averages the 10-second progress intervals after the
first one, so compilation is excluded. Policy lag: updates between acting and learning params.
"""

import argparse
import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(config_path, core, seconds, overrides):
    import csv

    import jax
    from rl.training import train_and_evaluate
    from srwm_jax.training.run_config import load_config_file
    config = load_config_file(config_path)
    config.agent.core = core
    config.update(overrides)
    config.eval_episodes = 0
    config.log_every_seconds = 10.0
    config.checkpoint_every_minutes = 1e9
    config.total_steps = 10**9  # only the LR-decay horizon here; the run stops on max_minutes
    config.max_minutes = seconds / 60.0
    with tempfile.TemporaryDirectory() as d:
        summary = train_and_evaluate(config, d, use_tensorboard=False)
        with open(os.path.join(d, "train_returns.csv")) as f:
            rows = list(csv.DictReader(f))
    # The first report interval contains compilation; average the later ones (one row per game).
    sps = [float(r["sps"]) for r in rows[len(config.games):]] or [float(rows[-1]["sps"])]
    progress = summary["progress"]
    return dict(agent=core, env_steps=summary["env_steps"], wall_s=seconds,
                sps=sum(sps) / len(sps), lag_mean=progress["policy_lag_mean"],
                lag_max=progress["policy_lag_max"], devices=len(jax.devices()),
                backend=jax.default_backend(), envs=config.num_actor_threads
                * config.envs_per_game * len(config.games),
                batch=f"{config.batch_size}x{config.unroll_length}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/rl/ff_cpu.py")
    parser.add_argument("--agents", default="ff,srwm")
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = [measure(args.config, core, args.seconds, {}) for core in args.agents.split(",")]
    print(f"\n{'agent':>6} {'backend':>7} {'envs':>5} {'batch':>6} {'env steps':>10} "
          f"{'run s':>7} {'steps/s':>8} {'lag mean':>8} {'lag max':>7}")
    for r in rows:
        print(f"{r['agent']:>6} {r['backend']:>7} {r['envs']:>5} {r['batch']:>6} "
              f"{r['env_steps']:>10} {r['wall_s']:>7.1f} {r['sps']:>8.1f} {r['lag_mean']:>8.2f} "
              f"{r['lag_max']:>7}")


if __name__ == "__main__":
    main()
