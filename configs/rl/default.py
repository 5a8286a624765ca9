"""Paper setting: IMPALA multi-task on 6 ProcGen easy games (Irie et al. 2022, Sec. 4.3).

    python -m rl.train --config configs/rl/default.py --workdir runs/rl_srwm_easy \
        --config.agent.core=srwm

Every field is documented where it is set; variants import this file and override fields.
"""

import ml_collections

from rl.envs import EASY_GAMES, NUM_ACTIONS


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    # --- environment (procgen gym3) ---
    c.games = EASY_GAMES              # one run trains on all of them; no task id is given
    c.distribution_mode = "easy"
    c.num_levels = 200                # training levels [start_level, start_level + num_levels)
    c.start_level = 0
    c.num_actions = NUM_ACTIONS       # ProcGen's full action set (15)
    c.frame_shape = (64, 64, 3)       # observation shape (tests use smaller fake frames)

    # --- Sebulba actors ---
    c.num_actor_threads = 2           # each owns one MultiGameEnv
    c.envs_per_game = 4               # per actor thread: 2 threads x 6 games x 4 = 48 envs
    c.env_threads = 1                 # procgen's own stepping threads per gym3 env
    c.queue_size = 2                  # bounded rollout queue (back-pressure, policy lag)
    c.actor_device_ids = (0,)         # indices into jax.devices() for inference
    c.unroll_timeout_seconds = 0.0    # an actor with no unroll for this long stops the run with
                                      # an error naming it (hung env); 0 = auto: 180 s + 50 ms
                                      # per env step of one unroll (rl/sebulba.py unroll_timeout)
    c.learner_device_ids = ()         # empty: all devices (data parallel over the batch)
    # Several processes (python -m rl.train --num_processes=P ...): device ids above index each
    # process's own devices; batch_size is the global batch (each process's actors feed
    # batch_size / P unrolls per update).
    c.params_check_every_updates = 100  # several processes: assert every this many updates that
                                        # all hold bit-identical parameters (0 = never)

    # --- agent ---
    c.agent = ml_collections.ConfigDict()
    c.agent.core = "srwm"             # ff | lstm | srwm | deltanet | srdelta | fakesr
    c.agent.lstm_hidden = 256
    c.agent.num_layers = 2            # memory kinds: Linear(257->hidden) + num_layers x [mem + FF]
    c.agent.hidden = 128
    c.agent.num_heads = 8             # 8 heads x 16
    c.agent.ff_dim = 512
    c.agent.dropout = 0.0
    c.agent.sum_norm_eps = 1e-5       # deltanet: q, k = (elu+1)(x) / (sum + eps); 1e-5 as the
                                      # original RL code (torchbeast/layer.py elu_p1_sum_norm_eps)
    c.agent.state_gradient = "unroll"  # fast-weight kinds: "unroll" backpropagates through the
                                      # fast-weight states of the whole unroll (one fused kernel
                                      # call per layer); "step" cuts the gradient at every step as
                                      # the original (configs/rl/original_code.py), so the SRWM's
                                      # W_q, W_k, w_b learn nothing. Measured side by side on CPU,
                                      # 2 seeds: no difference at 100k steps (benchmarks/RESULTS.md)
    c.agent.dense_init = "torch"      # memory stack projections + FF blocks: "torch" = nn.Linear's
                                      # U(+-1/sqrt(fan_in)) weight and bias, as the original (the
                                      # stem, LSTM and heads are torch-initialised already); "flax"

    # --- IMPALA / V-trace (torchbeast_procgen README + polybeast_learner defaults) ---
    c.total_steps = 300_000_000       # env steps over all games (also the LR-decay horizon)
    c.max_minutes = 0.0               # stop (checkpoint + final eval) after this; 0 = no limit
    c.unroll_length = 50              # T (also the truncated-BPTT span)
    c.batch_size = 32                 # unrolls per update
    c.discount = 0.99
    c.reward_clip = 1.0               # rewards clipped to [-1, 1] in the loss; 0 = no clipping
    c.baseline_cost = 0.5
    c.entropy_cost = 0.01
    c.learning_rate = 6e-4            # decayed linearly to 0 over total_steps
    c.rmsprop_decay = 0.99
    c.rmsprop_eps = 0.01              # outside the sqrt, as torch.optim.RMSprop
    c.rmsprop_momentum = 0.0
    c.grad_norm_clip = 40.0

    # --- evaluation (argmax actions; paper's fixed test splits + training levels) ---
    c.eval_splits = ((1000, 200), (1200, 200), (1400, 200))  # (start_level, num_levels)
    c.eval_on_train_levels = True
    c.eval_episodes = 200             # per game and split
    c.eval_every_steps = 25_000_000   # 0 = only at the end
    c.eval_max_steps = 10_000         # cap on env steps per evaluation (unfinished episodes
                                      # dropped)

    # --- logging / checkpointing ---
    c.log_every_seconds = 30.0
    c.return_window = 100             # episodes per game in the running mean return
    c.checkpoint_every_minutes = 20.0  # 0 = after every update
    c.keep_checkpoints = 3            # periodic checkpoints kept (newest)
    return c
