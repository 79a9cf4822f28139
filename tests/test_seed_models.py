"""CBraMod and LUNA (models/cbramod.py, models/luna.py) against braindecode 1.8.1 and the authors' code.

Equality: braindecode's randomly initialised weights are mapped onto ours with each module's
`braindecode_names` and both models run on the same inputs. Where braindecode departs from the authors'
code we follow the authors and say so at the test (LUNA's hidden LayerNorms, its channel-name decoder
embedding, the `.repeat` position tiling).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.positions import montage_positions
from eegfm.models import cbramod, luna

# ----------------------------------------------------------------------------------------------- CBraMod


def _cbramod_pair(braindecode, config: cbramod.CBraModConfig) -> tuple[nn.Module, nn.Module]:
    theirs = braindecode.CBraMod(
        n_layer=config.depth, nhead=config.heads, dim_feedforward=config.ffn_dim, return_encoder_output=True
    ).eval()
    ours = cbramod.CBraModPretrain(config).eval()
    names = cbramod.braindecode_names(ours)
    state = theirs.state_dict()
    # 1:1: every tensor of each side has exactly one partner (braindecode's head `final_layer` is Identity).
    assert sorted(names.values()) == sorted(state) and len(set(names.values())) == len(names)
    ours.load_state_dict({k: state[v] for k, v in names.items()})
    return ours, theirs


@pytest.mark.parametrize("channels", [1, 4, 19])
def test_cbramod_matches_braindecode_float32(braindecode, channels: int) -> None:
    """Two layers in float32: < 1e-5 max abs. (Twelve layers of braindecode's init grow outputs to ~25,
    where float32 rounding alone is ~1e-5; the full depth is checked in float64 below.)"""
    torch.manual_seed(channels)
    ours, theirs = _cbramod_pair(braindecode, cbramod.SIZES["cbramod_tiny"])
    eeg = cbramod.to_model_units(50 * torch.randn(2, channels, 600))  # µV → the authors' µV / 100
    mask = cbramod.patch_mask(2, channels, 3, torch.Generator().manual_seed(channels))
    with torch.no_grad():
        for patch_mask in (None, mask):
            reference = theirs(eeg, mask=None if patch_mask is None else patch_mask.long())
            assert (ours(eeg, patch_mask) - reference).abs().max() < 1e-5
            features = theirs.encoder(theirs.patch_embedding(theirs.rearrange(eeg), patch_mask))
            assert (ours.encoder(eeg, patch_mask) - features).abs().max() < 1e-5


def test_cbramod_published_size_matches_braindecode_float64(braindecode) -> None:
    torch.manual_seed(0)
    ours, theirs = _cbramod_pair(braindecode, cbramod.SIZES["cbramod"])
    ours, theirs = ours.double(), theirs.double()
    eeg = torch.randn(2, 19, 800, dtype=torch.float64)
    mask = cbramod.patch_mask(2, 19, 4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (ours(eeg, mask) - theirs(eeg, mask=mask.long())).abs().max()
    assert difference < 1e-10


def test_cbramod_masked_patches_become_zeros_before_embedding() -> None:
    """The authors' `mask_encoding` is a fixed zero vector: a masked patch's content cannot leak."""
    torch.manual_seed(0)
    encoder = cbramod.CBraModEncoder(cbramod.SIZES["cbramod_tiny"]).eval()
    eeg = torch.randn(1, 3, 400)
    mask = torch.zeros(1, 3, 2, dtype=torch.bool)
    mask[0, 1, 0] = True
    zeroed = eeg.clone()
    zeroed[0, 1, :200] = 0
    changed = eeg.clone()
    changed[0, 1, :200] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(encoder(eeg, mask), encoder(zeroed))
        torch.testing.assert_close(encoder(changed, mask), encoder(eeg, mask))
        assert not torch.allclose(encoder(eeg), encoder(zeroed))


def test_cbramod_mask_is_bernoulli_half_and_deterministic() -> None:
    shape = (64, 19, 10)
    cells = math.prod(shape)
    mask = cbramod.patch_mask(*shape, torch.Generator().manual_seed(3))
    assert mask.dtype == torch.bool and mask.shape == shape
    assert abs(mask.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / cells)  # 4 binomial std
    per_window = mask.float().mean(dim=(1, 2))
    assert per_window.std() > 0  # Bernoulli per cell, not a fixed count per window
    assert torch.equal(mask, cbramod.patch_mask(*shape, torch.Generator().manual_seed(3)))
    assert not torch.equal(mask, cbramod.patch_mask(*shape, torch.Generator().manual_seed(4)))


def test_cbramod_loss_counts_masked_patches_only() -> None:
    target = torch.zeros(1, 2, 2, 4)
    mask = torch.tensor([[[True, False], [False, False]]])
    prediction = target.clone()
    prediction[0, 0, 1] = 100.0  # wrong only where nothing is masked
    assert cbramod.reconstruction_loss(prediction, target, mask) == 0
    prediction[0, 0, 0] = 2.0
    assert cbramod.reconstruction_loss(prediction, target, mask) == 4.0


# -------------------------------------------------------------------------------------------------- LUNA


def _positions(names: list[str]) -> torch.Tensor:
    table = montage_positions("standard_1005")
    return torch.tensor([table[name] for name in names], dtype=torch.float32)


def _mixed_montages(channels: int = 19) -> torch.Tensor:
    """Three windows with the same channel count and different electrode sets: (3, C, 3) metres."""
    names = list(montage_positions("standard_1005"))
    rows = [GENERIC_EEG[:channels], names[3::7][:channels], names[5::11][:channels]]
    assert len({tuple(row) for row in rows}) == 3
    return torch.stack([_positions(row) for row in rows])


def _luna_pair(braindecode, config: luna.LunaConfig, n_outputs: int = 0) -> tuple[nn.Module, nn.Module]:
    theirs = braindecode.LUNA(
        n_outputs=n_outputs,
        n_chans=19 if n_outputs else None,
        n_times=400 if n_outputs else None,
        embed_dim=config.embed_dim,
        num_queries=config.queries,
        depth=config.depth,
        num_heads=config.heads,
    ).eval()
    ours = luna.LunaPretrain(config).eval()
    state = theirs.state_dict()
    names = luna.braindecode_names(ours)
    if n_outputs:  # braindecode's classification model has no reconstruction head
        names = {k: v for k, v in names.items() if not k.startswith("head.")}
    # Constants with no counterpart: rotary frequencies (recomputed here), `temperature` (never used);
    # and the authors' channel-*name* embedding table (our montages have no fixed name list).
    unmapped = {k for k in state if k not in names.values()}
    assert all(
        k.endswith("rotary_emb.freqs")
        or k in {"cross_attn.temperature", "channel_emb.embeddings.weight"}
        or k.startswith("final_layer.")
        for k in unmapped
    ), unmapped
    if not config.hidden_norm:
        assert set(names.values()) <= set(state)
    own = {k: state[v] for k, v in names.items() if v in state}
    ours.load_state_dict({**ours.state_dict(), **own})
    if n_outputs == 0:
        with torch.no_grad():  # the name embedding contributes nothing: decoder queries = positions only
            theirs.channel_emb.embeddings.weight.zero_()
    return ours, theirs


def _their_latent(theirs: nn.Module, eeg: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
    tokens, _ = theirs.prepare_tokens(eeg, positions)
    latent, weights = theirs.cross_attn(tokens)
    x = latent.reshape(eeg.shape[0], -1, theirs.embed_dim * theirs.num_queries)
    for block in theirs.blocks:
        x = block(x)
    return theirs.norm(x), weights


@pytest.mark.parametrize("channels", [1, 5, 19])
def test_luna_matches_braindecode_float32(braindecode, channels: int) -> None:
    """braindecode's architecture (`hidden_norm=False`), a batch mixing montages, with and without a mask."""
    torch.manual_seed(channels)
    config = dataclasses.replace(luna.SIZES["luna_tiny"], hidden_norm=False)
    ours, theirs = _luna_pair(braindecode, config)
    positions = _mixed_montages(channels)
    eeg = torch.randn(3, channels, 400)
    with torch.no_grad():
        latent, weights, _ = ours.encoder(eeg, positions)
        their_latent, their_weights = _their_latent(theirs, eeg, positions)
        assert (latent - their_latent).abs().max() < 1e-5
        assert (weights - their_weights).abs().max() < 1e-5
        names = torch.zeros(3, channels, dtype=torch.long)
        reconstruction, _ = ours(eeg, positions)
        reference = theirs(eeg, channel_locations=positions, channel_names=names)
        assert (reconstruction.flatten(2) - reference).abs().max() < 1e-5
        # Masked: braindecode takes a (B, C, T) sample mask and draws its position noise with randn_like.
        mask = luna.patch_mask(3, channels, 10, torch.Generator().manual_seed(0))
        torch.manual_seed(5)
        reference = theirs(
            eeg, mask=mask.repeat_interleave(40, -1), channel_locations=positions, channel_names=names
        )
        torch.manual_seed(5)
        noise = 0.02 * torch.randn(positions.shape)
        reconstruction, _ = ours(eeg, positions, mask, noise)
        assert (reconstruction.flatten(2) - reference).abs().max() < 1e-5


