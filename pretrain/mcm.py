"""Stage 2: LaBraM's masked code modelling against a frozen stage-1 tokenizer, as a LightningModule."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from eegfm.errors import ConfigError
from eegfm.models.mcm import SIZES, MaskedCodeModel, McmConfig, token_mask
from eegfm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from eegfm.pretrain.checkpoints import latest_checkpoint
from eegfm.pretrain.objective import Objective
from eegfm.pretrain.tokenizer import load_tokenizer


def add_token_mask(
    batch: dict[str, Any], generator: torch.Generator, *, ratio: float, patch_size: int
) -> dict:
    """The batch's random patch mask (B, C·P), drawn in a loader worker."""
    size, channels, n_times = batch["eeg"].shape
    return {**batch, "mask": token_mask(size, channels * (n_times // patch_size), ratio, generator)}


class McmPretraining(Objective):
    """The tokenizer is part of the module (frozen, always in eval mode), so a checkpoint is complete."""

    def __init__(self, mcm: dict, tokenizer: dict, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.tokenizer = NeuralTokenizer(TokenizerConfig(**tokenizer)).requires_grad_(False)
        self.config = McmConfig.for_tokenizer(self.tokenizer.config, **mcm)
        self.model = MaskedCodeModel(self.config)

    def train(self, mode: bool = True) -> McmPretraining:
        super().train(mode)
        self.tokenizer.eval()  # never update the frozen codebooks
        return self

    def batch_transform(self) -> partial:
        return partial(add_token_mask, ratio=self.config.mask_ratio, patch_size=self.config.patch_size)

    def n_patches(self, n_times: int) -> int:
        return self.config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        return self.model.train_flops(batch, channels, n_patches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # Ids precomputed by `eegfm tokenize` with this very tokenizer (data.tokens), or computed here.
        codes = batch.get("codes")
        if codes is None:
            codes = self.tokenizer.tokenize(batch["eeg"], batch["positions"])
        codes = codes.flatten(1, 2)
        out = self.model(batch["eeg"], batch["positions"], codes, batch["mask"])
        self.log_step({"loss": out.loss, "masked_code_accuracy": out.accuracy})
        return out.loss

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # The codes are always computed here (the val split has no token shards), by the same frozen
        # tokenizer whose ids `eegfm tokenize` stores; every window has as many masked patches.
        codes = self.tokenizer.tokenize(batch["eeg"], batch["positions"]).flatten(1, 2)
        out = self.model(batch["eeg"], batch["positions"], codes, batch["mask"])
        windows = len(batch["eeg"])
        return {"val_loss": out.loss * windows, "val_masked_code_accuracy": out.accuracy * windows}

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> McmPretraining:
        """Stage 2 of `cfg.tokenizer.checkpoint` (a stage-1 checkpoint, or its run directory). With
        `shape_only` and no checkpoint (parameter counts), a default VQ-NSP tokenizer stands in."""
        checkpoint = latest_checkpoint(cfg.tokenizer.checkpoint) if cfg.tokenizer.checkpoint else None
        if checkpoint is None and not shape_only:
            raise ConfigError(
                f"tokenizer.checkpoint={cfg.tokenizer.checkpoint}: no stage-1 tokenizer checkpoint there"
            )
        tokenizer = load_tokenizer(checkpoint) if checkpoint else NeuralTokenizer(TokenizerConfig())
        mcm = {**SIZES[cfg.model.size], **cfg.model.overrides, "mask_ratio": cfg.mcm.mask_ratio}
        module = cls(mcm, asdict(tokenizer.config), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)
        module.tokenizer.load_state_dict(tokenizer.state_dict())
        return module
