"""REVE encoder and masked autoencoder: sizes, positional encoding, equivariance, masks, learning."""

from __future__ import annotations

import math

import pytest
import torch

from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.positions import montage_positions
from eegfm.models.mae import MaeConfig, ReveMae, block_mask
from eegfm.models.position import FourierEmb4D, token_coordinates
from eegfm.models.reve import SIZES, ReveEncoder, count_parameters

CHANNELS = [*GENERIC_EEG, "A1", "A2"]  # 21 channels of a 10-20 cap


def _positions() -> torch.Tensor:
    table = montage_positions("standard_1005")
    return torch.tensor([table[c] for c in CHANNELS], dtype=torch.float32)


@pytest.mark.parametrize(
    ("name", "millions"), [("reve_small", 12.7), ("reve_base", 69.2), ("reve_large", 390.0)]
)
def test_encoder_sizes(name: str, millions: float) -> None:
    with torch.device("meta"):  # count without allocating 390M parameters
        encoder = ReveEncoder(SIZES[name])
    assert abs(count_parameters(encoder) / 1e6 - millions) / millions < 0.02


def test_fourier_features_enumerate_every_frequency_tuple() -> None:
    emb = FourierEmb4D(dim=2 * 3**4, freqs=3)
    point = torch.tensor([[0.01, -0.05, 0.08, 4.0]])
    width = 1 + 2 * 0.4
    x, y, z, t = (v + 0.4 for v in (0.01, -0.05, 0.08, 4.0 * 0.1))
    phases = [
        2 * math.pi / width * (fx * x + fy * y + fz * z + ft * t)
        for fx in range(3)
        for fy in range(3)
        for fz in range(3)
        for ft in range(3)
    ]
    expected = torch.tensor([math.cos(p) for p in phases] + [math.sin(p) for p in phases])
    torch.testing.assert_close(emb(point)[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="raise `freqs`"):
        FourierEmb4D(dim=1216, freqs=4)


def test_token_coordinates_are_channel_major() -> None:
    pos = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    coords = token_coordinates(pos, 3)
    assert coords.shape == (1, 6, 4)
    assert coords[0, :, 3].tolist() == [0, 1, 2, 0, 1, 2] and coords[0, 3, :3].tolist() == [3, 4, 5]


def test_ten_second_window_gives_eleven_patches() -> None:
    assert SIZES["reve_base"].n_patches(2000) == 11


def test_permuting_channels_with_their_positions_permutes_the_output() -> None:
    torch.manual_seed(0)
    encoder = ReveEncoder(SIZES["reve_tiny"]).eval()
    eeg, pos = torch.randn(2, len(CHANNELS), 2000), _positions().expand(2, -1, -1)
    perm = torch.randperm(len(CHANNELS))
    with torch.no_grad():
        out, permuted = encoder(eeg, pos), encoder(eeg[:, perm], pos[:, perm])
    torch.testing.assert_close(permuted, out[:, perm], atol=1e-5, rtol=1e-4)
    assert out.shape == (2, len(CHANNELS), 11, 64)


def test_block_masks_are_exact_spatial_and_temporal_blocks() -> None:
    pos = _positions().expand(8, -1, -1)
    config = MaeConfig()
    g = torch.Generator().manual_seed(0)
    mask = block_mask(pos, 11, config, g)
    assert mask.shape == (8, 21, 11)
    assert (mask.sum(dim=(1, 2)) == round(0.55 * 21 * 11)).all()
    whole = mask.all(dim=2).sum(dim=1)
    assert (whole >= round(0.1 * 21)).all()  # channel dropout
    # One block, no dropout: all masked tokens sit within 3 consecutive patches and 6 cm of each other.
    single = MaeConfig(mask_ratio=3 / (21 * 11), channel_dropout=0.0)
    for _ in range(20):
        m = block_mask(pos[:1], 11, single, g)[0]
        channels, patches = m.nonzero(as_tuple=True)
        assert patches.max() - patches.min() < 3
        assert torch.cdist(pos[0, channels], pos[0, channels]).max() <= 0.06 + 1e-6
    # In token order (channel-major) a block is runs of consecutive tokens, unlike a transposed build.
    runs = [int(r) for r in (mask[0].reshape(-1).int().diff() == 1).sum().reshape(1)]
    assert runs[0] < mask[0].sum() / 2


def test_mae_masks_exactly_and_trains_end_to_end() -> None:
    torch.manual_seed(0)
    model = ReveMae(SIZES["reve_tiny"], MaeConfig(decoder_dim=64, decoder_depth=1, decoder_heads=2))
    eeg, pos = torch.randn(3, len(CHANNELS), 2000), _positions().expand(3, -1, -1)
    out = model(eeg, pos, torch.Generator().manual_seed(0))
    n_masked = round(0.55 * len(CHANNELS) * 11)
    assert out.prediction.shape == out.target.shape == (3, n_masked, 200)
    patches = model.encoder.patchify(eeg)
    torch.testing.assert_close(out.target, patches[out.mask].reshape(out.target.shape))
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.1 * out.secondary_loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters()), "a parameter got no gradient"
