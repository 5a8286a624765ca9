"""`python -m rl.impala` = `python -m rl.train` (the design's name for the RL command; kept so
existing scripts and the paper-reproduction commands keep working)."""
from srwm_jax.training.cli import run

from .train import main

if __name__ == "__main__":
    run(main)
