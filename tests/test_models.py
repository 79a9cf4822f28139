"""REVE encoder and masked autoencoder: sizes, positional encoding, equivariance, masks, learning."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from eegfm.ingest.fixtures import EEGMMIDB_LABELS, GENERIC_EEG
from eegfm.ingest.positions import case_index, montage_positions
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


def _block_mask_violations(mask: np.ndarray, positions: np.ndarray, config: MaeConfig) -> list[str]:
    """Why the (C, P) mask `mask` is not a REVE block mask for electrodes at `positions` (C, 3); [] if it is.

    Recomputed here from the definition, not from `block_mask`: a block is every channel within
    `block_radius_m` (plain float64 distances) of a centre electrode, over `block_patches` consecutive
    patches. A REVE mask is `round(ratio·C·P)` cells: whole dropped-out channels plus a union of full
    blocks, except the last block, trimmed at random to land on the count, so what no full block (or whole
    channel) covers must fit inside a single block.
    """
    channels, n_patches = mask.shape
    violations = []
    target = round(config.mask_ratio * channels * n_patches)
    if mask.sum() != target:
        violations.append(f"{mask.sum()} masked cells, not round({config.mask_ratio}·{channels}·{n_patches})")
    n_dropped = min(round(config.channel_dropout * channels), target // n_patches)
    if mask.all(axis=1).sum() < n_dropped:
        violations.append(f"{mask.all(axis=1).sum()} whole channels masked, fewer than {n_dropped} dropped")
    xyz = positions.astype(np.float64)
    near = np.linalg.norm(xyz[:, None] - xyz[None], axis=2) <= config.block_radius_m  # (C, C)
    span = min(config.block_patches, n_patches)
    covered = np.repeat(mask.all(axis=1, keepdims=True), n_patches, axis=1)
    for start in range(n_patches - span + 1):
        held = mask[:, start : start + span].all(axis=1)  # channels masked over the whole span
        full_blocks = ~(near & ~held[None, :]).any(axis=1)  # centres whose every neighbour is held
        covered[near[full_blocks].any(axis=0), start : start + span] = True
    loose = mask & ~covered
    if loose.any():
        loose_channels, loose_patches = loose.any(axis=1), np.flatnonzero(loose.any(axis=0))
        in_one_block = (
            loose_patches.max() - loose_patches.min() < span and near[:, loose_channels].all(axis=1).any()
        )
        if not in_one_block:
            violations.append(f"{loose.sum()} masked cells in no full block, more than one trimmed block")
    return violations


@pytest.mark.parametrize("cap", ["10-20, 21 channels", "10-10, 64 channels", "10-05, 343 channels"])
def test_block_masks_are_unions_of_full_spatio_temporal_blocks(cap: str) -> None:
    """Every mask is whole dropped channels plus full 3 cm × 3-patch blocks (one trimmed), at the exact
    ratio; the same check rejects a uniformly random mask, the transposed (patch-major) build of the public
    REVE code, and blocks that ignore the radius (on caps dense enough to have neighbours within 3 cm)."""
    table, spelled = montage_positions("standard_1005"), case_index("standard_1005")
    names = {
        "10-20, 21 channels": CHANNELS,
        "10-10, 64 channels": [spelled[label.strip(".").upper()] for label in EEGMMIDB_LABELS],
        "10-05, 343 channels": list(table),
    }[cap]
    xyz = np.array([table[name] for name in names], dtype=np.float32)
    distances = np.linalg.norm(xyz[:, None].astype(np.float64) - xyz[None], axis=2)
    # No pair so close to the radius that float32 (the mask's) and float64 (ours) could disagree.
    assert np.abs(distances - 0.03).min() > 1e-6
    batch, n_patches, config = 6, 11, MaeConfig()
    positions = torch.from_numpy(xyz).expand(batch, -1, -1)
    masks = block_mask(positions, n_patches, config, torch.Generator().manual_seed(0)).numpy()
    assert masks.shape == (batch, len(names), n_patches)
    rng = np.random.default_rng(0)
    neighbours = (distances <= 0.03).sum(axis=1)
    for mask in masks:
        assert _block_mask_violations(mask, xyz, config) == []
        # Negative controls, each with the right count: they must fail the block check itself.
        transposed = mask.reshape(n_patches, len(names)).T  # built patch-major, read channel-major
        scattered = mask.all(axis=1, keepdims=True).repeat(n_patches, axis=1)  # the same dropped channels …
        free = np.flatnonzero(~scattered)  # … and the rest of the count uniformly at random
        scattered.reshape(-1)[rng.choice(free, mask.sum() - scattered.sum(), replace=False)] = True
        for control in (transposed, scattered):
            assert any("in no full block" in v for v in _block_mask_violations(control, xyz, config))
    if neighbours.max() > 1:  # blocks of one channel (radius ignored) are no 3 cm blocks there
        pointlike = block_mask(
            positions, n_patches, replace(config, block_radius_m=0.0), torch.Generator().manual_seed(1)
        )
        rejected = [_block_mask_violations(m, xyz, config) for m in pointlike.numpy()]
        assert all(any("in no full block" in v for v in why) for why in rejected)


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
