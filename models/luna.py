"""LUNA (Döner et al., NeurIPS 2025): any channel set compressed to a fixed latent per patch.

Each channel's patch becomes a feature (conv stack + an MLP of the patch's rFFT magnitude and phase), plus
an encoding of that channel's electrode position (min–max normalised over the window's channels, NeRF
Fourier features, an MLP). A fixed number of learned queries cross-attend over the channels of each patch
(cost linear in the channel count) and are refined by three small self-attention layers; the
queries × width latent of every patch then goes through rotary transformer blocks over patches.

Token order, used everywhere: the per-patch groups are (window, patch) rows, row b·P + p, each holding the
window's C channels. A window's position embedding (B, C, E) is therefore tiled with `tile_per_patch`
(every row of window b gets window b's channels). BioFoundation's `prepare_tokens` tiles with
`.repeat(P, 1, 1)`, which gives row i window i mod B: wrong as soon as a batch mixes montages (their PR
#13); braindecode 1.8.1 uses `repeat_interleave`, as here.

Where braindecode differs from the authors we follow the authors, behind a flag so the equality test
can check both: BioFoundation builds the channel-location MLP and the cross-attention FFN as timm
`Mlp(..., norm_layer=nn.LayerNorm)` (a LayerNorm on the hidden layer), which braindecode drops
(`hidden_norm=False` reproduces it). The reconstruction decoder's queries are the channels' position
embeddings; the authors also add a learned embedding of the channel *name* from a fixed 90-name table,
which the montages in our shards do not have, so it is left out.

Pretraining (BioFoundation `pretrain_task_LUNA.py`, `LUNA_pretrain.yaml`): half of the (channel,
40-sample patch) cells masked (`masking_ratio: 0.5`, an exact count), masked patches replaced by a
learned mask token, position noise N(0, 0.02²) on the normalised positions, Smooth-L1 on masked samples +
0.05 × on unmasked ones, plus 0.8 × the query-specialisation loss (`loss_type: l2`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.errors import DataError


@dataclass(frozen=True)
class LunaConfig:
    embed_dim: int = 64
    queries: int = 4
    depth: int = 8
    heads: int = 2  # cross-attention heads; the temporal blocks use heads × queries
    mlp_ratio: float = 4.0
    patch_size: int = 40
    hidden_norm: bool = True  # the authors' LayerNorm inside two MLPs (braindecode 1.8.1 has none)
    position_noise: float = 0.02  # std of the noise on normalised positions while masking
    dropout: float = 0.1  # cross-attention block (the authors' dropout_p)
    # The 3 query self-attention layers after it: PyTorch's TransformerEncoderLayer default, 0.1, which the
    # authors' layers keep whatever dropout_p is (braindecode's LUNA: `query_self_attn`). Its own setting,
    # so that `model.overrides={dropout: 0.0, refine_dropout: 0.0}` turns every dropout off.
    refine_dropout: float = 0.1

    @property
    def latent_dim(self) -> int:
        return self.embed_dim * self.queries

    def n_patches(self, n_times: int) -> int:
        if n_times < self.patch_size or n_times % self.patch_size:
            raise DataError(
                f"LUNA needs windows of whole {self.patch_size}-sample patches, got {n_times} samples: "
                f"ingest with a window length that is a multiple of the patch length"
            )
        return n_times // self.patch_size


# Published sizes (the LUNA paper's Base / Large / Huge; shapes from BioFoundation config/model/LUNA_*.yaml):
# 7M, 43M, 311M parameters, counted for the fine-tuning model, i.e. encoder + the attention-pooling
# classification head (`parameter_count`). `luna_tiny` is for CPU tests.
SIZES: dict[str, LunaConfig] = {
    "luna_tiny": LunaConfig(embed_dim=16, queries=2, depth=2, heads=2),
    "luna_base": LunaConfig(embed_dim=64, queries=4, depth=8),
    "luna_large": LunaConfig(embed_dim=96, queries=6, depth=10),
    "luna_huge": LunaConfig(embed_dim=128, queries=8, depth=24),
}
PUBLISHED_PARAMETERS = {"luna_base": 7e6, "luna_large": 43e6, "luna_huge": 311e6}


class Mlp(nn.Module):
    """Linear → GELU → (LayerNorm) → Linear, dropout after the activation and the output."""

    def __init__(
        self, dim_in: int, hidden: int, dim_out: int, hidden_norm: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.norm = nn.LayerNorm(hidden) if hidden_norm else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.norm(self.dropout(F.gelu(self.fc1(x))))))


def fourier_position_features(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """NeRF features of (B, C, 3) normalised positions → (B, C, dim): for each frequency 2^k, each axis'
    (sin, cos), frequency-major; zero-padded to `dim`."""
    batch, channels, axes = positions.shape
    n_freqs = dim // (2 * axes)
    scales = 2.0 ** torch.arange(n_freqs, device=positions.device, dtype=positions.dtype)
    angles = positions[..., None, :] * scales[:, None]  # (B, C, freqs, axes)
    features = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(batch, channels, -1)
    return F.pad(features, (0, dim - features.shape[-1]))


def normalise_positions(positions: torch.Tensor) -> torch.Tensor:
    """Each axis min–max scaled to [0, 1] over the window's own channels (metres in, unitless out)."""
    low = positions.min(dim=1, keepdim=True).values
    high = positions.max(dim=1, keepdim=True).values
    return (positions - low) / (high - low + 1e-8)


