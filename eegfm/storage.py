"""URLs everywhere: every path may be local or `s3://…`, and fsspec is the only door to storage."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
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


TEMPORARY_MARKER = ".tmp-"  # atomic_write's temporary beside `x` is `x.tmp-XXXXXXXX` (mkstemp's 8 characters)
_TEMPORARY = re.compile(re.escape(TEMPORARY_MARKER) + r"[A-Za-z0-9_]{8}$")


@contextmanager
def atomic_write(url: str) -> Iterator[str]:
    """Yield a local path to write; on success it becomes `url` atomically (rename, or one S3 PUT).

    A killed writer leaves at worst a `x.tmp-XXXXXXXX` file beside a local target `x`, which is never
    read and which `remove_stale_temporaries` removes; nothing at all on object storage, where an object
    only appears once its upload completes. While the writer lives it holds an exclusive `flock` on its
    temporary, which is how `remove_stale_temporaries` tells a live writer's file from a dead one's.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=os.path.basename(path) + TEMPORARY_MARKER, dir=os.path.dirname(path) or "."
        )
        try:
            with contextlib.suppress(OSError):  # a filesystem without flock: the name and age still tell
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shards from the other users of a shared disk
            yield tmp
            os.replace(tmp, path)
        finally:
            os.close(fd)  # releases the lock
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


def remove_stale_temporaries(folder_url: str, prefix: str, *, older_than: float | None = None) -> list[str]:
    """Remove the temporaries that killed `atomic_write`s left in `folder_url`; returns the names removed.

    Contract:
    - Only files directly in the folder (not below it) whose name starts with `prefix` and ends with
      atomic_write's marker `.tmp-XXXXXXXX` are candidates, e.g. `prefix="step="` matches
      `step=1200.ckpt.tmp-k3j_x9a2`. Choose a prefix only your own job writes (a task's shard names, a
      run's checkpoint names), so that another job's temporaries are never touched.
    - A candidate is removed only when no live writer holds it: atomic_write holds an exclusive `flock` on
      its temporary until it renames it, the kernel drops that lock when the writer dies (SIGKILL
      included), and a candidate whose lock this call cannot take is left alone. Where the filesystem
      cannot lock at all, nothing is removed (liveness cannot be proved).
    - With `older_than` (a `time.time()` value), files modified at or after it are left alone too, e.g.
      the caller's own start time, so nothing written by the current run is ever a candidate.
    - A missing folder, or a folder on object storage (where atomic_write never leaves a temporary,
      since an object appears only once its upload completes), gives [].

    Call it when a job (re)starts, before it writes: it is how a re-run after a kill leaves no debris.
    """
    fs, path = fsspec.core.url_to_fs(folder_url)
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(path):
        return []
    removed = []
    for name in sorted(os.listdir(path)):
        if not (name.startswith(prefix) and _TEMPORARY.search(name)):
            continue
        full = os.path.join(path, name)
        try:
            fd = os.open(full, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its writer finished (renamed it) meanwhile
        try:
            if older_than is not None and os.fstat(fd).st_mtime >= older_than:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held by a live writer, or a filesystem without locks: not provably stale
            try:
                os.unlink(full)
            except FileNotFoundError:
                continue  # renamed by its writer just before it let go of the lock
            removed.append(name)
        finally:
            os.close(fd)
    return removed
