"""Fine-tuning as a LightningModule: a pretrained encoder, a classification head, labelled task shards.

One *phase* is one Lightning fit: `lp` (encoder frozen, only the head trained) or `ft` (every parameter
trained, the encoder's layers with layer-wise learning-rate decay). After each training epoch the val and
test splits are scored with `probe.classification_metrics`; the epoch with the best val balanced accuracy
is kept (its test metrics, its head), and `patience` epochs without a better one end the phase. A
checkpoint is saved after every epoch (`checkpoints/step=N.ckpt`, through the same atomic writer as
pretraining), so a killed phase resumes at the next epoch with the same batches, the same curve and the
same choice.

The windows are read with the pretraining table and decoder (`pretrain/taskshards.py`: CRC-32 checked,
z-scored and clipped as in pretraining) in batches of one shape (no padding); each epoch's order is drawn
from (seed, epoch), and each rank takes every W-th batch.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import fsspec
import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from eegfm.models.features import stacked_tokens, token_layers
from eegfm.models.heads import ClassificationHead
from eegfm.models.mcm import MaskedCodeEncoder
from eegfm.models.reve import ReveEncoder
from eegfm.pretrain.checkpoints import CHECKPOINTS_DIR, checkpoint_name, list_checkpoints
from eegfm.pretrain.finetune_config import PhaseConfig
from eegfm.pretrain.metrics import RunCsvLogger
from eegfm.pretrain.objective import FsdpNormClipping, unwrapped_name
from eegfm.pretrain.probe import classification_metrics
from eegfm.pretrain.schedule import warmup_plateau_cooldown
from eegfm.pretrain.table import ShardTable
from eegfm.pretrain.taskshards import TaskInfo, labelled_batches, shape_groups
from eegfm.storage import join_url

EVAL_SPLITS = ("val", "test")
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


# ---- data -----------------------------------------------------------------------------------------------


def epoch_batches(
    table: ShardTable, batch_windows: int, seed: int, epoch: int, world: int
) -> list[np.ndarray]:
    """The training batches of one epoch (rows of the table), in the order they are trained: windows
    permuted by (seed, epoch), cut into batches of one shape, the batches permuted again; the last
    `len % world` batches are left out so that every rank takes as many steps."""
    rng = np.random.default_rng([seed, epoch])
    batches = shape_groups(table, rng.permutation(len(table)), batch_windows)
    batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches[: len(batches) - len(batches) % world]


def eval_batches(table: ShardTable, batch_windows: int) -> list[np.ndarray]:
    """A val or test split in batches of one shape, in table order."""
    return shape_groups(table, np.arange(len(table)), batch_windows)


class TaskBatches(Dataset):
    """Batch i of a split: its windows read, checked and decoded (`taskshards.labelled_batches`)."""

    def __init__(
        self,
        url: str,
        split: str,
        task: TaskInfo,
        table: ShardTable,
        batches: list[np.ndarray],
        clip: float,
        counted: list[bool] | None = None,
    ):
        self.url, self.split, self.task, self.table, self.batches, self.clip = (
            url,
            split,
            task,
            table,
            batches,
            clip,
        )
        self.counted = counted if counted is not None else [True] * len(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rows = self.batches[index]
        batch = next(
            labelled_batches(
                self.url,
                self.split,
                self.task,
                clip=self.clip,
                batch_windows=len(rows),
                rows=rows,
                table=self.table,
            )
        )
        return {
            "eeg": batch.eeg,
            "positions": batch.positions,
            "labels": torch.from_numpy(batch.labels),
            "counted": self.counted[index],
        }


def _as_is(batch: Any) -> Any:
    return batch


class TaskDataModule(pl.LightningDataModule):
    """Train batches planned anew each epoch (the trainer reloads them), val and test as they are; each
    rank takes every W-th batch of each."""

    def __init__(
        self,
        url: str,
        task: TaskInfo,
        tables: dict[str, ShardTable],
        *,
        batch_windows: int,
        clip: float,
        seed: int,
        num_workers: int,
    ):
        super().__init__()
        self.url, self.task, self.tables = url, task, tables
        self.batch_windows, self.clip, self.seed, self.num_workers = batch_windows, clip, seed, num_workers

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def steps_per_epoch(self, world: int) -> int:
        return len(epoch_batches(self.tables["train"], self.batch_windows, self.seed, 0, world)) // world

    def _loader(self, split: str, batches: list[np.ndarray]) -> DataLoader:
        """This rank's every W-th batch. Val and test are padded with repeats of the split's first batch,
        not counted, so that every rank runs as many forwards: under FSDP each forward gathers the
        parameters from all ranks, and one rank with a forward fewer would leave the others waiting on a
        collective that never matches (train batches are trimmed to a multiple of W instead)."""
        rank, world = self._world()
        mine = batches[rank::world]
        counted = [True] * len(mine)
        if split != "train":
            repeats = -(-len(batches) // world) - len(mine)
            mine, counted = mine + [batches[0]] * repeats, counted + [False] * repeats
        dataset = TaskBatches(self.url, split, self.task, self.tables[split], mine, self.clip, counted)
        return DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_as_is
        )

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        batches = epoch_batches(self.tables["train"], self.batch_windows, self.seed, epoch, self._world()[1])
        return self._loader("train", batches)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, eval_batches(self.tables[s], self.batch_windows)) for s in EVAL_SPLITS]


# ---- optimiser groups: layer-wise learning-rate decay --------------------------------------------------


def encoder_depth(encoder: nn.Module) -> int:
    return len(encoder.transformer.layers)


def layer_id(name: str, depth: int) -> int:
    """An encoder parameter's depth for the learning-rate decay: 0 for the embeddings (patch embedding,
    positions, mask token), i + 1 for transformer block i, depth + 1 for what follows the blocks (the
    masked-code encoder's final norm), as BEiT and LaBraM count."""
    parts = unwrapped_name(name).split(".")
    if parts[:2] == ["transformer", "layers"]:
        return int(parts[2]) + 1
    if parts[0] == "norm":
        return depth + 1
    return 0


def param_groups(
    encoder: nn.Module | None, head: nn.Module, phase: PhaseConfig, dims: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: the head at `lr`; with an encoder (ft), its parameters at lr·decay^(depth + 1 − id)
    by `layer_id`. Matrices get `weight_decay`, norms, biases and learned queries none (chosen by the
    shapes as built, `dims`, since FSDP flattens parameters). Each group names its `layer` and `scale`."""
    dims = dims or {}
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named = [(f"head.{n}", p, None) for n, p in head.named_parameters()]
    if encoder is not None:
        depth = encoder_depth(encoder)
        named += [(f"encoder.{n}", p, layer_id(n, depth)) for n, p in encoder.named_parameters()]
    top = encoder_depth(encoder) + 1 if encoder is not None else 0
    for name, p, layer in named:
        layer = top if layer is None else layer
        decays = dims.get(name, p.dim()) >= 2
        scale = phase.layer_decay ** (top - layer)
        group = groups.setdefault(
            (layer, decays),
            {
                "params": [],
                "names": [],
                "layer": layer,
                "scale": scale,
                "lr": phase.lr * scale,
                "weight_decay": phase.weight_decay if decays else 0.0,
            },
        )
        group["params"].append(p)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


# ---- the LightningModule ---------------------------------------------------------------------------------


@dataclass
class Selection:
    """Early stopping's memory: the best epoch so far and what it scored; saved in every checkpoint."""

    best_epoch: int = -1
    best_val: float = -math.inf
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    epochs_done: int = 0
    finished: bool = False


class Finetuning(FsdpNormClipping):
    def __init__(
        self,
        encoder: ReveEncoder | MaskedCodeEncoder,
        head: ClassificationHead,
        *,
        phase: PhaseConfig,
        frozen: bool,
        layers: str,
        n_classes: int,
        steps_per_epoch: int,
        metrics: RunCsvLogger | None = None,
    ):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.phase, self.frozen, self.layers, self.n_classes = phase, frozen, layers, n_classes
        self.steps_per_epoch, self.metrics = steps_per_epoch, metrics
        self.selection = Selection()
        self.interrupted = False
        self._outputs: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {}
        self._train_loss = torch.zeros(2)
        if frozen:
            encoder.requires_grad_(False)
        else:
            encoder.train()  # an exported or probed encoder comes in eval mode

    def setup(self, stage: str) -> None:
        self.parameter_dims = {name: p.dim() for name, p in self.named_parameters()}

    def tokens(self, eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            self.encoder.eval()
            with torch.no_grad():
                return stacked_tokens(token_layers(self.encoder, eeg, positions, self.layers))
        return stacked_tokens(token_layers(self.encoder, eeg, positions, self.layers))

    def forward(self, eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(eeg, positions))

    def on_train_epoch_start(self) -> None:
        self._train_loss = torch.zeros(2, device=self.device)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["eeg"], batch["positions"]).float(), batch["labels"])
        n = len(batch["labels"])
        self._train_loss += torch.stack([loss.detach() * n, loss.new_tensor(float(n))])
        return loss

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        logits = self(batch["eeg"], batch["positions"]).float()
        if not batch["counted"]:  # a repeat that only keeps the ranks' forwards in step
            return
        loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        probabilities = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
        self._outputs.setdefault(dataloader_idx, []).append(
            (probabilities, batch["labels"].cpu().numpy(), float(loss))
        )

    def _gathered(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The split's probabilities, labels and summed loss over every rank."""
        mine = self._outputs.get(index, [])
        parts = [mine]
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and self.trainer.world_size > 1
        ):
            parts = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, mine)
        rows = [row for part in parts for row in part]
        return (
            np.concatenate([r[0] for r in rows]),
            np.concatenate([r[1] for r in rows]),
            sum(r[2] for r in rows),
        )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.interrupted:
            self._outputs = {}
            return
        scores: dict[str, dict[str, float]] = {}
        for index, split in enumerate(EVAL_SPLITS):
            probabilities, labels, loss = self._gathered(index)
            metrics = classification_metrics(labels, probabilities.argmax(1), probabilities, self.n_classes)
            scores[split] = {"loss": loss / len(labels), **metrics}
        self._outputs = {}
        train = self.trainer.strategy.reduce(self._train_loss, reduce_op="sum")
        epoch = self.trainer.current_epoch
        s = self.selection
        if scores["val"]["balanced_accuracy"] > s.best_val:  # ties keep the earlier epoch
            s.best_epoch, s.best_val = epoch, scores["val"]["balanced_accuracy"]
            s.val, s.test = scores["val"], scores["test"]
            s.head = {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}
        s.epochs_done = epoch + 1
        stale = epoch - s.best_epoch
        if (self.phase.patience and stale >= self.phase.patience) or s.epochs_done >= self.phase.epochs:
            s.finished = True
            self.trainer.should_stop = True
        if self.metrics is not None:
            row = {"epoch": epoch, "train_loss": float(train[0] / train[1]), "lr": self._lr()}
            row.update({f"{split}_{k}": v for split, values in scores.items() for k, v in values.items()})
            row["best_epoch"] = s.best_epoch
            self.metrics.log_metrics(row, step=self.trainer.global_step)

    def _lr(self) -> float:
        """The head's learning rate (the top group's) at the end of the epoch."""
        return float(self.trainer.optimizers[0].param_groups[-1]["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        s = self.selection
        checkpoint["finetune"] = {
            "best_epoch": s.best_epoch,
            "best_val": s.best_val,
            "val": s.val,
            "test": s.test,
            "head": s.head,
            "epochs_done": s.epochs_done,
            "finished": s.finished,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.selection = Selection(**checkpoint["finetune"])

    def configure_optimizers(self) -> dict[str, Any]:
        dims = {unwrapped_name(k): v for k, v in self.parameter_dims.items()}
        groups = param_groups(None if self.frozen else self.encoder, self.head, self.phase, dims)
        for group in groups:
            del group["names"]
        optimizer = torch.optim.AdamW(groups, lr=self.phase.lr, betas=tuple(self.phase.betas))
        total = self.phase.epochs * self.steps_per_epoch
        warmup = min(self.phase.warmup_epochs / self.phase.epochs, 1.0)
        shape = lambda step: warmup_plateau_cooldown(  # noqa: E731
            step, total, warmup, 1.0 - warmup, self.phase.min_lr_ratio
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, shape), "interval": "step"},
        }


# ---- checkpoints after every epoch; a signal stops the run, to be resumed ------------------------------


class EpochCheckpoints(pl.Callback):
    """A checkpoint after every epoch's validation (`checkpoints/step=N.ckpt`, the newest `keep` kept).

    On SIGUSR1 or SIGTERM the run stops after the batch under way, saves nothing more (the epoch's
    checkpoint of the last finished epoch is the resume point) and, under SLURM, after SIGUSR1 requeues
    its job, which resumes with `--resume auto`.
    """

    def __init__(self, run_dir: str, keep: int, metrics: RunCsvLogger):
        self.run_dir, self.keep, self.metrics = run_dir, keep, metrics
        self.received: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._handler)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            pl_module.interrupted = True
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if pl_module.interrupted:
            return
        self.metrics.save()
        path = join_url(self.run_dir, CHECKPOINTS_DIR, checkpoint_name(trainer.global_step))
        trainer.save_checkpoint(path)
        if trainer.is_global_zero and self.keep >= 0:
            fs, _ = fsspec.core.url_to_fs(path)
            for old in list_checkpoints(self.run_dir)[: -self.keep or None]:
                fs.rm(old, recursive=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        job = os.environ.get("SLURM_JOB_ID")
        if self.received == signal.SIGUSR1 and job and trainer.is_global_zero:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
            rank_zero_info(f"requeue of SLURM job {job}: {done.returncode == 0 or done.stderr.strip()}")
