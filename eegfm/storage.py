"""URLs everywhere: every path may be local or `s3://…`, and fsspec is the only door to storage."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def strip_protocol(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def read_json(url: str) -> Any:
    with fsspec.open(url, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_json(url: str, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    data = (json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False) + "\n").encode()
    with atomic_write(url) as path, open(path, "wb") as f:
        f.write(data)


@contextmanager
def atomic_write(url: str) -> Iterator[str]:
    """Yield a local path to write; on success it becomes `url` atomically (rename, or one S3 PUT).

    A killed writer leaves at worst a `.tmp-*` file beside a local target, which is never read, and
    nothing at all on object storage, where an object only appears once its upload completes.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=os.path.dirname(path) or ".")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shards from the other users of a shared disk
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fd, tmp = tempfile.mkstemp(prefix="eegfm-upload-")
        os.close(fd)
        try:
            yield tmp
            fs.put_file(tmp, path)
        finally:
            os.unlink(tmp)
