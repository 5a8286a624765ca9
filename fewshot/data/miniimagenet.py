"""Mini-ImageNet reader (Ravi & Larochelle 2017 split: 64/16/20 classes x 600
images, 84 px RGB).

Two on-disk formats, looked for in ``data_dir`` or ``data_dir/miniimagenet``
(also ``mini-imagenet``, ``mini_imagenet``):

* ``mini-imagenet-cache-{train,val,test}.pkl``: a pickled dict with
  ``"image_data"`` uint8 ``[N, 84, 84, 3]`` and ``"class_dict"``
  ``{class_name: [row indices into image_data]}`` (the files torchmeta and
  learn2learn read). Pickles can run code when loaded: only read files you trust.
* ``{train,val,test}/<class_name>/*.{jpg,jpeg,png}``: one folder per class;
  images are resized (squashed, no crop) to ``image_size``.

Classes are ordered by name; images within a class in listed (pkl) or
file-name (folder) order.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from .core import RECOPY, RESIZE_FILTER, DatasetError, resize_images, unreadable_file

SUBDIRS = ("", "miniimagenet", "mini-imagenet", "mini_imagenet")
PKL_NAME = "mini-imagenet-cache-{split}.pkl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# torchmeta's `miniimagenet_norm` (ImageNet statistics), used by the original
# delayed-label script; the synchronous-label scripts do not normalise.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _missing_message(data_dir: Path, split: str) -> str:
    return (
        f"Mini-ImageNet not found in {data_dir} (or its miniimagenet/ subfolder): expected "
        f"{PKL_NAME.format(split=split)} (pickled dict with 'image_data' uint8 [N, 84, 84, 3] "
        f"and 'class_dict' {{name: [indices]}}) or a {split}/ folder of class sub-folders "
        "of JPEG/PNG images"
    )


def find_source(data_dir: Path, split: str, source: str) -> tuple[Path, str]:
    if source not in ("auto", "pkl", "folder"):
        raise ValueError(f"Mini-ImageNet source must be auto, pkl or folder, got {source!r}")
    for sub in SUBDIRS:
        d = data_dir / sub if sub else data_dir
        if source in ("auto", "pkl") and (d / PKL_NAME.format(split=split)).is_file():
            return d / PKL_NAME.format(split=split), "pkl"
        if source in ("auto", "folder") and (d / split).is_dir():
            return d / split, "folder"
    raise DatasetError(_missing_message(data_dir, split) + f" (source={source!r})")


def _load_pkl(path: Path, image_size: int):
    try:
        with open(path, "rb") as f:
            try:
                data = pickle.load(f)
            except UnicodeDecodeError:  # pickles written by Python 2
                f.seek(0)
                data = pickle.load(f, encoding="latin1")
        images = np.asarray(data["image_data"])
        class_dict = data["class_dict"]
        names = sorted(class_dict)
        rows = [np.asarray(class_dict[n], dtype=np.int64).reshape(-1) for n in names]
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise unreadable_file(path, e, RECOPY) from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetError(
            f"malformed Mini-ImageNet pickle {path}: {e!r}; expected a dict with 'image_data' "
            "uint8 [N, 84, 84, 3] and 'class_dict' {class_name: [row indices]}"
        ) from e
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise DatasetError(
            f"malformed Mini-ImageNet pickle {path}: image_data is {images.shape} {images.dtype}, "
            "expected uint8 [N, H, W, 3]"
        )
    if not names or any(r.size == 0 or r.min() < 0 or r.max() >= len(images) for r in rows):
        raise DatasetError(
            f"malformed Mini-ImageNet pickle {path}: class_dict is empty, has an empty class "
            f"or indexes outside image_data (N = {len(images)})"
        )
    index = np.concatenate(rows)
    images = resize_images(images[index], image_size)
    return images, np.array([r.size for r in rows]), names


def _decode(path: Path, image_size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), RESIZE_FILTER)
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated / not an image
        raise unreadable_file(path, e, "delete or replace it") from e


def _load_folder(root: Path, image_size: int):
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, sizes = [], []
    for n in names:
        imgs = sorted(p for p in (root / n).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not imgs:
            raise DatasetError(f"Mini-ImageNet class folder {root / n} has no JPEG/PNG images")
        files.extend(imgs)
        sizes.append(len(imgs))
    if not names:
        raise DatasetError(f"Mini-ImageNet folder {root} has no class sub-folders")
    try:
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(lambda p: _decode(p, image_size), files, chunksize=32))
    except OSError as e:
        raise DatasetError(f"cannot decode a Mini-ImageNet image under {root}: {e!r}") from e
    return np.stack(images), np.array(sizes), names


def load_miniimagenet(data_dir, split, image_size, source):
    """uint8 ``[n, S, S, 3]``, class sizes ``[C]``, class names."""
    path, kind = find_source(Path(data_dir), split, source)
    if kind == "pkl":
        return _load_pkl(path, image_size)
    return _load_folder(path, image_size)
