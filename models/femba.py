"""FEMBA (Tegon et al. 2025, arXiv 2502.06438): bidirectional Mamba over 2-D patches of a fixed montage.

The window (C × T) is cut into (2 channels × 16 samples) patches by one strided Conv2d with `embed_dim`
filters; each time step's column of C/2 patch embeddings is concatenated into one token of width
d_model = C/2 · embed_dim, so the sequence is the T/16 time steps. A learned position embedding per step is
added, then `depth` residual bidirectional Mamba blocks (post-norm: norm(x + fwd(x) + flip(rev(flip(x)))))
run over it. The pretraining decoder is one 31 × 31 same-size Conv2d over the (steps × d_model) latent and
a ConvTranspose2d that undoes the patching. Shapes, names and defaults follow the authors' BioFoundation
code (pulp-bio/BioFoundation `models/FEMBA.py`, `config/model/FEMBA_pretrain.yaml`), so their state
dicts have the same keys as ours (not loaded in a test here: their code needs mamba-ssm).

Why a fixed channel count: the token width is C/2 · embed_dim, so every Mamba projection's shape depends on
C, and the patch rows mix neighbouring channels of one ordered montage (TUH's 22-channel bipolar montage as
published). A window with another count cannot run through the same weights, and padding channels would
feed the model zeros it never learned to ignore; a wrong count is one `DataError`. LuMamba
(`models/lumamba.py`) is the variant for any montage.

Pretraining (BioFoundation `tasks/pretrain_task.py`, `config/experiment/FEMBA_pretrain.yaml`): 60 % of the
(2 × 16) rectangles hidden (an exact count, `masking_ratio: 0.6`), their samples set to zero, Smooth-L1 on
the masked samples only. The "physiologically aware" objective (Tegon et al., "FEMBA on the Edge",
arXiv 2603.26716) reconstructs a low-pass filtered version of the signal instead of the raw one, so the
model spends its capacity on neural oscillations rather than high-frequency artefacts. The paper's filter
(type, cutoff) could not be established here; `lowpass_kernel` is our choice, stated and tested: a
zero-phase Kaiser-windowed sinc FIR, flat to 40 Hz, ≥ 60 dB down from 50 Hz (which also removes mains
residue), applied in torch with reflected edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eegfm.errors import ConfigError, DataError
from eegfm.models.mamba import BiMamba, Mamba, count_parameters, run_stack


@dataclass(frozen=True)
class FembaConfig:
    channels: int = 22  # the fixed montage (TUH bipolar, as published)
    n_times: int = 1280  # 5 s at 256 Hz as published; our shards' 10 s at 200 Hz is 2000
    embed_dim: int = 79
    depth: int = 4  # bidirectional Mamba blocks
    expand: int = 4  # Mamba's inner width = expand × d_model
    d_state: int = 16
    d_conv: int = 4
    patch_channels: int = 2
    patch_samples: int = 16
    decoder_kernel: int = 31
    strategy: str = "add"

    def __post_init__(self) -> None:
        if self.channels % self.patch_channels or self.n_times % self.patch_samples:
            raise ConfigError(
                f"FEMBA needs channels divisible by {self.patch_channels} and n_times by "
                f"{self.patch_samples}, got channels={self.channels}, n_times={self.n_times}"
            )

    @property
    def rows(self) -> int:
        return self.channels // self.patch_channels

    @property
    def steps(self) -> int:
        return self.n_times // self.patch_samples

    @property
    def d_model(self) -> int:
        return self.rows * self.embed_dim


# Published variants (FEMBA paper Table / BioFoundation docs/model/FEMBA.md: (num_blocks, embed_dim) =
# tiny (2, 35) 7.8M, base (12, 35) 47.7M, large (4, 79) 77.8M, huge (20, 79) 386M) on the published
# 22 × 1280 input; `femba_micro` is for CPU tests.
SIZES: dict[str, FembaConfig] = {
    "femba_micro": FembaConfig(channels=4, n_times=128, embed_dim=8, depth=1, expand=2),
    "femba_tiny": FembaConfig(embed_dim=35, depth=2),
    "femba_base": FembaConfig(embed_dim=35, depth=12),
    "femba_large": FembaConfig(embed_dim=79, depth=4),
    "femba_huge": FembaConfig(embed_dim=79, depth=20),
}
PUBLISHED_PARAMETERS = {"femba_tiny": 7.8e6, "femba_base": 47.7e6, "femba_large": 77.8e6, "femba_huge": 386e6}


class PatchEmbed(nn.Module):
    """(B, C, T) → (B, T/16, C/2 · E): one token per time step, embedding e of row r at index e·rows + r."""

    def __init__(self, config: FembaConfig):
        super().__init__()
        size = (config.patch_channels, config.patch_samples)
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=size, stride=size)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        grid = self.proj(eeg[:, None])  # (B, E, rows, steps)
        return grid.flatten(1, 2).transpose(1, 2)


class FembaEncoder(nn.Module):
    """(B, C, T) EEG of the configured montage (+ an optional (B, C, T) sample mask, true = hidden, whose
    samples become zeros) → (B, T/16, d_model) latent."""

    def __init__(self, config: FembaConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.steps, config.d_model))
        mamba = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand}
        self.mamba_blocks = nn.ModuleList(
            BiMamba(config.d_model, config.strategy, **mamba) for _ in range(config.depth)
        )
        self.norm_layers = nn.ModuleList(nn.LayerNorm(config.d_model) for _ in range(config.depth))

    def check_shape(self, eeg: torch.Tensor) -> None:
        channels, n_times = eeg.shape[-2:]
        if channels != self.config.channels:
            raise DataError(
                f"FEMBA is built for a fixed {self.config.channels}-channel montage (its token width is "
                f"channels/2 × embed_dim), got {channels} channels: select those channels in the recipe or "
                f"use LuMamba for other montages"
            )
        if n_times != self.config.n_times:
            raise DataError(
                f"FEMBA is built for {self.config.n_times}-sample windows (one learned position per "
                f"{self.config.patch_samples}-sample step), got {n_times}: set n_times to the shards' window"
            )

    def forward(self, eeg: torch.Tensor, sample_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_shape(eeg)
        if sample_mask is not None:
            eeg = eeg.masked_fill(sample_mask.bool(), 0.0)
        x = self.patch_embed(eeg) + self.pos_embed
        return run_stack(x, self.mamba_blocks, self.norm_layers, norm_first=False)


class FembaDecoder(nn.Module):
    """(B, steps, d_model) → (B, C, T): a same-size Conv2d over the latent, then the patching undone."""

    def __init__(self, config: FembaConfig):
        super().__init__()
        self.config = config
        kernel = config.decoder_kernel
        self.dec_conv = nn.Conv2d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)
        size = (config.patch_channels, config.patch_samples)
        self.conv_transpose = nn.ConvTranspose2d(config.embed_dim, 1, kernel_size=size, stride=size)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = latent.shape
        x = self.dec_conv(latent[:, None])[:, 0].transpose(1, 2)  # (B, d_model, steps)
        grid = x.reshape(batch, self.config.embed_dim, self.config.rows, steps)
        return self.conv_transpose(grid)[:, 0]


class FembaPretrain(nn.Module):
    """Encoder + decoder: (B, C, T) EEG and (B, C, T) sample mask → (B, C, T) reconstruction."""

    def __init__(self, config: FembaConfig):
        super().__init__()
        self.encoder = FembaEncoder(config)
        self.decoder = FembaDecoder(config)

    def forward(self, eeg: torch.Tensor, sample_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(eeg, sample_mask))


class MambaClassifier(nn.Module):
    """The authors' "Mamba-enhanced" fine-tuning head: Linear(d_model → 256) → GELU → one (forward) Mamba
    block → mean over time → Linear → logits. ≈ 0.54M parameters at FEMBA-tiny/base width; the published
    FEMBA base/large/huge and LuMamba counts include it (see tests/test_mamba_models.py)."""

    def __init__(self, d_model: int, n_classes: int, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.mamba_1 = Mamba(hidden, expand=2)
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.mamba_1(F.gelu(self.fc1(latent))).mean(dim=1))


def parameter_count(config: FembaConfig, head: bool = True, n_classes: int = 2) -> int:
    """Encoder parameters, plus the Mamba classification head when `head`."""
    with torch.device("meta"):  # shapes only: the huge sizes are counted without allocating them
        total = count_parameters(FembaEncoder(config))
        return total + (count_parameters(MambaClassifier(config.d_model, n_classes)) if head else 0)


# ------------------------------------------------------------------------------------------- pretraining


def patch_mask(
    batch: int, config: FembaConfig, generator: torch.Generator, ratio: float = 0.6
) -> torch.Tensor:
    """(B, rows, steps) bool with exactly ⌊ratio · rows·steps⌋ hidden rectangles per window, uniformly
    placed (the authors draw one `randperm` per batch, shared by its windows; we draw one per window)."""
    cells = config.rows * config.steps
    scores = torch.rand(batch, cells, generator=generator, device=generator.device)
    hidden = scores.argsort(dim=1)[:, : int(cells * ratio)]
    mask = torch.zeros(batch, cells, dtype=torch.bool, device=scores.device)
    return mask.scatter_(1, hidden, True).reshape(batch, config.rows, config.steps)


def sample_mask(mask: torch.Tensor, config: FembaConfig) -> torch.Tensor:
    """(B, rows, steps) rectangle mask → (B, C, T) sample mask."""
    return mask.repeat_interleave(config.patch_channels, 1).repeat_interleave(config.patch_samples, 2)


def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical β for a stopband attenuation (Oppenheim & Schafer, eq. 7.62)."""
    if attenuation_db > 50:
        return 0.1102 * (attenuation_db - 8.7)
    if attenuation_db >= 21:
        return 0.5842 * (attenuation_db - 21) ** 0.4 + 0.07886 * (attenuation_db - 21)
    return 0.0


