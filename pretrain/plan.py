"""The epoch plan, pure numpy: which windows, in which micro-batches, for which rank and step.

Every epoch is planned from the sample table alone, identically on every rank and worker:

1. each dataset contributes its samples (all of them, or a weighted share of the epoch);
2. with `shuffle_block` = B > 0 (`BlockPlan`, the default), the shards are permuted by (seed, epoch) and
   taken B at a time: a *block*'s windows are shuffled together and cut into micro-batches before the
   next block's, so a node reads B shards front to back while a micro-batch still mixes the windows
   of every shard of its shape in the block; with B = 0 (`GlobalPlan`) every window of the epoch is
   shuffled with every other (random reads; for comparison);
3. the stream is cut into *micro-batches* of one EEG shape each (REVE's channel budget: `budget // C`
   windows of C channels), in the order they fill up, so no window is padded and no token attends to
   padding (the block plan empties its partly filled buckets at the end of each block);
4. optimizer step s of the epoch takes micro-batches [p + s·W·A, p + (s+1)·W·A) (W ranks, A accumulation
   steps), rank r the A of them at p + s·W·A + r·A. The last W·A − 1 micro-batches at most are left out,
   so every rank takes the same number of steps and DDP can never hang on an uneven split.

The loader's whole state is a `Cursor(epoch, position)`: micro-batches of the epoch already consumed by
finished optimizer steps. It does not depend on W, so a run can resume on another number of GPUs without
repeating or skipping a sample of the current epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from eegfm.errors import ConfigError, DataError
from eegfm.pretrain.table import ShardTable


class Cursor(NamedTuple):
    """Where the stream is: `position` micro-batches of `epoch` are consumed."""

    epoch: int = 0
    position: int = 0


def epoch_counts(sizes: np.ndarray, weights: Sequence[float | None]) -> np.ndarray:
    """Windows each dataset gives an epoch: all of them, or with weights w_d / Σw of an epoch as long as
    all datasets together, rounded by largest remainders so the epoch keeps its size exactly."""
    if all(w is None for w in weights):
        return sizes.astype(np.int64)
    if any(w is None for w in weights) or any(w <= 0 for w in weights):
        raise ConfigError(
            f"data.shards weights must all be given and positive, or all omitted: {list(weights)}"
        )
    exact = np.asarray(weights, dtype=np.float64) / sum(weights) * sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: sizes.sum() - counts.sum()]] += 1
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        d = int(empty[0])
        raise ConfigError(
            f"data.shards[{d}]: weight {weights[d]} is {weights[d] / sum(weights):.2g} of the weights, "
            f"{exact[d]:.2f} of an epoch's {int(sizes.sum())} windows, which rounds to none: give it a "
            f"weight of at least {sum(weights) / sizes.sum():.3g} (one window per epoch), or leave it out"
        )
    return counts


def epoch_order(table: ShardTable, weights: Sequence[float | None], seed: int, epoch: int) -> np.ndarray:
    """The epoch's samples (global ids) in stream order: each dataset's share (`epoch_counts`), drawn
    without replacement until it runs out, then from a fresh permutation, all shuffled together."""
    starts = table.dataset_starts
    sizes = np.diff(starts)
    counts = epoch_counts(sizes, weights)
    picks = []
    for d, (start, size, count) in enumerate(zip(starts, sizes, counts, strict=False)):
        rng = np.random.default_rng([seed, epoch, d])
        laps = -(-int(count) // int(size))
        picks.append(start + np.concatenate([rng.permutation(size) for _ in range(laps)])[:count])
    return np.random.default_rng([seed, epoch]).permutation(np.concatenate(picks))


def micro_batches(table: ShardTable, order: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the stream into same-shape micro-batches of `budget // channels` windows (at least one).

    A micro-batch takes its place in the plan when its last window arrives, as a per-shape bucket that
    fills up and is emitted would; the epoch's partly filled buckets come last. Returns (samples, bounds):
    micro-batch i is samples[bounds[i]:bounds[i + 1]].
    """
    channels, times = table.channels[order], table.times[order]
    shapes, group = np.unique(channels.astype(np.int64) << 32 | times, return_inverse=True)
    per_batch = np.maximum(budget // (shapes >> 32), 1)
    by_group = np.argsort(group, kind="stable")  # stream positions, grouped, in stream order
    g = group[by_group]
    counts = np.bincount(group, minlength=len(shapes))
    rank = np.arange(len(order)) - np.searchsorted(g, g)  # position within its shape group
    batches_per_group = -(-counts // per_batch)
    label = np.concatenate([[0], np.cumsum(batches_per_group)[:-1]])[g] + rank // per_batch[g]
    last = np.zeros(int(batches_per_group.sum()), dtype=np.int64)
    np.maximum.at(last, label, by_group)  # a batch is emitted when its last window arrives
    batch_rank = np.empty_like(last)
    batch_rank[np.argsort(last, kind="stable")] = np.arange(len(last))
    members = np.lexsort((by_group, batch_rank[label]))
    samples = order[by_group[members]]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(batch_rank[label], minlength=len(last)))])
    return samples, bounds