def test_luna_authors_hidden_norms_equal_braindecode_with_them_inserted(braindecode) -> None:
    """The authors build the channel-location MLP and the cross-attention FFN as timm `Mlp(...,
    norm_layer=nn.LayerNorm)` (BioFoundation models/LUNA.py); braindecode 1.8.1 drops both norms. Our
    default keeps them: inserting the same LayerNorms before braindecode's `fc2` gives our outputs."""
    torch.manual_seed(0)
    config = luna.SIZES["luna_tiny"]
    assert config.hidden_norm
    ours, theirs = _luna_pair(braindecode, config)
    state = ours.state_dict()
    for their_mlp, ours_prefix in [
        (theirs.channel_location_embedder, "encoder.location.norm."),
        (theirs.cross_attn.ffn, "encoder.unification.ffn.norm."),
    ]:
        norm = nn.LayerNorm(their_mlp.fc1.out_features)
        norm.weight.data.normal_()
        norm.bias.data.normal_()
        state[ours_prefix + "weight"], state[ours_prefix + "bias"] = norm.weight.data, norm.bias.data
        their_mlp.fc2 = nn.Sequential(norm, their_mlp.fc2)
    ours.load_state_dict(state)
    positions, eeg = _mixed_montages(), torch.randn(3, 19, 400)
    with torch.no_grad():
        latent, _, _ = ours.encoder(eeg, positions)
        assert (latent - _their_latent(theirs, eeg, positions)[0]).abs().max() < 1e-5


