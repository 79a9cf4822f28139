"""The pretraining data stream: this rank's micro-batches of the epoch plan, read, checked and decoded.

Samples are read by byte range (the shard index gives it): in place from local shards, from the node's
shard cache (`shard_cache.py`) when the shards live on object storage, which is then read whole, once
per node. Each sample's bytes are checked against the index's CRC-32 before they are decoded. A bad
sample stops the run with one line naming the shard and the sample: the error travels from the loader
worker to the training process as data (`StreamFailure`), since an exception raised in a worker
reaches the trainer wrapped in the worker's traceback.
"""

from __future__ import annotations

import os
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
from eegfm.pretrain.decode import RecordingStats, check_crc, decode_window, token_member
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


def select_channels(
    batch: dict[str, Any], names: Sequence[tuple[str, ...]], wanted: Sequence[str], where: str
) -> dict[str, Any]:
    """The batch with exactly the `wanted` channels of each window, in that order (`data.channels`, for
    models with a fixed montage such as FEMBA). A window lacking any of them is dropped, never padded, and
    counted in `skipped_windows`; the batch may end up with no window. `names`: each window's channel
    names; a window whose metadata names none is a `DataError` (`where` names the micro-batch)."""
    keep, index = [], []
    for i, window_names in enumerate(names):
        if not window_names:
            raise DataError(
                f"{where}: sample {batch['keys'][i]} names no channels in its metadata, so "
                "data.channels cannot select from it; re-ingest it with this version of eegfm"
            )
        lookup = {name: j for j, name in enumerate(window_names)}
        if all(name in lookup for name in wanted):
            keep.append(i)
            index.append([lookup[name] for name in wanted])
    rows = torch.tensor(keep, dtype=torch.long)[:, None]
    columns = torch.tensor(index, dtype=torch.long).reshape(len(keep), len(wanted))
    selected = {"codes": batch["codes"][rows, columns]} if "codes" in batch else {}
    return {
        **batch,
        **selected,
        "eeg": batch["eeg"][rows, columns],
        "positions": batch["positions"][rows, columns],
        "keys": [batch["keys"][i] for i in keep],
        "skipped_windows": len(names) - len(keep),
    }


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
        cache_limit_gb: float | None = DataConfig.cache_limit_gb,
        cache_lookahead: int = 2,
        scale_uv: float | None = None,
        channels: Sequence[str] = (),
    ):
        """`scale_uv`: None z-scores each window with its recording's statistics (`data.normalise=zscore`);
        a number divides µV by it instead (`data.normalise=scale`). Either is then clipped at ±clip.
        `channels`: if given, each window is cut to those channels in that order (`select_channels`)."""
        self.table, self.weights, self.seed, self.budget, self.clip = table, list(weights), seed, budget, clip
        self.start, self.rank, self.world, self.accumulation = start, rank, world, accumulation
        self.shuffle_block, self.transform, self.scale_uv = shuffle_block, transform, scale_uv
        self.channels = tuple(channels)
        self._layout: TableLayout | None = None
        self._plans: dict[int, GlobalPlan | BlockPlan] = {}
        self.cache_dir, self.cache_limit_gb, self.cache_lookahead = cache_dir, cache_limit_gb, cache_lookahead
        self._cache: ShardCache | None = None  # made in the process that reads (after the workers fork)
        self._looked_at: tuple[int, int] | None = None  # (epoch, block) whose future the cache was told
        self._stats = RecordingStats()  # each recording's statistics and positions, parsed once
        self._local_urls: list[str] | None = None  # shards, then token shards (read in place when local)
        self._local_paths: list[str] | None = None  # the same as local paths
        self._remote = bool(table.shard_urls) and is_remote(table.shard_urls[0])

    def cache(self) -> ShardCache | None:
        """The node's shard cache, for remote shards only (local shards are read in place). Token shards
        share it: token shard of shard s is cache id `len(shard_urls) + s`."""
        if self._remote and self._cache is None:
            table = self.table
            urls, sizes = list(table.shard_urls), list(table.shard_bytes)
            if table.token_urls is not None:
                urls += table.token_urls
                sizes += table.token_bytes or []
            limit = None if self.cache_limit_gb is None else int(self.cache_limit_gb * 1e9)
            self._cache = ShardCache(self.cache_dir, limit, urls, sizes)
        return self._cache

    def _cache_ids(self, shards: np.ndarray) -> list[int]:
        """The cache ids a set of shards' windows are read from: their shards, and their token shards."""
        ids = [int(s) for s in dict.fromkeys(shards.tolist())]
        if self.table.token_urls is not None:
            ids += [len(self.table.shard_urls) + s for s in ids]
        return ids

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
        slot = self.rank * workers + worker  # spreads the node's prefetches over different shards
        while True:
            try:
                if not ahead:
                    ahead.append(next(mine))
                if self.cache() is not None:
                    while len(ahead) < 1 + self.cache_lookahead:
                        ahead.append(next(mine))
                    self._look_ahead(ahead, slot)
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

    def _look_ahead(self, ahead: deque[Assignment], slot: int) -> None:
        """Tell the cache the node's future and fetch the next shards before they are read.

        With blocks, the future is the current block's shards, then the next block's — the same on every
        process of the node, since every rank reads from every shard of a block — and the next block is
        prefetched while this one is read, each process starting at a different shard. Without blocks
        (a global shuffle) it is the shards of this worker's next micro-batches."""
        cache = self.cache()
        assert cache is not None
        plan = self.plan(ahead[0].epoch)
        if isinstance(plan, BlockPlan):
            block = plan.block_of(ahead[0].index)
            key = (ahead[0].epoch, block)
            if key == self._looked_at:
                return
            self._looked_at = key
            groups = [
                self._cache_ids(plan.copy_shard[plan.block_copies(k)])
                for k in range(block, min(block + 2, plan.n_blocks))
            ]
            cache.plan_ahead(groups)
            order = []
            for group in groups:  # the block being read first, then the next
                turn = (slot * 37) % len(group)
                order += group[turn:] + group[:turn]
            cache.prefetch(order)
            return
        groups = [self._cache_ids(self.table.shard[self.plan(a.epoch).batch(a.index)]) for a in ahead]
        cache.plan_ahead(groups)
        cache.prefetch([s for group in groups for s in group])

    def read(self, assignment: Assignment) -> dict[str, Any]:
        rows = self.plan(assignment.epoch).batch(assignment.index)
        table = self.table
        urls = [table.shard_urls[i] for i in table.shard[rows]]
        starts = table.offset[rows]
        cache = self.cache()
        if cache is None:
            blobs = self._read_in_place(table.shard[rows], starts, table.size[rows])
            for row, blob in zip(rows.tolist(), blobs, strict=True):
                check_crc(blob, table.crc[row], partial(_sample_location, table, row))
        else:
            where = partial(_sample_location_in, table, rows)
            blobs = _read_cached(cache, table.shard[rows], starts, table.size[rows], table.crc[rows], where)
        eeg = torch.empty((len(rows), int(table.channels[rows[0]]), int(table.times[rows[0]])))
        decoded = [
            decode_window(
                blob,
                f"{url} @ byte {start}",
                self.clip,
                out,
                self._stats,
                url.rsplit("/", 1)[0],
                self.scale_uv,
            )
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
            batch["codes"] = self._read_codes(rows, cache)
        if self.channels:
            where = f"micro-batch {assignment.index} of epoch {assignment.epoch}"
            batch = select_channels(batch, [d[2] for d in decoded], self.channels, where)
        if self.transform is not None:
            batch = self.transform(batch, batch_generator(self.seed, assignment.epoch, assignment.index))
        return batch

    def _read_in_place(self, ids: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> list[bytearray]:
        """Members from local files (sample i: file `ids[i]`, a cache id: shards, then token shards), each
        file opened once per micro-batch, each member read with one `preadv` straight into the buffer
        the decoder works in. No fsspec per sample: its URL parsing cost more than the read."""
        table = self.table
        if self._local_urls is None:
            self._local_urls = table.shard_urls + (table.token_urls or [])
            self._local_paths = [fsspec.core.url_to_fs(u)[1] for u in self._local_urls]
        assert self._local_paths is not None
        starts_, sizes_ = starts.tolist(), sizes.tolist()
        blobs = [bytearray(size) for size in sizes_]
        for file in dict.fromkeys(ids.tolist()):
            url = self._local_urls[file]
            try:
                handle = os.open(self._local_paths[file], os.O_RDONLY)
            except OSError as e:
                raise DataError(f"{url}: cannot open the shard ({e})") from None
            try:
                for i in np.flatnonzero(ids == file).tolist():
                    got = os.preadv(handle, [blobs[i]], starts_[i])
                    if got != sizes_[i]:
                        where = f"{url} @ byte {starts_[i]}"
                        raise DataError(f"{where}: {got} of {sizes_[i]} bytes: the shard is truncated")
            finally:
                os.close(handle)
        return blobs

    def _read_codes(self, rows: np.ndarray, cache: ShardCache | None) -> torch.Tensor:
        """The micro-batch's code ids from the token shards (`eegfm tokenize`), checked like samples."""
        table = self.table
        assert table.token_urls is not None and table.token_offset is not None
        assert table.token_size is not None and table.token_crc is not None
        starts, sizes, crcs = table.token_offset[rows], table.token_size[rows], table.token_crc[rows]
        location = partial(_token_location_in, table, rows)
        ids = table.shard[rows].astype(np.int64) + len(table.shard_urls)
        if cache is None:
            blobs = self._read_in_place(ids, starts, sizes)
            for position, blob in enumerate(blobs):
                check_crc(blob, crcs[position], partial(location, position))
        else:
            blobs = _read_cached(cache, ids, starts, sizes, crcs, location)
        return torch.stack([token_member(blob, location(i)) for i, blob in enumerate(blobs)]).long()


def _token_location_in(table: ShardTable, rows: np.ndarray, position: int) -> str:
    row = int(rows[position])
    return f"{table.token_urls[table.shard[row]]} @ byte {table.token_offset[row]}"  # type: ignore[index]


def _sample_location_in(table: ShardTable, rows: np.ndarray, position: int) -> str:
    return _sample_location(table, int(rows[position]))


def _sample_location(table: ShardTable, row: int) -> str:
    url = table.shard_urls[table.shard[row]]
    return f"{url} @ byte {table.offset[row]} (sample {sample_key(table, row)})"


def _read_cached(
    cache: ShardCache,
    ids: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    crcs: np.ndarray,
    location: Callable[[int], str],
) -> list[bytes]:
    """A micro-batch's members (sample i: cache id `ids[i]`, bytes [starts[i], starts[i] + sizes[i])) from
    the node's cached shards, each checked against its CRC-32 once. A mismatch is first blamed on the
    cached copy: it is fetched again once, and only a mismatch in the fresh copy stops the run
    (`check_crc`'s DataError, naming `location(i)`)."""
    blobs: list[bytes] = [b""] * len(ids)
    for shard in dict.fromkeys(ids.tolist()):
        where = np.flatnonzero(ids == shard)
        picked_starts, picked_sizes = starts[where].tolist(), sizes[where].tolist()
        got = cache.read(shard, picked_starts, picked_sizes)
        if any(zlib.crc32(b) != int(c) for b, c in zip(got, crcs[where], strict=True)):
            got = cache.read(shard, picked_starts, picked_sizes, refetch=True)
            for position, blob in zip(where.tolist(), got, strict=True):
                check_crc(blob, crcs[position], partial(location, position))
        for position, blob in zip(where.tolist(), got, strict=True):
            blobs[position] = blob
    return blobs


def read_ranges(urls: list[str], starts: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """Byte ranges of (possibly remote) files, fetched together: concurrently on object storage. For
    readers of a few thousand windows (the probe's task shards); the training stream reads in place or
    through the node's shard cache. A range that comes back short is a `DataError` naming it."""
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
