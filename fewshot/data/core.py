"""The in-memory dataset type shared by every reader, and the helpers they share.

Every reader returns a :class:`ClassImages`: all images of one split stacked in
one uint8 array, grouped by class, plus the offsets of each class. Episode
samplers only ever gather rows of that array, so one vectorised ``np.take`` per
batch replaces a per-image Python loop.

Legend for shapes: ``N`` images, ``S`` image side in pixels, ``C`` channels.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")

# Pillow's resampling filter used for every resize. torchvision's
# `Resize(size)` on a PIL image (what the original code used, via torchmeta)
# calls `PIL.Image.resize(..., BILINEAR)`; Pillow's BILINEAR widens its kernel
# by the scale factor when shrinking, so it is antialiased (a triangle filter
# over 2 x 3.75 input pixels for 105 -> 28). Using the same filter keeps our
# pixels identical to the original pipeline's.
RESIZE_FILTER = Image.Resampling.BILINEAR


class DatasetError(ValueError):
    """A dataset is missing, incomplete or malformed at the given path."""


def unreadable_file(path, error: BaseException, remedy: str) -> DatasetError:
    """The DatasetError for a data file that cannot be read (truncated by an interrupted
    download or copy, or corrupt): one line naming the file, the reader's error and `remedy`."""
    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return DatasetError(f"{path} is truncated or corrupt ({type(error).__name__}: {text}): "
                        f"{remedy}")


# What to do about an unreadable file of each kind (unreadable_file's `remedy`).
REDOWNLOAD = ("delete it and run again: with --config.data_dir unset the dataset is downloaded "
              "and converted afresh; else copy a good one there")
RECOPY = "delete it and copy or download it again"


@dataclasses.dataclass(frozen=True, eq=False)
class ClassImages:
    """All images of one split, grouped by class.

    Attributes:
      images: uint8 ``[N, S, S, C]`` (ink/foreground = 255 for Omniglot). The
        images of class ``c`` are ``images[class_start[c]:class_start[c + 1]]``.
        May be a read-only broadcast view along ``C`` (Omniglot repeated to 3
        channels stores one channel only).
      class_start: int64 ``[num_classes + 1]``, ``class_start[0] == 0`` and
        ``class_start[-1] == N``.
      name: dataset name as given to :func:`fewshot.data.load_split`.
      split: ``"train"``, ``"val"`` or ``"test"``.
      class_names: one string per class (``"Latin/character01"``,
        ``"Latin/character01/rot90"``, ``"n01532829"``, ``"fish/trout"``).
      mean, std: per-channel normalisation constants in [0, 1] units that the
        original code applied for this dataset (``None`` where it applied none).
        Samplers only apply them when asked (``normalize=True``).
    """

    images: np.ndarray
    class_start: np.ndarray
    name: str
    split: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"images must be [N, S, S, C], got {self.images.shape}")
        starts = np.asarray(self.class_start, dtype=np.int64)
        object.__setattr__(self, "class_start", starts)
        if (
            starts.ndim != 1
            or starts.size < 2
            or starts[0] != 0
            or starts[-1] != self.images.shape[0]
            or np.any(np.diff(starts) <= 0)
        ):
            raise ValueError("class_start must rise strictly from 0 to len(images)")
        if len(self.class_names) != starts.size - 1:
            raise ValueError("need one class name per class")

    @property
    def num_classes(self) -> int:
        return self.class_start.size - 1

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    @property
    def class_sizes(self) -> np.ndarray:
        """int64 ``[num_classes]``: images per class."""
        return np.diff(self.class_start)

    def class_images(self, c: int) -> np.ndarray:
        """uint8 ``[n_c, S, S, C]``: the images of class ``c``."""
        return self.images[self.class_start[c] : self.class_start[c + 1]]

    def __repr__(self):
        return (
            f"ClassImages(name={self.name!r}, split={self.split!r}, "
            f"num_classes={self.num_classes}, images={self.images.shape} "
            f"{self.images.dtype})"
        )


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _resize_one(image: np.ndarray, size: int) -> np.ndarray:
    mode = "L" if image.shape[-1] == 1 else "RGB"
    pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode)
    out = np.asarray(pil.resize((size, size), RESIZE_FILTER))
    return out[..., None] if mode == "L" else out


