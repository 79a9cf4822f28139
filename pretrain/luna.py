"""LUNA pretraining (Döner et al., NeurIPS 2025) as a LightningModule: masked reconstruction of patches.

Any channel count (the learned queries compress each patch's channels), micro-batches from the channel
budget like REVE's, z-scored input (the default `data.normalise`). A loader worker draws each window's
mask (exactly ⌊ratio · C·P⌋ hidden (channel, 40-sample patch) cells) and the noise on its normalised
positions from the micro-batch's own generator; the loss is Smooth-L1 on the hidden samples +
`unmasked_weight` × on the rest + the query-specialisation term (`models/luna.py`).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.models import luna
from eegfm.pretrain.objective import Objective


def add_mask_and_noise(
    batch: dict[str, Any], generator: torch.Generator, *, config: luna.LunaConfig, ratio: float
):
    """The batch's (B, C, P) mask, true = hidden, and (B, C, 3) position noise, drawn in a loader worker."""
    size, channels, n_times = batch["eeg"].shape
    mask = luna.patch_mask(size, channels, config.n_patches(n_times), generator, ratio)
    noise = luna.position_noise(batch["positions"], generator, config.position_noise)
    return {**batch, "mask": mask, "position_noise": noise}


class LunaPretraining(Objective):
    """Every window of a micro-batch has as many hidden cells and patches, so the batch's mean losses are
    the mean of its windows' (val_loss sums them per window)."""

    model_class: Any = luna.LunaPretrain

    def __init__(self, luna: dict, settings: dict, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.config, self.settings = self.build_config(luna), settings
        self.model = self.model_class(self.config)
        self.init_weights()

    def build_config(self, fields: dict) -> Any:
        return luna.LunaConfig(**fields)

    def init_weights(self) -> None:
        luna.init_like_authors(self.model)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def batch_transform(self) -> partial:
        return partial(add_mask_and_noise, config=self.luna_config, ratio=self.settings["mask_ratio"])

    @property
    def luna_config(self) -> luna.LunaConfig:
        return self.config

    def n_patches(self, n_times: int) -> int:
        return self.luna_config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """6 · parameters · channel tokens: an upper bound (the temporal blocks see one token per patch)."""
        return 6.0 * sum(p.numel() for p in self.model.parameters()) * batch * channels * n_patches

    def losses(self, batch: dict[str, Any], noise: torch.Tensor | None) -> dict[str, torch.Tensor]:
        prediction, weights = self.model(batch["eeg"], batch["positions"], batch["mask"], noise)
        batch_size, channels, n_times = batch["eeg"].shape
        target = batch["eeg"].reshape(batch_size, channels, n_times // self.patch_size, self.patch_size)
        reconstruction = luna.reconstruction_loss(
            prediction, target, batch["mask"], self.settings["unmasked_weight"]
        )
        queries = luna.query_specialisation_loss(weights, self.settings["query_loss_weight"])
        return {
            "loss": reconstruction + queries,
            "reconstruction_loss": reconstruction,
            "query_loss": queries,
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        values = self.losses(batch, batch["position_noise"])
        self.log_step(values)
        return values["loss"]

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # No position noise in evaluation: it is a training augmentation.
        values, windows = self.losses(batch, None), len(batch["eeg"])
        return {
            "val_loss": values["loss"] * windows,
            "val_reconstruction_loss": values["reconstruction_loss"] * windows,
        }

    def published_counts(self) -> dict[str, int]:
        """The published sizes count the encoder with the authors' classification head (`eegfm params`)."""
        return {"as published (encoder + classification head)": luna.parameter_count(self.config)}

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> LunaPretraining:
        fields = {**asdict(luna.SIZES[cfg.model.size]), **cfg.model.overrides}
        return cls(fields, asdict(cfg.luna), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)
