"""CBraMod (Wang et al., ICLR 2025): criss-cross attention over channels and 1-s patches.

Each patch of one channel becomes a token: a time-domain conv stack plus a linear map of the patch's
rFFT magnitudes, then an asymmetric conditional positional encoding (a depth-wise 2-D conv over the
channel × patch grid, so any channel count works without positions). Every layer splits the width in two
halves: one attends across channels within a patch (spatial), the other across patches within a channel
(temporal). Inputs are µV / 100 (`to_model_units`), the authors' scaling, not a z-score.

Pretraining (authors' `generate_mask`: `mask.bernoulli_(0.5)`): each (channel, patch) is hidden with
probability 1/2; a
masked patch is replaced by a fixed zero vector *before* embedding (their `mask_encoding` is a zero
parameter with requires_grad=False, so here a buffer), and the MSE is taken on masked patches only.

Outputs equal braindecode 1.8.1's `CBraMod` for the same weights (tests/test_seed_models.py);
`braindecode_names` is the explicit map between the two state dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.errors import DataError

# The authors divide µV by 100 (their data loaders' `/ 100`) instead of z-scoring each channel.
MICROVOLTS_PER_UNIT = 100.0


def to_model_units(eeg_microvolts: torch.Tensor) -> torch.Tensor:
    return eeg_microvolts / MICROVOLTS_PER_UNIT


@dataclass(frozen=True)
class CBraModConfig:
    patch_size: int = 200  # 1 s at 200 Hz
    conv_channels: int = 25  # time-domain conv stack width; embed_dim = conv_channels × conv steps
    conv_groups: int = 5  # GroupNorm groups of that stack
    first_kernel: int = 49
    first_stride: int = 25
    depth: int = 12
    heads: int = 8  # half spatial, half temporal
    ffn_dim: int = 800
    position_kernel: tuple[int, int] = (19, 7)  # (channels, patches) of the conditional position conv
    dropout: float = 0.1

    @property
    def conv_steps(self) -> int:
        """Samples left of a patch after the strided first conv (8 for 200-sample patches)."""
        padding = self.first_kernel // 2
        return (self.patch_size + 2 * padding - self.first_kernel) // self.first_stride + 1

    @property
    def embed_dim(self) -> int:
        return self.conv_channels * self.conv_steps

    def n_patches(self, n_times: int) -> int:
        if n_times < self.patch_size or n_times % self.patch_size:
            raise DataError(
                f"CBraMod needs windows of whole {self.patch_size}-sample patches, got {n_times} samples: "
                f"ingest with preprocess.window_s a multiple of the patch length"
            )
        return n_times // self.patch_size


# The published model (≈4.9M parameters: issue 12; the paper's 12 layers of width 200, FFN 800, 8 heads)
# and a small one for CPU tests.
SIZES: dict[str, CBraModConfig] = {
    "cbramod_tiny": CBraModConfig(depth=2),
    "cbramod": CBraModConfig(),
}


class PatchEmbedding(nn.Module):
    """(B, C, P, patch) → (B, C, P, E): conv features + spectral features + conditional positions."""

    def __init__(self, config: CBraModConfig):
        super().__init__()
        width, dim = config.conv_channels, config.embed_dim
        self.register_buffer("mask_value", torch.zeros(config.patch_size))  # the authors' fixed zeros
        layers: list[nn.Module] = []
        for index, (kernel, stride) in enumerate(
            [(config.first_kernel, config.first_stride), (3, 1), (3, 1)]
        ):
            # (1, k) kernels over a (1, C·P, patch) image: the same shapes as the authors' weights.
            conv = nn.Conv2d(1 if index == 0 else width, width, (1, kernel), (1, stride), (0, kernel // 2))
            layers += [conv, nn.GroupNorm(config.conv_groups, width), nn.GELU()]
        self.conv = nn.Sequential(*layers)
        self.spectral = nn.Linear(config.patch_size // 2 + 1, dim)
        self.spectral_dropout = nn.Dropout(config.dropout)
        rows, cols = config.position_kernel
        self.position = nn.Conv2d(dim, dim, (rows, cols), padding=(rows // 2, cols // 2), groups=dim)

    def forward(self, patches: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, n_patches, size = patches.shape
        if patch_mask is not None:
            patches = torch.where(patch_mask.bool()[..., None], self.mask_value.to(patches.dtype), patches)
        conv = self.conv(patches.reshape(batch, 1, channels * n_patches, size))  # (B, width, C·P, steps)
        tokens = conv.permute(0, 2, 1, 3).reshape(batch, channels, n_patches, -1)  # width-major features
        magnitudes = torch.fft.rfft(patches, dim=-1, norm="forward").abs()
        tokens = tokens + self.spectral_dropout(self.spectral(magnitudes))
        grid = tokens.permute(0, 3, 1, 2)  # (B, E, C, P): the conv sees channel × patch neighbourhoods
        return tokens + self.position(grid).permute(0, 2, 3, 1)


class HalfAttention(nn.Module):
    """Multi-head self-attention over one half of the width; q, k, v packed in one projection."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, length, dim = x.shape
        q, k, v = self.qkv(x).view(groups, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(groups, length, dim))


