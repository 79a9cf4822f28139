"""The epoch plan, pure numpy: which windows, in which micro-batches, for which rank and step.

Every epoch is planned from the sample table alone, identically on every rank and worker:

1. each dataset contributes its samples (all of them, or a weighted share of the epoch), shuffled by
   (seed, epoch); the datasets' picks are then shuffled together;
2. the stream is cut into *micro-batches* of one EEG shape each (REVE's channel budget: `budget // C`
   windows of C channels), in the order they fill up, so no window is padded and no token attends to
   padding;
3. optimizer step s of the epoch takes micro-batches [p + s·W·A, p + (s+1)·W·A) (W ranks, A accumulation
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
