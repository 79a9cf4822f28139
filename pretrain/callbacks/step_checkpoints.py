"""Checkpoints at step boundaries: every N steps, at the end, and on SIGUSR1 / SIGTERM (then stop).

A checkpoint of step k is taken as step k begins: step k − 1 has been logged by then, and the loggers
are flushed first, so a run killed at any moment resumes to a curve with no missing step. On a signal
the handler only sets a flag; the flag is OR-reduced over the ranks after each optimizer step (the last
micro-batch of a step, so with gradient accumulation a stop never splits a step), and the run then stops
and saves as it ends. Writing a large checkpoint from inside a signal handler (as Lightning's SLURM
requeue handler does) can hang or corrupt it, and Lightning's own SIGTERM handler stops without saving.
Under SLURM, a run stopped by SIGUSR1 (the job's `--signal` warning) requeues its job once the checkpoint
is saved; the requeued job resumes from it. Weights that are not all finite are never saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import fsspec
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from eegfm.errors import DataError
from eegfm.pretrain.checkpoints import (
    CHECKPOINTS_DIR,
    checkpoint_name,
    list_checkpoints,
    remove_stale_temporaries,
)
from eegfm.pretrain.stream import begins_step, completes_step
from eegfm.storage import join_url

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


@dataclass
class StepCheckpoints(pl.Callback):
    run_dir: str
    """The run directory; checkpoints go to its `checkpoints/` folder."""
    every_n_steps: int
    """Steps between checkpoints."""
    keep: int
    """Newest checkpoints kept (-1: all)."""
    received: int | None = field(default=None, init=False, repr=False)
    stopped_by: int | None = field(default=None, init=False, repr=False)
    last_saved: int | None = field(default=None, init=False, repr=False)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def save(self, trainer: pl.Trainer) -> str:
        path = join_url(self.run_dir, CHECKPOINTS_DIR, checkpoint_name(trainer.global_step))
        if self.last_saved == trainer.global_step:
            return path
        local_bad = any(not bool(torch.isfinite(p).all()) for p in trainer.lightning_module.parameters())
        if trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            raise DataError(
                f"step {trainer.global_step}: the weights are not all finite; refusing to save them as "
                f"{path}. Resume from the last good checkpoint with a lower optim.lr or "
                "trainer.gradient_clip"
            )
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(path)
        self.last_saved = trainer.global_step
        if trainer.is_global_zero and self.keep >= 0:
            fs, _ = fsspec.core.url_to_fs(path)
            for old in list_checkpoints(self.run_dir)[: -self.keep or None]:
                fs.rm(old, recursive=True)
        return path

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning has installed its handlers (at fit start), so these replace them.
        for sig in SIGNALS:
            signal.signal(sig, self._handler)
        self.last_saved = trainer.global_step  # a resumed run starts from a saved step
        if trainer.is_global_zero:
            for stale in remove_stale_temporaries(self.run_dir):
                rank_zero_info(f"removed {stale}: a save interrupted by an earlier kill")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if begins_step(batch) and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not completes_step(batch):
            return  # mid-accumulation: not a step boundary
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            rank_zero_info(f"signal received: stopping after step {trainer.global_step}, with a checkpoint")
            self.stopped_by = self.received or signal.SIGUSR1  # a rank that saw none stops for the others
            trainer.should_stop = True

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Saved as a step begins, its batch is fetched but not started: record it as not fetched either,
        # so that Lightning restores as after a finished step (else it counts that step twice in the
        # logging step, shifting every logged row of the resumed run by one).
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        for part in ("total", "current"):
            progress[part]["ready"] = progress[part]["completed"]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.save(trainer)  # the final weights (or where a signal stopped the run), unless just saved
        job = os.environ.get("SLURM_JOB_ID")
        if self.stopped_by == signal.SIGUSR1 and job and trainer.is_global_zero:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
            rank_zero_info(f"requeue of SLURM job {job}: {done.returncode == 0 or done.stderr.strip()}")
