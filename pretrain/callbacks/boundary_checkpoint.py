"""Checkpoints outside the periodic schedule: at the end of training, and on SIGUSR1 / SIGTERM.

On a signal the handler only sets a flag; the checkpoint is written at the next step boundary and the
run stops. Writing a large checkpoint from inside a signal handler (as Lightning's SLURM requeue handler
does) can hang or corrupt it, and Lightning's own SIGTERM handler stops without saving. The flag is
OR-reduced over the ranks at each step boundary, so all ranks save and stop together even when the
signal reached only some of them.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from eegfm.pretrain.checkpoints import CHECKPOINTS_DIR, checkpoint_name
from eegfm.storage import exists, join_url

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class BoundaryCheckpoint(pl.Callback):
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.received: int | None = None
        self.signalled_save: str | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def _save(self, trainer: pl.Trainer) -> str:
        path = join_url(self.run_dir, CHECKPOINTS_DIR, checkpoint_name(trainer.global_step))
        if not exists(path):
            trainer.save_checkpoint(path)
        return path

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning has installed its handlers (at fit start), so these replace them.
        for sig in SIGNALS:
            signal.signal(sig, self._handler)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: not a step boundary
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        self.signalled_save = self._save(trainer)
        rank_zero_info(
            f"signal received: saved {self.signalled_save} at step {trainer.global_step}; stopping"
        )
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.signalled_save is None:
            self._save(trainer)  # the final weights, unless the periodic schedule just saved them
