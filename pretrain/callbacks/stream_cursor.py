"""Moves the data module's cursor as optimizer steps complete, so a checkpoint holds the loader's place."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class StreamCursor(pl.Callback):
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Every micro-batch of a step carries the cursor after that step; checkpoints are only taken
        # after the step's last one, when the optimizer has stepped.
        trainer.datamodule.cursor = batch["cursor"]
