"""Which windows each rank trained on, step by step: `<dir>/rank-<r>.tsv` (step, epoch, index, keys).

For provenance and for checking that a resumed run sees the same samples as an uninterrupted one.
A local folder: rows are appended as they come.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl


class SampleLog(pl.Callback):
    def __init__(self, folder: str):
        self.folder = folder

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        os.makedirs(self.folder, exist_ok=True)
        # The step this micro-batch counts towards: after a step's last micro-batch, global_step has moved on.
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        step = trainer.global_step - 1 if stepped else trainer.global_step
        with open(os.path.join(self.folder, f"rank-{trainer.global_rank}.tsv"), "a") as f:
            f.write(f"{step}\t{batch['epoch']}\t{batch['index']}\t{','.join(batch['keys'])}\n")
