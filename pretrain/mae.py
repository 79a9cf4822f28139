"""REVE-style masked-autoencoder pretraining as a LightningModule: the model, its step and optimiser."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from eegfm.models.mae import MaeConfig, ReveMae, block_mask
from eegfm.models.reve import SIZES, ReveConfig
from eegfm.pretrain.data import batch_generator
from eegfm.pretrain.schedule import warmup_plateau_cooldown


def add_masks(
    batch: dict[str, Any], generator: torch.Generator, *, mae: MaeConfig, encoder: ReveConfig
) -> dict:
    """The loader-side half of a step: the batch's block masks, built in a worker (they cost as much as a
    small model's forward on the CPU)."""
    n_patches = encoder.n_patches(batch["eeg"].shape[-1])
    return {**batch, "mask": block_mask(batch["positions"], n_patches, mae, generator)}


class MaePretraining(pl.LightningModule):
    def __init__(self, encoder: dict, mae: dict, optim: dict, seed: int, total_steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.encoder_config, self.mae_config = ReveConfig(**encoder), MaeConfig(**mae)
        self.model = ReveMae(self.encoder_config, self.mae_config)
        self.optim, self.seed, self.total_steps = optim, seed, total_steps

    def batch_transform(self) -> partial:
        return partial(add_masks, mae=self.mae_config, encoder=self.encoder_config)

    def n_patches(self, n_times: int) -> int:
        return self.encoder_config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        return self.model.train_flops(batch, channels, n_patches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # The jitter's generator belongs to the micro-batch, like its mask: a resumed run draws the same.
        generator = batch_generator(self.seed, batch["epoch"], batch["index"], stream=1)
        out = self.model(batch["eeg"], batch["positions"], generator, mask=batch["mask"])
        self.log("loss", out.loss, prog_bar=True, sync_dist=True)
        self.log_dict(
            {"reconstruction_loss": out.reconstruction_loss, "secondary_loss": out.secondary_loss},
            sync_dist=True,
        )
        self.log("lr", self.lr_schedulers().get_last_lr()[0])
        return out.loss

    def configure_optimizers(self) -> dict[str, Any]:
        # No weight decay on norms, biases, the mask token and the pooling query (REVE, MAE practice).
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.optim["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
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
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, shape), "interval": "step"},
        }

    @classmethod
    def from_config(cls, cfg: Any) -> MaePretraining:
        # Plain containers: the hyper-parameters go into checkpoints, which load with weights_only=True.
        plain = partial(OmegaConf.to_container, resolve=True)
        encoder = {**asdict(SIZES[cfg.model.size]), **plain(cfg.model.overrides)}
        return cls(encoder, plain(cfg.mae), plain(cfg.optim), int(cfg.data.seed), int(cfg.trainer.max_steps))
