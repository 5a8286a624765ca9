"""Few-shot sequence learning (paper Sec. 4.1-4.2) with SRWM / DeltaNet / LSTM learners.

Modules:
    train                command line: python -m fewshot.train --config configs/fewshot/<name>.py
                         --workdir DIR
    training             train_and_evaluate(config, workdir), build (the library)
    config_checks        a rule per config field; checks against the data and devices
                         (validate_config); resumable and renamed fields
    tasks                the task registry: sync, sequential, bootstrap (samplers, losses,
                         eval steps)
    steps                TrainState, optimiser, train step, the sync task's loss and eval step
    sequential           delayed-label sequential task: loss, stream batches, Table 2/7 statistics
    bootstrap            bootstrapped K-shot / (K+F)-shot loss
    models               vision backbones + SequenceLearner (srwm_jax.layers.MemoryStack)
    warm_start           copy matching weights from another run (config.init_from)
    finished_run         a finished run read back: config, model and checkpoint (load_run,
                         restore_run)
    evaluation           testing finished runs (evaluate, evaluate_sequential, tables, plots)
    evaluate             command line: python -m fewshot.evaluate --workdir DIR
    evaluate_sequential  command line: python -m fewshot.evaluate_sequential --workdir DIR ...
    plots                accuracy-curve figure
    data                 datasets, episode sampler, delayed-label stream
Checkpoints, metrics, config.json and the device mesh come from srwm_jax.training.
"""
