"""The Lightning data module: the shard stream, and its cursor and fingerprint in every checkpoint.

The cursor is the same integers on every rank, so Lightning keeping only rank 0's data-module state in a
checkpoint loses nothing. Beside it the checkpoint stores the stream's *fingerprint*: everything that
decides which windows the cursor points at and what they hold (datasets, their splits, weights, order and
content, the channel budget, shuffle block, accumulation, seed, normalisation, clipping and tokenizer),
as OLMo-core's loader stores a dataset fingerprint. A resume whose stream differs is refused, saying what
changed, unless `--reset-stream` asks to continue from the next epoch boundary on purpose. The number of
GPUs is not part of it: a resume on another world size continues the same epoch exactly.
"""

from __future__ import annotations

import signal
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from eegfm.errors import ConfigError, DataError
from eegfm.pretrain.config import DataConfig
from eegfm.pretrain.node_table import load_table_on_node
from eegfm.pretrain.plan import Cursor
from eegfm.pretrain.stream import BatchTransform, ShardStream, raise_if_failed
from eegfm.pretrain.table import DatasetSpec, ShardTable, check_shard_sizes

STREAM_FORMAT = "eegfm-stream/1"


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGUSR1/SIGTERM to the training process, which checkpoints and stops: a
    scheduler signals every process of a job step (SLURM's --signal, a pod's termination), and a worker
    killed by it would take the run down before it could save."""
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def dataset_specs(shards: Any) -> list[DatasetSpec]:
    """`data.shards`: a URL, or a list of URLs and/or {url, weight, split} entries."""
    if isinstance(shards, DictConfig | dict | str):
        shards = [shards]
    specs = []
    for i, entry in enumerate(shards):
        if isinstance(entry, str):
            specs.append(DatasetSpec(entry))
            continue
        entry = OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else dict(entry)
        unknown = set(entry) - {"url", "weight", "split"}
        if "url" not in entry or unknown:
            raise ConfigError(
                f"data.shards[{i}]: an entry is a URL or {{url, weight, split}}, got keys {sorted(entry)}"
            )
        specs.append(DatasetSpec(str(entry.pop("url")), **entry))
    if not specs:
        raise ConfigError("data.shards names no dataset")
    return specs


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        parts = [_flatten(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in value.items()]
    elif isinstance(value, list):
        parts = [_flatten(v, f"{prefix}[{i}]") for i, v in enumerate(value)]
    else:
        return {prefix: value}
    return {k: v for part in parts for k, v in part.items()}


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each difference between two fingerprints as `key: saved → current`."""
    a, b = _flatten(saved), _flatten(current)
    return [
        f"{key}: {a.get(key, '(absent)')} → {b.get(key, '(absent)')}"
        for key in sorted(set(a) | set(b))
        if a.get(key, "(absent)") != b.get(key, "(absent)")
    ]


class ShardDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: DataConfig,
        accumulation: int,
        transform: BatchTransform | None = None,
        tokens: str | None = None,
        reset_stream: bool = False,
    ):
        """`tokens`: a tokenizer id whose token shards (`eegfm tokenize`) the batches carry as `codes`;
        `reset_stream`: on resume, continue from the next epoch boundary whatever the saved stream was."""
        super().__init__()
        self.data, self.accumulation, self.transform, self.tokens = data, accumulation, transform, tokens
        self.reset_stream = reset_stream
        self.specs = dataset_specs(data.shards)
        self.cursor = Cursor()
        self.table: ShardTable | None = None

    def setup(self, stage: str) -> None:
        if self.table is None:
            self.table = load_table_on_node(self.specs, self.data.split, self.tokens, self.data.cache_dir)
            check_shard_sizes(self.table)

    def fingerprint(self) -> dict[str, Any]:
        """What the cursor's meaning depends on (not the world size: that resume is exact)."""
        assert self.table is not None
        return {
            "format": STREAM_FORMAT,
            "datasets": self.table.dataset_identity,
            "channel_budget": self.data.channel_budget,
            "accumulation": self.accumulation,
            "seed": self.data.seed,
            "shuffle_block": self.data.shuffle_block,
            "clip": self.data.clip,
            **self.data.normalisation(),
            **self.data.selection(),
            "tokens": self.tokens,
        }

    def train_dataloader(self) -> DataLoader:
        stream = ShardStream(
            self.table,
            [spec.weight for spec in self.specs],
            seed=self.data.seed,
            budget=self.data.channel_budget,
            clip=self.data.clip,
            start=self.cursor,
            rank=self.trainer.global_rank,
            world=self.trainer.world_size,
            accumulation=self.accumulation,
            shuffle_block=self.data.shuffle_block,
            transform=self.transform,
            cache_dir=self.data.cache_dir,
            cache_limit_gb=self.data.cache_limit_gb,
            scale_uv=self.data.scale,
            channels=self.data.channels,
        )
        workers = self.data.num_workers
        return DataLoader(
            stream,
            batch_size=None,  # the stream yields whole micro-batches
            num_workers=workers,
            prefetch_factor=self.data.prefetch if workers else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            worker_init_fn=_ignore_stop_signals,
        )

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        raise_if_failed(batch)  # a worker's DataError, as one line in the training process
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {**self.cursor._asdict(), "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.setup("fit")
        saved, current = state.get("fingerprint", {}), self.fingerprint()
        if saved and "normalise" not in saved:  # saved before the setting existed: z-score was the only one
            saved = {**saved, "normalise": "zscore"}
        cursor = Cursor(state["epoch"], state["position"])
        if self.reset_stream:
            self.cursor = Cursor(cursor.epoch + 1, 0)
            rank_zero_warn(
                f"--reset-stream: the stream restarts at epoch {self.cursor.epoch}'s beginning (the "
                f"checkpoint was at epoch {cursor.epoch}, micro-batch {cursor.position}); the rest of epoch "
                f"{cursor.epoch} is not trained on"
            )
            return
        changes = fingerprint_changes(saved, current)
        if changes:
            raise DataError(
                "the checkpoint's data stream is not this config's, so its cursor would point into another "
                f"plan (windows skipped or repeated): {'; '.join(changes)}. Resume with the checkpoint's "
                "settings, or pass --reset-stream to continue from the next epoch boundary on purpose"
            )
        self.cursor = cursor
