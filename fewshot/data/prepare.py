"""Where a dataset lives when no ``data_dir`` is given, and its first-use download.

With ``data_dir`` unset (``""`` / ``None``), `locate` looks for a ready copy in, in order:
``$SRWM_JAX_DATA/<folder>`` (when that variable is set, only there), ``../shared/data/<folder>``
next to a source checkout (the folder holding ``pyproject.toml``), then the user cache
``$XDG_CACHE_HOME/srwm_jax/<folder>`` (default ``~/.cache/srwm_jax/<folder>``). When none has
it, Omniglot and FC100 are downloaded (official URLs, md5-checked) into ``$SRWM_JAX_DATA`` or
the user cache and converted once; Mini-ImageNet has no official download and gets one
message naming the accepted formats.

Omniglot: ``images_background.zip`` and ``images_evaluation.zip`` of Lake et al. (2015),
https://github.com/brendenlake/omniglot (MIT), converted to the bit-packed ``omniglot.npz``
described in ``shared/data/omniglot/README.md`` plus the Vinyals split shipped with this
package (``omniglot_vinyals_splits.json``: torchmeta's / IDSIA modern-srwm's
train/val/test.json, 1028/172/423 characters). FC100: the CIFAR-100 python archive of
Krizhevsky (2009), https://www.cs.toronto.edu/~kriz/cifar.html. URLs and md5 sums as listed
in torchvision's ``Omniglot`` and ``CIFAR100`` datasets.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from .core import DatasetError
from .download import fetch

DATA_ENV = "SRWM_JAX_DATA"
# dataset name -> folder under a data root
FOLDERS = {"omniglot": "omniglot", "omniglot_transformed": "omniglot",
           "fc100": "cifar100", "miniimagenet": "miniimagenet"}  # fmt: skip

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# (url, file name, md5)
OMNIGLOT_RESOURCES = (
    (f"{OMNIGLOT_URL}/images_background.zip", "images_background.zip",
     "68d2efa1b9178cc56df9314c21c6e718"),
    (f"{OMNIGLOT_URL}/images_evaluation.zip", "images_evaluation.zip",
     "6b91aef0f799c5bb55b94e3f2daec811"),
)  # fmt: skip
CIFAR100_RESOURCE = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")  # fmt: skip
SPLITS_FILE = Path(__file__).with_name("omniglot_vinyals_splits.json")
_PNG_NAME = re.compile(r"^(images_background|images_evaluation)/([^/]+)/([^/]+)/(\d+)_(\d+)\.png$")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/srwm_jax``, default ``~/.cache/srwm_jax`` (the XDG convention;
    two lines, so no platformdirs dependency)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srwm_jax"


def search_roots() -> list[Path]:
    """Data roots looked at in order (see the module docstring)."""
    if os.environ.get(DATA_ENV):
        return [Path(os.environ[DATA_ENV]).expanduser()]
    roots = []
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        roots.append(checkout.parent / "shared" / "data")
    return roots + [user_cache_dir()]


def download_root() -> Path:
    return Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV) else user_cache_dir()


def _has_omniglot(d: Path) -> bool:
    return (d / "omniglot.npz").is_file() and (d / "splits.json").is_file()


def _has_cifar(d: Path) -> bool:
    return all((d / "cifar-100-python" / f).is_file() for f in ("train", "test"))


def _manual_hint(what: str, folder: Path) -> str:
    return (f"no network? download {what} by hand into {folder} (or give the data's folder "
            f"with --config.data_dir=PATH, or set {DATA_ENV})")


def locate(name: str, *, resources=None) -> Path:
    """The folder of dataset ``name`` when no data_dir is given, downloading it if needed.

    ``resources`` overrides the (url, file name, md5) list (tests, mirrors).

    Raises:
      DatasetError: download failed (one line saying how to supply the data by hand) or,
        for Mini-ImageNet, no copy was found.
    """
    folder = FOLDERS[name]
    dirs = [root / folder for root in search_roots()]
    if name in ("omniglot", "omniglot_transformed"):
        for d in dirs:
            if _has_omniglot(d):
                return d
        return prepare_omniglot(download_root() / folder, resources=resources)
    if name == "fc100":
        for d in dirs:
            if _has_cifar(d):
                return d
        return prepare_cifar100(download_root() / folder, resource=resources)
    for d in dirs:
        if d.is_dir():
            return d
    raise DatasetError(
        f"Mini-ImageNet not found (looked in {', '.join(map(str, dirs))}) and it has no official "
        "download: put mini-imagenet-cache-{train,val,test}.pkl (the pickles torchmeta and "
        "learn2learn use) or train/ val/ test/ folders of class folders of JPEG/PNG images (e.g. "
        "built from ImageNet with Ravi & Larochelle's split CSVs) in one of those folders, or "
        "pass --config.data_dir=PATH"
    )


def prepare_omniglot(root: Path, *, resources=None) -> Path:
    """Downloads the two Omniglot zips into ``root``, writes ``omniglot.npz`` and
    ``splits.json`` there (atomically) and deletes the zips. Returns ``root``."""
    root = Path(root)
    if _has_omniglot(root):
        return root
    hint = _manual_hint("images_background.zip and images_evaluation.zip from "
                        "https://github.com/brendenlake/omniglot/tree/master/python", root)
    zips = [fetch(url, root / fname, md5, manual_hint=hint)
            for url, fname, md5 in (resources or OMNIGLOT_RESOURCES)]  # fmt: skip
    arrays = omniglot_arrays_from_zips(zips)
    _atomic_write(root / "omniglot.npz", lambda f: np.savez_compressed(f, **arrays))
    _atomic_write(root / "splits.json", lambda f: f.write(SPLITS_FILE.read_bytes()))
    for z in zips:
        z.unlink()
    return root


def omniglot_arrays_from_zips(zips) -> dict[str, np.ndarray]:
    """The arrays of ``omniglot.npz`` (layout in ``shared/data/omniglot/README.md``) from the
    official zips (``images_{background,evaluation}/<Alphabet>/<characterNN>/<id>_<NN>.png``,
    black ink on white)."""
    entries = {}  # (folder, alphabet, character) -> [(drawer, id, member, zip)]
    for path in zips:
        try:
            zf = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetError(
                f"{path} is not a readable zip ({e!r}); delete it and run again") from e
        for member in zf.namelist():
            m = _PNG_NAME.match(member)
            if m:
                folder, alphabet, character, ident, drawer = m.groups()
                entries.setdefault((folder, alphabet, character), []).append(
                    (int(drawer), int(ident), member, zf))
    if not entries:
        raise DatasetError(f"no images_*/<Alphabet>/<character>/*.png in {[str(z) for z in zips]}")
    # Background first, then evaluation; alphabets, characters and drawers sorted by name.
    keys = sorted(entries, key=lambda k: (k[0] != "images_background", k[1], k[2]))
    images, labels, drawer, ident = [], [], [], []
    for c, key in enumerate(keys):
        for d, i, member, zf in sorted(entries[key], key=lambda e: e[2]):
            with Image.open(io.BytesIO(zf.read(member))) as im:
                ink = np.asarray(im.convert("L")) < 128
            if ink.shape != (105, 105):
                raise DatasetError(f"Omniglot image {member} is {ink.shape[::-1]}, "
                                   "expected 105 x 105")
            images.append(np.packbits(ink, axis=-1))
            labels.append(c)
            drawer.append(d)
            ident.append(i)
    first_id = {}
    for c, i in zip(labels, ident):
        first_id.setdefault(c, i)
    return {
        "images": np.stack(images).astype(np.uint8),
        "labels": np.asarray(labels, np.int32),
        "drawer": np.asarray(drawer, np.int8),
        "alphabet": np.array([k[1] for k in keys]),
        "character": np.array([k[2] for k in keys]),
        "background": np.array([k[0] == "images_background" for k in keys]),
        "omniglot_id": np.asarray([first_id[c] for c in range(len(keys))], np.int32),
    }


def prepare_cifar100(root: Path, *, resource=None) -> Path:
    """Downloads the CIFAR-100 python archive into ``root``, extracts
    ``cifar-100-python/`` there (atomically) and deletes the archive. Returns ``root``."""
    root = Path(root)
    if _has_cifar(root):
        return root
    url, fname, md5 = resource or CIFAR100_RESOURCE
    hint = _manual_hint(f"{CIFAR100_RESOURCE[0]} and extract it", root)
    archive = fetch(url, root / fname, md5, manual_hint=hint)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-100-python."))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / "cifar-100-python").is_dir():
            raise DatasetError(f"{archive} has no cifar-100-python/ folder")
        shutil.rmtree(root / "cifar-100-python", ignore_errors=True)
        os.replace(tmp / "cifar-100-python", root / "cifar-100-python")
    except (OSError, tarfile.TarError) as e:
        raise DatasetError(f"cannot extract {archive} ({e!r}); delete it and run again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    return root


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
