"""Every few-shot config field's rule, and the checks of a config against its data and devices.

`FIELD_RULES` holds one rule per field of configs/fewshot/default.py (tests/test_config_checks.py
fails when a field is added there without one). `validate_config` runs, in order, the field
rules and the rules between fields (`field_problems`), the device split and the data
(`data_problems`: class and image counts of the splits used, read from the dataset's metadata),
and raises one ConfigError listing every problem, before a run writes anything.

Beside the rules: the fields a resumed run may change (`RESUMABLE_FIELDS`, `locked_fields`) and
the keys renamed since older runs were written (`RENAMED_KEYS`).
"""
from __future__ import annotations

import math
import os

from .data import DATASETS
from .data.core import ROTATION_MODES, SPLITS
from .data.metadata import class_sizes
from .models import BACKBONE_INITS
from .tasks import TASKS
from srwm_jax.dispatch import IMPLS
from srwm_jax.layers import DENSE_INITS, MEMORY_KINDS
from srwm_jax.training.config_schema import Bool, Choice, Float, Int, Str, TupleOf
from srwm_jax.training.config_schema import ConfigError, config_problems

SOURCES = {"omniglot": ("auto", "npz", "png", "tfds"),
           "omniglot_transformed": ("auto", "npz", "png", "tfds"),
           "miniimagenet": ("auto", "pkl", "folder"), "fc100": ("auto", "pickle")}
SCHEDULES = ("constant", "cosine", "decay_end", "warmup")
# Conv4 and Res-12 halve the image four times: below 16 px a pooling gets an empty input.
MIN_IMAGE_SIZE = 16
Probability = Float(0.0, 1.0, hi_open=True)

# The defaults of every field (configs/fewshot/default.py of a clone; None in an installed copy,
# which has no configs/): the evaluation CLIs fill the fields an older run's config.json lacks
# from it (srwm_jax.training.cli.define_defaults_flag).
_DEFAULT_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs", "fewshot", "default.py")
DEFAULT_CONFIG_FILE = _DEFAULT_FILE if os.path.exists(_DEFAULT_FILE) else None

# config.json keys renamed since older runs were written: {old: new}. Older run directories
# still load for evaluation (srwm_jax.training.run_config.load_config maps them).
RENAMED_KEYS = {"log_every": "log_every_steps", "eval_every": "eval_every_steps",
                "checkpoint_every": "checkpoint_every_steps"}

# Fields a resumed run may change (srwm_jax.training.workdir.open_run_dir); the rest must be
# the run's own. They leave the training computation alone: total_steps only extends or ends
# the run early when the schedule does not depend on it (see `locked_fields`).
RESUMABLE_FIELDS = ("total_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                    "keep_checkpoints", "data_dir", "second_data_dir", "eval_batch_size",
                    "cpu_devices")  # the device layout: a run may resume on other hardware

FIELD_RULES = {
    # Data
    "dataset": Choice(*DATASETS),
    "data_dir": Str,
    "data_source": Choice(*sorted({s for v in SOURCES.values() for s in v})),
    "image_size": Int(MIN_IMAGE_SIZE),
    "rotations": Choice(*ROTATION_MODES),
    "n_way": Int(2),                     # 1-way episodes are always answered right
    "k_shot": Int(1),                    # 0 shots: nothing to learn from, chance level
    "query_label": Choice("class0", "zeros"),
    "train_queries": Int(1),
    # Task
    "task": Choice(*TASKS),
    "future_shots": Int(0),
    "bootstrap_weight": Float(0.0),
    "bootstrap_main_weight": Float(0.0),
    "bootstrap_future_weight": Float(0.0),
    "second_dataset": Choice(*DATASETS),
    "second_data_dir": Str,
    "sequential_shots": Int(1),
    "max_trim": Int(0),
    "normalize": Bool,
    "sequential_pad": Bool,
    # Model
    "model": Choice(*MEMORY_KINDS, "vsml"),
    "backbone": Choice("conv4", "res12"),
    "conv_channels": Int(1),
    "res12_channels": TupleOf(Int(1), length=4),
    "vision_dropout": Probability,
    "hidden_size": Int(1),
    "num_layers": Int(1),
    "num_heads": Int(1),
    "ff_factor": Int(1),
    "dropout": Probability,
    "input_softmax": Bool,
    "beta_init": Float(),
    "short_conv": Int(0),
    "short_conv_init_std": Float(0.0),
    "impl": Choice(*IMPLS),
    "dense_init": Choice(*DENSE_INITS),
    "backbone_init": Choice(*BACKBONE_INITS),
    "vsml_msg_size": Int(2),             # error and label channels
    "vsml_state_size": Int(1),
    "vsml_micro_ticks": Int(1),
    "vsml_hidden_units": Int(0),
    "vsml_gate_offset": Float(0.0),
    # Initialisation
    "init_from": Str,
    "init_from_checkpoint": Choice("best", "latest"),
    # Hardware
    "cpu_devices": Int(0),
    # Optimisation
    "seed": Int(0),                      # NumPy's SeedSequence takes non-negative seeds
    "batch_size": Int(1),
    "total_steps": Int(1),
    "learning_rate": Float(0.0, lo_open=True),
    "schedule": Choice(*SCHEDULES),
    "decay_fraction": Float(0.0, 1.0, lo_open=True),
    "warmup_steps": Int(1),
    "adam_b1": Probability,
    "adam_b2": Probability,
    "adam_eps": Float(0.0, lo_open=True),
    "clip_grad_norm": Float(0.0),        # 0 = no clipping
    # Bookkeeping
    "log_every_steps": Int(1),
    "eval_every_steps": Int(1),
    "val_episodes": Int(1),
    "eval_batch_size": Int(1),
    "checkpoint_every_steps": Int(1),
    "keep_checkpoints": Int(1),
    "eval_seed": Int(0),
}


