"""REVE's encoder: 1-s patches of every channel, 4D positions, a pre-norm transformer over all tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from eegfm.models.layers import Transformer
from eegfm.models.position import PositionEncoding4D, token_coordinates


@dataclass(frozen=True)
class ReveConfig:
    embed_dim: int = 512
    depth: int = 22
    heads: int = 8
    head_dim: int = 64
    mlp_ratio: float = 2.66
    freqs: int = 4  # Fourier frequencies per coordinate: freqs⁴ ≥ embed_dim / 2
    patch_size: int = 200  # 1 s at 200 Hz
    patch_stride: int = 180  # REVE's 20-sample overlap: a 10-s window gives 11 patches

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def n_patches(self, n_times: int) -> int:
        if n_times < self.patch_size:
            raise ValueError(f"{n_times} samples are fewer than one {self.patch_size}-sample patch")
        return (n_times - self.patch_size) // self.patch_stride + 1


# Encoder sizes; parameter counts are checked by the tests (small ≈ 12.7M, base ≈ 69.2M, large ≈ 390M).
SIZES: dict[str, ReveConfig] = {
    "reve_tiny": ReveConfig(embed_dim=64, depth=2, heads=2, head_dim=32),
    "reve_small": ReveConfig(embed_dim=256, depth=16, heads=4),
    "reve_base": ReveConfig(embed_dim=512, depth=22, heads=8),
    "reve_large": ReveConfig(embed_dim=1216, depth=22, heads=19, freqs=5),
}


class ReveEncoder(nn.Module):
    """(B, C, T) µV z-scored EEG + (B, C, 3) positions in metres → (B, C, P, E) token features."""

    def __init__(self, config: ReveConfig):
        super().__init__()
        self.config = config
        self.to_patch_embedding = nn.Sequential(nn.Linear(config.patch_size, config.embed_dim))
        self.position = PositionEncoding4D(config.embed_dim, config.freqs)
        self.transformer = Transformer(
            config.embed_dim, config.depth, config.heads, config.head_dim, config.mlp_hidden
        )

    def patchify(self, eeg: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, P, patch_size) overlapping patches."""
        self.config.n_patches(eeg.shape[-1])
        return eeg.unfold(-1, self.config.patch_size, self.config.patch_stride)

    def embed(self, eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, C·P, E), channel-major: token c·P + p is channel c's p-th patch."""
        patches = self.patchify(eeg)
        batch, channels, n_patches, _ = patches.shape
        tokens = self.to_patch_embedding(patches).reshape(batch, channels * n_patches, -1)
        return tokens + self.position(token_coordinates(positions, n_patches))

    def forward(self, eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, channels, n_times = eeg.shape
        features = self.transformer(self.embed(eeg, positions))
        return features.reshape(batch, channels, self.config.n_patches(n_times), -1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
