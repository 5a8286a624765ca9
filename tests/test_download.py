"""First-use download of Omniglot and FC100 (fewshot/data/download.py, prepare.py), offline.

A local HTTP server (127.0.0.1, ephemeral port) serves archives built here: three Omniglot
alphabets rendered from ../shared/data/omniglot as PNG zips in the official layout, and a tiny
CIFAR-100-format tar.gz. The real URLs stay in the code; the tests pass their own
(url, name, md5) resources.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.data import DatasetError, clear_cache, load_split
from fewshot.data import prepare

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
needs_omniglot = pytest.mark.skipif(
    not (OMNIGLOT / "omniglot.npz").is_file(), reason=f"real Omniglot data not found at {OMNIGLOT}")
# Two small background alphabets and one small evaluation alphabet.
ALPHABETS = ("Blackfoot_(Canadian_Aboriginal_Syllabics)", "Tagalog", "Angelic")


def _raw():
    """The shared npz decoded as its README says: {name: (ink [20, 105, 105] bool, drawers)}."""
    with np.load(OMNIGLOT / "omniglot.npz") as f:
        d = {k: f[k] for k in f.files}  # each NpzFile access decompresses again
    out = {}
    for c, (a, ch) in enumerate(zip(d["alphabet"], d["character"])):
        if str(a) in ALPHABETS:
            rows = np.flatnonzero(d["labels"] == c)
            ink = np.unpackbits(d["images"][rows], axis=-1, count=105).astype(bool)
            out[f"{a}/{ch}"] = (ink, d["drawer"][rows], int(d["omniglot_id"][c]),
                                bool(d["background"][c]))
    return out


def _omniglot_zips(raw) -> dict[str, bytes]:
    """images_{background,evaluation}.zip: <folder>/<Alphabet>/<characterNN>/<id>_<NN>.png,
    mode '1', black ink on white, as the official archives."""
    bufs = {f: io.BytesIO() for f in ("images_background", "images_evaluation")}
    zips = {f: zipfile.ZipFile(b, "w") for f, b in bufs.items()}
    for name, (ink, drawers, ident, background) in raw.items():
        folder = "images_background" if background else "images_evaluation"
        for im, drawer in zip(ink, drawers):
            png = io.BytesIO()
            Image.fromarray(~im).convert("1").save(png, format="PNG")
            zips[folder].writestr(f"{folder}/{name}/{ident:04d}_{drawer:02d}.png", png.getvalue())
    for z in zips.values():
        z.close()
    return {f"{f}.zip": b.getvalue() for f, b in bufs.items()}


def _resources(srv, archives, md5s=None):
    return [(f"{srv.url}/{name}", name, (md5s or {}).get(name, hashlib.md5(body).hexdigest()))
            for name, body in archives.items()]  # fmt: skip


@pytest.fixture(scope="module")
def omniglot_archives():
    if not (OMNIGLOT / "omniglot.npz").is_file():
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT}")
    raw = _raw()
    return raw, _omniglot_zips(raw)


@needs_omniglot
def test_omniglot_download_equals_direct_read(server, omniglot_archives, tmp_path, monkeypatch):
    raw, archives = omniglot_archives
    server.files = {f"/{k}": v for k, v in archives.items()}
    monkeypatch.setenv("SRWM_JAX_DATA", str(tmp_path))
    root = prepare.locate("omniglot", resources=_resources(server, archives))
    assert root == tmp_path / "omniglot"
    assert sorted(p.name for p in root.iterdir()) == ["omniglot.npz", "splits.json"]  # zips removed
    assert json.loads((root / "splits.json").read_text()) == json.loads(
        (OMNIGLOT / "splits.json").read_text())
    d = np.load(root / "omniglot.npz")
    names = [f"{a}/{c}" for a, c in zip(d["alphabet"], d["character"])]
    assert sorted(names) == sorted(raw)
    for c, name in enumerate(names):
        rows = np.flatnonzero(d["labels"] == c)
        ink = np.unpackbits(d["images"][rows], axis=-1, count=105).astype(bool)
        np.testing.assert_array_equal(ink, raw[name][0], err_msg=name)
        np.testing.assert_array_equal(d["drawer"][rows], raw[name][1])
        assert d["omniglot_id"][c] == raw[name][2] and d["background"][c] == raw[name][3]
    # The loader reads it like the shared copy (same classes through a split file).
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:5], "val": names[5:6], "test": names[6:]}))
    clear_cache()
    ours = load_split("omniglot", root, "test", splits_file=split, cache=False)
    ref = load_split("omniglot", OMNIGLOT, "test", splits_file=split, cache=False)
    np.testing.assert_array_equal(ours.images, ref.images)
    # Second call: found in the cache, nothing fetched.
    server.files = {}
    assert prepare.locate("omniglot", resources=_resources(server, archives)) == root


@needs_omniglot
def test_checksum_mismatch_caches_nothing(server, omniglot_archives, tmp_path):
    _, archives = omniglot_archives
    server.files = {f"/{k}": v for k, v in archives.items()}
    bad = _resources(server, archives, {"images_evaluation.zip": "0" * 32})
    with pytest.raises(DatasetError,
                       match=r"images_evaluation\.zip has md5 [0-9a-f]{32}, expected 0{32}"):
        prepare.prepare_omniglot(tmp_path, resources=bad)
    # The good first archive may stay (verified, reused next time); nothing else does.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_background.zip"]


@needs_omniglot
def test_server_dying_mid_transfer_then_retry(server, omniglot_archives, tmp_path):
    _, archives = omniglot_archives
    server.files = {f"/{k}": v for k, v in archives.items()}
    server.truncate = True
    with pytest.raises(DatasetError, match="broke off after .* run again to retry"):
        prepare.prepare_omniglot(tmp_path, resources=_resources(server, archives))
    assert list(tmp_path.iterdir()) == []  # no partial file under any name
    server.truncate = False
    root = prepare.prepare_omniglot(tmp_path, resources=_resources(server, archives))
    assert (root / "omniglot.npz").is_file() and (root / "splits.json").is_file()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_says_how_to_supply_data(tmp_path, monkeypatch):
    """The official URLs, redirected by the mirror variable to a port nobody listens on."""
    monkeypatch.setenv("SRWM_JAX_DATA", str(tmp_path))
    monkeypatch.setenv("SRWM_JAX_DATA_MIRROR", f"http://127.0.0.1:{_closed_port()}")
    for name in ("omniglot", "fc100"):
        with pytest.raises(DatasetError) as e:
            prepare.locate(name)
        msg = str(e.value)
        assert "\n" not in msg and "by hand" in msg and str(tmp_path) in msg, msg
    assert "brendenlake/omniglot" in prepare.OMNIGLOT_RESOURCES[0][0]
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_miniimagenet_missing_names_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("SRWM_JAX_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="no official download.*mini-imagenet-cache"):
        load_split("miniimagenet", "", "test")


def _cifar_pickle(rng, fine, coarse):
    data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
    return {b"data": data, b"fine_labels": list(fine), b"coarse_labels": list(coarse)}


def test_fc100_download_equals_direct_read(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    # Two fine classes in each FC100 test superclass (0, 7, 12, 14), 3 + 2 images each.
    fine = np.repeat(np.arange(8), 3)
    coarse = np.array([0, 0, 7, 7, 12, 12, 14, 14])[fine]
    parts = {"train": _cifar_pickle(rng, fine, coarse),
             "test": _cifar_pickle(rng, fine[::3].repeat(2), coarse[::3].repeat(2))}  # fmt: skip
    direct = tmp_path / "direct" / "cifar-100-python"
    direct.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in parts.items():
            blob = pickle.dumps(obj)
            (direct / name).write_bytes(blob)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    server.files = {"/cifar-100-python.tar.gz": buf.getvalue()}
    monkeypatch.setenv("SRWM_JAX_DATA", str(tmp_path / "cache"))
    resource = _resources(server, {"cifar-100-python.tar.gz": buf.getvalue()})[0]
    root = prepare.locate("fc100", resources=resource)
    assert root == tmp_path / "cache" / "cifar100"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python"]  # archive removed
    ours = load_split("fc100", root, "test", cache=False)
    ref = load_split("fc100", direct, "test", cache=False)
    assert ours.images.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(ours.images, ref.images)
    np.testing.assert_array_equal(ours.class_start, ref.class_start)
