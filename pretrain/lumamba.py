"""LuMamba pretraining (Broustail et al., pulp-bio/BioFoundation) as a LightningModule.

LuMamba is LUNA's channel unification followed by bidirectional Mamba blocks (`models/lumamba.py`), so it
trains like LUNA (`pretrain/luna.py`): any channel count, micro-batches from the channel budget, z-scored
input, each window's (channel, 40-sample patch) mask and position noise drawn in a loader worker from the
micro-batch's own generator, Smooth-L1 on the hidden samples + `unmasked_weight` × on the rest + the
query-specialisation term. With `lumamba.lejepa_weight` > 0 the LeJEPA term is added: the worker also
draws the step's local and global crops and SIGReg's random directions from the same generator, so a
resumed run draws them again exactly. SIGReg's statistic is per rank (each rank's own windows), not
averaged over ranks.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.models import lumamba
from eegfm.pretrain.luna import LunaPretraining, add_mask_and_noise
from eegfm.pretrain.objective import Objective

LOCAL_PATCHES, GLOBAL_PATCHES = 4, 16  # the authors' crop widths, in patches


def add_masks_and_views(
    batch: dict[str, Any],
    generator: torch.Generator,
    *,
    config: lumamba.LuMambaConfig,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """LUNA's mask and position noise; with LeJEPA on, then its crops and directions, all drawn in a
    loader worker from the micro-batch's generator (in this order)."""
    batch = add_mask_and_noise(batch, generator, config=config.luna, ratio=settings["mask_ratio"])
    if settings["lejepa_weight"] > 0:
        eeg, patch = batch["eeg"], config.patch_size
        local = LOCAL_PATCHES * patch
        batch["local_views"] = lumamba.crop_views(eeg, settings["local_views"], local, generator)
        batch["global_views"] = lumamba.crop_views(
            eeg, settings["global_views"], GLOBAL_PATCHES * patch, generator
        )
        batch["directions"] = lumamba.random_directions(config.latent_dim, settings["slices"], generator)
    return batch


class LumambaPretraining(LunaPretraining):
    """LUNA's objective on LuMamba's model, plus the optional LeJEPA term. Its hyperparameters hold the
    model's fields under `lumamba` (what `eegfm export` rebuilds the encoder from)."""

    model_class: Any = lumamba.LuMambaPretrain

    def __init__(self, lumamba: dict, settings: dict, optim: dict, seed: int, total_steps: int):
        Objective.__init__(self, optim, seed, total_steps)  # not LUNA's: its hyperparameters are `luna`
        self.save_hyperparameters()
        self.config, self.settings = self.build_config(lumamba), settings
        self.model = self.model_class(self.config)
        self.init_weights()

    def build_config(self, fields: dict) -> lumamba.LuMambaConfig:
        return lumamba.LuMambaConfig(**fields)

    def init_weights(self) -> None:
        lumamba.init_like_authors(self.model)

    @property
    def luna_config(self) -> Any:
        return self.config.luna

    def batch_transform(self) -> partial:
        return partial(add_masks_and_views, config=self.config, settings=self.settings)

    def losses(self, batch: dict[str, Any], noise: torch.Tensor | None) -> dict[str, torch.Tensor]:
        values = super().losses(batch, noise)
        if self.settings["lejepa_weight"] > 0 and "local_views" in batch:
            encoder, positions = self.model.encoder, batch["positions"]
            local = lumamba.view_embeddings(encoder, batch["local_views"], positions)
            global_ = lumamba.view_embeddings(encoder, batch["global_views"], positions)
            lejepa = lumamba.lejepa_loss(local, global_, batch["directions"], self.settings["lejepa_lambda"])
            values["lejepa_loss"] = lejepa
            values["loss"] = values["loss"] + self.settings["lejepa_weight"] * lejepa
        return values

    def published_counts(self) -> dict[str, int]:
        """The paper's 4.6M counts the encoder with the authors' Mamba classification head."""
        return {"as published (encoder + Mamba classification head)": lumamba.parameter_count(self.config)}

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> LumambaPretraining:
        fields = {**asdict(lumamba.SIZES[cfg.model.size]), **cfg.model.overrides}
        return cls(fields, asdict(cfg.lumamba), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)
