"""The Lightning data module: the shard stream of `pretrain.data`, and its cursor in every checkpoint.

The cursor is the same integers on every rank, so Lightning keeping only rank 0's data-module state in a
checkpoint loses nothing.
"""

from __future__ import annotations

import signal
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from eegfm.pretrain.data import BatchTransform, Cursor, DatasetSpec, ShardStream, ShardTable, load_table


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGUSR1/SIGTERM to the training process, which checkpoints and stops: a
    scheduler signals every process of a job step (SLURM's --signal, a pod's termination), and a worker
    killed by it would take the run down before it could save."""
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def dataset_specs(shards: Any) -> list[DatasetSpec]:
    """`data.shards`: a URL, or a list of URLs and/or {url, weight} entries."""
    if isinstance(shards, DictConfig | dict | str):
        shards = [shards]
    specs = []
    for entry in shards:
        if isinstance(entry, str):
            specs.append(DatasetSpec(entry))
        else:
            entry = OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else dict(entry)
            specs.append(DatasetSpec(str(entry.pop("url")), **entry))
    if not specs:
        raise ValueError("data.shards names no dataset")
    return specs


class ShardDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: DictConfig,
        accumulation: int,
        transform: BatchTransform | None = None,
        tokens: str | None = None,
    ):
        """`tokens`: a tokenizer id whose token shards (`eegfm tokenize`) the batches carry as `codes`."""
        super().__init__()
        self.data, self.accumulation, self.transform, self.tokens = data, accumulation, transform, tokens
        self.specs = dataset_specs(data.shards)
        self.cursor = Cursor()
        self.table: ShardTable | None = None

    def setup(self, stage: str) -> None:
        if self.table is None:
            self.table = load_table(self.specs, self.data.split, tokens=self.tokens)

    def train_dataloader(self) -> DataLoader:
        stream = ShardStream(
            self.table,
            [spec.weight for spec in self.specs],
            seed=int(self.data.seed),
            budget=int(self.data.channel_budget),
            clip=float(self.data.clip),
            start=self.cursor,
            rank=self.trainer.global_rank,
            world=self.trainer.world_size,
            accumulation=self.accumulation,
            transform=self.transform,
        )
        workers = int(self.data.num_workers)
        return DataLoader(
            stream,
            batch_size=None,  # the stream yields whole micro-batches
            num_workers=workers,
            prefetch_factor=int(self.data.prefetch) if workers else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            worker_init_fn=_ignore_stop_signals,
        )

    def state_dict(self) -> dict[str, Any]:
        return {**self.cursor._asdict(), "seed": int(self.data.seed), "samples": len(self.table)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.setup("fit")
        if state["seed"] != int(self.data.seed) or state["samples"] != len(self.table):
            raise ValueError(
                f"the checkpoint's stream (data.seed={state['seed']}, {state['samples']} samples) is not "
                f"this config's (data.seed={self.data.seed}, {len(self.table)} samples): resuming would not "
                "continue the same sample stream; start a new run directory instead"
            )
        self.cursor = Cursor(state["epoch"], state["position"])
