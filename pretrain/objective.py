"""What every pretraining objective shares: AdamW with REVE's learning-rate shape over the whole run,
and random draws owned by micro-batches (so a resumed run draws the same on any number of GPUs)."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.optim.lr_scheduler import LambdaLR

from eegfm.pretrain.schedule import warmup_plateau_cooldown
from eegfm.pretrain.stream import batch_generator


def unwrapped_name(name: str) -> str:
    """A parameter's name as built, without the wrappers' path components (FSDP, activation
    checkpointing, torch.compile)."""
    wrappers = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
    return ".".join(part for part in name.split(".") if part not in wrappers)


class FsdpNormClipping(pl.LightningModule):
    """`trainer.gradient_clip` as a norm under every strategy (pretraining and fine-tuning share it)."""

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Norm clipping, also under FSDP, where Lightning's precision plugin refuses it: FSDP's own
        `clip_grad_norm_` reduces the norm over every rank's shard of the gradients."""
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


class Objective(FsdpNormClipping):
    """Subclasses build `self.model` and define `training_step`, `n_patches` and `train_flops`."""

    def __init__(self, optim: dict, seed: int, total_steps: int):
        super().__init__()
        self.optim, self.seed, self.total_steps = optim, seed, total_steps

    def setup(self, stage: str) -> None:
        # Before the strategy wraps the model: FSDP flattens parameters, after which their shapes no
        # longer tell a matrix from a norm's scale, so the weight-decay groups are chosen by name.
        self.parameter_dims = {name: p.dim() for name, p in self.named_parameters()}

    def generator(self, batch: dict[str, Any], stream: int) -> torch.Generator:
        """The micro-batch's own generator for the step's random draws (stream 0 is the loader's)."""
        return batch_generator(self.seed, batch["epoch"], batch["index"], stream=stream)

    def batch_transform(self) -> partial | None:
        """Work done in the loader's workers on each micro-batch (masks), if any."""
        return None

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A val batch's metrics (`pretrain/validation.py`), called in eval mode without gradients: each
        scalar the sum over the batch's windows of that window's value (e.g. `val_loss`), other tensors
        integer counts. No random draws but from `batch["generator"]`."""
        raise NotImplementedError

    def val_metrics(self, sums: dict[str, torch.Tensor], windows: int) -> dict[str, float]:
        """What is logged from the sums of `evaluate_batch` over the whole val set (`windows` windows):
        by default each scalar's mean over the windows."""
        return {name: float(total) / windows for name, total in sums.items() if total.dim() == 0}

    def log_step(self, values: dict[str, torch.Tensor]) -> None:
        """The step's metrics (averaged over ranks) and the learning rate; the first is the progress bar's."""
        first, *_ = values
        self.log(first, values[first], prog_bar=True, sync_dist=True)
        self.log_dict({k: v for k, v in values.items() if k != first}, sync_dist=True)
        self.log("lr", self.lr_schedulers().get_last_lr()[0])

    def configure_optimizers(self) -> dict[str, Any]:
        # No weight decay on norms, biases and learned tokens (REVE, MAE and LaBraM practice), chosen by
        # the parameters' names and their shapes as built (see setup).
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if self.parameter_dims[unwrapped_name(name)] >= 2 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.optim["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
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
