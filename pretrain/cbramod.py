"""CBraMod pretraining (Wang et al., ICLR 2025) as a LightningModule: masked-patch reconstruction.

The stream feeds µV / 100 (`data.normalise=scale`, `data.scale_uv=100`: the authors' units, the run
schema's default), any channel count, micro-batches from the channel budget like REVE's. Each (window,
channel, 1-s patch) is hidden with probability `cbramod.mask_ratio` (the authors' Bernoulli ½), drawn in a
loader worker from the micro-batch's own generator; the loss is the MSE over the hidden patches
(`models/cbramod.py`). Dropout draws from the global generator, which checkpoints restore (RngState).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.models.cbramod import SIZES, CBraModConfig, CBraModPretrain, patch_mask, reconstruction_loss
from eegfm.pretrain.objective import Objective


def add_patch_mask(batch: dict[str, Any], generator: torch.Generator, *, config: CBraModConfig, ratio: float):
    """The batch's (B, C, P) patch mask, true = hidden, drawn in a loader worker."""
    size, channels, n_times = batch["eeg"].shape
    return {**batch, "mask": patch_mask(size, channels, config.n_patches(n_times), generator, ratio)}


def masked_mse_per_window(
    prediction: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(B,) each window's MSE over its own hidden patches (the Bernoulli mask hides a different number in
    each window, so a window's value is not the batch's mean)."""
    hidden = mask.to(prediction.dtype)
    squared = (prediction - patches).square().mean(-1)
    return (squared * hidden).sum((1, 2)) / hidden.sum((1, 2)).clamp(min=1)


class CbramodPretraining(Objective):
    def __init__(self, cbramod: dict, mask_ratio: float, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.config = CBraModConfig(**{**cbramod, "position_kernel": tuple(cbramod["position_kernel"])})
        self.mask_ratio = mask_ratio
        self.model = CBraModPretrain(self.config)

    def batch_transform(self) -> partial:
        return partial(add_patch_mask, config=self.config, ratio=self.mask_ratio)

    def n_patches(self, n_times: int) -> int:
        return self.config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """6 · parameters · tokens (forward + backward of every weight once per token); the attention
        scores are left out (≤ 10 % at 19 channels × 10 patches, width 200)."""
        return 6.0 * sum(p.numel() for p in self.model.parameters()) * batch * channels * n_patches

    def forward_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        patches = self.model.encoder.patchify(batch["eeg"])
        return self.model(batch["eeg"], batch["mask"]), patches, batch["mask"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        prediction, patches, mask = self.forward_loss(batch)
        loss = reconstruction_loss(prediction, patches, mask)
        self.log_step({"loss": loss, "masked_fraction": mask.float().mean()})
        return loss

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"val_loss": masked_mse_per_window(*self.forward_loss(batch)).sum()}

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> CbramodPretraining:
        config = {**asdict(SIZES[cfg.model.size]), **cfg.model.overrides}
        return cls(config, cfg.cbramod.mask_ratio, asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)
