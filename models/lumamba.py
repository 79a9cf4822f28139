"""LuMamba (Broustail et al., pulp-bio/BioFoundation): LUNA's channel unification, then FEMBA's bi-Mamba.

Any montage: each channel's 40-sample patch becomes a LUNA token (conv + spectrum features, plus an
embedding of the electrode position, (B, C, 3) in metres, min–max normalised per window), a fixed number of
learned queries cross-attend over the channels of each patch (`luna.ChannelUnification`), and the
queries × width latent of each patch is one token of a sequence over patches, run through residual
bidirectional Mamba blocks in pre-norm order (x + f(norm(x)), BioFoundation `models/LuMamba.py`). The
encoder *is* a `luna.LunaEncoder` with its rotary transformer and final norm removed (as the authors
subclass LUNA and `del` them), so the patch features, position embedding, masking and unification are
LUNA's own code, not a copy. Reconstruction uses LUNA's decoder head; no channel-name embedding (see
models/luna.py).

Pretraining (BioFoundation `tasks/pretrain_task_LuMamba.py`, `config/experiment/LuMamba_pretrain.yaml`):
LUNA's pieces — (1 channel × 40 samples) cells masked at `masking_ratio: 0.5` (an exact count; the docs
say 60 %, the shipped config 0.5), Smooth-L1 on masked + 0.05 × unmasked samples, 0.8 × the
query-specialisation loss — plus, optionally, LeJEPA (`lejepa_loss`), defined here from the authors'
task code: `num_local_views` crops of 4 patches and `num_global_views` of 16 patches at uniform random
starts, each encoded without a mask and mean-pooled over patches; prediction loss = mean squared distance
of every local embedding to the mean of the global ones; SIGReg = the Epps–Pulley statistic of each local
view's embeddings along `num_slices` random unit directions (shared by the views of a step), against the
standard normal's characteristic function on 17 knots in [−5, 5], × N; LeJEPA = (1 − λ)·prediction +
λ·SIGReg with λ = 0.002, added with weight 0.05. As in the authors' code only local views are predicted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from eegfm.models import luna
from eegfm.models.femba import MambaClassifier
from eegfm.models.mamba import BiMamba, count_parameters, run_stack

# LUNA's pretraining pieces are LuMamba's (same mask statistics, noise, losses).
patch_mask = luna.patch_mask
position_noise = luna.position_noise
reconstruction_loss = luna.reconstruction_loss
query_specialisation_loss = luna.query_specialisation_loss


@dataclass(frozen=True)
class LuMambaConfig:
    embed_dim: int = 64
    queries: int = 6
    heads: int = 2  # cross-attention heads of the unification
    mlp_ratio: float = 4.0
    patch_size: int = 40
    hidden_norm: bool = True  # the authors' LayerNorms inside LUNA's two MLPs
    position_noise: float = 0.02
    dropout: float = 0.1
    refine_dropout: float = 0.1  # LUNA's query self-attention layers (models/luna.py LunaConfig)
    depth: int = 2  # bidirectional Mamba blocks
    expand: int = 2
    d_state: int = 16
    d_conv: int = 4
    strategy: str = "add"

    @property
    def luna(self) -> luna.LunaConfig:
        return luna.LunaConfig(
            embed_dim=self.embed_dim,
            queries=self.queries,
            depth=0,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size,
            hidden_norm=self.hidden_norm,
            position_noise=self.position_noise,
            dropout=self.dropout,
            refine_dropout=self.refine_dropout,
        )

    @property
    def latent_dim(self) -> int:
        return self.embed_dim * self.queries


# Published: LuMamba-tiny (BioFoundation config/model/LuMamba_tiny.yaml: 6 queries × 64, 2 bi-Mamba
# blocks, expand 2), "4.6M parameters" in the paper's abstract, 4.1M in docs/model/LuMamba.md (the
# difference is the 0.54M Mamba classification head; see tests). `lumamba_micro` is for CPU tests.
SIZES: dict[str, LuMambaConfig] = {
    "lumamba_micro": LuMambaConfig(embed_dim=16, queries=2, depth=1),
    "lumamba_tiny": LuMambaConfig(),
}
PUBLISHED_PARAMETERS = {"lumamba_tiny": 4.6e6}


class LuMambaEncoder(luna.LunaEncoder):
    """(B, C, T) EEG + (B, C, 3) positions (any C) → the (B, P, Q·E) latent, the unification's attention
    weights (B·P, Q, C) and the tiled location embeddings (B·P, C, E) the decoder queries with."""

    def __init__(self, config: LuMambaConfig):
        super().__init__(config.luna)
        # LUNA's rotary transformer and final norm give way to the Mamba stack (`blocks` stays as an empty
        # list so code that walks a LunaEncoder's blocks, like `luna.init_like_authors`, still works).
        del self.norm
        self.blocks = nn.ModuleList()
        self.lumamba = config
        mamba = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand}
        self.mamba_blocks = nn.ModuleList(
            BiMamba(config.latent_dim, config.strategy, **mamba) for _ in range(config.depth)
        )
        self.norm_layers = nn.ModuleList(nn.LayerNorm(config.latent_dim) for _ in range(config.depth))

    def forward(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        position_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, locations = self.channel_tokens(eeg, positions, patch_mask, position_noise)
        latent, weights = self.unification(tokens)
        x = latent.reshape(eeg.shape[0], -1, self.lumamba.latent_dim)
        return run_stack(x, self.mamba_blocks, self.norm_layers, norm_first=True), weights, locations


class LuMambaPretrain(nn.Module):
    """Encoder + LUNA's reconstruction head: (B, C, P, patch_size) reconstruction and attention weights."""

    def __init__(self, config: LuMambaConfig):
        super().__init__()
        self.encoder = LuMambaEncoder(config)
        self.head = luna.ReconstructionHead(config.luna)

    def forward(
        self,
        eeg: torch.Tensor,
        positions: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        position_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        latent, weights, locations = self.encoder(eeg, positions, patch_mask, position_noise)
        return self.head(latent, locations), weights


def parameter_count(config: LuMambaConfig, head: bool = True, n_classes: int = 2) -> int:
    """Encoder parameters, plus the authors' Mamba classification head when `head`."""
    with torch.device("meta"):  # shapes only: the huge sizes are counted without allocating them
        total = count_parameters(LuMambaEncoder(config))
        return total + (count_parameters(MambaClassifier(config.latent_dim, n_classes)) if head else 0)


def init_like_authors(model: nn.Module) -> None:
    """LUNA's initialisation on LUNA's parts (the authors' LuMamba inherits it, and it runs before their
    Mamba blocks exist); the Mamba blocks keep mamba-ssm's own (softplus⁻¹ Δ bias, A = −(1..n), D = 1),
    which LUNA's Xavier/zero-bias pass would overwrite."""
    kept = {name: p.detach().clone() for name, p in model.named_parameters() if "mamba_blocks." in name}
    luna.init_like_authors(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in kept:
                parameter.copy_(kept[name])


def patches(eeg: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, T) → (B, C, P, patch_size): the reconstruction target's layout."""
    batch, channels, n_times = eeg.shape
    return eeg.reshape(batch, channels, n_times // patch_size, patch_size)


# ------------------------------------------------------------------------------------------------ LeJEPA


def crop_views(eeg: torch.Tensor, n_views: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(V, B, C, width) crops of every channel at a uniform random start per (view, window)."""
    batch, channels, n_times = eeg.shape
    starts = torch.randint(
        0, n_times - width + 1, (n_views, batch), generator=generator, device=generator.device
    )
    index = (starts.to(eeg.device)[..., None] + torch.arange(width, device=eeg.device))[:, :, None]
    return eeg[None].expand(n_views, -1, -1, -1).gather(-1, index.expand(-1, -1, channels, -1))


def view_embeddings(encoder: LuMambaEncoder, views: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(V, B, C, w) views → (V, B, D): each view encoded unmasked, mean over its patches."""
    n_views, batch = views.shape[:2]
    latent = encoder(views.flatten(0, 1), positions.repeat(n_views, 1, 1))[0]
    return latent.mean(dim=1).reshape(n_views, batch, -1)


def random_directions(dim: int, num_slices: int, generator: torch.Generator) -> torch.Tensor:
    """(dim, num_slices) unit columns: the slices SIGReg tests along (one draw per step, shared by views)."""
    directions = torch.randn(dim, num_slices, generator=generator, device=generator.device)
    return directions / (directions.norm(dim=0) + 1e-12)


def sigreg(
    embeddings: torch.Tensor,
    directions: torch.Tensor,
    knots: int = 17,
    t_max: float = 5.0,
    mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
    total_count: int | None = None,
) -> torch.Tensor:
    """Sliced Epps–Pulley statistic of (N, D) embeddings against N(0, 1) along each direction, averaged:
    N · ∫ |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt (trapezoid). Zero in expectation only for an isotropic standard
    Gaussian; a collapsed or inflated embedding scores high. Under DDP pass `mean_over_ranks` (averaging
    the empirical characteristic function over ranks) and the global `total_count`."""
    projected = embeddings @ directions.to(embeddings.dtype)  # (N, S)
    t = torch.linspace(-t_max, t_max, knots, device=embeddings.device, dtype=embeddings.dtype)
    phase = projected[..., None] * t
    ecf = torch.stack([phase.cos().mean(0), phase.sin().mean(0)])  # (2, S, K): real, imaginary
    if mean_over_ranks is not None:
        ecf = mean_over_ranks(ecf)
    gaussian = torch.exp(-0.5 * t**2)
    error = ((ecf[0] - gaussian).square() + ecf[1].square()) * gaussian
    count = total_count if total_count is not None else embeddings.shape[0]
    return (torch.trapezoid(error, t, dim=-1) * count).mean()


def lejepa_loss(
    local_embeddings: torch.Tensor,
    global_embeddings: torch.Tensor,
    directions: torch.Tensor,
    lambd: float = 0.002,
) -> torch.Tensor:
    """(1 − λ)·mean ‖local − mean(global)‖² / D + λ·mean SIGReg over local views. (Vl, B, D), (Vg, B, D)."""
    centres = global_embeddings.mean(dim=0)
    prediction = (centres - local_embeddings).square().mean()
    regulariser = torch.stack([sigreg(view, directions) for view in local_embeddings]).mean()
    return (1 - lambd) * prediction + lambd * regulariser
