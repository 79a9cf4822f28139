"""LaBraM's masked code modelling: predict the frozen tokenizer's code ids of masked patches.

A learnable mask token replaces half of the patch embeddings; the transformer sees every token (with its
electrode position and patch time) and a linear head per code position (one for VQ-NSP, one per branch
and residual level for residual VQ) classifies the masked patches' codes. The second, symmetric pass
masks the complementary half, so every patch is a target once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.models.layers import RMSNorm, TemporalConv, Transformer, matrix_parameters
from eegfm.models.position import PositionEncoding4D, token_coordinates
from eegfm.models.tokenizer import TokenizerConfig, patchify


@dataclass(frozen=True)
class McmConfig:
    patch_size: int = 200
    embed_dim: int = 200
    depth: int = 12
    heads: int = 10
    mlp_ratio: float = 8 / 3
    freqs: int = 4
    mask_ratio: float = 0.5
    codebook_size: int = 8192  # of the tokenizer
    codes_per_patch: int = 1  # of the tokenizer: 1 (VQ-NSP) or branches × levels (residual VQ)

    @classmethod
    def for_tokenizer(cls, tokenizer: TokenizerConfig, **mcm: float) -> McmConfig:
        """The stage-2 shape that predicts `tokenizer`'s codes: its patches, codebook and codes per patch."""
        return cls(
            **mcm,
            patch_size=tokenizer.patch_size,
            codebook_size=tokenizer.codebook_size,
            codes_per_patch=tokenizer.codes_per_patch,
        )

    def n_patches(self, n_times: int) -> int:
        if n_times < self.patch_size:
            raise ValueError(f"{n_times} samples are fewer than one {self.patch_size}-sample patch")
        return n_times // self.patch_size


# Encoder sizes (parameters of the encoder, heads excluded: base ≈ 5.8M, large ≈ 46M, huge ≈ 369M).
SIZES: dict[str, dict[str, int]] = {
    "labram_tiny": {"embed_dim": 50, "depth": 2, "heads": 2},
    "labram_base": {"embed_dim": 200, "depth": 12, "heads": 10},
    "labram_large": {"embed_dim": 400, "depth": 24, "heads": 16},
    "labram_huge": {"embed_dim": 800, "depth": 48, "heads": 16, "freqs": 5},
}


def token_mask(batch: int, tokens: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(B, N) bool, exactly round(ratio·N) True per row, at random."""
    order = torch.rand(batch, tokens, generator=generator).argsort(dim=1)
    return order < round(ratio * tokens)


@dataclass
class McmOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor  # share of masked codes predicted right, both passes


class MaskedCodeEncoder(nn.Module):
    """The part that is exported: patch embedding, 4D positions, mask token, transformer."""

    def __init__(self, config: McmConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = TemporalConv(c.patch_size, c.embed_dim)
        self.position = PositionEncoding4D(c.embed_dim, c.freqs)
        self.mask_token = nn.Parameter(torch.zeros(c.embed_dim))
        self.transformer = Transformer(
            c.embed_dim, c.depth, c.heads, c.embed_dim // c.heads, int(c.embed_dim * c.mlp_ratio)
        )
        self.norm = RMSNorm(c.embed_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self, eeg: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C·P, E) features; patches where `mask` (B, C·P) is True are replaced by the mask token."""
        patches = patchify(eeg, self.config.patch_size)
        batch, channels, n_patches, _ = patches.shape
        tokens = self.patch_embed(patches).reshape(batch, channels * n_patches, -1)
        if mask is not None:
            tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + self.position(token_coordinates(positions, n_patches))
        return self.norm(self.transformer(tokens))


class MaskedCodeModel(nn.Module):
    def __init__(self, config: McmConfig):
        super().__init__()
        self.config = config
        self.encoder = MaskedCodeEncoder(config)
        self.head = nn.Linear(config.embed_dim, config.codes_per_patch * config.codebook_size)
        self.matrix_params = matrix_parameters(self.encoder.transformer)  # before any FSDP flattening

    def _pass(self, eeg: torch.Tensor, positions: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor):
        logits = self.head(self.encoder(eeg, positions, mask)[mask])
        logits = logits.reshape(-1, self.config.codes_per_patch, self.config.codebook_size)
        target = codes[mask]
        loss = F.cross_entropy(logits.reshape(-1, self.config.codebook_size), target.reshape(-1))
        return loss, (logits.argmax(dim=-1) == target).float().mean()

    def forward(
        self, eeg: torch.Tensor, positions: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
    ) -> McmOutput:
        """`codes` (B, C·P, codes_per_patch) from the tokenizer; `mask` (B, C·P), and its complement."""
        loss, accuracy = self._pass(eeg, positions, codes, mask)
        symmetric_loss, symmetric_accuracy = self._pass(eeg, positions, codes, ~mask)
        return McmOutput((loss + symmetric_loss) / 2, (accuracy + symmetric_accuracy) / 2)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """Model FLOPs of both passes' forward + backward (3× the forward's matmuls and attention)."""
        c, tokens = self.config, channels * n_patches
        forward = 2 * self.matrix_params * tokens + 4 * c.depth * c.embed_dim * tokens**2
        forward += 2 * c.embed_dim * c.codes_per_patch * c.codebook_size * tokens * c.mask_ratio
        return 2 * 3.0 * batch * forward
