"""FC100 (Fewshot-CIFAR100) reader: CIFAR-100 split by superclass.

Reads the CIFAR-100 python pickles ``cifar-100-python/train`` and ``test``
(dicts with ``b"data"`` uint8 ``[N, 3072]`` (R, G, B planes of 32 x 32),
``b"fine_labels"`` and ``b"coarse_labels"``) from ``data_dir``,
``data_dir/cifar100`` or ``data_dir/fc100``, or from ``data_dir`` itself when
it is the ``cifar-100-python`` folder. Both pickles are pooled, so every fine
class has 500 + 100 = 600 images (as torchmeta's FC100).

Classes: the 12/4/4 superclass split of Oreshkin, Rodriguez & Lacoste (2018),
"TADAM: Task dependent adaptive metric for improved few-shot learning"
(NeurIPS), as listed in torchmeta's ``assets/cifar100/fc100/{train,test}.json``
(validation = the remaining four). Superclass indices are CIFAR-100's coarse
labels (alphabetical: 0 aquatic_mammals ... 19 vehicles_2).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .core import REDOWNLOAD, DatasetError, resize_images, unreadable_file

COARSE_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip

# Source: Oreshkin et al. 2018 (TADAM), via torchmeta's fc100 split assets.
FC100_SUPERCLASSES = {
    # fish, flowers, food_containers, fruit_and_vegetables,
    # household_electrical_devices, household_furniture,
    # large_man-made_outdoor_things, large_natural_outdoor_scenes, reptiles,
    # trees, vehicles_1, vehicles_2
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    # large_carnivores, large_omnivores_and_herbivores,
    # non-insect_invertebrates, small_mammals
    "val": (8, 11, 13, 16),
    # aquatic_mammals, insects, medium_mammals, people
    "test": (0, 7, 12, 14),
}

SUBDIRS = ("", "cifar100", "fc100")
# torchmeta's `fc100_norm` (CIFAR-100 statistics); the original FC100 runs do
# not normalise.
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)


def find_cifar_dir(data_dir: Path) -> Path:
    for sub in SUBDIRS:
        d = data_dir / sub if sub else data_dir
        for cand in (d / "cifar-100-python", d):
            if (cand / "train").is_file() and (cand / "test").is_file():
                return cand
    raise DatasetError(
        f"FC100 (CIFAR-100) not found in {data_dir}: expected cifar-100-python/train and "
        "cifar-100-python/test (the CIFAR-100 python pickles, dicts with b'data' uint8 "
        "[N, 3072], b'fine_labels', b'coarse_labels') in it or in its cifar100/ subfolder"
    )


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
        get = lambda k: raw[k.encode()] if k.encode() in raw else raw[k]  # noqa: E731
        data = np.asarray(get("data"))
        fine = np.asarray(get("fine_labels"), dtype=np.int64)
        coarse = np.asarray(get("coarse_labels"), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise unreadable_file(path, e, REDOWNLOAD) from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetError(
            f"malformed CIFAR-100 pickle {path}: {e!r}; expected a dict with b'data' uint8 "
            "[N, 3072], b'fine_labels' and b'coarse_labels'"
        ) from e
    n = data.shape[0] if data.ndim else 0
    if (data.dtype != np.uint8 or data.shape != (n, 3072) or fine.shape != (n,)
            or coarse.shape != (n,)):
        raise DatasetError(
            f"malformed CIFAR-100 pickle {path}: data {data.shape} {data.dtype}, fine_labels "
            f"{fine.shape}, coarse_labels {coarse.shape}; expected uint8 [N, 3072] and [N] labels"
        )
    return data, fine, coarse


def load_fc100(data_dir, split, image_size):
    """uint8 ``[n, S, S, 3]``, class sizes ``[C]``, class names ``coarse/fineNN``."""
    root = find_cifar_dir(Path(data_dir))
    parts = [_read_pickle(root / f) for f in ("train", "test")]
    data = np.concatenate([p[0] for p in parts])
    fine = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts])
    fine_to_coarse = {}
    for f_, c_ in zip(*np.unique(np.stack([fine, coarse]), axis=1)):
        if fine_to_coarse.setdefault(int(f_), int(c_)) != c_:
            raise DatasetError(f"CIFAR-100 under {root}: fine class {f_} has several superclasses")
    classes = sorted(
        (c_, f_) for f_, c_ in fine_to_coarse.items() if c_ in FC100_SUPERCLASSES[split]
    )
    if not classes:
        raise DatasetError(f"CIFAR-100 under {root} has no images of the FC100 {split} "
                           "superclasses")
    rows = [np.flatnonzero(fine == f_) for _, f_ in classes]
    index = np.concatenate(rows)
    images = data[index].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    images = resize_images(np.ascontiguousarray(images), image_size)
    names = [f"{COARSE_NAMES[c_]}/fine{f_:02d}" for c_, f_ in classes]
    return images, np.array([r.size for r in rows]), names
