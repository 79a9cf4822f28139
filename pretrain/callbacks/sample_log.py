"""Which windows each rank trained on: `<dir>/rank-<r>.tsv`, one row per micro-batch (step, epoch,
index, keys), every micro-batch of a step included.

For provenance and for checking that a resumed run sees the same samples as an uninterrupted one. A local
folder: rows are appended as they come; on resume, rows of steps the run will redo (written by a killed
attempt after its last checkpoint) are dropped first, as `metrics.csv` drops them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from eegfm.pretrain.stream import completes_step


@dataclass
class SampleLog(pl.Callback):
    folder: str
    """A local folder for the per-rank TSV files."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and os.path.isdir(self.folder):
            for path in Path(self.folder).glob("rank-*.tsv"):  # every rank's: the world size may differ now
                rows = path.read_text().splitlines(keepends=True)
                kept = [row for row in rows if int(row.split("\t", 1)[0]) < trainer.global_step]
                if len(kept) != len(rows):
                    path.write_text("".join(kept))
        trainer.strategy.barrier()  # no rank appends before the trim

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        os.makedirs(self.folder, exist_ok=True)
        # The step this micro-batch counts towards: after a step's last micro-batch, global_step has moved on.
        step = trainer.global_step - 1 if completes_step(batch) else trainer.global_step
        with open(os.path.join(self.folder, f"rank-{trainer.global_rank}.tsv"), "a") as f:
            f.write(f"{step}\t{batch['epoch']}\t{batch['index']}\t{','.join(batch['keys'])}\n")
