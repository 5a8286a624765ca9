"""Delayed-label sequential task as the paper (Sec. 4.2, App. B.5, Table 2): Omniglot (84 px,
3 channels) then Mini-ImageNet or the reverse; 5-way, 15 examples per class per segment,
training trims randint(0, 60) steps per segment. Conv-4 (32 channels), SRWM 3 layers, H 256,
16 heads, ff x1, lr 3e-4 without warmup (the original's README). Needs Mini-ImageNet in
--config.second_data_dir and a GPU.

python -m fewshot.train --config configs/fewshot/sequential_omniglot_miniimagenet_srwm.py \
    --workdir runs/sequential_srwm --config.second_data_dir=PATH/miniimagenet
python -m fewshot.evaluate_sequential --workdir runs/sequential_srwm --out runs/sequential_srwm/eval
DeltaNet: --config.model=deltanet.
The original used batch 32 (= 16 sequences) with 2-step gradient accumulation and 1M steps; here
batch_size counts sequences and there is no accumulation (32 sequences per step).
"""
from configs.fewshot.default import get_config as _default, original_code_settings


def get_config():
    """-> the ml_collections.ConfigDict described in the module docstring."""
    c = original_code_settings(_default())  # beta_init 0.0, torch dense init
    c.task = "sequential"
    c.dataset = "omniglot"
    c.second_dataset = "miniimagenet"
    c.second_data_dir = "../shared/data/miniimagenet"
    c.image_size = 84
    c.normalize = False             # True as the original once fewshot/data normalises Omniglot
                                    # ink correctly (see README)
    c.sequential_shots = 15
    c.max_trim = 60
    c.conv_channels = 32
    c.hidden_size = 256
    c.num_heads = 16
    c.num_layers = 3
    c.ff_factor = 1
    c.batch_size = 32
    c.total_steps = 500_000
    c.learning_rate = 3e-4
    c.schedule = "constant"
    c.val_episodes = 1024
    c.eval_batch_size = 64
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 5000
    return c