class CrissCrossLayer(nn.Module):
    """Pre-norm layer: spatial attention on the first half of the width, temporal on the second."""

    def __init__(self, config: CBraModConfig):
        super().__init__()
        dim, half = config.embed_dim, config.embed_dim // 2
        self.norm1 = nn.LayerNorm(dim)
        self.spatial = HalfAttention(half, config.heads // 2, config.dropout)
        self.temporal = HalfAttention(half, config.heads // 2, config.dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, config.ffn_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, dim),
        )
        self.dropout = nn.Dropout(config.dropout)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, n_patches, dim = x.shape
        spatial, temporal = x.split(dim // 2, dim=-1)
        across_channels = spatial.transpose(1, 2).reshape(batch * n_patches, channels, -1)
        spatial = self.spatial(across_channels).reshape(batch, n_patches, channels, -1).transpose(1, 2)
        across_patches = temporal.reshape(batch * channels, n_patches, -1)
        temporal = self.temporal(across_patches).reshape(batch, channels, n_patches, -1)
        return self.dropout(torch.cat([spatial, temporal], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.norm1(x))
        return x + self.dropout(self.ffn(self.norm2(x)))


class CBraModEncoder(nn.Module):
    """(B, C, T) EEG in model units (µV / 100) → (B, C, P, E) token features, any channel count."""

    def __init__(self, config: CBraModConfig):
        super().__init__()
        self.config = config
        self.embedding = PatchEmbedding(config)
        self.layers = nn.ModuleList(CrissCrossLayer(config) for _ in range(config.depth))

    def patchify(self, eeg: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, P, patch_size), non-overlapping."""
        n_patches = self.config.n_patches(eeg.shape[-1])
        return eeg.reshape(*eeg.shape[:-1], n_patches, self.config.patch_size)

    def forward(self, eeg: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`patch_mask` (B, C, P), true where a patch is hidden (replaced by zeros before embedding)."""
        x = self.embedding(self.patchify(eeg), patch_mask)
        for layer in self.layers:
            x = layer(x)
        return x


class CBraModPretrain(nn.Module):
    """Encoder + the authors' linear reconstruction head: (B, C, T) → (B, C, P, patch_size)."""

    def __init__(self, config: CBraModConfig):
        super().__init__()
        self.encoder = CBraModEncoder(config)
        self.reconstruction = nn.Linear(config.embed_dim, config.patch_size)

    def forward(self, eeg: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.reconstruction(self.encoder(eeg, patch_mask))


def patch_mask(
    batch: int, channels: int, n_patches: int, generator: torch.Generator, ratio: float = 0.5
) -> torch.Tensor:
    """(B, C, P) bool: each (window, channel, patch) hidden independently with probability `ratio`
    (the authors' `mask.bernoulli_(0.5)`), drawn on the generator's device."""
    uniform = torch.rand(batch, channels, n_patches, generator=generator, device=generator.device)
    return uniform < ratio


def reconstruction_loss(prediction: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the masked patches only: `prediction` and `patches` (B, C, P, patch_size), mask (B, C, P)."""
    mask = mask.bool()
    return F.mse_loss(prediction[mask], patches[mask])


def braindecode_names(model: CBraModPretrain | CBraModEncoder) -> dict[str, str]:
    """Our state-dict names → braindecode 1.8.1 `CBraMod`'s (`proj_out` is our reconstruction head; its
    `final_layer` has no counterpart). Every one of our tensors is mapped; the test checks it is 1:1."""
    prefix = "encoder." if isinstance(model, CBraModPretrain) else ""
    fixed = {
        "embedding.mask_value": "patch_embedding.mask_encoding",
        "embedding.spectral.weight": "patch_embedding.spectral_proj.0.weight",
        "embedding.spectral.bias": "patch_embedding.spectral_proj.0.bias",
        "embedding.position.weight": "patch_embedding.positional_encoding.0.weight",
        "embedding.position.bias": "patch_embedding.positional_encoding.0.bias",
    }
    per_layer = {
        "norm1": "norm1",
        "norm2": "norm2",
        "spatial.qkv.weight": "self_attn_s.in_proj_weight",
        "spatial.qkv.bias": "self_attn_s.in_proj_bias",
        "spatial.out": "self_attn_s.out_proj",
        "temporal.qkv.weight": "self_attn_t.in_proj_weight",
        "temporal.qkv.bias": "self_attn_t.in_proj_bias",
        "temporal.out": "self_attn_t.out_proj",
        "ffn.0": "linear1",
        "ffn.3": "linear2",
    }
    names = {}
    for name in model.state_dict():
        ours = name.removeprefix(prefix)
        if name.startswith("reconstruction."):
            names[name] = name.replace("reconstruction.", "proj_out.0.", 1)
        elif ours in fixed:
            names[name] = fixed[ours]
        elif ours.startswith("embedding.conv."):
            names[name] = ours.replace("embedding.conv.", "patch_embedding.proj_in.", 1)
        elif ours.startswith("layers."):
            _, index, rest = ours.split(".", 2)
            for our_part, their_part in per_layer.items():
                if rest == our_part or rest.startswith(our_part + "."):
                    names[name] = f"encoder.layers.{index}.{their_part}{rest[len(our_part) :]}"
                    break
    return names


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
