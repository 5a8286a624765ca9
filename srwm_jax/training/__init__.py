"""The run layer under both trainers (few-shot `fewshot.training`, RL `rl.training`).

One module per job, none of them model-specific:

    checkpoints   orbax checkpoints: periodic (newest `keep`) + best-on-validation, any pytree
                  (extra scalars such as env steps and the RNG key ride in the saved tree)
    metrics       metrics.jsonl + TensorBoard events in `tensorboard/` + CSV appends
    run_config    config.json save/load, merged onto the defaults the caller passes; config
                  fingerprints (stored with every checkpoint, checked at restore)
    workdir       opening a run directory: a used one is resumed with its own config only,
                  refused, or deleted (--overwrite, only a folder with our run marker)
    run_context   the lifecycle of a training run around its loop: workdir lock, stop signals
                  (SIGTERM / SIGUSR1 -> checkpoint and exit 0), divergence guard, closing
    config_schema per-field config rules (Int, Float, Choice, ...) and their check
    cli           the shared start of every CLI: one-line flag and config errors, exit 2
    mesh          the data-parallel device mesh, its shardings, parameter counting

Why here: both `fewshot` and `rl` already depend on `srwm_jax` (for its layers) and on
nothing else they share, so a sub-package of `srwm_jax` is the one home both can import
without a new top-level name. `srwm_jax/__init__.py` does not import it, so the core
(ops, layers) stays free of orbax and tensorboardX.

Workdir layout written by this layer (the same for both trainers):

    config.json  metrics.jsonl  tensorboard/  checkpoints/<step>/  best/<step>/ + best/best.json
"""
