"""What every pretraining objective shares: AdamW with REVE's learning-rate shape over the whole run,
and random draws owned by micro-batches (so a resumed run draws the same on any number of GPUs)."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim.lr_scheduler import LambdaLR

from eegfm.pretrain.data import batch_generator
from eegfm.pretrain.schedule import warmup_plateau_cooldown


class Objective(pl.LightningModule):
    """Subclasses build `self.model` and define `training_step`, `n_patches` and `train_flops`."""

    def __init__(self, optim: dict, seed: int, total_steps: int):
        super().__init__()
        self.optim, self.seed, self.total_steps = optim, seed, total_steps

    def generator(self, batch: dict[str, Any], stream: int) -> torch.Generator:
        """The micro-batch's own generator for the step's random draws (stream 0 is the loader's)."""
        return batch_generator(self.seed, batch["epoch"], batch["index"], stream=stream)

    def batch_transform(self) -> partial | None:
        """Work done in the loader's workers on each micro-batch (masks), if any."""
        return None

    def log_step(self, values: dict[str, torch.Tensor]) -> None:
        """The step's metrics (averaged over ranks) and the learning rate; the first is the progress bar's."""
        first, *_ = values
        self.log(first, values[first], prog_bar=True, sync_dist=True)
        self.log_dict({k: v for k, v in values.items() if k != first}, sync_dist=True)
        self.log("lr", self.lr_schedulers().get_last_lr()[0])

    def configure_optimizers(self) -> dict[str, Any]:
        # No weight decay on norms, biases and learned tokens (REVE, MAE and LaBraM practice).
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": self.optim["weight_decay"]},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.optim["lr"],
            betas=tuple(self.optim["betas"]),
            eps=self.optim["eps"],
            fused=torch.cuda.is_available(),
        )
        shape = partial(
            warmup_plateau_cooldown,
            total_steps=self.total_steps,
            warmup_fraction=self.optim["warmup_fraction"],
            cooldown_fraction=self.optim["cooldown_fraction"],
            min_ratio=self.optim["min_lr_ratio"],
        )
        scheduler = {"scheduler": LambdaLR(optimizer, shape), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
