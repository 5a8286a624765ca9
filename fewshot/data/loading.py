"""`load_split`: one entry point for every dataset and on-disk source."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np

from . import fc100, miniimagenet, omniglot, prepare
from .core import ClassImages, DatasetError, check_split, finalize, resolve_rotations

# name -> (default image size, default channels, default rotations)
DATASETS = {
    "omniglot": (28, 1, "all"),
    # Stand-in second domain for the delayed-label task (see load_split).
    "omniglot_transformed": (84, 3, "none"),
    "miniimagenet": (84, 3, "none"),
    "fc100": (32, 3, "none"),
}

# Decoded splits (before rotations and channel repeat) kept in memory, least
# recently used dropped first once their total size passes this many bytes.
CACHE_BYTES = 2 << 30
_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Drops the decoded splits kept by `load_split(..., cache=True)`."""
    with _cache_lock:
        _cache.clear()


def _decode(name, data_dir, split, image_size, source, splits_file):
    """uint8 [n, S, S, C0] images, class_start, class names, mean, std."""
    if name == "omniglot":
        images, class_start, names = omniglot.load_omniglot(
            data_dir, split, image_size, source, splits_file
        )
        return images, class_start, names, (omniglot.OMNIGLOT_MEAN,), (omniglot.OMNIGLOT_STD,)
    if name == "omniglot_transformed":
        images, class_start, names = omniglot.load_omniglot_transformed(
            data_dir, split, image_size, source, splits_file
        )
        return images, class_start, names, omniglot.TRANSFORMED_MEAN, omniglot.TRANSFORMED_STD
    if name == "miniimagenet":
        images, sizes, names = miniimagenet.load_miniimagenet(data_dir, split, image_size, source)
        mean, std = miniimagenet.MEAN, miniimagenet.STD
    else:
        if source not in ("auto", "pickle"):
            raise ValueError(f"fc100 source must be auto or pickle, got {source!r}")
        images, sizes, names = fc100.load_fc100(data_dir, split, image_size)
        mean, std = fc100.MEAN, fc100.STD
    return images, np.concatenate([[0], np.cumsum(sizes)]), names, mean, std


def _decode_cached(name, data_dir, split, image_size, source, splits_file, cache):
    key = (name, str(data_dir.resolve()), split, image_size, source,
           None if splits_file is None else str(Path(splits_file).resolve()))  # fmt: skip
    if cache:
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
    out = _decode(name, data_dir, split, image_size, source, splits_file)
    out[0].flags.writeable = False
    if cache:
        with _cache_lock:
            _cache[key] = out
            while len(_cache) > 1 and sum(v[0].nbytes for v in _cache.values()) > CACHE_BYTES:
                _cache.popitem(last=False)
    return out


def load_split(
    name: str,
    data_dir,
    split: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    rotations=None,
    source: str = "auto",
    splits_file=None,
    cache: bool = True,
) -> ClassImages:
    """Loads one split of a few-shot dataset into memory as uint8 images.

    Args:
      name: ``"omniglot"`` (28 px, 1 channel, ink = 255, Vinyals split
        1028/172/423), ``"miniimagenet"`` (84 px RGB, Ravi split 64/16/20),
        ``"fc100"`` (32 px RGB, TADAM superclass split 60/20/20 classes) or
        ``"omniglot_transformed"``: a *stand-in* second visual domain for the
        delayed-label sequential task, built from Omniglot because
        Mini-ImageNet is not available here. It is NOT Mini-ImageNet: Omniglot
        characters (same Vinyals split) resized to 84 px, sheared by a fixed
        0.3, drawn as dark ink on a light background with per-image random
        (but fixed, label-independent) colours; no rotations by default.
      data_dir: folder holding the dataset (or its parent; see each reader); ``""`` or
        ``None``: found or downloaded by `fewshot.data.prepare.locate` ($SRWM_JAX_DATA,
        ../shared/data next to a clone, ~/.cache/srwm_jax).
      split: ``"train"``, ``"val"`` or ``"test"``.
      image_size: side in pixels; default per dataset (28/84/32/84). Resizing
        uses Pillow BILINEAR (antialiased when shrinking), as the original's
        ``torchvision.transforms.Resize`` on PIL images.
      channels: 1 or 3; default per dataset. Omniglot with 3 channels repeats
        its one channel (as the original's 84 px RGB Omniglot) without copying.
      rotations: ``None`` (default: ``"all"`` for omniglot, else ``"none"``),
        ``"all"``, ``"train_only"`` or ``"none"``: add 90/180/270 degree
        rotated copies of every class as new classes (the original does so in
        every split, so the Omniglot test pool is 423 x 4 = 1692 classes).
      source: ``"auto"`` or a reader's source: omniglot ``"npz"``, ``"png"``,
        ``"tfds"``; miniimagenet ``"pkl"``, ``"folder"``; fc100 ``"pickle"``.
      splits_file: Omniglot split JSON (default ``data_dir/splits.json``), or a
        folder with torchmeta's ``train.json``/``val.json``/``test.json``.
      cache: keep decoded splits in memory (up to ``CACHE_BYTES`` in all, before
        rotations), so loading a split again (e.g. with other rotations) skips
        decoding and resizing.

    Returns:
      A :class:`ClassImages` with read-only uint8 ``[N, S, S, C]`` images.

    Raises:
      DatasetError: the data is missing or malformed; the message says what
        was expected where.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    check_split(split)
    default_size, default_channels, default_rotations = DATASETS[name]
    image_size = int(image_size or default_size)
    channels = int(channels or default_channels)
    rotate = resolve_rotations(rotations, split, default_rotations)
    if data_dir is None or str(data_dir) == "":
        data_dir = prepare.locate(name)
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DatasetError(f"{name} data_dir {data_dir} does not exist or is not a folder")
    images, class_start, names, mean, std = _decode_cached(
        name, data_dir, split, image_size, source, splits_file, cache
    )
    if images.shape[-1] != channels:
        if images.shape[-1] != 1:
            raise ValueError(f"{name} has {images.shape[-1]} channels; "
                             f"channels={channels} unsupported")
        mean, std = (mean[0],) * channels, (std[0],) * channels
    try:
        return finalize(images, class_start, names, name=name, split=split, rotate=rotate,
                        channels=channels, mean=mean, std=std)  # fmt: skip
    except ValueError as e:
        raise DatasetError(f"{name} {split} in {data_dir}: {e}") from e
