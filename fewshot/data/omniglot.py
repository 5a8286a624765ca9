"""Omniglot readers: the project's bit-packed npz, a folder of the original
PNGs, or TensorFlow Datasets; plus the ``omniglot_transformed`` stand-in domain.

All three sources decode to the same thing: uint8 ``[n, 105, 105]`` images with
ink = 255 and background = 0 (the original code read torchmeta's files, which
store ``ImageOps.invert`` of the black-on-white PNGs, so after ``ToTensor`` ink
is 1.0), grouped by class in the order of the split file, and within a class in
file-name order (drawer 01..20).

Split files (``splits.json``): ``{"train": [...], "val": [...], "test": [...]}``
of ``"Alphabet/characterNN"`` names (Vinyals et al. 2016 split, 1028/172/423
characters, as shipped with torchmeta and IDSIA/modern-srwm). A directory
holding torchmeta's ``train.json``/``val.json``/``test.json`` (``{"images_background":
{"Alphabet": ["characterNN", ...]}, ...}``) is accepted as well.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .core import REDOWNLOAD, DatasetError, resize_images, unreadable_file

NATIVE_SIZE = 105
IMAGE_FOLDERS = ("images_background", "images_evaluation")

# Normalisation constants of torchmeta's `omniglot_rgb84x84_norm` helper used by
# the original delayed-label script. Note they describe the *non-inverted*
# images (mean ink fraction ~0.08, so background mean ~0.92) while the images
# are inverted; the original normalised this way anyway, so we keep it.
OMNIGLOT_MEAN = 0.922
OMNIGLOT_STD = 0.084


def _missing_message(data_dir) -> str:
    return (
        f"Omniglot not found in {data_dir}: expected omniglot.npz + splits.json, "
        "or images_background/ and images_evaluation/ folders of PNGs "
        "(<Alphabet>/<characterNN>/*.png) with a splits.json, "
        "or install tensorflow-datasets (pip install tensorflow-datasets) for source='tfds'"
    )


def find_omniglot_dir(data_dir: Path, source: str) -> tuple[Path, str]:
    """Resolves ``data_dir`` (the omniglot folder itself or its parent) and the
    source: ``"npz"``, ``"png"`` or ``"tfds"``."""
    candidates = [data_dir, data_dir / "omniglot"]
    if source in ("auto", "npz"):
        for d in candidates:
            if (d / "omniglot.npz").is_file():
                return d, "npz"
    if source in ("auto", "png"):
        for d in candidates:
            if any((d / f).is_dir() for f in IMAGE_FOLDERS):
                return d, "png"
    if source in ("auto", "tfds"):
        try:
            import tensorflow_datasets  # noqa: F401
        except ImportError:
            if source == "tfds":
                raise DatasetError(
                    "source='tfds' needs tensorflow-datasets: pip install tensorflow-datasets"
                ) from None
        else:
            return data_dir, "tfds"
    if source not in ("auto", "npz", "png", "tfds"):
        raise ValueError(f"Omniglot source must be auto, npz, png or tfds, got {source!r}")
    raise DatasetError(_missing_message(data_dir) + f" (source={source!r})")


def read_splits(path: Path) -> dict[str, list[str]]:
    """Reads a split file (see module docstring) into ``{split: [names]}``."""
    try:
        if path.is_dir():
            out = {}
            for split in ("train", "val", "test"):
                with open(path / f"{split}.json") as f:
                    nested = json.load(f)
                out[split] = [
                    f"{alphabet}/{character}"
                    for alphabets in nested.values()
                    for alphabet, characters in alphabets.items()
                    for character in characters
                ]
            return out
        with open(path) as f:
            raw = json.load(f)
        out = {k: list(raw[k]) for k in ("train", "val", "test")}
        if not all(isinstance(n, str) and "/" in n for v in out.values() for n in v):
            raise ValueError("names must look like 'Alphabet/characterNN'")
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"cannot read Omniglot split file {path}: {e!r}; expected JSON "
            '{"train": ["Alphabet/characterNN", ...], "val": [...], "test": [...]} '
            "or a folder with torchmeta's train.json, val.json, test.json"
        ) from e


def splits_path(data_dir: Path, splits_file, source: str) -> Path:
    """The split file: `splits_file` if given, else data_dir/splits.json.

    Raises:
      DatasetError: it does not exist (the message says what it must hold)."""
    if splits_file is not None:
        path = Path(splits_file)
        if not path.exists():
            raise DatasetError(f"Omniglot split file {path} does not exist")
        return path
    path = data_dir / "splits.json"
    if path.is_file():
        return path
    raise DatasetError(
        f"Omniglot ({source} source) in {data_dir} has no splits.json: put the Vinyals split "
        "there or pass splits_file= (the JSON shipped next to omniglot.npz, "
        '{"train": ["Alphabet/characterNN", ...], "val": [...], "test": [...]})'
    )


@functools.lru_cache(maxsize=2)
def _read_npz(path: str, mtime: float) -> dict[str, np.ndarray]:
    del mtime  # only part of the cache key
    try:
        with np.load(path) as d:
            arrays = {k: d[k] for k in ("images", "labels", "alphabet", "character")}
    except KeyError as e:
        raise DatasetError(
            f"malformed Omniglot npz {path}: {e!r}; expected arrays images (uint8 [N, 105, 14] "
            "bit-packed), labels, alphabet, character (see the data README)"
        ) from e
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise unreadable_file(path, e, REDOWNLOAD) from e
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"malformed Omniglot npz {path}: images {images.shape} {images.dtype}, labels "
            f"{labels.shape}; expected uint8 [N, 105, 14] bit-packed images and [N] labels"
        )
    return arrays


def _load_npz(data_dir: Path, names: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    path = data_dir / "omniglot.npz"
    d = _read_npz(str(path), path.stat().st_mtime)
    all_names = [f"{a}/{c}" for a, c in zip(d["alphabet"], d["character"])]
    index = {n: i for i, n in enumerate(all_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise DatasetError(
            f"{len(missing)} classes of the split are not in {path} (e.g. {missing[:3]})"
        )
    # Images are stored class by class; a stable argsort keeps drawer order.
    order = np.argsort(d["labels"], kind="stable")
    sizes = np.bincount(d["labels"], minlength=len(all_names))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    class_ids = np.array([index[n] for n in names], dtype=np.int64)
    rows = np.concatenate([order[starts[c] : starts[c + 1]] for c in class_ids])
    bits = np.unpackbits(d["images"][rows], axis=-1, count=NATIVE_SIZE)
    images = bits * np.uint8(255)  # 1 = ink -> 255, as torchmeta's inverted images
    return images, sizes[class_ids]


def _decode_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            # torchmeta: Image.open(...).convert('L') then ImageOps.invert.
            return 255 - np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated / not an image
        raise unreadable_file(path, e, "delete or replace it (extract the original archive "
                              "again)") from e


def _load_png(data_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    class_dirs = {}
    for folder in IMAGE_FOLDERS:
        root = data_dir / folder
        if not root.is_dir():
            continue
        for alphabet in sorted(os.listdir(root)):
            if not (root / alphabet).is_dir():
                continue
            for character in sorted(os.listdir(root / alphabet)):
                if (root / alphabet / character).is_dir():
                    class_dirs[f"{alphabet}/{character}"] = root / alphabet / character
    missing = [n for n in names if n not in class_dirs]
    if missing:
        raise DatasetError(
            f"{len(missing)} classes of the split have no folder under {data_dir}/"
            f"{{{','.join(IMAGE_FOLDERS)}}} (e.g. {missing[:3]})"
        )
    files, sizes = [], []
    for n in names:
        pngs = sorted(p for p in class_dirs[n].iterdir() if p.suffix.lower() == ".png")
        if not pngs:
            raise DatasetError(f"no .png files in {class_dirs[n]}")
        files.extend(pngs)
        sizes.append(len(pngs))
    try:
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(_decode_png, files, chunksize=64))
    except OSError as e:
        raise DatasetError(f"cannot decode an Omniglot PNG under {data_dir}: {e!r}") from e
    shapes = {im.shape for im in decoded}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise DatasetError(f"Omniglot PNGs under {data_dir} differ in size: {sorted(shapes)[:4]}")
    return np.stack(decoded), np.array(sizes)


def _load_tfds(data_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    try:
        datasets, info = tfds.load(
            "omniglot", split=["train", "test"], data_dir=str(data_dir), with_info=True
        )
    except Exception as e:  # tfds raises many types (download, missing files)
        raise DatasetError(
            f"tfds.load('omniglot', data_dir={str(data_dir)!r}) failed: {e!r}") from e
    alphabet_names = info.features["alphabet"].names
    wanted = {n: i for i, n in enumerate(names)}
    per_class: list[list[np.ndarray]] = [[] for _ in names]
    for ds in datasets:
        for ex in tfds.as_numpy(ds):
            # tfds: alphabet_char_id = int("characterNN"[9:]) - 1 (its builder).
            name = (f"{alphabet_names[int(ex['alphabet'])]}/"
                    f"character{int(ex['alphabet_char_id']) + 1:02d}")
            c = wanted.get(name)
            if c is not None:
                image = np.asarray(ex["image"])
                per_class[c].append(255 - image[..., 0])  # black-on-white RGB -> ink = 255
    missing = [n for n, imgs in zip(names, per_class) if not imgs]
    if missing:
        raise DatasetError(
            f"{len(missing)} classes of the split are not in TFDS omniglot (e.g. {missing[:3]})"
        )
    return (np.stack([im for imgs in per_class for im in imgs]),
            np.array([len(v) for v in per_class]))


def load_omniglot_native(data_dir: Path, split: str, source: str, splits_file=None):
    """Returns (uint8 ``[n, H, W]`` ink = 255, sizes ``[C]``, class names)."""
    data_dir, source = find_omniglot_dir(Path(data_dir), source)
    names = read_splits(splits_path(data_dir, splits_file, source))[split]
    if not names:
        raise DatasetError(f"split {split!r} of the Omniglot split file is empty")
    loader = {"npz": _load_npz, "png": _load_png, "tfds": _load_tfds}[source]
    images, sizes = loader(data_dir, names)
    return images, np.asarray(sizes, dtype=np.int64), names


def load_omniglot(data_dir, split, image_size, source, splits_file):
    """uint8 ``[n, S, S, 1]`` ink = 255, ``class_start``, class names."""
    images, sizes, names = load_omniglot_native(data_dir, split, source, splits_file)
    images = resize_images(images[..., None], image_size)
    return images, np.concatenate([[0], np.cumsum(sizes)]), names


# --- omniglot_transformed -----------------------------------------------------

# Fixed, global geometric transform: horizontal shear about the image centre.
TRANSFORMED_SHEAR = 0.3
# Per-image colours (a function of class name and drawing index only, so the
# same image always gets the same colours and the colours carry no label):
# dark ink on a light background, i.e. contrast inverted w.r.t. `omniglot`.
TRANSFORMED_BACKGROUND = (0.55, 1.0)
TRANSFORMED_INK = (0.0, 0.45)
# Per-channel mean/std of `omniglot_transformed` at 84 px (train split, no
# rotations, every 5th image), measured once with this pipeline.
TRANSFORMED_MEAN = (0.730, 0.730, 0.732)
TRANSFORMED_STD = (0.189, 0.188, 0.188)


def _shear(images: np.ndarray) -> np.ndarray:
    """Horizontal shear about the centre, linear interpolation, zero fill.

    uint8 ``[n, S, S]`` -> same; output pixel ``(x, y)`` samples the input at
    ``(x + s (y - (S - 1) / 2), y)`` with ``s = TRANSFORMED_SHEAR``.
    """
    n, size, _ = images.shape
    padded = np.zeros((n, size, size + 2), dtype=np.float32)  # one zero column each side
    padded[:, :, 1:-1] = images
    out = np.empty_like(images)
    xs = np.arange(size, dtype=np.float64)
    for y in range(size):
        src = xs + TRANSFORMED_SHEAR * (y - (size - 1) / 2) + 1  # +1: the padding
        src = np.clip(src, 0, size + 1)
        x0 = np.minimum(np.floor(src).astype(np.int64), size)
        frac = (src - x0).astype(np.float32)
        row = padded[:, y]
        out[:, y] = np.rint(row[:, x0] * (1 - frac) + row[:, x0 + 1] * frac)
    return out


def _image_colours(names, sizes) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``[n, 3]`` background and ink colours, one pair per image."""
    backgrounds, inks = [], []
    for name, n in zip(names, sizes):
        rng = np.random.default_rng([zlib.crc32(name.encode()), 0xC010])
        backgrounds.append(rng.uniform(*TRANSFORMED_BACKGROUND, size=(n, 3)))
        inks.append(rng.uniform(*TRANSFORMED_INK, size=(n, 3)))
    return (
        np.concatenate(backgrounds).astype(np.float32),
        np.concatenate(inks).astype(np.float32),
    )