def lowpass_kernel(
    sfreq: float, passband_hz: float = 40.0, stopband_hz: float = 50.0, attenuation_db: float = 60.0
) -> torch.Tensor:
    """Odd-length, symmetric (hence zero-phase when centred) Kaiser-windowed sinc low-pass FIR, float64,
    unit DC gain: |H| within ≈ 10^(−A/20) of 1 below `passband_hz`, ≤ −A dB above `stopband_hz`."""
    if not 0 < passband_hz < stopband_hz <= sfreq / 2:
        raise ConfigError(
            f"low-pass needs 0 < passband_hz < stopband_hz <= sfreq/2, "
            f"got {passband_hz}, {stopband_hz}, {sfreq}"
        )
    width = 2 * math.pi * (stopband_hz - passband_hz) / sfreq
    taps = math.ceil((attenuation_db - 7.95) / (2.285 * width)) + 1
    taps += 1 - taps % 2
    # Kaiser's length formula is approximate (it misses by ~1 dB here): lengthen until the stopband,
    # checked on a fine grid, meets the stated attenuation.
    stopband = torch.linspace(stopband_hz, sfreq / 2, 1024, dtype=torch.float64)
    while True:
        kernel = _windowed_sinc(taps, (passband_hz + stopband_hz) / 2 / sfreq, kaiser_beta(attenuation_db))
        if frequency_response(kernel, stopband, sfreq).max() <= 10 ** (-attenuation_db / 20):
            return kernel
        taps += 2


