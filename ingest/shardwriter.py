"""Size-bounded, reproducible WebDataset tar shards, each committed atomically with its byte index."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import webdataset as wds

from eegfm.ingest import contract
from eegfm.ingest.recording import Sample
from eegfm.storage import atomic_write, join_url, write_json

_TAR_BLOCK = 512


@dataclass
class ShardRecord:
    url: str  # relative to OUT
    split: str
    task: int
    samples: int
    hours: float
    bytes: int


class ShardWriter:
    """One task's shards of one split: `<dataset>-<split>-<task>-NNNNNN.tar` under `out`.

    A shard is written to a temporary name and becomes visible only when complete; its index
    (`contract.index_name`) is written just before, so a visible shard always has one. Tar headers carry
    no time, user or host, so the same samples always give the same bytes.
    """

    def __init__(
        self, out: str, dataset: str, split: str, task: int, target_bytes: int, first_index: int = 0
    ):
        self.out, self.dataset, self.split, self.task = out, dataset, split, task
        self.target_bytes = target_bytes
        self.index = first_index
        self._stack: contextlib.ExitStack | None = None
        self._tar: wds.TarWriter | None = None
        self._rows: list[list] = []
        self._hours = 0.0
        self._bytes = 0

    def add(self, sample: Sample) -> ShardRecord | None:
        """Append a sample; returns the shard's record if this sample completed (and committed) a shard."""
        if self._tar is None:
            self._open()
        start = self._tar.tarstream.offset  # the file lags behind: tarfile's stream mode buffers
        self._tar.write({"__key__": sample.key, **sample.members})
        self._rows.append([sample.key, start, self._tar.tarstream.offset - start, *sample.shape])
        self._hours += sample.hours
        self._bytes += sum(
            _TAR_BLOCK + -(-len(v) // _TAR_BLOCK) * _TAR_BLOCK for v in sample.members.values()
        )
        return self._commit() if self._bytes >= self.target_bytes else None

    def close(self) -> ShardRecord | None:
        """Commit the last, partly filled shard (if any)."""
        return self._commit() if self._tar is not None else None

    def _name(self) -> str:
        return contract.shard_name(self.dataset, self.split, self.task, self.index)

    def _open(self) -> None:
        self._stack = contextlib.ExitStack()
        path = self._stack.enter_context(atomic_write(join_url(self.out, self._name())))
        self._fileobj = self._stack.enter_context(open(path, "wb"))  # noqa: SIM115 - closed in _commit
        self._tar = wds.TarWriter(
            self._fileobj, encoder=False, user="", group="", mtime=0, format="PAX_FORMAT"
        )
        self._rows, self._hours, self._bytes = [], 0.0, 0

    def _commit(self) -> ShardRecord:
        self._tar.close()
        size = self._fileobj.tell()
        name = self._name()
        record = ShardRecord(name, self.split, self.task, len(self._rows), round(self._hours, 6), size)
        write_json(
            join_url(self.out, contract.index_name(name)),
            {
                "format": contract.INDEX_FORMAT,
                "shard": name,
                "bytes": size,
                "columns": ["key", "offset", "size", "channels", "times"],
                "samples": self._rows,
            },
        )
        self._stack.close()  # closes the file, then renames or uploads it
        self._stack = self._tar = None
        self.index += 1
        return record