def load_omniglot_transformed(data_dir, split, image_size, source, splits_file):
    """uint8 ``[n, S, S, 3]``: Omniglot resized, sheared and colourised."""
    images, sizes, names = load_omniglot_native(data_dir, split, source, splits_file)
    gray = resize_images(images[..., None], image_size)[..., 0]  # [n, S, S]
    del images
    background, ink = _image_colours(names, sizes)
    # Colourise through a per-image lookup table: level a in 0..255 ->
    # background + (ink - background) a / 255, one gather instead of float maps.
    levels = np.arange(256, dtype=np.float32)[None, :, None] / 255
    luts = np.rint(
        255 * (background[:, None, :] + (ink - background)[:, None, :] * levels)
    ).astype(np.uint8)  # [n, 256, 3]
    out = np.empty((gray.shape[0], image_size, image_size, 3), dtype=np.uint8)
    chunk = 1024
    for lo in range(0, gray.shape[0], chunk):
        sheared = _shear(gray[lo : lo + chunk])
        flat = sheared + (np.arange(lo, lo + sheared.shape[0], dtype=np.int64) * 256)[:, None, None]
        np.take(luts.reshape(-1, 3), flat, axis=0, out=out[lo : lo + chunk])
    return out, np.concatenate([[0], np.cumsum(sizes)]), names
