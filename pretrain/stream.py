"""The pretraining data stream: this rank's micro-batches of the epoch plan, read, checked and decoded.

Samples are read by byte range (the shard index gives it), all of a micro-batch's at once, so object
storage serves them concurrently; each sample's bytes are checked against the index's CRC-32 before they
are decoded. A bad sample stops the run with one line naming the shard and the sample: the error travels
from the loader worker to the training process as data (`StreamFailure`), since an exception raised in a
worker reaches the trainer wrapped in the worker's traceback.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import fsspec
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from eegfm.errors import DataError, EegfmError
from eegfm.pretrain.config import DataConfig
from eegfm.pretrain.decode import check_crc, decode_sample, token_member
from eegfm.pretrain.plan import (
    Assignment,
    BlockPlan,
    Cursor,
    GlobalPlan,
    TableLayout,
    epoch_plan,
    rank_assignments,
    table_layout,
)
from eegfm.pretrain.shard_cache import ShardCache, is_remote
from eegfm.pretrain.table import ShardTable, sample_key

BatchTransform = Callable[[dict[str, Any], torch.Generator], dict[str, Any]]
FAILURE = "stream_failure"  # key of the one-entry dict a worker yields instead of a batch it cannot read


def begins_step(batch: dict[str, Any]) -> bool:
    """Whether a micro-batch is the first of its optimizer step (a step boundary lies before it)."""
    return batch["micro_step"] == 0


def completes_step(batch: dict[str, Any]) -> bool:
    """Whether the optimizer steps after this micro-batch: the one test every callback uses."""
    return bool(batch["step_end"])


def raise_if_failed(batch: dict[str, Any]) -> None:
    """In the training process: re-raise a worker's `DataError` as the one line it is."""
    if FAILURE in batch:
        raise DataError(batch[FAILURE])


