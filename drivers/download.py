"""Data an experiment downloads: fetched once into ``data_dir``, checked by sha256.

A benchmark package either ships its data (package data, read with
``importlib.resources``) or downloads it with :func:`fetch`; it never relies on
files already on the machine. A wrong checksum or a failed download is a
handled error (``data_corrupt``, ``download_failed``), never silently used data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from drivers.base import DriverError

log = logging.getLogger("benchflow.download")

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fetch(
    url: str, sha256: str, data_dir: Path, name: str | None = None, timeout_s: float = 60
) -> Path:
    """The file at ``url``, cached as ``data_dir/downloads/<sha256[:16]>/<name>``.

    Downloaded only when not cached (or cached with another checksum); the
    download goes to a temporary name and replaces the cache entry only once
    its checksum matches.
    """
    sha256 = sha256.lower()
    name = name or Path(urlsplit(url).path).name or "data"
    dest = Path(data_dir).expanduser() / "downloads" / sha256[:16] / name
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{name}.{os.getpid()}.part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as out:
            while block := resp.read(CHUNK):
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise DriverError(f"could not download {url}: {exc}", "download_failed") from None
    got = sha256_of(tmp)
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise DriverError(
            f"{url}: sha256 {got} does not match the expected {sha256}", "data_corrupt"
        )
    tmp.replace(dest)
    return dest
