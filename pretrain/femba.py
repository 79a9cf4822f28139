"""FEMBA pretraining (Tegon et al. 2025) as a LightningModule: masked reconstruction of a fixed montage.

FEMBA's token width is channels/2 × embed_dim, so every window must have the same channels in the same
order (`models/femba.py`). The stream cuts each window to `data.channels` by name (the run schema's
default: 18 channels of the 10-20 system that every fixture/TUEG montage has, ordered so each 2-channel
patch row holds neighbours); a window lacking one is skipped and counted (`skipped_windows` in
metrics.csv), never padded. A micro-batch whose windows were all skipped trains on nothing: its loss is
a zero that reaches every parameter (so DDP's and FSDP's reductions still run on every rank).

A loader worker draws each window's mask (exactly ⌊ratio · rows·steps⌋ hidden 2 × 16 rectangles) from the
micro-batch's own generator and, with `femba.lowpass`, filters the window into the reconstruction target
(the "physiologically aware" objective: a zero-phase low-pass, flat to `passband_hz`); the loss is
Smooth-L1 on the hidden samples.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.models import femba
from eegfm.pretrain.objective import Objective


def add_mask_and_target(
    batch: dict[str, Any],
    generator: torch.Generator,
    *,
    config: femba.FembaConfig,
    ratio: float,
    kernel: torch.Tensor | None,
) -> dict[str, Any]:
    """The batch's (B, rows, steps) rectangle mask, true = hidden, and its reconstruction target (the
    window, low-passed with `kernel` if given), made in a loader worker."""
    eeg = batch["eeg"]
    target = femba.lowpass(eeg, kernel) if kernel is not None and len(eeg) else eeg
    return {**batch, "mask": femba.patch_mask(len(eeg), config, generator, ratio), "target": target}


class FembaPretraining(Objective):
    """Every window of a micro-batch hides as many samples, so the batch's mean loss is the mean of its
    windows' (val_loss sums them per window)."""

    def __init__(self, femba: dict, settings: dict, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.config, self.settings = femba_config(femba), settings
        self.model = femba_model(self.config)

    def batch_transform(self) -> partial:
        kernel = None
        if self.settings["lowpass"]:
            kernel = femba.lowpass_kernel(
                self.settings["sfreq"], self.settings["passband_hz"], self.settings["stopband_hz"]
            )
        ratio = self.settings["mask_ratio"]
        return partial(add_mask_and_target, config=self.config, ratio=ratio, kernel=kernel)

    def n_patches(self, n_times: int) -> int:
        """16-sample segments per channel: a channel's share of the 2 × 16 rectangles, for Throughput's
        windows × channels × n_patches."""
        return self.config.steps

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """6 · parameters · time steps (each weight of the Mamba blocks runs once per step's token)."""
        return 6.0 * sum(p.numel() for p in self.model.parameters()) * batch * self.config.steps

    def forward_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        samples = femba.sample_mask(batch["mask"], self.config)
        reconstruction = self.model(batch["eeg"], samples)
        return femba.reconstruction_loss(reconstruction, batch["target"], samples)

    def no_window_loss(self) -> torch.Tensor:
        """A zero loss that reaches every parameter: what a micro-batch emptied by `data.channels` trains."""
        return sum(p.sum() for p in self.parameters()) * 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        empty = len(batch["eeg"]) == 0
        loss = self.no_window_loss() if empty else self.forward_loss(batch)
        skipped = torch.tensor(float(batch.get("skipped_windows", 0)), device=loss.device)
        self.log_step({"loss": loss, "skipped_windows": skipped})
        return loss

    def log_step(self, values: dict[str, torch.Tensor]) -> None:
        """As every objective's, but `skipped_windows` is summed over the ranks, not averaged."""
        skipped = values.pop("skipped_windows")
        super().log_step(values)
        self.log("skipped_windows", skipped, reduce_fx="sum", sync_dist=True)

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        windows = len(batch["eeg"])
        loss = self.forward_loss(batch) * windows if windows else torch.zeros(())
        return {"val_loss": loss, "val_windows": torch.tensor([windows])}

    def val_metrics(self, sums: dict[str, torch.Tensor], windows: int) -> dict[str, float]:
        """val_loss per window evaluated (the val windows lacking a channel of data.channels are not)."""
        kept = int(sums["val_windows"].sum())
        return {"val_loss": float(sums["val_loss"]) / max(kept, 1), "val_skipped_windows": windows - kept}

    def published_counts(self) -> dict[str, int]:
        """The published sizes count a 22-channel × 1280-sample input (tiny: the encoder alone; the larger
        ones with the authors' Mamba classification head), not this run's montage and window."""
        published = femba.FembaConfig(**{**asdict(self.config), "channels": 22, "n_times": 1280})
        return {
            "as published (22 × 1280 input; encoder alone)": femba.parameter_count(published, head=False),
            "as published (22 × 1280 input; encoder + Mamba classification head)": femba.parameter_count(
                published
            ),
        }

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> FembaPretraining:
        fields = {
            **asdict(femba.SIZES[cfg.model.size]),
            "channels": len(cfg.data.channels),
            **cfg.model.overrides,
        }
        return cls(fields, asdict(cfg.femba), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)


def femba_config(fields: dict) -> femba.FembaConfig:
    return femba.FembaConfig(**fields)


def femba_model(config: femba.FembaConfig) -> femba.FembaPretrain:
    return femba.FembaPretrain(config)
