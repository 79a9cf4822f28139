"""Moves the data module's cursor as optimizer steps complete, so a checkpoint holds the loader's place.

The cursor moves only after a step's last micro-batch, when the optimizer has stepped: it always says
exactly which micro-batches finished steps consumed. That is also where Lightning's own accumulation
must agree with the stream's plan; if they ever disagree (a resumed loop state off by a micro-batch),
the run stops at once instead of training on shifted step pairs.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from eegfm.pretrain.stream import completes_step


class StreamCursor(pl.Callback):
    def __init__(self) -> None:
        self._step_before = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped = trainer.global_step != self._step_before
        if stepped != completes_step(batch):
            raise RuntimeError(
                f"step {trainer.global_step}: Lightning {'stepped' if stepped else 'did not step'} the "
                f"optimizer after micro-batch {batch['index']} of epoch {batch['epoch']}, which the stream "
                f"planned as micro-step {batch['micro_step']} of {trainer.accumulate_grad_batches}"
            )
        if stepped:
            trainer.datamodule.cursor = batch["cursor"]