def test_luna_classification_head_matches_braindecode(braindecode) -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(luna.SIZES["luna_tiny"], hidden_norm=False)
    ours, theirs = _luna_pair(braindecode, config, n_outputs=2)
    head = luna.ClassificationHead(config, 2).eval()
    state = theirs.state_dict()
    head.load_state_dict(
        {k.removeprefix("head."): state[v] for k, v in luna.classification_head_names(head).items()}
    )
    positions, eeg = _mixed_montages(), torch.randn(3, 19, 400)
    with torch.no_grad():
        logits = head(ours.encoder(eeg, positions)[0])
        assert (logits - theirs(eeg, channel_locations=positions)).abs().max() < 1e-5


def test_luna_float64_matches_braindecode_at_base_width(braindecode) -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(luna.SIZES["luna_base"], depth=2, hidden_norm=False)
    ours, theirs = _luna_pair(braindecode, config)
    ours, theirs = ours.double(), theirs.double()
    positions, eeg = _mixed_montages().double(), torch.randn(3, 19, 400, dtype=torch.float64)
    with torch.no_grad():
        reference = theirs(
            eeg, channel_locations=positions, channel_names=torch.zeros(3, 19, dtype=torch.long)
        )
        # 1e-9, not 1e-12: braindecode's rotary frequencies are float32 constants even in a float64 model.
        assert (ours(eeg, positions)[0].flatten(2) - reference).abs().max() < 1e-9


def _assert_positions_follow_channels(encoder: luna.LunaEncoder) -> None:
    """Permuting channels with their positions changes nothing; a mixed-montage batch equals each
    window run alone."""
    torch.manual_seed(1)
    positions, eeg = _mixed_montages(), torch.randn(3, 19, 400)
    with torch.no_grad():
        latent = encoder(eeg, positions)[0]
        order = torch.randperm(19)
        torch.testing.assert_close(
            encoder(eeg[:, order], positions[:, order])[0], latent, atol=1e-5, rtol=1e-5
        )
        for window in range(3):
            alone = encoder(eeg[window : window + 1], positions[window : window + 1])[0]
            torch.testing.assert_close(alone[0], latent[window], atol=1e-5, rtol=1e-5)


def test_luna_each_channel_gets_its_own_position() -> None:
    torch.manual_seed(0)
    encoder = luna.LunaEncoder(luna.SIZES["luna_tiny"]).eval()
    luna.init_like_authors(encoder)
    _assert_positions_follow_channels(encoder)
    # The positions matter at all: the same signals at another montage give another latent.
    eeg, positions = torch.randn(1, 19, 400), _mixed_montages()
    with torch.no_grad():
        assert not torch.allclose(encoder(eeg, positions[:1])[0], encoder(eeg, positions[1:2])[0], atol=1e-3)


