"""REVE's masked autoencoder: spatio-temporal block masks, a light decoder, and the secondary loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eegfm.models.layers import RMSNorm, Transformer, matrix_parameters
from eegfm.models.position import PositionEncoding4D, token_coordinates
from eegfm.models.reve import ReveConfig, ReveEncoder


@dataclass(frozen=True)
class MaeConfig:
    mask_ratio: float = 0.55
    """Share of tokens masked, exactly, in every sample."""
    block_radius_m: float = 0.03
    """A block: every channel within this radius (m) of a random seed electrode …"""
    block_patches: int = 3
    """… held over this many consecutive patches."""
    channel_dropout: float = 0.1
    """Share of channels masked whole, part of mask_ratio."""
    decoder_dim: int = 512
    """Width of the MAE decoder."""
    decoder_depth: int = 4
    """Transformer blocks of the MAE decoder."""
    decoder_heads: int = 8
    """Attention heads of the MAE decoder."""
    secondary_weight: float = 0.1
    """Weight of REVE's secondary loss (reconstruction from the pooled encoder output)."""
    position_jitter_m: float = 0.0025
    """σ (m) of the Gaussian added to electrode positions in training."""


def block_mask(
    positions: torch.Tensor, n_patches: int, config: MaeConfig, generator: torch.Generator
) -> torch.Tensor:
    """(B, C, 3) positions → (B, C, P) bool, True = masked, exactly round(ratio·C·P) per sample.

    Built on the (channel, patch) grid that the tokens flatten channel-major, so a block is a spatial
    neighbourhood over consecutive patches (the public REVE code builds its mask in the transposed order,
    which scatters its "blocks" into random tokens). Vectorised over the batch; each round places as many
    blocks per sample as fill at most half of what it still lacks (one, near the end), and the last one is
    trimmed at random to land exactly on the count.
    """
    batch, channels, _ = positions.shape
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    target = round(config.mask_ratio * channels * n_patches)
    xyz = positions.detach().float().cpu()
    near = (torch.cdist(xyz, xyz) <= config.block_radius_m).numpy()  # (B, C, C)
    block_tokens = near.sum(axis=2).mean(axis=1) * min(config.block_patches, n_patches)  # (B,) on average
    rows = np.arange(batch)[:, None]
    n_dropped = min(round(config.channel_dropout * channels), target // max(n_patches, 1))
    dropped = np.argsort(rng.random((batch, channels)), axis=1) < n_dropped  # rank < n: n random channels
    masks = np.repeat(dropped[:, :, None], n_patches, axis=2)
    count = masks.sum(axis=(1, 2))
    time = np.arange(n_patches)
    while (count < target).any():
        lacking = target - count
        blocks = np.where(lacking > 0, np.maximum(lacking // (2 * block_tokens), 1), 0).astype(int)  # (B,)
        most = int(blocks.max())
        seeds = rng.integers(channels, size=(batch, most))
        starts = rng.integers(max(n_patches - config.block_patches, 0) + 1, size=(batch, most, 1))
        in_time = (time >= starts) & (time < starts + config.block_patches)  # (B, K, P)
        placed = near[rows, seeds] & (np.arange(most) < blocks[:, None])[:, :, None]  # (B, K, C)
        new = (placed[..., None] & in_time[:, :, None, :]).any(axis=1) & ~masks
        excess = count + new.sum(axis=(1, 2)) - target
        over = np.flatnonzero(excess > 0)
        if over.size:
            keys = np.where(new[over], rng.random((over.size, *new.shape[1:])), np.inf).reshape(over.size, -1)
            rank = np.argsort(np.argsort(keys, axis=1), axis=1).reshape(over.size, *new.shape[1:])
            new[over] &= ~(rank < excess[over, None, None])
        masks |= new
        count = masks.sum(axis=(1, 2))
    return torch.from_numpy(masks).to(positions.device)


@dataclass
class MaeOutput:
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    secondary_loss: torch.Tensor
    prediction: torch.Tensor  # (B, masked, patch_size)
    target: torch.Tensor  # (B, masked, patch_size)
    mask: torch.Tensor  # (B, C, P), True = masked


class ReveMae(nn.Module):
    """Encoder on the visible tokens; decoder fills in the masked ones; L1 on the masked patches."""

    def __init__(self, encoder_config: ReveConfig, config: MaeConfig = MaeConfig()):
        super().__init__()
        self.config = config
        self.encoder = ReveEncoder(encoder_config)
        width, dim = config.decoder_dim, encoder_config.embed_dim
        self.to_decoder = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.decoder_position = PositionEncoding4D(width, max(encoder_config.freqs, _freqs_for(width)))
        self.decoder = Transformer(
            width,
            config.decoder_depth,
            config.decoder_heads,
            width // config.decoder_heads,
            int(width * encoder_config.mlp_ratio),
        )
        self.decoder_norm = RMSNorm(width)
        self.to_patch = nn.Linear(width, encoder_config.patch_size)
        # Secondary loss: one learned query pools every encoder layer's tokens into one vector, from which
        # the masked patches are predicted too, so no single layer over-specialises.
        self.layer_query = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.secondary_head = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))
        self.secondary_to_patch = nn.Linear(width, encoder_config.patch_size)
        nn.init.normal_(self.mask_token, std=0.02)
        self.matrix_params = {
            "encoder": matrix_parameters(self.encoder.transformer),
            "decoder": matrix_parameters(self.decoder),
        }

    def forward(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        generator: torch.Generator,
        mask: torch.Tensor | None = None,
    ) -> MaeOutput:
        """`mask` (B, C, P) may come precomputed (built in the loader's workers, off the training step);
        otherwise it is drawn here from `generator`, which also draws the position jitter."""
        batch, channels, n_times = eeg.shape
        n_patches = self.encoder.config.n_patches(n_times)
        if mask is None:
            mask = block_mask(positions, n_patches, self.config, generator)
        mask = mask.reshape(batch, -1).to(eeg.device)
        if self.training and self.config.position_jitter_m > 0:
            noise = torch.randn(positions.shape, generator=generator).to(positions)
            positions = positions + noise * self.config.position_jitter_m
        tokens = self.encoder.embed(eeg, positions)
        visible = tokens[~mask].reshape(batch, -1, tokens.shape[-1])
        layers = self.encoder.transformer(visible, all_layers=True)

        full = self.mask_token.expand(batch, mask.shape[1], -1).clone()
        full[~mask] = self.to_decoder(layers[-1]).reshape(-1, full.shape[-1])
        coordinates = token_coordinates(positions, n_patches)
        decoded = self.decoder(full + self.decoder_position(coordinates))
        prediction = self.to_patch(self.decoder_norm(decoded[mask])).reshape(
            batch, -1, self.encoder.config.patch_size
        )

        target = (
            self.encoder.patchify(eeg)
            .reshape(batch, channels * n_patches, -1)[mask]
            .reshape(prediction.shape)
        )
        reconstruction = F.l1_loss(prediction, target)

        stacked = torch.cat(layers[1:], dim=1)  # every layer's visible tokens
        weights = torch.softmax(stacked @ self.layer_query / stacked.shape[-1] ** 0.5, dim=1)
        pooled = (weights.unsqueeze(-1) * stacked).sum(dim=1)  # (B, E)
        queries = self.secondary_head(pooled)[:, None, :] + self.decoder_position(coordinates)[mask].reshape(
            batch, -1, full.shape[-1]
        )
        secondary = F.l1_loss(self.secondary_to_patch(queries), target)
        loss = reconstruction + self.config.secondary_weight * secondary
        return MaeOutput(
            loss, reconstruction, secondary, prediction, target, mask.reshape(batch, channels, n_patches)
        )

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """Model FLOPs of one forward + backward (3× the forward's matmuls and attention), for MFU."""
        encoder, config = self.encoder.config, self.config
        tokens = channels * n_patches
        masked = round(config.mask_ratio * tokens)
        visible = tokens - masked

        forward = (
            2 * encoder.patch_size * encoder.embed_dim * tokens  # patch embedding
            + 2 * self.matrix_params["encoder"] * visible
            + 4 * encoder.depth * encoder.heads * encoder.head_dim * visible**2  # QKᵀ and AV
            + 2 * encoder.embed_dim * config.decoder_dim * visible  # into the decoder
            + 2 * self.matrix_params["decoder"] * tokens
            + 4 * config.decoder_depth * config.decoder_dim * tokens**2
            + 2 * 2 * config.decoder_dim * encoder.patch_size * masked  # both heads back to patches
        )
        return 3.0 * batch * forward


def _freqs_for(width: int) -> int:
    """Smallest per-axis frequency count whose 4-tuples fill half of `width` features."""
    freqs = 1
    while freqs**4 < width // 2:
        freqs += 1
    return freqs