def _windowed_sinc(taps: int, cutoff: float, beta: float) -> torch.Tensor:
    """`cutoff` in cycles per sample; normalised to unit DC gain."""
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    window = torch.kaiser_window(taps, periodic=False, beta=beta, dtype=torch.float64)
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * n) * window
    return kernel / kernel.sum()


def frequency_response(kernel: torch.Tensor, freqs_hz: torch.Tensor, sfreq: float) -> torch.Tensor:
    """|H(f)| of an FIR at the given frequencies."""
    n = torch.arange(kernel.numel(), dtype=torch.float64)
    phase = -2 * math.pi * freqs_hz.double()[:, None] * n / sfreq
    return torch.complex(kernel * phase.cos(), kernel * phase.sin()).sum(-1).abs()


def lowpass(eeg: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-phase filtering of (..., T) along time: the centred kernel, edges reflected (no delay, no
    zero-padding dip at the window's ends). Deterministic (a plain convolution)."""
    half = kernel.numel() // 2
    n_times = eeg.shape[-1]
    if n_times <= half:
        raise DataError(f"low-pass target needs windows longer than {half} samples, got {n_times}")
    flat = eeg.reshape(-1, 1, n_times)
    padded = F.pad(flat, (half, half), mode="reflect")
    weight = kernel.flip(0).to(eeg.dtype, copy=False).to(eeg.device)[None, None]
    return F.conv1d(padded, weight).reshape(eeg.shape)


def reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor
) -> torch.Tensor:
    """Smooth-L1 over the masked samples only (the authors' `PretrainCriterion('smooth_l1')` masked term)."""
    mask = sample_mask.bool()
    return F.smooth_l1_loss(reconstruction[mask], target[mask])