class ShardStream(IterableDataset):
    """This rank's micro-batches as dicts: `eeg` (B, C, T), `positions` (B, C, 3), `keys`, and where the
    batch sits in the plan (`epoch`, `index`, `cursor` = the stream's state once its step is done,
    `micro_step` = its place in its optimizer step, `step_end` = whether the optimizer steps after it).

    DataLoader workers take this rank's micro-batches round-robin, which is the order in which the
    DataLoader hands them out, so the stream is the same with any number of workers. `transform` runs in
    the workers (the MAE's masks), with a generator seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        table: ShardTable,
        weights: Sequence[float | None],
        *,
        seed: int,
        budget: int,
        clip: float,
        start: Cursor,
        rank: int,
        world: int,
        accumulation: int,
        shuffle_block: int = DataConfig.shuffle_block,
        transform: BatchTransform | None = None,
        cache_dir: str = DataConfig.cache_dir,
        cache_limit_gb: float = DataConfig.cache_limit_gb,
        cache_lookahead: int = 2,
    ):
        self.table, self.weights, self.seed, self.budget, self.clip = table, list(weights), seed, budget, clip
        self.start, self.rank, self.world, self.accumulation = start, rank, world, accumulation
        self.shuffle_block, self.transform = shuffle_block, transform
        self._layout: TableLayout | None = None
        self._plans: dict[int, GlobalPlan | BlockPlan] = {}
        self.cache_dir, self.cache_limit_gb, self.cache_lookahead = cache_dir, cache_limit_gb, cache_lookahead
        self._cache: ShardCache | None = None  # made in the process that reads (after the workers fork)
        self._remote = bool(table.shard_urls) and is_remote(table.shard_urls[0])

    def cache(self) -> ShardCache | None:
        """The node's shard cache, for remote shards only (local shards are read in place)."""
        if self._remote and self._cache is None:
            limit = int(self.cache_limit_gb * 1e9)
            self._cache = ShardCache(self.cache_dir, limit, self.table.shard_urls, self.table.shard_bytes)
        return self._cache

    def plan(self, epoch: int) -> GlobalPlan | BlockPlan:
        """The epoch's plan (`epoch_plan`); the last two epochs are kept."""
        if epoch not in self._plans:
            if self.shuffle_block and self._layout is None:
                self._layout = table_layout(self.table, self.budget)
            self._plans = {e: p for e, p in self._plans.items() if e == epoch - 1}
            self._plans[epoch] = epoch_plan(
                self.table, self._layout, self.weights, self.seed, epoch, self.budget, self.shuffle_block
            )
        return self._plans[epoch]

    def assignments(self) -> Iterator[Assignment]:
        return rank_assignments(
            lambda epoch: len(self.plan(epoch)), self.start, self.rank, self.world, self.accumulation
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = (a for k, a in enumerate(self.assignments()) if k % workers == worker)
        ahead: deque[Assignment] = deque()
        while True:
            try:
                if not ahead:
                    ahead.append(next(mine))
                cache = self.cache()
                if cache is not None:
                    # The plan is the future: fetch the shards of this worker's next micro-batches now.
                    while len(ahead) < 1 + self.cache_lookahead:
                        ahead.append(next(mine))
                    upcoming = [self.plan(a.epoch).batch(a.index) for a in ahead]
                    cache.upcoming = [int(s) for rows in upcoming for s in self.table.shard[rows]]
                    cache.prefetch(cache.upcoming)
                assignment = ahead.popleft()
            except StopIteration:
                if not ahead:
                    return
                assignment = ahead.popleft()
            try:
                yield self.read(assignment)
            except EegfmError as e:
                yield {FAILURE: str(e)}
                return

    def read(self, assignment: Assignment) -> dict[str, Any]:
        rows = self.plan(assignment.epoch).batch(assignment.index)
        table = self.table
        urls = [table.shard_urls[i] for i in table.shard[rows]]
        starts = table.offset[rows]
        cache = self.cache()
        if cache is None:
            blobs = read_ranges(urls, starts, table.size[rows])
            for row, blob in zip(rows.tolist(), blobs, strict=True):
                check_crc(blob, table.crc[row], partial(_sample_location, table, row))
        else:
            blobs = _read_cached(cache, table, rows)  # checked there, with one refetch of a bad copy
        eeg = torch.empty((len(rows), int(table.channels[rows[0]]), int(table.times[rows[0]])))
        decoded = [
            decode_sample(blob, f"{url} @ byte {start}", self.clip, out)
            for blob, url, start, out in zip(blobs, urls, starts.tolist(), eeg, strict=True)
        ]
        batch = {
            "eeg": eeg,
            "positions": torch.from_numpy(np.stack([d[1] for d in decoded])),
            "keys": [d[0] for d in decoded],
            "epoch": assignment.epoch,
            "index": assignment.index,
            "cursor": assignment.after_step,
            "micro_step": assignment.micro_step,
            "step_end": assignment.step_end,
        }
        if table.token_urls is not None:
            token_urls = [table.token_urls[i] for i in table.shard[rows]]
            token_starts = table.token_offset[rows]
            blobs = read_ranges(token_urls, token_starts, table.token_size[rows])
            codes = []
            for blob, url, start, crc in zip(
                blobs, token_urls, token_starts.tolist(), table.token_crc[rows], strict=True
            ):
                where = f"{url} @ byte {start}"
                check_crc(blob, crc, partial(str, where))
                codes.append(token_member(blob, where))
            batch["codes"] = torch.stack(codes).long()
        if self.transform is not None:
            batch = self.transform(batch, batch_generator(self.seed, assignment.epoch, assignment.index))
        return batch


def _sample_location(table: ShardTable, row: int) -> str:
    url = table.shard_urls[table.shard[row]]
    return f"{url} @ byte {table.offset[row]} (sample {sample_key(table, row)})"


def _read_cached(cache: ShardCache, table: ShardTable, rows: np.ndarray) -> list[bytes]:
    """A micro-batch's samples from the node's cached shards, each checked against its CRC-32 once. A
    mismatch is first blamed on the cached copy: it is fetched again once, and only a mismatch in the
    fresh copy stops the run (`check_crc`'s DataError)."""
    blobs: list[bytes] = [b""] * len(rows)
    shards = table.shard[rows]
    for shard in dict.fromkeys(shards.tolist()):
        where = np.flatnonzero(shards == shard)
        picked = rows[where]
        starts, sizes = table.offset[picked].tolist(), table.size[picked].tolist()
        got = cache.read(shard, starts, sizes)
        if any(zlib.crc32(b) != int(c) for b, c in zip(got, table.crc[picked], strict=True)):
            got = cache.read(shard, starts, sizes, refetch=True)
            for row, blob in zip(picked.tolist(), got, strict=True):
                check_crc(blob, table.crc[row], partial(_sample_location, table, row))
        for position, blob in zip(where.tolist(), got, strict=True):
            blobs[position] = blob
    return blobs


def read_ranges(urls: list[str], starts: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """Byte ranges of (possibly remote) files, fetched together: concurrently on object storage. A range
    that comes back short (a shard truncated since start-up) is a `DataError` naming it."""
    fs, _ = fsspec.core.url_to_fs(urls[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in urls]
    ends = (starts + sizes).tolist()
    blobs = fs.cat_ranges(paths, starts.tolist(), ends)
    for url, start, size, blob in zip(urls, starts.tolist(), sizes.tolist(), blobs, strict=True):
        if isinstance(blob, Exception):
            raise DataError(f"{url} @ byte {start}: cannot read {size} bytes ({blob})")
        if len(blob) != size:
            raise DataError(f"{url} @ byte {start}: {len(blob)} of {size} bytes: the shard is truncated")
    return blobs


def batch_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A generator owned by one micro-batch: the same masks and jitter after any resume, on any world size."""
    entropy = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
