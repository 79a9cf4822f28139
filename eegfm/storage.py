"""URLs everywhere: every path may be local or `s3://…`, and fsspec is the only door to storage."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eegfm.errors import StorageError


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def strip_protocol(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


# --- errors ------------------------------------------------------------------------------------------

# OSError numbers that say something about the storage, not about the program: translated to StorageError.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
_checked_endpoints: set[str] = set()


@contextmanager
def storage_errors(url: str, doing: str) -> Iterator[None]:
    """Turn the known storage conditions met while `doing` something with `url` into one-line
    `StorageError`s naming the URL (or endpoint) and what to do: an unreachable endpoint, no credentials,
    no space left, a read-only or forbidden path, a file where a folder must be.

    Everything else (a missing file included, which callers handle) passes through unchanged, so a bug
    keeps its traceback.
    """
    _check_endpoint(url)
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        translated = _translate(e, url, doing)
        if translated is None:
            raise
        raise translated from e


def require_folder(url: str, what: str = "OUT") -> None:
    """Fail early, naming `what`, when a local `url` that must be a folder is an existing file."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            where = (
                url if os.path.abspath(blocker) == os.path.abspath(path) else f"{url} (its parent {blocker})"
            )
            raise StorageError(f"{what} {where}: is a file, not a folder: choose another {what}")


def _translate(error: BaseException, url: str, doing: str) -> StorageError | None:
    chain: list[BaseException] = []
    node: BaseException | None = error
    while node is not None and node not in chain:
        chain.append(node)
        node = node.__cause__ or node.__context__
    for e in chain:
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StorageError(
                f"{url}: no credentials for object storage while {doing}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        if name in ("EndpointConnectionError", "ConnectTimeoutError"):
            endpoint = _endpoint_of(url) or getattr(e, "kwargs", {}).get("endpoint_url") or "?"
            return StorageError(
                f"{url}: cannot reach endpoint {endpoint} while {doing}: "
                "check AWS_ENDPOINT_URL and the network"
            )
    for e in chain:
        if not isinstance(e, OSError) or isinstance(e, FileNotFoundError):
            continue
        where = e.filename or strip_protocol(url)
        if os.path.abspath(where) != os.path.abspath(strip_protocol(url)):
            doing = f"{doing} {url}"
        if e.errno in _NO_SPACE:
            return StorageError(
                f"{where}: no space left on device while {doing}: free space or write elsewhere"
            )
        if e.errno in _CANNOT_WRITE:
            reason = "read-only file system" if e.errno == errno.EROFS else "permission denied"
            return StorageError(f"{where}: {reason} while {doing}: choose a writable location")
        if e.errno in (errno.ENOTDIR, errno.EEXIST) and isinstance(
            fsspec.core.url_to_fs(url)[0], LocalFileSystem
        ):
            blocker = _file_in_the_way(strip_protocol(url))
            if blocker is not None:
                return StorageError(
                    f"{blocker}: is a file, not a folder (while {doing} {url}): "
                    "move it or choose another path"
                )
    return None


def _file_in_the_way(path: str) -> str | None:
    """The nearest existing ancestor of `path` (itself included) when it is a file, else None."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    return probe if not os.path.isdir(probe) else None


def _endpoint_of(url: str) -> str | None:
    if not url.startswith("s3://"):
        return None
    fs, _ = fsspec.core.url_to_fs(url)
    return (
        (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
        or getattr(fs, "endpoint_url", None)
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _check_endpoint(url: str) -> None:
    """Once per endpoint and process: a refused connection fails now, not after s3fs's and botocore's
    retries (~13 s). Anything else (a timeout, a slow network) is left to those retries, which is what
    they are for on a real cluster."""
    endpoint = _endpoint_of(url)
    if endpoint is None or endpoint in _checked_endpoints:
        return
    parsed = urllib.parse.urlsplit(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=2).close()
    except ConnectionRefusedError:
        raise StorageError(
            f"{url}: cannot reach endpoint {endpoint} (connection refused): check AWS_ENDPOINT_URL"
        ) from None
    except OSError:
        pass  # unresolvable or slow: let the client try, with its retries
    _checked_endpoints.add(endpoint)


# --- reading and writing -----------------------------------------------------------------------------


def exists(url: str) -> bool:
    with storage_errors(url, "looking it up"):
        fs, path = fsspec.core.url_to_fs(url)
        return fs.exists(path)


def list_files(url: str, pattern: str) -> list[str]:
    """Names (not paths) of the entries of folder `url` that match the glob `pattern`, sorted; [] when the
    folder does not exist."""
    with storage_errors(url, "listing"):
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.glob(f"{path.rstrip('/')}/{pattern}"))


def read_json(url: str) -> Any:
    with storage_errors(url, "reading"), fsspec.open(url, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_json(url: str, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    data = (json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False) + "\n").encode()
    with atomic_write(url) as path, open(path, "wb") as f:
        f.write(data)


TEMPORARY_MARKER = ".tmp-"  # atomic_write's temporary beside `x` is `x.tmp-XXXXXXXX` (mkstemp's 8 characters)
UPLOAD_PREFIX = "eegfm-upload"  # local spool of an object-storage upload, in the temp folder
_TEMPORARY = re.compile(re.escape(TEMPORARY_MARKER) + r"[A-Za-z0-9_]{8}$")


@contextmanager
def atomic_write(url: str) -> Iterator[str]:
    """Yield a local path to write; on success it becomes `url` atomically (rename, or one S3 PUT).

    A killed writer leaves at worst a `x.tmp-XXXXXXXX` file beside a local target `x`, which is never
    read and which `remove_stale_temporaries` removes; nothing at all on object storage, where an object
    only appears once its upload completes (its local spool, `eegfm-upload.tmp-*` in the temp folder, is
    removed by the next upload). While the writer lives it holds an exclusive `flock` on its
    temporary, which is how `remove_stale_temporaries` tells a live writer's file from a dead one's.
    """
    with storage_errors(url, "writing"):
        fs, path = fsspec.core.url_to_fs(url)
        if isinstance(fs, LocalFileSystem):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=os.path.basename(path) + TEMPORARY_MARKER, dir=os.path.dirname(path) or "."
            )
            try:
                with contextlib.suppress(OSError):  # a filesystem without flock: nothing is ever removed
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shards from the other users of a shared disk
                yield tmp
                os.replace(tmp, path)
            finally:
                os.close(fd)  # releases the lock
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            # Uploads spool in the local temp folder, locked like a local temporary; what killed uploads
            # left there (of any eegfm process on this machine) is removed before each new one.
            remove_stale_temporaries(tempfile.gettempdir(), UPLOAD_PREFIX)
            fd, tmp = tempfile.mkstemp(prefix=UPLOAD_PREFIX + TEMPORARY_MARKER)
            try:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                yield tmp
                fs.put_file(tmp, path)
            finally:
                os.close(fd)
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
