"""Downloads one file: streamed, md5-checked, with a progress bar, written atomically.

Hand-written on the standard library's ``urllib`` (no new dependency; tqdm draws the bar):
what is added on top is small and specific to us: the md5 while streaming, the length
check, the temporary-file-then-rename and one-line errors that say how to supply the data
by hand.

``SRWM_JAX_DATA_MIRROR=<base URL>`` fetches every file as ``<base URL>/<file name>``
instead of its official URL (same md5 sums), e.g. for a local mirror.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from .core import DatasetError

MIRROR_ENV = "SRWM_JAX_DATA_MIRROR"
TIMEOUT_S = 60
CHUNK = 1 << 16


def resolve_url(url: str) -> str:
    """``url``, or ``$SRWM_JAX_DATA_MIRROR/<file name>`` when that variable is set."""
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    return f"{mirror}/{url.rsplit('/', 1)[-1]}" if mirror else url


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str, *, manual_hint: str) -> Path:
    """Downloads ``url`` to ``dest`` unless ``dest`` already has md5 ``md5``.

    The bytes go to a temporary file in ``dest``'s folder, renamed to ``dest`` only after
    the length (when the server sends one) and the md5 match: an interrupted or corrupt
    download never leaves a file under ``dest``'s name.

    Args:
      url: official URL (``resolve_url`` applies the mirror variable).
      dest: file to write; its folder is created.
      md5: expected hex md5 of the file.
      manual_hint: how to supply the data by hand, appended to network errors.

    Raises:
      DatasetError: network failure (one line, ending with ``manual_hint``), a transfer
        cut short, or an md5 mismatch; nothing is left under ``dest`` in each case.
    """
    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = resolve_url(url)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
            except (urllib.error.URLError, OSError, HTTPException) as e:
                reason = getattr(e, "reason", e)
                raise DatasetError(f"cannot download {url} ({reason}); {manual_hint}") from None
            with response:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                h, received = hashlib.md5(), 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, leave=False) as bar:  # fmt: skip
                    try:
                        while block := response.read(CHUNK):
                            out.write(block)
                            h.update(block)
                            received += len(block)
                            bar.update(len(block))
                    except (OSError, HTTPException) as e:
                        raise DatasetError(
                            f"download of {url} broke off after {received} bytes ({e!r}); "
                            "nothing was kept, run again to retry"
                        ) from None
        if total is not None and received != total:
            raise DatasetError(
                f"download of {url} broke off after {received} of {total} bytes; "
                "nothing was kept, run again to retry"
            )
        if h.hexdigest() != md5:
            raise DatasetError(
                f"{url} has md5 {h.hexdigest()}, expected {md5}: the file is corrupt or not the "
                f"official one; nothing was kept. {manual_hint}"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
