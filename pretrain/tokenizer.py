"""Stage 1: a neural tokenizer (LaBraM VQ-NSP or NeuroRVQ-style residual VQ) as a LightningModule."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from eegfm.errors import DataError
from eegfm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from eegfm.pretrain.checkpoints import load_state
from eegfm.pretrain.objective import Objective


class TokenizerPretraining(Objective):
    def __init__(self, tokenizer: dict, optim: dict, seed: int, total_steps: int):
        super().__init__(optim, seed, total_steps)
        self.save_hyperparameters()
        self.config = TokenizerConfig(**tokenizer)
        self.model = NeuralTokenizer(self.config)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.model.sync_codebooks()

    def n_patches(self, n_times: int) -> int:
        return self.config.n_patches(n_times)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        return self.model.train_flops(batch, channels, n_patches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.model(batch["eeg"], batch["positions"])
        self.log_step({"loss": out.loss, **out.parts})
        return {"loss": out.loss, "indices": out.indices.detach()}  # indices: for CodebookHealth

    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # In eval mode the quantizers neither update their codebooks nor compute the commitment term, so
        # the loss is the spectrum's reconstruction loss alone; every window has as many patches.
        out = self.model(batch["eeg"], batch["positions"])
        size = self.config.codebook_size
        ids = out.indices.reshape(-1, out.indices.shape[-1])
        counts = torch.stack([torch.bincount(ids[:, j], minlength=size) for j in range(ids.shape[1])])
        return {"val_loss": out.loss * len(batch["eeg"]), "code_counts": counts}

    def val_metrics(self, sums: dict[str, torch.Tensor], windows: int) -> dict[str, float]:
        """val_loss; `val_codebook_usage`: distinct codes used on the val set / codebook size, and
        `val_codebook_perplexity`: exp of the entropy of the val codes, each averaged over the codebooks."""
        counts = sums["code_counts"]  # (codebooks, codebook size)
        p = counts / counts.sum(dim=1, keepdim=True)
        entropy = -(p * p.clamp(min=1e-300).log()).sum(dim=1)
        return {
            "val_loss": float(sums["val_loss"]) / windows,
            "val_codebook_usage": float((counts > 0).double().mean(dim=1).mean()),
            "val_codebook_perplexity": float(entropy.exp().mean()),
        }

    @classmethod
    def from_config(cls, cfg: Any, *, shape_only: bool = False) -> TokenizerPretraining:
        return cls(asdict(cfg.tokenizer), asdict(cfg.optim), cfg.data.seed, cfg.trainer.max_steps)


def load_tokenizer(checkpoint: str) -> NeuralTokenizer:
    """The trained tokenizer of a stage-1 checkpoint, frozen, in eval mode."""
    state = load_state(checkpoint)
    if "tokenizer" not in state.get("hyper_parameters", {}):
        raise DataError(f"{checkpoint} is not a tokenizer checkpoint (objective: tokenizer)")
    tokenizer = NeuralTokenizer(TokenizerConfig(**state["hyper_parameters"]["tokenizer"]))
    prefix = "model."
    tokenizer.load_state_dict({k.removeprefix(prefix): v for k, v in state["state_dict"].items()})
    return tokenizer.eval().requires_grad_(False)