CHUNK = 1 << 21  # rows per pass over the table's per-window columns: bounds every temporary at REVE's scale
SHARD_ORDER = 0x73686172  # seed-sequence tags of the block plan's two shuffles, apart from the datasets'
BLOCK_WINDOWS = 0x626C6F63


@dataclass(frozen=True)
class TableLayout:
    """What the block plan needs of the table, per shard and per shape, computed once per process:
    one byte (two beyond 256 shapes) per window, the rest per shard."""

    shapes: np.ndarray  # int64 channels << 32 | times, sorted
    per_batch: np.ndarray  # int64 windows per micro-batch of each shape (`budget // channels`, at least 1)
    code: np.ndarray  # per window: its shape's index in `shapes` (uint8, or uint16 beyond 256 shapes)
    shard_starts: np.ndarray  # int64 (shards + 1): the rows of shard s are [starts[s], starts[s + 1])
    shard_shapes: np.ndarray  # int64 (shards, shapes): windows of each shape in each shard
    shard_dataset: np.ndarray  # int64: the dataset each shard belongs to


def _shape_keys(table: ShardTable, a: int, b: int) -> np.ndarray:
    return table.channels[a:b].astype(np.int64) << 32 | table.times[a:b]


def table_layout(table: ShardTable, budget: int) -> TableLayout:
    """The table's shapes and per-shard shape counts, read in chunks of `CHUNK` rows. Rows must be
    grouped by shard in shard order, as `load_table` writes them (checked)."""
    n, n_shards = len(table), len(table.shard_urls)
    found: set[int] = set()
    for a in range(0, n, CHUNK):
        found.update(np.unique(_shape_keys(table, a, a + CHUNK)).tolist())
    shapes = np.array(sorted(found), dtype=np.int64)
    code = np.empty(n, dtype=np.uint8 if len(shapes) <= 256 else np.uint16)
    shard_shapes = np.zeros(n_shards * len(shapes), dtype=np.int64)
    previous = 0
    for a in range(0, n, CHUNK):
        shard = table.shard[a : a + CHUNK]
        if shard[0] < previous or np.any(shard[1:] < shard[:-1]):
            raise DataError("the sample table's rows are not grouped by shard in shard order")
        previous = int(shard[-1])
        codes = np.searchsorted(shapes, _shape_keys(table, a, a + CHUNK))
        code[a : a + CHUNK] = codes
        shard_shapes += np.bincount(shard.astype(np.int64) * len(shapes) + codes, minlength=len(shard_shapes))
    shard_shapes = shard_shapes.reshape(n_shards, len(shapes))
    shard_starts = np.concatenate([[0], np.cumsum(shard_shapes.sum(1))])
    shard_dataset = np.searchsorted(np.asarray(table.dataset_starts), shard_starts[:-1], side="right") - 1
    per_batch = np.maximum(budget // (shapes >> 32), 1)
    return TableLayout(shapes, per_batch, code, shard_starts, shard_shapes, shard_dataset)


class GlobalPlan:
    """`data.shuffle_block=0`: every window of the epoch shuffled with every other (`epoch_order`), cut
    by `micro_batches`. Random reads and ≈ 16 bytes per window: kept to compare the block plan with."""

    def __init__(
        self, table: ShardTable, weights: Sequence[float | None], seed: int, epoch: int, budget: int
    ):
        self.samples, self.bounds = micro_batches(table, epoch_order(table, weights, seed, epoch), budget)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, index: int) -> np.ndarray:
        """Rows (global sample ids) of micro-batch `index`."""
        return self.samples[self.bounds[index] : self.bounds[index + 1]]


