"""Size-bounded, reproducible WebDataset tar shards, each committed atomically with its byte index."""

from __future__ import annotations

from dataclasses import dataclass

from eegfm.ingest import contract
from eegfm.ingest.indexed_tar import IndexedTarWriter
from eegfm.ingest.windows import Sample

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

    Each shard is an `IndexedTarWriter`: it appears only complete, then its index; the same samples
    always give the same bytes.
    """

    def __init__(
        self, out: str, dataset: str, split: str, task: int, target_bytes: int, first_index: int = 0
    ):
        self.out, self.dataset, self.split, self.task = out, dataset, split, task
        self.target_bytes = target_bytes
        self.index = first_index
        self._tar: IndexedTarWriter | None = None
        self._hours = 0.0
        self._bytes = 0

    def add(self, sample: Sample) -> ShardRecord | None:
        """Append a sample; returns the shard's record if this sample completed (and committed) a shard."""
        if self._tar is None:
            self._tar = IndexedTarWriter(self.out, self._name(), ("channels", "times"))
            self._hours, self._bytes = 0.0, 0
        self._tar.write(sample.key, sample.members, sample.shape)
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

    def _commit(self) -> ShardRecord:
        name, samples = self._name(), len(self._tar.rows)
        size = self._tar.commit()
        self._tar = None
        self.index += 1
        return ShardRecord(name, self.split, self.task, samples, round(self._hours, 6), size)
