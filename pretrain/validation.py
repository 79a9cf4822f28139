"""Validation loss during pretraining: the objective on a fixed set of held-out windows, every N steps.

The val set is chosen once from the `eval.split` shards (held-out subjects): all of its windows, or
`eval.val_windows` of them drawn with `eval.seed`; grouped by shape and cut into batches of one channel
count under `data.channel_budget`, like the training stream; each batch's masks come from its own
generator (`batch_generator(eval.seed, 0, batch, VALIDATION_STREAM)`), so every evaluation sees the same
windows with the same masks. Batch k is evaluated by rank k mod W; ranks with fewer batches run a repeat
whose result is not counted (FSDP needs every rank to run the same forwards), and the per-batch sums are
reduced as a table with one row per batch, summed in batch order, so the result is the same to the bit
on any number of ranks.

Evaluation never disturbs training: it reads its own table (not the stream, whose cursor it leaves
alone), draws from no global random generator (checked: a draw stops the run), runs in eval mode without
gradients and restores each module's mode, so a run with evaluation trains exactly as one without, and a
killed and resumed run reproduces both curves bit for bit.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from eegfm.errors import DataError
from eegfm.pretrain.callbacks.throughput import Throughput
from eegfm.pretrain.config import EvalConfig, PretrainConfig
from eegfm.pretrain.datamodule import dataset_specs
from eegfm.pretrain.decode import check_crc, decode_window
from eegfm.pretrain.stream import (
    BatchTransform,
    batch_generator,
    completes_step,
    read_ranges,
    select_channels,
)
from eegfm.pretrain.table import DatasetSpec, ShardTable, load_table, manifest_url, sample_key
from eegfm.storage import read_json

# `batch_generator` stream of the val batches' masks: the training stream draws with streams 0 (loader
# masks) and 1 (position jitter), so no val batch ever shares a generator with a training micro-batch.
VALIDATION_STREAM = 1000


@dataclass
class ValSet:
    """The fixed val windows of a run, as batches of table rows (one shape each)."""

    table: ShardTable
    """The `eval.split` windows of every dataset (a table of their own, not the training stream's)."""
    batches: list[np.ndarray]
    """Table rows of each batch, in evaluation order; every window once."""
    seed: int
    """eval.seed: each batch's masks come from (seed, batch index)."""
    clip: float
    """data.clip, as in training."""
    scale_uv: float | None
    """data.normalise as in training: None z-scores, a number divides µV by it."""
    split: str
    """The split's name, for messages."""
    channels: tuple[str, ...] = ()
    """data.channels as in training: each window cut to these channels (windows lacking one dropped)."""

    @property
    def windows(self) -> int:
        return sum(len(rows) for rows in self.batches)

    def rank_slots(self, rank: int, world: int) -> list[tuple[int, bool]]:
        """(batch index, counted) for each forward rank `rank` runs: batches rank, rank + W, …, then
        uncounted repeats until every rank has run as many as the busiest."""
        slots = -(-len(self.batches) // world)
        return [
            (k % len(self.batches), k < len(self.batches)) for k in range(rank, rank + slots * world, world)
        ]

    def read(self, index: int, transform: BatchTransform | None) -> dict[str, Any]:
        """Batch `index`: its windows read, checked against their CRC-32 and decoded as the stream does,
        with the objective's masks drawn from the batch's own generator."""
        table, rows = self.table, self.batches[index]
        urls = [table.shard_urls[i] for i in table.shard[rows]]
        starts = table.offset[rows]
        blobs = read_ranges(urls, starts, table.size[rows])
        for row, blob in zip(rows.tolist(), blobs, strict=True):
            check_crc(blob, table.crc[row], partial(_location, table, row))
        eeg = torch.empty((len(rows), int(table.channels[rows[0]]), int(table.times[rows[0]])))
        decoded = [
            decode_window(blob, f"{url} @ byte {start}", self.clip, out, scale_uv=self.scale_uv)
            for blob, url, start, out in zip(blobs, urls, starts.tolist(), eeg, strict=True)
        ]
        batch = {
            "eeg": eeg,
            "positions": torch.from_numpy(np.stack([d[1] for d in decoded])),
            "keys": [d[0] for d in decoded],
            "generator": batch_generator(self.seed, 0, index, stream=VALIDATION_STREAM + 1),
        }
        if self.channels:
            batch = select_channels(batch, [d[2] for d in decoded], self.channels, f"val batch {index}")
        if transform is not None:
            batch = transform(batch, batch_generator(self.seed, 0, index, stream=VALIDATION_STREAM))
        return batch


def _location(table: ShardTable, row: int) -> str:
    return (
        f"{table.shard_urls[table.shard[row]]} @ byte {table.offset[row]} (sample {sample_key(table, row)})"
    )


def choose_rows(total: int, count: int, seed: int) -> np.ndarray:
    """Rows of the val set among `total`: all of them, or `count` drawn without replacement with `seed`,
    in table order."""
    if total <= count:
        return np.arange(total)
    rng = np.random.default_rng(np.random.SeedSequence([seed, VALIDATION_STREAM]))
    return np.sort(rng.choice(total, size=count, replace=False))


def shape_batches(table: ShardTable, rows: np.ndarray, budget: int) -> list[np.ndarray]:
    """`rows` grouped by (channels, times), each group cut into batches of budget // channels windows
    (at least one): no padding, as in training."""
    channels, times = table.channels[rows], table.times[rows]
    batches = []
    for c, t in sorted(set(zip(channels.tolist(), times.tolist(), strict=True))):
        group = rows[(channels == c) & (times == t)]
        size = max(1, budget // c)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches


def load_val_set(cfg: PretrainConfig) -> ValSet:
    """The run's val set, from the `eval.split` shards of every dataset in `data.shards`; a dataset
    without that split is a one-line `DataError` naming its manifest and what to do."""
    urls = [spec.url for spec in dataset_specs(cfg.data.shards)]
    split = cfg.eval.split
    for url in urls:
        manifest, _ = manifest_url(url)
        try:
            shards = read_json(manifest)["shards"]
        except FileNotFoundError:
            raise DataError(f"{manifest}: no manifest (is ingest finished? `eegfm merge`)") from None
        if not any(s["split"] == split and s["samples"] for s in shards):
            raise DataError(
                f"{manifest}: no window of split {split!r} to compute val_loss on "
                f"(eval.every_n_steps={cfg.eval.every_n_steps}): ingest with held-out subjects "
                f"(e.g. splits.{split}=0.1), choose another eval.split, or set eval.every_n_steps=0"
            )
    table = load_table([DatasetSpec(url) for url in urls], split)
    rows = choose_rows(len(table), cfg.eval.val_windows, cfg.eval.seed)
    batches = shape_batches(table, rows, cfg.data.channel_budget)
    return ValSet(
        table, batches, cfg.eval.seed, cfg.data.clip, cfg.data.scale, split, tuple(cfg.data.channels)
    )


Forward = Callable[[dict[str, Any]], dict[str, torch.Tensor]]
Reduce = Callable[[torch.Tensor], torch.Tensor]


def evaluate(
    module: Any,
    val: ValSet,
    *,
    rank: int = 0,
    world: int = 1,
    forward: Forward | None = None,
    reduce: Reduce | None = None,
) -> dict[str, float]:
    """The objective's val metrics (`module.evaluate_batch` per batch, `module.val_metrics` at the end)
    over `val`, this rank's share of it evaluated here. `forward` runs one batch (default: the module's
    `evaluate_batch`; under FSDP, through the wrapper); `reduce` sums a tensor over the ranks.

    Scalars (a sum over the batch's windows) go into a table with one row per batch, so each row holds
    one rank's value and zeros elsewhere and the reduced table is summed in batch order: the same bits on
    any number of ranks. Other tensors (code counts) are integer-valued and summed as they come."""
    forward = forward or module.evaluate_batch
    device = module.device
    per_batch: dict[str, torch.Tensor] = {}
    totals: dict[str, torch.Tensor] = {}
    transform = module.batch_transform()
    for index, counted in val.rank_slots(rank, world):
        batch = move_data_to_device(val.read(index, transform), device)
        for name, value in forward(batch).items():
            # Every rank makes every table, even one whose slots are all repeats: the reductions match.
            value = value.detach().to(torch.float64)
            if value.dim() == 0:
                table = per_batch.setdefault(name, torch.zeros(len(val.batches), dtype=torch.float64))
                if counted:
                    table[index] = value.cpu()
            else:
                total = totals.setdefault(name, torch.zeros_like(value))
                if counted:
                    total += value
    if reduce is not None:
        per_batch = {name: reduce(t.to(device)).cpu() for name, t in per_batch.items()}
        totals = {name: reduce(t.to(device)).cpu() for name, t in totals.items()}
    sums = {name: t.sum() for name, t in per_batch.items()}
    sums.update({name: t.cpu() for name, t in totals.items()})
    return module.val_metrics(sums, val.windows)


def _global_states() -> tuple:
    cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else ()
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _same_states(a: tuple, b: tuple) -> bool:
    (torch_a, cuda_a, numpy_a, python_a), (torch_b, cuda_b, numpy_b, python_b) = a, b
    return (
        torch.equal(torch_a, torch_b)
        and len(cuda_a) == len(cuda_b)
        and all(torch.equal(x, y) for x, y in zip(cuda_a, cuda_b, strict=True))
        and all(np.array_equal(x, y) for x, y in zip(numpy_a, numpy_b, strict=True))
        and python_a == python_b
    )


@dataclass
class Evaluation(pl.Callback):
    """Evaluates on the val set after every `every_n_steps`-th optimizer step and logs `val_*` to the
    loggers (metrics.csv, TensorBoard) in the finished step's row."""

    val: ValSet
    """The fixed val batches."""
    every_n_steps: int
    """Optimizer steps between evaluations."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not completes_step(batch) or trainer.global_step % self.every_n_steps:
            return
        started = time.perf_counter()
        metrics = self.run(trainer, pl_module)
        seconds = time.perf_counter() - started
        for callback in trainer.callbacks:
            if isinstance(callback, Throughput):
                callback.started += seconds  # windows/s measures training, not evaluation
        step = trainer.global_step - 1  # the finished step's row (metrics.csv's step column is 0-based)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        shown = ", ".join(f"{k} {v:.6g}" for k, v in metrics.items())
        rank_zero_info(
            f"step {step}: {shown} ({self.val.windows} windows of split {self.val.split!r}, {seconds:.1f} s)"
        )

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """One evaluation, in eval mode, without gradients; every module's mode is restored after."""
        strategy = trainer.strategy
        modes = {m: m.training for m in pl_module.modules()}
        before = _global_states()
        forward = None
        if isinstance(strategy, FSDPStrategy | DeepSpeedStrategy):
            # Their wrappers gather the sharded weights: the forward goes through them, on every rank.
            def forward(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
                return strategy._forward_redirection(strategy.model, pl_module, "evaluate_batch", batch)

        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        reduce = _all_reduce if distributed and trainer.world_size > 1 else None
        pl_module.eval()
        try:
            with torch.no_grad(), strategy.precision_plugin.val_step_context():
                metrics = evaluate(
                    pl_module,
                    self.val,
                    rank=trainer.global_rank,
                    world=trainer.world_size,
                    forward=forward,
                    reduce=reduce,
                )
        finally:
            for module, training in modes.items():
                module.training = training
        if not _same_states(before, _global_states()):
            raise RuntimeError(
                f"step {trainer.global_step}: evaluation drew from a global random generator, which would "
                "change training; draw from the batch's own generator instead"
            )
        return metrics


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(tensor)
    return tensor


def evaluation_callback(cfg: PretrainConfig) -> Evaluation | None:
    """The run's `Evaluation`, or None with `eval.every_n_steps=0`; the val set is read here, at start-up,
    so a missing val split stops the run before it trains."""
    settings: EvalConfig = cfg.eval
    if not settings.every_n_steps:
        return None
    return Evaluation(load_val_set(cfg), settings.every_n_steps)
