"""MNIST-family readers (fewshot/data/mnist.py) on fixtures written here: idx (raw and .gz) and
npz files, grouping into ClassImages, malformed files, and the md5-checked download from a
local HTTP server (127.0.0.1, ephemeral port), as tests/test_download.py does for Omniglot."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from fewshot.data import DatasetError
from fewshot.data.mnist import (as_class_images, download_mnist_family, load_mnist_family,
                                read_idx)
from fewshot.online import ImageEpisodes


def _idx_bytes(a: np.ndarray) -> bytes:
    """The idx encoding written independently of the reader: magic, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return header + a.astype(np.uint8).tobytes()


def _fixture(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


def _files(x, y, split="train"):
    p = {"train": "train", "test": "t10k"}[split]
    return {f"{p}-images-idx3-ubyte.gz": gzip.compress(_idx_bytes(x)),
            f"{p}-labels-idx1-ubyte.gz": gzip.compress(_idx_bytes(y))}


def test_idx_gz_raw_and_npz_read_the_same(tmp_path):
    x, y = _fixture()
    gz, raw, npz = tmp_path / "gz", tmp_path / "raw", tmp_path / "npz"
    for d in (gz, raw, npz):
        d.mkdir()
    for name, body in _files(x, y, "test").items():
        (gz / name).write_bytes(body)
        (raw / name[:-3]).write_bytes(gzip.decompress(body))
    np.savez(npz / "fashion_mnist.npz", x_train=x[:5], y_train=y[:5], x_test=x, y_test=y)
    for folder in (gz, raw, npz):
        xi, yi = load_mnist_family("fashion_mnist", folder, "test")
        np.testing.assert_array_equal(xi, x)
        np.testing.assert_array_equal(yi, y.astype(np.int64))
    ds = as_class_images("fashion_mnist", "test", x, y.astype(np.int64))
    assert ds.num_classes == len(np.unique(y)) and ds.images.shape == (30, 28, 28, 1)
    for c, label in enumerate(np.unique(y)):
        np.testing.assert_array_equal(ds.class_images(c)[..., 0], x[y == label])
    episodes = ImageEpisodes(ds, 3, 12, 8, seed=0)
    feats, labels = episodes.sample(2, 0)
    assert feats.shape == (2, 12, 8) and labels.max() < 3


def test_malformed_files_are_refused(tmp_path):
    x, _ = _fixture(4)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x0d\x03" + bytes(16))
    with pytest.raises(DatasetError, match="not an idx file of unsigned bytes"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(_idx_bytes(x)[:-5])
    with pytest.raises(DatasetError, match=r"header says \(4, 28, 28\)"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(DatasetError, match="found neither train-images-idx3-ubyte"):
        load_mnist_family("mnist", tmp_path, "train")
    with pytest.raises(ValueError, match="'train' and 'test'"):
        load_mnist_family("mnist", tmp_path, "val")


def test_download_checks_md5_and_reads_back(server, tmp_path):
    x, y = _fixture(20, seed=1)
    files = {**_files(x, y, "train"), **_files(x[:7], y[:7], "test")}
    server.files = {f"/{k}": v for k, v in files.items()}
    resources = [(f"{server.url}/{k}", k, hashlib.md5(v).hexdigest()) for k, v in files.items()]
    folder = download_mnist_family("mnist", tmp_path / "mnist", resources=resources)
    xt, yt = load_mnist_family("mnist", folder, "test")
    np.testing.assert_array_equal(xt, x[:7])
    np.testing.assert_array_equal(yt, y[:7])
    bad = [(u, f"other_{n}", "0" * 32) for u, n, _ in resources[:1]]
    with pytest.raises(DatasetError, match="md5"):
        download_mnist_family("mnist", tmp_path / "bad", resources=bad)
    assert not (tmp_path / "bad" / f"other_{resources[0][1]}").exists()