class BlockPlan:
    """`data.shuffle_block=B`: shards permuted by (seed, epoch), B to a block, each block's windows
    shuffled by (seed, epoch, block) and cut into micro-batches on their own.

    A dataset's weighted share (`epoch_counts`) is taken in *laps* over its shards: every full lap is a
    copy of each of its shards in the permutation, the last partial lap a copy holding only the windows
    a (seed, epoch, dataset) permutation picks. The plan stores per-shard arrays and the number of
    micro-batches of each block (counted from shape counts, without placing a window); a block's
    windows are placed only when one of its micro-batches is asked for. Memory: the layout's byte per
    window, one byte per window of a dataset with a partial lap, and a block or two.
    """

    def __init__(
        self,
        table: ShardTable,
        layout: TableLayout,
        weights: Sequence[float | None],
        seed: int,
        epoch: int,
        budget: int,
        block: int,
    ):
        self.table, self.layout, self.seed, self.epoch, self.budget = table, layout, seed, epoch, budget
        self.block = block
        starts = np.asarray(table.dataset_starts, dtype=np.int64)
        sizes = np.diff(starts)
        copies, partial = [], []
        self.chosen: dict[int, np.ndarray] = {}  # dataset → bool per window: in its partial lap
        partial_shapes = np.zeros_like(layout.shard_shapes)
        counts = epoch_counts(sizes, weights).tolist()
        for d, (size, count) in enumerate(zip(sizes.tolist(), counts, strict=True)):
            shards = np.flatnonzero(layout.shard_dataset == d)
            laps, rest = divmod(count, size)
            copies += [shards] * laps
            partial += [np.zeros(len(shards), dtype=bool)] * laps
            if rest:
                chosen = np.zeros(size, dtype=bool)
                chosen[np.random.default_rng([seed, epoch, d]).permutation(size)[:rest]] = True
                self.chosen[d] = chosen
                copies.append(shards)
                partial.append(np.ones(len(shards), dtype=bool))
                n_shapes = len(layout.shapes)
                for a in range(starts[d], starts[d + 1], CHUNK):
                    b = min(a + CHUNK, starts[d + 1])
                    pick = chosen[a - starts[d] : b - starts[d]]
                    key = table.shard[a:b][pick].astype(np.int64) * n_shapes + layout.code[a:b][pick]
                    partial_shapes += np.bincount(key, minlength=partial_shapes.size).reshape(-1, n_shapes)
        self.copy_shard = np.concatenate(copies)  # each copy's shard
        self.copy_partial = np.concatenate(partial)  # whether a copy holds only its dataset's chosen windows
        self.order = np.random.default_rng([seed, epoch, SHARD_ORDER]).permutation(len(self.copy_shard))
        ordered = self.order
        shapes = np.where(
            self.copy_partial[ordered, None],
            partial_shapes[self.copy_shard[ordered]],
            layout.shard_shapes[self.copy_shard[ordered]],
        )
        self.block_shapes = np.add.reduceat(shapes, np.arange(0, len(ordered), block), axis=0)
        batches = (-(-self.block_shapes // layout.per_batch)).sum(1)
        self.batch_starts = np.concatenate([[0], np.cumsum(batches)])
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.batch_starts[-1])

    @property
    def n_blocks(self) -> int:
        return len(self.block_shapes)

    def block_copies(self, k: int) -> np.ndarray:
        """Indexes (into `copy_shard`) of the shard copies of block k, in read order."""
        return self.order[k * self.block : (k + 1) * self.block]

    def block_of(self, index: int) -> int:
        return int(np.searchsorted(self.batch_starts, index, side="right")) - 1

    def block_rows(self, k: int) -> np.ndarray:
        """Block k's windows (global sample ids), shard copy after shard copy, not yet shuffled."""
        layout, parts = self.layout, []
        for c in self.block_copies(k).tolist():
            shard = int(self.copy_shard[c])
            a, b = int(layout.shard_starts[shard]), int(layout.shard_starts[shard + 1])
            rows = np.arange(a, b, dtype=np.int64)
            if self.copy_partial[c]:
                d = int(layout.shard_dataset[shard])
                first = self.table.dataset_starts[d]
                rows = rows[self.chosen[d][a - first : b - first]]
            parts.append(rows)
        return np.concatenate(parts)

    def block_batches(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(samples, bounds) of block k's micro-batches, as `micro_batches` gives them; the last two
        blocks asked for are kept (a loader walks the plan in order)."""
        if k not in self._blocks:
            rows = np.random.default_rng([self.seed, self.epoch, BLOCK_WINDOWS, k]).permutation(
                self.block_rows(k)
            )
            samples, bounds = micro_batches(self.table, rows, self.budget)
            expected = self.batch_starts[k + 1] - self.batch_starts[k]
            assert len(bounds) - 1 == expected, (k, len(bounds) - 1, expected)
            self._blocks = {j: v for j, v in self._blocks.items() if j == k - 1}
            self._blocks[k] = samples, bounds
        return self._blocks[k]

    def batch(self, index: int) -> np.ndarray:
        """Rows (global sample ids) of micro-batch `index` of the epoch."""
        k = self.block_of(index)
        samples, bounds = self.block_batches(k)
        j = index - int(self.batch_starts[k])
        return samples[bounds[j] : bounds[j + 1]]


def epoch_plan(
    table: ShardTable,
    layout: TableLayout | None,
    weights: Sequence[float | None],
    seed: int,
    epoch: int,
    budget: int,
    block: int,
) -> GlobalPlan | BlockPlan:
    """The epoch's plan: a pure function of (table, weights, seed, epoch, budget, block), the same on
    every rank and worker. `layout` (`table_layout`, block plans only) is computed once per process."""
    if block == 0:
        return GlobalPlan(table, weights, seed, epoch, budget)
    return BlockPlan(table, layout or table_layout(table, budget), weights, seed, epoch, budget, block)


@dataclass(frozen=True)
class Assignment:
    """One micro-batch of one rank: where it is in the plan, and the cursor once its step is done."""

    epoch: int
    index: int  # micro-batch index within the epoch's plan
    after_step: Cursor
    micro_step: int  # its place within its optimizer step: 0 … accumulation − 1
    step_end: bool  # the last micro-batch of its optimizer step (the optimizer steps after it)


def rank_assignments(
    n_batches: Callable[[int], int], start: Cursor, rank: int, world: int, accumulation: int
) -> Iterator[Assignment]:
    """This rank's micro-batches, epoch after epoch, from `start` (see the module's docstring)."""
    per_step = world * accumulation
    epoch, position = start.epoch, start.position
    while True:
        steps = (n_batches(epoch) - position) // per_step
        if steps <= 0 and position == 0:
            raise DataError(
                f"epoch {epoch} plans {n_batches(epoch)} micro-batches, fewer than one step needs "
                f"({world} ranks × {accumulation} accumulation): lower data.channel_budget or use more data"
            )
        for s in range(steps):
            base = position + s * per_step
            done = Cursor(epoch + 1, 0) if s == steps - 1 else Cursor(epoch, base + per_step)
            for a in range(accumulation):
                yield Assignment(epoch, base + rank * accumulation + a, done, a, a == accumulation - 1)
        epoch, position = epoch + 1, 0
