"""The rows of the paper's Table 1 (5-way few-shot, appendix B) as one config with an argument.

The argument after the file name is `dataset,model,k_shot` (default `omniglot,srwm,1`):
  dataset  omniglot (28 px, 1-shot) | miniimagenet (Ravi split, 84 px; 1 or 5 shots)
           | fc100 (CIFAR-100 by superclass, 32 px, 5-shot)
  model    srwm | deltanet | lstm
  k_shot   1 | 5 (as the table: Omniglot 1, FC100 5)

python -m fewshot.train --config configs/fewshot/table1.py:omniglot,srwm,1 \
    --workdir runs/omniglot_srwm
python -m fewshot.train --config configs/fewshot/table1.py:miniimagenet,srwm,5 \
    --config.data_dir=/path/to/miniimagenet --workdir runs/mi_srwm_5
python -m fewshot.train --config configs/fewshot/table1.py:fc100,lstm,5 \
    --config.data_dir=/path/to/cifar-100-python --workdir runs/fc100_lstm
"""
from configs.fewshot.default import get_config as _default, original_code_settings

# dataset -> the shot counts of its Table 1 columns
TABLE1_SHOTS = {"omniglot": (1,), "miniimagenet": (1, 5), "fc100": (5,)}
TABLE1_MODELS = ("srwm", "deltanet", "lstm")


def parse_row(row: str) -> tuple[str, str, int]:
    """`"miniimagenet,srwm,5"` -> ("miniimagenet", "srwm", 5).

    Raises:
      ValueError: a row that is not one of Table 1's (the message lists the valid ones).
    """
    parts = [p.strip() for p in row.split(",")]
    valid = ", ".join(f"{d},<{'|'.join(TABLE1_MODELS)}>,<{'|'.join(map(str, s))}>"
                      for d, s in TABLE1_SHOTS.items())
    if len(parts) != 3 or parts[0] not in TABLE1_SHOTS or parts[1] not in TABLE1_MODELS \
            or not parts[2].isdigit() or int(parts[2]) not in TABLE1_SHOTS[parts[0]]:
        raise ValueError(f"table1.py:{row} is not a Table 1 row; use dataset,model,k_shot: {valid}")
    return parts[0], parts[1], int(parts[2])


def get_config(row: str = "omniglot,srwm,1"):
    """-> the ml_collections.ConfigDict of Table 1's `row` (see the module docstring)."""
    dataset, model, k_shot = parse_row(row)
    c = original_code_settings(_default())  # beta_init 0.0, torch dense init (see default.py)
    c.model = model
    if model == "lstm":
        c.num_layers = 1
    if dataset == "omniglot":  # default.py's sizes are the Omniglot row's
        return c
    c.dataset = dataset
    c.rotations = "none"
    c.conv_channels = 32
    c.batch_size = 16
    c.total_steps = 600_000
    c.num_layers = 1 if model == "lstm" else 3
    c.dropout = 0.1
    c.vision_dropout = 0.1
    c.schedule = "warmup"
    c.k_shot = k_shot
    if dataset == "miniimagenet":
        c.data_dir = "data/miniimagenet"
        c.image_size = 84
        c.ff_factor = 4 if k_shot == 1 else 8
    else:
        c.data_dir = "data/cifar-100-python"
        c.image_size = 32
        c.ff_factor = 8
    return c
