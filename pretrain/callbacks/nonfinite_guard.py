"""Stops (or skips) at the first non-finite loss or gradient, naming the step and the samples.

Without it, one corrupt or extreme window turns the loss to NaN, every later update spreads it through
the weights, and the run ends "successfully" with NaN weights. Each micro-batch's loss is checked after
its forward pass; each step's gradients before the optimizer steps, with the decision OR-reduced over
the ranks (so all ranks stop or skip together, also under FSDP, where each holds only a shard). With
`skip` the step's update is dropped instead (gradients cleared, so AdamW leaves weights and moments as
they were) and counted: `skipped_nonfinite` in metrics.csv, kept across resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch

from eegfm.errors import DataError


@dataclass
class NonFiniteGuard(pl.Callback):
    skip: bool = False
    """Skip a step whose loss or gradients are not finite (and count it) instead of stopping the run."""
    skipped: int = field(default=0, init=False)
    _batch: Any = field(default=None, init=False, repr=False)
    _losses: list[tuple[torch.Tensor, Any]] = field(default_factory=list, init=False, repr=False)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # Kept as a tensor: checked once per step, not synchronised with the GPU per micro-batch.
        self._losses.append((torch.isfinite(loss.detach()), self._batch))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, self._losses = self._losses, []
        bad_batches = [batch for finite, batch in losses if not bool(finite)]
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None and p.grad.numel()]
        grads_bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        local_bad = bool(bad_batches) or grads_bad
        if not trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            return
        step = trainer.global_step
        if bad_batches:
            keys = [k for batch in bad_batches for k in batch["keys"]]
            where = ", ".join(f"epoch {b['epoch']} micro-batch {b['index']}" for b in bad_batches)
            what = f"non-finite loss ({where}; samples {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''})"
        else:
            what = "non-finite gradients" if local_bad else "a non-finite loss or gradient on another rank"
        if not self.skip:
            raise DataError(
                f"step {step}: {what}; the run stops and saves nothing of this step. Check those windows, "
                "lower optim.lr, or set trainer.skip_nonfinite=true to skip such steps"
            )
        for p in pl_module.parameters():
            p.grad = None  # AdamW leaves a parameter without a gradient untouched: weights and moments
        self.skipped += 1
        pl_module.print(f"step {step}: update skipped ({what}); {self.skipped} skipped so far")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.skip:
            pl_module.log("skipped_nonfinite", float(self.skipped), rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict["skipped"])
