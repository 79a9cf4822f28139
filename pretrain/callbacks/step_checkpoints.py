"""Checkpoints at step boundaries: every N steps, at the end, and on SIGUSR1 / SIGTERM (then stop).

A checkpoint of step k is taken as step k begins: step k − 1 has been logged by then, and the loggers
are flushed first, so a run killed at any moment resumes to a curve with no missing step. On a signal
the handler only sets a flag; the run stops after the step under way and saves as it ends. Writing a
large checkpoint from inside a signal handler (as Lightning's SLURM requeue handler does) can hang or
corrupt it, and Lightning's own SIGTERM handler stops without saving. The flag is OR-reduced over the
ranks at each boundary, so all ranks stop together even when the signal reached only some of them. The
newest `keep` checkpoints are kept (all when keep < 0). Under SLURM, a run stopped by SIGUSR1 (the job's
`--signal` warning) requeues its job once the checkpoint is saved; the requeued job resumes from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType
from typing import Any

import fsspec
import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from eegfm.pretrain.checkpoints import CHECKPOINTS_DIR, checkpoint_name, list_checkpoints
from eegfm.storage import join_url

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StepCheckpoints(pl.Callback):
    def __init__(self, run_dir: str, every_n_steps: int, keep: int):
        if keep == 0 or every_n_steps <= 0:
            raise ValueError("checkpoint.keep must be ≥ 1 (or -1: all) and checkpoint.every_n_steps ≥ 1")
        self.run_dir, self.every_n_steps, self.keep = run_dir, every_n_steps, keep
        self.received: int | None = None
        self.stopped_by: int | None = None
        self.last_saved: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def save(self, trainer: pl.Trainer) -> str:
        path = join_url(self.run_dir, CHECKPOINTS_DIR, checkpoint_name(trainer.global_step))
        if self.last_saved != trainer.global_step:
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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % trainer.accumulate_grad_batches:
            return  # mid-accumulation: not a step boundary
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            rank_zero_info("signal received: stopping after this step, with a checkpoint")
            self.stopped_by = self.received or signal.SIGUSR1  # a rank that saw none stops for the others
            trainer.should_stop = True
        elif trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

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
