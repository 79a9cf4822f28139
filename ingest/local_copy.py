"""A local path for readers that can only open files by name (wfdb, MNE's CNT reader).

Why: the `wfdb` package and `mne.io.read_raw_cnt` open paths, not fsspec file objects. A local corpus is
read in place; a remote file (s3://…) is copied, with the sibling files it needs (a WFDB header's .dat
files), to a temporary folder that is deleted when the reader closes: disk use is one recording's size.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec

from eegfm.ingest.signals import ReadError
from eegfm.storage import storage_errors


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


@contextlib.contextmanager
def local_files(url: str, siblings: Callable[[Path], list[str]] = lambda _path: []) -> Iterator[Path]:
    """The local path of `url` and of the siblings (file names in its folder) that `siblings(path)` names.

    A sibling that does not exist is a `ReadError` naming it (a WFDB header without its .dat).
    """
    fs, path = fsspec.core.url_to_fs(url)
    if _is_local(fs):
        local = Path(path)
        _require_all(local.parent, siblings(local), exists=lambda p: Path(p).exists())
        yield local
        return
    folder = path.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="eegfm-copy-") as tmp:
        local = Path(tmp) / path.rsplit("/", 1)[-1]
        with storage_errors(url, "copying it to a local temporary folder"):
            fs.get(path, str(local))
            names = siblings(local)
            _require_all(folder, names, exists=fs.exists)
            for name in names:
                fs.get(f"{folder}/{name}", str(Path(tmp) / name))
        yield local


def _require_all(folder: Path | str, names: list[str], exists: Callable[[str], bool]) -> None:
    for name in names:
        if not exists(f"{folder}/{name}"):
            raise ReadError(f"missing file {name} (the header names it; expected beside the header)")
