"""REVE's 4D positional encoding of (x, y, z, t): electrode position in metres, patch index in time.

Fixed Fourier features over every frequency tuple (fx, fy, fz, ft) ∈ [0, freqs)⁴ plus a learned
Linear → GELU → LayerNorm branch, summed and normalised. Any montage the positions describe is encoded,
which is what lets one model see every corpus.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmb4D(nn.Module):
    """cos/sin of ⟨(x, y, z, t·time_scale) + margin, 2π·f / (1 + 2·margin)⟩ for all f, truncated to `dim`."""

    def __init__(self, dim: int, freqs: int, time_scale: float = 0.1, margin: float = 0.4):
        super().__init__()
        if freqs**4 < dim // 2:
            raise ValueError(f"{freqs}⁴ frequency tuples cannot fill {dim // 2} features: raise `freqs`")
        self.dim, self.time_scale, self.margin = dim, time_scale, margin
        grid = torch.stack(torch.meshgrid(*[torch.arange(freqs)] * 4, indexing="ij"), dim=-1).reshape(-1, 4)
        omega = 2 * math.pi * grid.float() / (1 + 2 * margin)  # x varies slowest, t fastest
        self.register_buffer("omega", omega[: dim // 2], persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        scale = positions.new_tensor([1.0, 1.0, 1.0, self.time_scale])
        phase = (positions * scale + self.margin) @ self.omega.T.to(positions.dtype)
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class PositionEncoding4D(nn.Module):
    """The summed, normalised Fourier + learned encoding of (x, y, z, t) token coordinates."""

    def __init__(self, dim: int, freqs: int):
        super().__init__()
        self.fourier4d = FourierEmb4D(dim, freqs)
        self.mlp4d = nn.Sequential(nn.Linear(4, dim, bias=False), nn.GELU(), nn.LayerNorm(dim))
        self.ln = nn.LayerNorm(dim)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self.ln(self.fourier4d(coordinates) + self.mlp4d(coordinates))


def token_coordinates(positions: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(B, C, 3) electrode positions → (B, C·P, 4) token coordinates, channel-major like the tokens."""
    batch, channels, _ = positions.shape
    time = torch.arange(n_patches, device=positions.device, dtype=positions.dtype)
    xyz = positions[:, :, None, :].expand(batch, channels, n_patches, 3)
    t = time[None, None, :, None].expand(batch, channels, n_patches, 1)
    return torch.cat([xyz, t], dim=-1).reshape(batch, channels * n_patches, 4)
