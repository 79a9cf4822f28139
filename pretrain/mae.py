"""REVE-style masked-autoencoder pretraining as a LightningModule."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.models.mae import MaeConfig, ReveMae, block_mask
from eegfm.models.reve import SIZES, ReveConfig
from eegfm.pretrain.objective import Objective


def add_masks(
    batch: dict[str, Any], generator: torch.Generator, *, mae: MaeConfig, encoder: ReveConfig
) -> dict:
    """The loader-side half of a step: the batch's block masks, built in a worker (they cost as much as a
    small model's forward on the CPU)."""
    n_patches = encoder.n_patches(batch["eeg"].shape[-1])
    return {**batch, "mask": block_mask(batch["positions"], n_patches, mae, generator)}


class MaePretraining(Objective):
    def __init__(self, encoder: dict, mae: dict, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.encoder_config, self.mae_config = ReveConfig(**encoder), MaeConfig(**mae)
        self.model = ReveMae(self.encoder_config, self.mae_config)

    def batch_transform(self) -> partial:
        return partial(add_masks, mae=self.mae_config, encoder=self.encoder_config)

    def n_patches(self, n_times: int) -> int:
        return self.encoder_config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        return self.model.train_flops(batch, channels, n_patches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # The jitter's generator belongs to the micro-batch, like its mask: a resumed run draws the same.
        out = self.model(batch["eeg"], batch["positions"], self.generator(batch, 1), mask=batch["mask"])
        self.log_step(
            {
                "loss": out.loss,
                "reconstruction_loss": out.reconstruction_loss,
                "secondary_loss": out.secondary_loss,
            }
        )
        return out.loss

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # Every window has as many masked patches (block_mask lands on the count), so the batch's mean
        # times its windows is the sum of the windows' own losses.
        out = self.model(batch["eeg"], batch["positions"], batch["generator"], mask=batch["mask"])
        windows = len(batch["eeg"])
        return {"val_loss": out.loss * windows, "val_reconstruction_loss": out.reconstruction_loss * windows}

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> MaePretraining:
        # Plain containers: the hyper-parameters go into checkpoints, which load with weights_only=True.
        encoder = {**asdict(SIZES[cfg.model.size]), **cfg.model.overrides}
        return cls(encoder, asdict(cfg.mae), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)
