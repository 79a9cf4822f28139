"""Neural tokenizers of EEG patches: LaBraM's VQ-NSP and a NeuroRVQ-style multi-scale residual VQ.

Each 1-s patch of each channel becomes a code (VQ-NSP) or a stack of codes (one per branch and residual
level). Channels are embedded from their electrode positions with REVE's 4D encoding, not looked up in a
fixed list of 128 channel names as LaBraM does, so any montage in the shards can be tokenized.

Quantisation is vector-quantize-pytorch's: cosine-similarity (L2-normalised) codebooks, k-means
initialisation on the first batch, EMA updates, dead-code restarts from the batch's encoder outputs and
the straight-through estimator with a commitment loss. Under DDP the k-means, the EMA statistics and the
restarts are reduced over the ranks (`sync_codebooks`), so every rank holds the same codebook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

from eegfm.models.layers import RMSNorm, TemporalConv, Transformer, matrix_parameters
from eegfm.models.position import PositionEncoding4D, token_coordinates


@dataclass(frozen=True)
class TokenizerConfig:
    kind: str = "vqnsp"
    """vqnsp: one codebook (LaBraM); rvq: multi-scale residual VQ (NeuroRVQ-style)."""
    patch_size: int = 200
    """Samples per patch: 1 s at 200 Hz, patches side by side (a 10-s window gives 10)."""
    embed_dim: int = 200
    """Width of the tokenizer encoder."""
    depth: int = 12
    """Transformer blocks of the encoder."""
    heads: int = 10
    """Attention heads of the encoder."""
    mlp_ratio: float = 8 / 3
    """GEGLU hidden width / embed_dim (8/3: the parameters of LaBraM's 4× GELU MLP)."""
    freqs: int = 4
    """Fourier frequencies per axis of the 4D position encoding."""
    code_dim: int = 64
    """Dimension of each code (L2-normalised)."""
    codebook_size: int = 8192
    """Codes per codebook."""
    ema_decay: float = 0.99
    """EMA decay of the codebook updates."""
    kmeans_iters: int = 10
    """k-means iterations initialising the codebooks from the first batch."""
    dead_code_threshold: float = 1.0
    """EMA usage below which a code restarts from a recent encoder output."""
    commitment_weight: float = 1.0
    """Weight of the commitment loss."""
    decoder_depth: int = 3
    """Transformer blocks of the decoder predicting amplitude and phase."""
    branch_kernels: tuple[int, ...] = (21, 15, 9, 5)
    """rvq: temporal kernels of the branches."""
    quantizers: int = 8
    """rvq: residual levels per branch."""

    def __post_init__(self) -> None:
        if self.kind not in ("vqnsp", "rvq"):
            raise ValueError(f"tokenizer kind must be vqnsp or rvq, not {self.kind!r}")
        object.__setattr__(self, "branch_kernels", tuple(self.branch_kernels))

    @property
    def kernels(self) -> tuple[int, ...]:
        return (15,) if self.kind == "vqnsp" else self.branch_kernels

    @property
    def codes_per_patch(self) -> int:
        return 1 if self.kind == "vqnsp" else len(self.branch_kernels) * self.quantizers

    @property
    def n_bins(self) -> int:
        """Fourier bins predicted per patch: the first half of the spectrum, without the Nyquist bin."""
        return self.patch_size // 2

    def n_patches(self, n_times: int) -> int:
        if n_times < self.patch_size:
            raise ValueError(f"{n_times} samples are fewer than one {self.patch_size}-sample patch")
        return n_times // self.patch_size


def patchify(eeg: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, T) → (B, C, P, patch_size), patches side by side; a remainder shorter than a patch is left."""
    n = eeg.shape[-1] // patch_size
    return eeg[..., : n * patch_size].unflatten(-1, (n, patch_size))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """z-score over everything but the batch dimension (LaBraM's per-sample target normalisation)."""
    dims = tuple(range(1, x.dim()))
    return (x - x.mean(dim=dims, keepdim=True)) / (x.std(dim=dims, keepdim=True) + 1e-6)


@dataclass
class TokenizerOutput:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]  # the loss's terms, for logging
    indices: torch.Tensor  # (B, C·P, codes_per_patch) code ids


class NeuralTokenizer(nn.Module):
    """(B, C, T) z-scored EEG + (B, C, 3) positions → code ids per patch, trained to predict each patch's
    Fourier spectrum from its codes."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        self.embeddings = nn.ModuleList(TemporalConv(c.patch_size, c.embed_dim, k) for k in c.kernels)
        self.position = PositionEncoding4D(c.embed_dim, c.freqs)
        hidden = int(c.embed_dim * c.mlp_ratio)
        self.encoder = Transformer(c.embed_dim, c.depth, c.heads, c.embed_dim // c.heads, hidden)
        self.encoder_norm = RMSNorm(c.embed_dim)
        self.to_code = nn.Linear(c.embed_dim, c.code_dim)
        vq = dict(
            dim=c.code_dim,
            codebook_size=c.codebook_size,
            decay=c.ema_decay,
            kmeans_init=True,
            kmeans_iters=c.kmeans_iters,
            use_cosine_sim=True,
            threshold_ema_dead_code=c.dead_code_threshold,
            commitment_weight=c.commitment_weight,
            rotation_trick=False,  # LaBraM's straight-through estimator
            sync_codebook=False,  # switched on by sync_codebooks() once the process group exists
        )
        self.quantizers = nn.ModuleList(
            VectorQuantize(**vq) if c.kind == "vqnsp" else ResidualVQ(num_quantizers=c.quantizers, **vq)
            for _ in c.kernels
        )
        self.from_code = nn.Linear(c.code_dim * len(c.kernels), c.embed_dim)
        self.decoder = Transformer(c.embed_dim, c.decoder_depth, c.heads, c.embed_dim // c.heads, hidden)
        self.decoder_norm = RMSNorm(c.embed_dim)
        # vqnsp: amplitude and phase; rvq: log-amplitude and the phase as (cos, sin).
        self.head = nn.Linear(c.embed_dim, (2 if c.kind == "vqnsp" else 3) * c.n_bins)
        # Counted before any FSDP flattening.
        self.matrix_params = {
            "encoder": matrix_parameters(self.encoder),
            "decoder": matrix_parameters(self.decoder),
        }

    def sync_codebooks(self) -> None:
        """Reduce k-means, EMA statistics and code restarts over the ranks of the current process group.

        The library decides this when it is built, before Lightning has started the process group; this
        switches its codebooks over afterwards, exactly as `sync_codebook=True` would have built them.
        """
        from torch import distributed
        from vector_quantize_pytorch.vector_quantize_pytorch import sample_vectors_distributed

        for module in self.modules():
            if hasattr(module, "kmeans_all_reduce_fn"):  # a codebook
                module.sample_fn = module.replace_sample_fn = sample_vectors_distributed
                module.kmeans_all_reduce_fn = module.all_reduce_fn = distributed.all_reduce

    def encode(self, eeg: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
        """Per branch, the (B, C·P, code_dim) vectors to quantise."""
        patches = patchify(eeg, self.config.patch_size)
        batch, channels, n_patches, _ = patches.shape
        where = self.position(token_coordinates(positions, n_patches))
        features = []
        for embed in self.embeddings:
            tokens = embed(patches).reshape(batch, channels * n_patches, -1) + where
            # On the unit sphere, like the cosine-similarity codebook (LaBraM): the commitment stays bounded.
            features.append(F.normalize(self.to_code(self.encoder_norm(self.encoder(tokens))), dim=-1))
        return features

    def quantize(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(quantised vectors of all branches side by side, ids (B, N, codes_per_patch), commitment loss)."""
        quantized, ids, commitment = [], [], []
        for quantizer, x in zip(self.quantizers, features, strict=True):
            q, index, loss = quantizer(x)
            quantized.append(q)
            ids.append(index.reshape(*index.shape[:2], -1))
            commitment.append(loss.sum())  # rvq: one loss per level
        return torch.cat(quantized, dim=-1), torch.cat(ids, dim=-1), torch.stack(commitment).sum()

    @torch.no_grad()
    def tokenize(self, eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, C, P, codes_per_patch) code ids; the codebooks are not updated."""
        was_training = self.training
        self.eval()
        try:
            _, ids, _ = self.quantize(self.encode(eeg, positions))
        finally:
            self.train(was_training)
        batch, channels, n_times = eeg.shape
        return ids.reshape(batch, channels, self.config.n_patches(n_times), -1)

    def forward(self, eeg: torch.Tensor, positions: torch.Tensor) -> TokenizerOutput:
        c = self.config
        patches = patchify(eeg, c.patch_size)
        batch, channels, n_patches, _ = patches.shape
        quantized, ids, commitment = self.quantize(self.encode(eeg, positions))
        where = self.position(token_coordinates(positions, n_patches))
        decoded = self.decoder_norm(self.decoder(self.from_code(quantized) + where))
        predicted = self.head(decoded).reshape(batch, channels, n_patches, -1, c.n_bins)
        spectrum = torch.fft.rfft(patches.float(), dim=-1)[..., : c.n_bins]
        if c.kind == "vqnsp":
            parts = {
                "amplitude_loss": F.mse_loss(predicted[..., 0, :], _standardise(spectrum.abs())),
                "phase_loss": F.mse_loss(predicted[..., 1, :], _standardise(spectrum.angle())),
            }
        else:
            log_amplitude, direction = predicted[..., 0, :], F.normalize(predicted[..., 1:, :], dim=-2)
            target = torch.stack([torch.cos(spectrum.angle()), torch.sin(spectrum.angle())], dim=-2)
            rebuilt = torch.fft.irfft(
                F.pad(
                    torch.expm1(log_amplitude).clamp(min=0)
                    * torch.complex(direction[..., 0, :], direction[..., 1, :]),
                    (0, c.patch_size // 2 + 1 - c.n_bins),
                ),
                n=c.patch_size,
            )
            parts = {
                "amplitude_loss": F.mse_loss(log_amplitude, torch.log1p(spectrum.abs())),
                "phase_loss": (1 - (direction * target).sum(dim=-2)).mean(),
                "signal_loss": F.mse_loss(rebuilt, patches.float()),
            }
        parts["commitment_loss"] = commitment
        return TokenizerOutput(sum(parts.values()), parts, ids)

    def train_flops(self, batch: int, channels: int, n_patches: int) -> float:
        """Model FLOPs of one forward + backward: 3× the forward's matmuls and attention, for MFU."""
        c, tokens = self.config, channels * n_patches
        matrices, decoder = self.matrix_params["encoder"], self.matrix_params["decoder"]
        per_branch = 2 * matrices * tokens + 4 * c.depth * c.embed_dim * tokens**2
        per_branch += 2 * c.codebook_size * c.code_dim * tokens * (1 if c.kind == "vqnsp" else c.quantizers)
        forward = (
            len(c.kernels) * per_branch + 2 * decoder * tokens + 4 * c.decoder_depth * c.embed_dim * tokens**2
        )
        return 3.0 * batch * forward


def perplexity(ids: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code distribution in `ids`: 1 when one code is used, codebook_size at best."""
    counts = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    p = counts / counts.sum()
    return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
