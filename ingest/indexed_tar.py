"""One tar of samples plus its byte index, committed atomically: the writer of data and token shards.

Both kinds of shard (`ingest`'s samples and `eegfm tokenize`'s code ids) are a WebDataset tar whose headers
carry no time, user or host, so the same samples always give the same bytes, and a `<shard>.index.json`
(`contract.index_name`) that lets a loader read any sample with one ranged read and check it (`crc32`).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import webdataset as wds

from eegfm.ingest import contract
from eegfm.storage import atomic_write, join_url, storage_errors, write_json

_CRC_CHUNK = 1 << 20


class IndexedTarWriter:
    """Write samples into the tar at `folder/name`; `commit` makes the tar, then its index, appear.

    The tar is written to atomic_write's temporary and appears (rename, or one upload) only complete;
    its index is written after it, so an index is the mark of a committed shard: a reader that finds
    an index finds its tar, and a job killed in between writes both again on its re-run.

    Each index row is `key, offset, size, <shape columns…>, crc32`: the sample's members (tar headers
    included) are the bytes [offset, offset + size) of the tar, and `crc32` is `zlib.crc32` of exactly
    those bytes, read back from the file as written.
    """

    def __init__(self, folder: str, name: str, shape_columns: Sequence[str]):
        self.folder, self.name = folder, name
        self.shape_columns = tuple(shape_columns)
        self.rows: list[list[Any]] = []
        self._stack = contextlib.ExitStack()
        try:
            self._path = self._stack.enter_context(atomic_write(join_url(folder, name)))
            self._file = self._stack.enter_context(open(self._path, "wb"))  # noqa: SIM115 - closed in commit
            self._tar = wds.TarWriter(
                self._file, encoder=False, user="", group="", mtime=0, format="PAX_FORMAT"
            )
        except BaseException:
            self._stack.close()
            raise

    def write(self, key: str, members: dict[str, bytes], shape: Sequence[int]) -> None:
        """Append one sample: `members` maps a suffix (`eeg.npy`) to its bytes; `shape` fills the index's
        shape columns."""
        if len(shape) != len(self.shape_columns):
            raise ValueError(
                f"{self.name}: shape {tuple(shape)} does not fit the columns {self.shape_columns}"
            )
        start = self._tar.tarstream.offset  # the file lags behind: tarfile's stream mode buffers
        with self._failing("writing"):
            self._tar.write({"__key__": key, **members})
        self.rows.append([key, start, self._tar.tarstream.offset - start, *(int(n) for n in shape)])

    def commit(self, **fields: Any) -> int:
        """Close the tar, make it appear, then write its index (with `fields` added); returns its bytes."""
        with self._failing("writing"):
            self._tar.close()
            self._file.flush()
            size = self._file.tell()
            with open(self._path, "rb") as f:
                crcs = [_crc32(f, offset, length) for _, offset, length, *_ in self.rows]
            self._stack.close()  # closes the file, then renames or uploads it
        write_json(
            join_url(self.folder, contract.index_name(self.name)),
            {
                "format": contract.INDEX_FORMAT,
                "shard": self.name,
                "bytes": size,
                **fields,
                "columns": ["key", "offset", "size", *self.shape_columns, "crc32"],
                "samples": [[*row, crc] for row, crc in zip(self.rows, crcs, strict=True)],
            },
        )
        return size

    @contextlib.contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        """A failed write (a full disk…) removes the temporary and says which tar, as a StorageError."""
        try:
            with storage_errors(join_url(self.folder, self.name), doing):
                yield
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Give up on this tar: its temporary is removed and nothing appears."""
        with contextlib.suppress(Exception):
            self._tar.close()
        self._stack.__exit__(RuntimeError, RuntimeError("discarded"), None)


def _crc32(f: Any, offset: int, length: int) -> int:
    f.seek(offset)
    crc = 0
    while length > 0:
        chunk = f.read(min(length, _CRC_CHUNK))
        if not chunk:
            raise OSError(f"{getattr(f, 'name', 'tar')}: ends before byte {offset + length}")
        crc = zlib.crc32(chunk, crc)
        length -= len(chunk)
    return crc