def tile_per_patch(per_window: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(B, C, E) → (B·P, C, E), row b·P + p being window b's: the (window, patch) order of the tokens."""
    batch, channels, dim = per_window.shape
    return (
        per_window[:, None].expand(batch, n_patches, channels, dim).reshape(batch * n_patches, channels, dim)
    )


class PatchFeatures(nn.Module):
    """(B, C, T) → (B, C, P, E): conv features of each patch plus an MLP of its spectrum."""

    def __init__(self, config: LunaConfig):
        super().__init__()
        self.patch_size = config.patch_size
        width, kernel = config.embed_dim // 4, config.patch_size // 2
        layers: list[nn.Module] = []
        for index, (k, stride, padding) in enumerate(
            [(kernel - 1, kernel // 2, kernel // 2 - 1), (3, 1, 1), (3, 1, 1)]
        ):
            layers += [
                nn.Conv2d(1 if index == 0 else width, width, (1, k), (1, stride), (0, padding)),
                nn.GroupNorm(4, width),
                nn.GELU(),
            ]
        self.conv = nn.Sequential(*layers)
        bins = 2 * (config.patch_size // 2 + 1)
        self.spectrum = Mlp(bins, 4 * bins, config.embed_dim)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        batch, channels, n_times = eeg.shape
        patches = eeg.reshape(batch, channels, n_times // self.patch_size, self.patch_size)
        conv = self.conv(patches.reshape(batch, 1, -1, self.patch_size))  # (B, width, C·P, steps)
        features = conv.permute(0, 2, 3, 1).reshape(*patches.shape[:3], -1)  # step-major features
        spectrum = torch.fft.rfft(patches, dim=-1)
        return features + self.spectrum(torch.cat([spectrum.abs(), spectrum.angle()], dim=-1))


class ChannelUnification(nn.Module):
    """Learned queries cross-attend over one patch's channels: (N, C, E) → (N, Q, E) and the attention
    weights (N, Q, C), averaged over heads (what the query-specialisation loss reads)."""

    def __init__(self, config: LunaConfig):
        super().__init__()
        dim, hidden = config.embed_dim, int(config.mlp_ratio * config.embed_dim)
        self.queries = nn.Parameter(torch.randn(1, config.queries, dim))
        self.queries_norm = nn.LayerNorm(dim)
        self.keys_norm = nn.LayerNorm(dim)
        self.values_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, config.heads, dropout=config.dropout, batch_first=True)
        self.ffn = Mlp(dim, hidden, dim, hidden_norm=config.hidden_norm, dropout=config.dropout)
        layer = nn.TransformerEncoderLayer(
            dim,
            config.heads,
            hidden,
            dropout=config.refine_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.refine = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.queries_norm(self.queries).expand(tokens.shape[0], -1, -1)
        out, weights = self.attention(queries, self.keys_norm(tokens), self.values_norm(tokens))
        out = out + self.ffn(out)
        return self.refine(out), weights


def rotate_pairs(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding over the sequence axis (-2), on interleaved pairs of features."""
    length, dim = x.shape[-2:]
    dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 → float32 angles; float64 stays float64
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=x.device, dtype=dtype) / dim)
    angles = torch.arange(length, device=x.device, dtype=dtype)[:, None] * inv_freq
    cos, sin = angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x * cos + rotated * sin).to(x.dtype)


class RotaryBlock(nn.Module):
    """Pre-norm transformer block over patches with rotary attention; LayerNorm inside the FFN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(rotate_pairs(q), rotate_pairs(k), v)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, dim))
        return x + self.fc2(self.ffn_norm(F.gelu(self.fc1(self.norm2(x)))))


class LunaEncoder(nn.Module):
    """(B, C, T) z-scored EEG + (B, C, 3) positions (any unit, normalised per window) → (B, P, Q·E)."""

    def __init__(self, config: LunaConfig):
        super().__init__()
        self.config = config
        self.patch_features = PatchFeatures(config)
        dim = config.embed_dim
        self.location = Mlp(dim, 2 * dim, dim, hidden_norm=config.hidden_norm)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.unification = ChannelUnification(config)
        self.blocks = nn.ModuleList(
            RotaryBlock(config.latent_dim, config.heads * config.queries, config.mlp_ratio)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.latent_dim)

    def location_embedding(self, positions: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, 3) → (B, C, E); `noise` (B, C, 3) is added to the normalised positions (pretraining)."""
        normalised = normalise_positions(positions)
        if noise is not None:
            normalised = normalised + noise
        return self.location(fourier_position_features(normalised, self.config.embed_dim))

    def channel_tokens(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        position_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch channel tokens (B·P, C, E), row b·P + p, and the tiled location embeddings."""
        batch, channels, n_times = eeg.shape
        n_patches = self.config.n_patches(n_times)
        features = self.patch_features(eeg)  # (B, C, P, E)
        if patch_mask is not None:
            features = torch.where(patch_mask.bool()[..., None], self.mask_token.to(features.dtype), features)
        locations = tile_per_patch(self.location_embedding(positions, position_noise), n_patches)
        tokens = features.transpose(1, 2).reshape(batch * n_patches, channels, -1)
        return tokens + locations, locations

    def forward(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        position_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The latent (B, P, Q·E), the cross-attention weights (B·P, Q, C) and the tiled location
        embeddings (B·P, C, E) the decoder uses as queries. `patch_mask` (B, C, P): true = hidden."""
        batch = eeg.shape[0]
        tokens, locations = self.channel_tokens(eeg, positions, patch_mask, position_noise)
        latent, weights = self.unification(tokens)
        x = latent.reshape(batch, -1, self.config.latent_dim)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), weights, locations


class ReconstructionHead(nn.Module):
    """Each channel's position embedding queries its patch's latent (one decoder layer) → the patch."""

    def __init__(self, config: LunaConfig):
        super().__init__()
        dim = config.embed_dim
        self.queries = config.queries
        self.decoder = nn.TransformerDecoderLayer(
            dim, config.heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(dim)
        self.out = Mlp(dim, 4 * dim, config.patch_size)

    def forward(self, latent: torch.Tensor, channel_queries: torch.Tensor) -> torch.Tensor:
        """(B, P, Q·E) latent, (B·P, C, E) queries → (B, C, P, patch_size)."""
        batch, n_patches, _ = latent.shape
        memory = latent.reshape(batch * n_patches, self.queries, -1)
        patches = self.out(self.norm(self.decoder(channel_queries, memory)))
        return patches.reshape(batch, n_patches, *patches.shape[1:]).transpose(1, 2)


class LunaPretrain(nn.Module):
    """Encoder + reconstruction head: returns the reconstructed patches (B, C, P, patch_size) and the
    cross-attention weights for the query-specialisation loss."""

    def __init__(self, config: LunaConfig):
        super().__init__()
        self.encoder = LunaEncoder(config)
        self.head = ReconstructionHead(config)

    def forward(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        position_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        latent, weights, locations = self.encoder(eeg, positions, patch_mask, position_noise)
        return self.head(latent, locations), weights


class ClassificationHead(nn.Module):
    """The authors' fine-tuning head: one learned query attends over the patches' latents → MLP → logits.
    Part of the published parameter counts."""

    def __init__(self, config: LunaConfig, n_classes: int):
        super().__init__()
        dim = config.latent_dim
        self.query = nn.Parameter(torch.randn(1, 1, dim))
        self.attention = nn.MultiheadAttention(dim, config.heads, dropout=0.15, batch_first=True)
        self.mlp = Mlp(dim, 4 * dim, n_classes, dropout=0.15)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(latent.shape[0], -1, -1)
        pooled = self.attention(query, latent, latent, need_weights=False)[0][:, 0]
        return self.mlp(pooled)


def parameter_count(config: LunaConfig, n_classes: int = 2) -> int:
    """Encoder + classification head: how the published sizes (7M / 43M / 311M) count."""
    modules = (LunaEncoder(config), ClassificationHead(config, n_classes))
    return sum(p.numel() for module in modules for p in module.parameters())


def patch_mask(
    batch: int, channels: int, n_patches: int, generator: torch.Generator, ratio: float = 0.5
) -> torch.Tensor:
    """(B, C, P) bool with exactly ⌊ratio · C·P⌋ hidden cells per window, uniformly placed (the authors'
    `randperm` over (1 channel × 1 patch) rectangles; they draw one mask per batch, we one per window)."""
    cells = channels * n_patches
    scores = torch.rand(batch, cells, generator=generator, device=generator.device)
    hidden = scores.argsort(dim=1)[:, : int(cells * ratio)]
    mask = torch.zeros(batch, cells, dtype=torch.bool, device=scores.device)
    return mask.scatter_(1, hidden, True).reshape(batch, channels, n_patches)


def position_noise(positions: torch.Tensor, generator: torch.Generator, std: float = 0.02) -> torch.Tensor:
    """Noise for the normalised positions while masking (the authors' `randn_like(...) * 0.02`)."""
    return std * torch.randn(
        positions.shape, generator=generator, device=generator.device, dtype=positions.dtype
    )


def reconstruction_loss(
    prediction: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, unmasked_weight: float = 0.05
) -> torch.Tensor:
    """Smooth-L1 mean over masked patches' samples + `unmasked_weight` × the mean over the rest.
    `prediction`, `patches` (B, C, P, patch_size); `mask` (B, C, P)."""
    mask = mask.bool()
    masked = F.smooth_l1_loss(prediction[mask], patches[mask])
    if not unmasked_weight or bool(mask.all()):
        return masked
    return masked + unmasked_weight * F.smooth_l1_loss(prediction[~mask], patches[~mask])


def query_specialisation_loss(weights: torch.Tensor, coefficient: float = 0.8) -> torch.Tensor:
    """Mean square of the off-diagonal entries of A·Aᵀ over queries (A: (N, Q, C) attention weights),
    diagonal counted as zeros as in the authors' criterion: queries pushed to attend to different channels."""
    similarity = weights @ weights.transpose(1, 2)
    off_diagonal = similarity * (1 - torch.eye(weights.shape[1], device=weights.device, dtype=weights.dtype))
    return coefficient * off_diagonal.pow(2).mean()


def braindecode_names(model: LunaPretrain | LunaEncoder) -> dict[str, str]:
    """Our state-dict names → braindecode 1.8.1 `LUNA`'s (reconstruction model, n_outputs=0). With
    `hidden_norm=True` the two authors' LayerNorms (`location.norm`, `unification.ffn.norm`) have no
    braindecode name and map to the authors' (BioFoundation) names instead."""
    prefix = "encoder." if isinstance(model, LunaPretrain) else ""
    renames = [
        ("patch_features.conv.", "patch_embed.proj_in."),
        ("patch_features.spectrum.", "freq_embed.frequency_to_embed."),
        ("location.norm.", "channel_location_embedder.0.norm."),  # authors' name; not in braindecode
        ("location.", "channel_location_embedder."),
        ("unification.attention.", "cross_attn.cross_attention."),
        ("unification.refine.", "cross_attn.query_self_attn."),
        ("unification.", "cross_attn."),
        ("head.decoder.", "decoder_head.decoder_pred.layers.0."),
        ("head.norm.", "decoder_head.norm."),
        ("head.out.", "decoder_head.decoder_linear."),
    ]
    block_parts = {
        "qkv.": "attn.qkv_proj.",
        "proj.": "attn.proj.",
        "fc1.": "mlp.fc1.",
        "ffn_norm.": "mlp.norm.",
        "fc2.": "mlp.fc2.",
    }
    names = {}
    for name in model.state_dict():
        ours = name if name.startswith("head.") else name.removeprefix(prefix)
        theirs = ours
        if ours == "unification.queries":
            theirs = "cross_attn.query_embed"
        elif ours.startswith("blocks."):
            _, index, rest = ours.split(".", 2)
            for our_part, their_part in block_parts.items():
                if rest.startswith(our_part):
                    rest = their_part + rest[len(our_part) :]
                    break
            theirs = f"blocks.{index}.{rest}"
        else:
            for old, new in renames:
                if ours.startswith(old):
                    theirs = new + ours[len(old) :]
                    break
        names[name] = theirs
    return names


def classification_head_names(head: ClassificationHead, prefix: str = "head.") -> dict[str, str]:
    """A `ClassificationHead`'s names (under `prefix`) → braindecode `LUNA(n_outputs=k)`'s `final_layer`."""
    parts = {"query": "learned_agg", "attention.": "decoder_attn.", "mlp.": "decoder_ffn."}
    names = {}
    for name in head.state_dict():
        for ours, theirs in parts.items():
            if name.startswith(ours):
                names[prefix + name] = "final_layer." + theirs + name[len(ours) :]
                break
    return names


def init_like_authors(model: nn.Module) -> None:
    """Xavier-normal linears, zero biases, unit LayerNorms, orthogonal queries, mask token N(0, 0.02)
    truncated at ±0.02, and each rotary block's output projections divided by √(2·layer)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, LunaEncoder):
            nn.init.orthogonal_(module.unification.queries)
            nn.init.trunc_normal_(module.mask_token, std=0.02, a=-0.02, b=0.02)
            for layer, block in enumerate(module.blocks, start=1):
                block.proj.weight.data.div_(math.sqrt(2.0 * layer))
                block.fc2.weight.data.div_(math.sqrt(2.0 * layer))
