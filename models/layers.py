"""Transformer parts shared by the encoders: RMSNorm, GEGLU feed-forward, SDPA attention.

Module names follow braindecode's REVE (`layers.<i>.0` attention, `layers.<i>.1.net` feed-forward) so an
encoder's state dict loads into that class as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 whatever the autocast dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * value


class FeedForward(nn.Module):
    """Pre-norm GEGLU feed-forward without biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, 2 * hidden, bias=False), GEGLU(), nn.Linear(hidden, dim, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention, bias-free QKV; SDPA picks flash kernels on GPU."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).view(batch, length, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, length, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class Transformer(nn.Module):
    """Pre-norm blocks; returns the last layer, or every layer's output (input first) for REVE's pooling."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, head_dim), FeedForward(dim, mlp_hidden)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, all_layers: bool = False) -> torch.Tensor | list[torch.Tensor]:
        outputs = [x]
        for attention, feed_forward in self.layers:
            x = x + attention(x)
            x = x + feed_forward(x)
            if all_layers:
                outputs.append(x)
        return outputs if all_layers else x


class TemporalConv(nn.Module):
    """LaBraM's patch embedding: each patch of samples through conv k15/s8 → k3 → k3 (GELU, GroupNorm),
    flattened to `channels × ⌈patch / 8⌉` features (8 × 25 = 200 for 1-s patches at 200 Hz)."""

    def __init__(self, patch_size: int, embed_dim: int, kernel: int = 15):
        super().__init__()
        length = -(-patch_size // 8)
        if embed_dim % length:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of the {length} conv steps per patch")
        width = embed_dim // length
        self.net = nn.Sequential(
            nn.Conv1d(1, width, kernel, stride=8, padding=kernel // 2),
            nn.GELU(),
            nn.GroupNorm(min(4, width), width),
            nn.Conv1d(width, width, 3, padding=1),
            nn.GELU(),
            nn.GroupNorm(min(4, width), width),
            nn.Conv1d(width, width, 3, padding=1),
            nn.GroupNorm(min(4, width), width),
            nn.GELU(),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(..., patch_size) → (..., embed_dim)."""
        leading = patches.shape[:-1]
        out = self.net(patches.reshape(-1, 1, patches.shape[-1]))
        return out.flatten(1).reshape(*leading, -1)


def matrix_parameters(module: nn.Module) -> int:
    """Parameters of a module's weight matrices: what its matmuls cost per token (2 FLOPs each).

    Counted when a model is built: FSDP later flattens parameters into 1-D shards, after which neither
    their shapes nor their per-rank sizes say what the model computes.
    """
    return sum(p.numel() for p in module.parameters() if p.dim() == 2)
