"""A frozen encoder's features for probing: token layers, mean pooling, REVE's attention-pooling query.

Plain PyTorch over one batch at a time, no I/O and no Lightning, so that `eegfm probe` (one process) and
the in-loop probe (every rank embeds its share, the features are gathered) call the same functions.
"""

from __future__ import annotations

import torch
from torch import nn

from eegfm.models.mcm import MaskedCodeEncoder
from eegfm.models.position import token_coordinates
from eegfm.models.reve import ReveEncoder
from eegfm.models.tokenizer import patchify

POOLINGS = ("mean", "attention")
LAYERS = ("last", "all")


def token_layers(
    encoder: ReveEncoder | MaskedCodeEncoder, eeg: torch.Tensor, positions: torch.Tensor, layers: str
) -> list[torch.Tensor]:
    """(B, C, T) z-scored EEG + (B, C, 3) positions → each selected layer's tokens, (B, C·P, E) each.

    `last`: the encoder's output as its forward gives it (the masked-code encoder's includes its final
    norm). `all`: every transformer block's output, first block first (the embeddings before the first
    block are left out, as REVE's pooling leaves them out); for the masked-code encoder each goes through
    the final norm, so that the layers are on one scale.
    """
    if layers not in LAYERS:
        raise ValueError(f"layers={layers!r}: one of {LAYERS}")
    if isinstance(encoder, ReveEncoder):
        tokens = encoder.embed(eeg, positions)
        if layers == "last":
            return [encoder.transformer(tokens)]
        return encoder.transformer(tokens, all_layers=True)[1:]
    if isinstance(encoder, MaskedCodeEncoder):
        if layers == "last":
            return [encoder(eeg, positions)]
        patches = patchify(eeg, encoder.config.patch_size)
        batch, channels, n_patches, _ = patches.shape
        tokens = encoder.patch_embed(patches).reshape(batch, channels * n_patches, -1)
        tokens = tokens + encoder.position(token_coordinates(positions, n_patches))
        return [encoder.norm(x) for x in encoder.transformer(tokens, all_layers=True)[1:]]
    raise TypeError(f"no features for a {type(encoder).__name__}: a REVE or masked-code encoder")


def mean_features(layers: list[torch.Tensor]) -> torch.Tensor:
    """Each layer's mean token, concatenated: (B, L·E). Every channel and patch counts alike, so windows
    of any montage give vectors of one length."""
    return torch.cat([x.mean(dim=1) for x in layers], dim=-1)


def stacked_tokens(layers: list[torch.Tensor]) -> torch.Tensor:
    """Every selected layer's tokens side by side, (B, L·C·P, E): what one attention query pools over."""
    return torch.cat(layers, dim=1)


class AttentionPool(nn.Module):
    """REVE's pooling: one learned query scores every token, and the softmax-weighted sum of the tokens
    is the window's vector (B, N, E) → (B, E). Trained with the probe, the encoder staying frozen."""

    def __init__(self, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim, generator=generator) * dim**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(tokens @ self.query / tokens.shape[-1] ** 0.5, dim=1)
        return (weights.unsqueeze(-1) * tokens).sum(dim=1)


@torch.no_grad()
def embed_batch(
    encoder: ReveEncoder | MaskedCodeEncoder,
    eeg: torch.Tensor,
    positions: torch.Tensor,
    *,
    pooling: str,
    layers: str,
) -> torch.Tensor:
    """One batch's features, encoder frozen: `mean` → (B, L·E) pooled vectors; `attention` → (B, N, E)
    stacked tokens, to be pooled by an `AttentionPool` the probe trains."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: one of {POOLINGS}")
    selected = token_layers(encoder, eeg, positions, layers)
    return mean_features(selected) if pooling == "mean" else stacked_tokens(selected)