def test_luna_repeat_tiling_fails_the_position_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: BioFoundation's `.repeat(P, 1, 1)` tiling (row i gets window i mod B) makes the
    position test fail, so that test would catch the bug."""

    def authors_tiling(per_window: torch.Tensor, n_patches: int) -> torch.Tensor:
        return per_window.repeat(n_patches, 1, 1)

    torch.manual_seed(0)
    encoder = luna.LunaEncoder(luna.SIZES["luna_tiny"]).eval()
    monkeypatch.setattr(luna, "tile_per_patch", authors_tiling)
    with pytest.raises(AssertionError):
        _assert_positions_follow_channels(encoder)


def test_luna_mask_has_the_authors_count_and_is_uniform() -> None:
    shape = (400, 19, 10)
    mask = luna.patch_mask(*shape, torch.Generator().manual_seed(3))
    assert torch.equal(mask.sum(dim=(1, 2)), torch.full((400,), 95))  # ⌊0.5 · 190⌋ per window
    per_cell = mask.float().mean(dim=0)  # each cell hidden with probability 1/2 over windows
    assert (per_cell - 0.5).abs().max() < 5 * math.sqrt(0.25 / 400)
    assert not torch.equal(mask[0], mask[1])  # one mask per window, not one per batch
    assert torch.equal(mask, luna.patch_mask(*shape, torch.Generator().manual_seed(3)))
    assert not torch.equal(mask, luna.patch_mask(*shape, torch.Generator().manual_seed(4)))


def test_luna_losses() -> None:
    target = torch.zeros(1, 2, 2, 4)
    mask = torch.tensor([[[True, False], [False, False]]])
    prediction = target.clone()
    prediction[0, 0, 0] = 3.0  # masked: Smooth-L1 of 3 is 2.5
    prediction[0, 1] = 0.5  # unmasked: 0.5·0.5² = 0.125 on 8 of the 12 unmasked samples
    expected = 2.5 + 0.05 * (0.125 * 8 / 12)
    assert math.isclose(luna.reconstruction_loss(prediction, target, mask).item(), expected, rel_tol=1e-6)
    distinct = torch.eye(3)[None].repeat(2, 1, 1)  # each query on its own channel: A·Aᵀ diagonal
    assert luna.query_specialisation_loss(distinct) == 0
    same = torch.full((2, 3, 4), 0.25)  # every query spreads evenly: off-diagonal entries 0.25
    assert math.isclose(luna.query_specialisation_loss(same).item(), 0.8 * 0.25**2 * 6 / 9, rel_tol=1e-6)


# ------------------------------------------------------------------------------------------------- sizes


def test_published_parameter_counts(braindecode) -> None:
    """CBraMod ≈ 4.9M (issue 12; braindecode builds 4,883,800 without its reconstruction head `proj_out`);
    LUNA 7M / 43M / 311M (the LUNA paper's Base/Large/Huge, counted like its fine-tuning model: encoder +
    attention-pooling classification head). Within 2 %."""
    ours = cbramod.count_parameters(cbramod.CBraModEncoder(cbramod.SIZES["cbramod"]))
    theirs = braindecode.CBraMod(return_encoder_output=True)
    trainable = sum(
        p.numel() for n, p in theirs.named_parameters() if p.requires_grad and "proj_out" not in n
    )
    assert ours == trainable  # their fixed zero mask vector is a buffer here
    assert abs(ours / 4.9e6 - 1) < 0.02
    for name, published in luna.PUBLISHED_PARAMETERS.items():
        with torch.device("meta"):
            count = luna.parameter_count(luna.SIZES[name])
        assert abs(count / published - 1) < 0.02, (name, count)


def test_pretraining_losses_reach_every_parameter() -> None:
    """One masked step of each objective gives every trainable tensor a non-zero gradient (the LUNA mask
    token and queries included), so nothing is silently frozen or disconnected."""
    generator = torch.Generator().manual_seed(0)
    model = luna.LunaPretrain(luna.SIZES["luna_tiny"]).train()
    luna.init_like_authors(model)
    eeg, positions = torch.randn(2, 5, 400), _mixed_montages(5)[:2]
    mask = luna.patch_mask(2, 5, 10, generator)
    reconstruction, weights = model(eeg, positions, mask, luna.position_noise(positions, generator))
    target = eeg.reshape(2, 5, 10, 40)
    (
        luna.reconstruction_loss(reconstruction, target, mask) + luna.query_specialisation_loss(weights)
    ).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []

    model = cbramod.CBraModPretrain(cbramod.SIZES["cbramod_tiny"]).train()
    eeg = torch.randn(2, 5, 600)
    mask = cbramod.patch_mask(2, 5, 3, generator)
    cbramod.reconstruction_loss(model(eeg, mask), model.encoder.patchify(eeg), mask).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []
