"""Images per class of a split without decoding images where the format allows it, so a config
can be checked against its data (n_way, shots) before a run writes anything.

Omniglot (and its transformed copy) from omniglot.npz: the labels and the split file only
(a few milliseconds). Other sources decode the split through `load_split`, whose cache keeps it
for the run that follows (it is loaded once either way).
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import omniglot, prepare
from .core import REDOWNLOAD, DatasetError, check_split, resolve_rotations, unreadable_file
from .loading import DATASETS, load_split


def _omniglot_npz_sizes(data_dir: Path, split: str, source: str) -> np.ndarray | None:
    """int64 [C] images per class of an Omniglot split stored as npz; None for other sources."""
    folder, source = omniglot.find_omniglot_dir(data_dir, source)
    if source != "npz":
        return None
    names = omniglot.read_splits(omniglot.splits_path(folder, None, source))[split]
    path = folder / "omniglot.npz"
    try:
        with np.load(path) as d:  # npz members load lazily: the images are never read
            labels, alphabet, character = d["labels"], d["alphabet"], d["character"]
    except KeyError as e:
        raise DatasetError(f"malformed Omniglot npz {path}: {e!r}") from e
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise unreadable_file(path, e, REDOWNLOAD) from e
    index = {f"{a}/{c}": i for i, (a, c) in enumerate(zip(alphabet, character))}
    missing = [n for n in names if n not in index]
    if missing:
        raise DatasetError(f"{len(missing)} classes of the split are not in {path} "
                           f"(e.g. {missing[:3]})")
    counts = np.bincount(labels, minlength=len(index))
    return counts[[index[n] for n in names]].astype(np.int64)


def class_sizes(name: str, data_dir, split: str, *, image_size: int | None = None,
                rotations=None, source: str = "auto") -> np.ndarray:
    """int64 [C]: images per class of `split` as `load_split` with the same arguments would
    return it (rotated copies counted as classes).

    Raises:
      DatasetError: the data is missing or malformed (as load_split).
      ValueError: unknown dataset, split or rotations.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    check_split(split)
    if name in ("omniglot", "omniglot_transformed") and source in ("auto", "npz"):
        folder = Path(data_dir).expanduser() if data_dir else prepare.locate(name)
        if not folder.is_dir():
            raise DatasetError(f"{name} data_dir {folder} does not exist or is not a folder")
        sizes = _omniglot_npz_sizes(folder, split, source)
        if sizes is not None:
            rotate = resolve_rotations(rotations, split, DATASETS[name][2])
            return np.tile(sizes, 4) if rotate else sizes
    return load_split(name, data_dir, split, image_size=image_size, rotations=rotations,
                      source=source).class_sizes