def resize_images(images: np.ndarray, size: int, num_threads: int | None = None) -> np.ndarray:
    """Resizes uint8 ``[N, H, W, C]`` (C 1 or 3) to ``[N, size, size, C]``.

    Uses Pillow's BILINEAR filter (see ``RESIZE_FILTER``). Pillow releases the
    GIL while resampling, so chunks run in parallel threads. A no-op when the
    images already have the requested size. Non-square inputs are squashed to
    a square (no crop), as the Mini-ImageNet preprocessing scripts do.
    """
    n, h, w, c = images.shape
    if h == size and w == size:
        return images
    out = np.empty((n, size, size, c), dtype=np.uint8)
    if n == 0:
        return out

    def work(lo_hi):
        lo, hi = lo_hi
        for i in range(lo, hi):
            out[i] = _resize_one(images[i], size)

    num_threads = num_threads or min(8, os.cpu_count() or 1)
    bounds = np.linspace(0, n, num_threads * 4 + 1).astype(int)
    chunks = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        list(pool.map(work, chunks))
    return out


ROTATION_MODES = ("all", "train_only", "none")


def resolve_rotations(rotations, split: str, default: str) -> bool:
    """Whether to add 90/180/270 degree rotated copies as new classes.

    ``rotations``: ``None`` (dataset default), ``"all"`` (every split, as the
    original), ``"train_only"`` or ``"none"``; ``True``/``False`` mean
    ``"all"``/``"none"``.
    """
    if rotations is None:
        rotations = default
    if rotations is True:
        rotations = "all"
    if rotations is False:
        rotations = "none"
    if rotations not in ROTATION_MODES:
        raise ValueError(f"rotations must be one of {ROTATION_MODES} or None, got {rotations!r}")
    return rotations == "all" or (rotations == "train_only" and split == "train")


def add_rotated_classes(
    images: np.ndarray, class_start: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Appends 90, 180 and 270 degree (counter-clockwise) rotated copies of
    every class as new classes.

    Class order follows torchmeta's class augmentation: all original classes,
    then all rotated by 90, then 180, then 270 (class ``c + r * C`` is class
    ``c`` rotated by ``90 r`` degrees). ``np.rot90`` turns the first image axis
    towards the second, i.e. counter-clockwise like ``PIL.Image.rotate(90)``.
    Rotating after resizing equals rotating before (Pillow's separable filter
    is the same along both axes) up to the rounding of its intermediate pass.
    """
    n = images.shape[0]
    out = np.empty((4 * n, *images.shape[1:]), dtype=images.dtype)
    for k in range(4):
        out[k * n : (k + 1) * n] = np.rot90(images, k, axes=(1, 2))
    starts = np.concatenate([class_start[:-1] + k * n for k in range(4)] + [[4 * n]])
    names = tuple(class_names) + tuple(
        f"{name}/rot{90 * k}" for k in (1, 2, 3) for name in class_names
    )
    return out, starts.astype(np.int64), names


def repeat_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """``[N, S, S, 1]`` -> ``[N, S, S, channels]`` as a read-only broadcast view
    (no copy: samplers gather from the single stored channel)."""
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] != 1:
        raise ValueError(f"cannot turn {images.shape[-1]} channels into {channels}")
    return np.broadcast_to(images, (*images.shape[:-1], channels))


def finalize(
    images: np.ndarray,
    class_start: np.ndarray,
    class_names: Sequence[str],
    *,
    name: str,
    split: str,
    rotate: bool,
    channels: int,
    mean=None,
    std=None,
) -> ClassImages:
    """Adds rotated classes if asked, repeats channels, freezes the arrays."""
    class_start = np.asarray(class_start, dtype=np.int64)
    if rotate:
        images, class_start, class_names = add_rotated_classes(images, class_start, class_names)
    images = repeat_channels(images, channels)
    if images.flags.writeable:
        images.flags.writeable = False
    class_start.flags.writeable = False
    return ClassImages(
        images=images,
        class_start=class_start,
        name=name,
        split=split,
        class_names=tuple(class_names),
        mean=None if mean is None else tuple(float(m) for m in mean),
        std=None if std is None else tuple(float(s) for s in std),
    )


def group_by_label(labels: np.ndarray, class_order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Indices that sort images by class in ``class_order`` (keeping file order
    within a class) and the resulting ``class_start`` offsets."""
    labels = np.asarray(labels)
    order_parts = [np.flatnonzero(labels == c) for c in class_order]
    sizes = [p.size for p in order_parts]
    index = np.concatenate(order_parts) if order_parts else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return index, starts
