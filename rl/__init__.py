"""IMPALA (V-trace) on ProcGen with self-referential / fast-weight memory agents, Sebulba-style.

Modules:
    train           command line: python -m rl.train --config configs/rl/<name>.py --workdir DIR
    impala          the same command under the design's name (python -m rl.impala)
    training        train_and_evaluate(config, workdir): the run (logging, checkpoints, evals)
                    on the shared run layer srwm_jax.training
    config_checks   a rule per config field; device checks (validate_config); resumable and
                    renamed fields
    sebulba         actor threads, bounded rollout queue, params publishing, failure propagation
    learner         IMPALA loss (sums, as torchbeast) and the jitted data-parallel update
    vtrace          V-trace targets (own implementation; rho_bar = c_bar = 1)
    agent           IMPALA ResNet stem + core (ff, lstm, srwm, deltanet, srdelta, fakesr) + heads
    envs            multi-game vectorised ProcGen (gym3) with episode bookkeeping
    evaluation      argmax evaluation on fixed level splits, random-policy returns, load_for_eval
    evaluate        command line: python -m rl.evaluate --workdir DIR
    normalization   Cobbe et al. (2020) return ranges and normalised scores
    random_baseline command line: random-policy returns on the same levels
    plots           learning-curve PNG per game
    plot            command line: python -m rl.plot WORKDIR [--compare OUT.png]
Install ProcGen with rl/install_procgen.sh.
"""