def field_problems(config, allow_extra: bool = False) -> list[str]:
    """Problems of single fields (FIELD_RULES) and between fields, as phrases; [] if none.

    `allow_extra`: accept fields without a rule (runs written by an older version)."""
    return config_problems(config, FIELD_RULES, _between_fields, allow_extra)


def _between_fields(c) -> list[str]:
    problems = []
    if c.data_source not in SOURCES[c.dataset]:
        problems.append(f"config.data_source={c.data_source!r} does not apply to "
                        f"{c.dataset}: choose one of {SOURCES[c.dataset]}")
    if c.model == "vsml" and c.task != "sequential":
        problems.append(f"config.model='vsml' needs task='sequential' (the label arrives one "
                        f"step later as feedback), got task={c.task!r}")
    if c.model not in ("lstm", "vsml") and c.hidden_size % c.num_heads:
        problems.append(f"config.hidden_size={c.hidden_size} is not divisible by "
                        f"config.num_heads={c.num_heads}")
    if c.task == "bootstrap" and c.future_shots < 1:
        problems.append("config.future_shots=0 with task='bootstrap': the teacher needs >= 1 "
                        "future shot per class")
    if c.task == "sequential" and c.max_trim >= c.n_way * c.sequential_shots:
        problems.append(f"config.max_trim={c.max_trim} must be below n_way * sequential_shots "
                        f"= {c.n_way * c.sequential_shots} (the segment length)")
    return problems


def device_problems(config, num_devices: int) -> list[str]:
    """The batch must split evenly over the devices (evaluation pads its batches itself)."""
    if config.batch_size % num_devices:
        return [f"config.batch_size={config.batch_size} must be divisible by the {num_devices} "
                "devices"]
    return []


def _needs(config, split: str) -> list[tuple[str, str, str, object, int]]:
    """(dataset, data_dir, source, rotations, images needed per class) of each dataset a
    `split` episode or sequence draws from; n_way classes are drawn from each."""
    c = config
    if c.task == "sequential":
        return [(c.dataset, c.data_dir, c.data_source, c.rotations, c.sequential_shots),
                (c.second_dataset, c.second_data_dir or c.data_dir, "auto", None,
                 c.sequential_shots)]
    queries = c.train_queries if split == "train" else 1  # evaluation scores one query
    future = c.future_shots if (c.task == "bootstrap" and split == "train") else 0
    return [(c.dataset, c.data_dir, c.data_source, c.rotations,
             c.k_shot + future + math.ceil(queries / c.n_way))]


def data_problems(config, splits=("train", "val")) -> list[str]:
    """n_way against the classes, and the images one episode takes per class against the
    smallest class, of every split in `splits` (dataset metadata only where the format allows).

    Raises:
      fewshot.data.DatasetError: the data is missing or malformed."""
    problems = []
    for split in splits:
        for name, data_dir, source, rotations, per_class in _needs(config, split):
            sizes = class_sizes(name, data_dir, split, image_size=config.image_size,
                                rotations=rotations, source=source)
            where = f"{name} {split} (rotations={rotations!r})" if rotations else f"{name} {split}"
            if config.n_way > len(sizes):
                problems.append(f"config.n_way={config.n_way} but {where} has {len(sizes)} "
                                f"classes: use n_way <= {len(sizes)}")
            if per_class > sizes.min():
                what = ("sequential_shots" if config.task == "sequential" else
                        "k_shot + future_shots + ceil(queries / n_way)")
                problems.append(f"episodes take {per_class} images per class ({what}) but a "
                                f"class of {where} has only {int(sizes.min())}")
    return problems


def validate_config(config, num_devices: int | None = None, splits=("train", "val"),
                    allow_extra: bool = False) -> None:
    """Refuses a config that cannot run, with every problem in one line.

    Args:
      config: a few-shot ConfigDict (configs/fewshot/default.py and its variants).
      num_devices: devices the batch is split over (None: skip that check).
      splits: the splits whose data must fit the episodes (() skips reading any data and
        the check that config.init_from is a directory).
      allow_extra: accept fields without a rule (an older run's config.json).
    Raises:
      ConfigError: one line naming each bad field, its value and what is allowed.
      fewshot.data.DatasetError: the data is missing or malformed.
    """
    problems = field_problems(config, allow_extra)
    if not problems and num_devices is not None:
        problems += device_problems(config, num_devices)
    if not problems and splits:  # what the run reads: a run to start from, and the data
        if config.init_from and not os.path.isdir(config.init_from):
            problems.append(f"config.init_from={config.init_from!r} is not a run directory")
        problems += data_problems(config, splits)
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


def locked_fields(config) -> dict:
    """{field: why} of the RESUMABLE_FIELDS this config may not change on resume: total_steps
    under a schedule laid out over it (cosine, decay_end), where another value changes the
    learning rate at every step, so the resumed run would match no uninterrupted run."""
    if config.schedule in ("cosine", "decay_end"):
        return {"total_steps": f"the {config.schedule} learning-rate schedule is laid out over "
                "total_steps; to train longer start a fresh run (e.g. init_from this one)"}
    return {}


def check_split_name(split: str) -> None:
    """Raises ConfigError for a split other than train | val | test."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose one of {SPLITS}")
