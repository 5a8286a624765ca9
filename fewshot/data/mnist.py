"""MNIST-family readers (MNIST, Fashion-MNIST): idx / npz files, md5-checked download.

For VSML's transfer experiments (Kirsch & Schmidhuber 2021 meta-train on MNIST and test on
Fashion-MNIST and others). Two on-disk formats are read:

  idx   the official four files (LeCun et al. 1998; Xiao et al. 2017), gzip-compressed or not:
        train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-..., t10k-labels-...
        (idx: big-endian magic 0x0000 08 NDIM, NDIM uint32 sizes, then uint8 data)
  npz   one archive with x_train, y_train, x_test, y_test (the Keras `mnist.npz` layout)

`load_mnist_family(name, folder, split)` returns uint8 images [N, 28, 28] and int64 labels
[N]; `as_class_images` groups them by class for `fewshot.online.ImageEpisodes` (split "train"
is the official training set, "test" the official test set). `download_mnist_family` fetches
the idx files from their official URLs with `fewshot.data.download.fetch` (streamed, md5,
atomic), the same as Omniglot's first use; `SRWM_JAX_DATA_MIRROR` applies.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .core import ClassImages, DatasetError
from .download import fetch

# (file name, md5) of the official gzip files; md5 sums as published with the datasets.
IDX_FILES = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))),
}
MNIST_FAMILY = tuple(IDX_FILES)
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path) -> np.ndarray:
    """An idx file (gzip-compressed when its name ends in .gz) -> uint8 array of its shape.

    Raises:
      DatasetError: not an idx file of unsigned bytes, or its length disagrees with its header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read idx file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an idx file of unsigned bytes (magic "
                           f"{data[:4].hex() if len(data) >= 4 else 'missing'}, expected 000008NN)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes of data, "
                           f"the file holds {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist_family(name: str, folder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of `split` ("train" | "test") from
    `folder`: the four idx files (optionally .gz), or else `<name>.npz` (Keras layout).

    Raises:
      ValueError: unknown name or split.
      DatasetError: the files are missing or malformed (the message names what was expected).
    """
    if name not in MNIST_FAMILY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {MNIST_FAMILY}.")
    if split not in _PREFIX:
        raise ValueError(f"split={split!r}: MNIST-family datasets have 'train' and 'test'.")
    folder = Path(folder)
    images = _find(folder, f"{_PREFIX[split]}-images-idx3-ubyte")
    labels = _find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte")
    if images and labels:
        x, y = read_idx(images), read_idx(labels).astype(np.int64)
    elif (folder / f"{name}.npz").is_file():
        with np.load(folder / f"{name}.npz") as z:
            keys = (f"x_{split}", f"y_{split}")
            if not all(k in z.files for k in keys):
                raise DatasetError(f"{folder / (name + '.npz')} has {sorted(z.files)}, expected "
                                   "x_train, y_train, x_test, y_test")
            x, y = np.asarray(z[keys[0]], np.uint8), np.asarray(z[keys[1]], np.int64)
    else:
        raise DatasetError(f"{name} {split}: found neither {_PREFIX[split]}-images-idx3-ubyte"
                           f"[.gz] + {_PREFIX[split]}-labels-idx1-ubyte[.gz] nor {name}.npz in "
                           f"{folder}; run fewshot.data.mnist.download_mnist_family or copy the "
                           "files there")
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DatasetError(f"{name} {split}: images {x.shape} and labels {y.shape} do not match "
                           "([N, S, S] and [N])")
    return x, y


def as_class_images(name: str, split: str, images: np.ndarray, labels: np.ndarray) -> ClassImages:
    """Groups [N, S, S] images by label into a ClassImages ([N, S, S, 1], classes 0..C-1)."""
    order = np.argsort(labels, kind="stable")
    classes, counts = np.unique(labels, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return ClassImages(images[order][..., None], starts, name, split,
                       tuple(f"{name}/{c}" for c in classes))


def download_mnist_family(name: str, folder, *, resources=None) -> Path:
    """Fetches the four idx.gz files of `name` into `folder` (skipping those already there
    with the right md5). resources: (url, file name, md5) triples to use instead (tests).

    Returns the folder. Raises DatasetError on a network failure or an md5 mismatch."""
    if name not in MNIST_FAMILY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {MNIST_FAMILY}.")
    folder = Path(folder)
    base, files = IDX_FILES[name]
    resources = resources or [(base + f, f, md5) for f, md5 in files]
    hint = f"download the four idx files of {name} by hand into {folder}"
    for url, fname, md5 in resources:
        fetch(url, folder / fname, md5, manual_hint=hint)
    return folder
