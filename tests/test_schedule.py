"""The learning-rate shape and the FLOPs estimate behind MFU."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from eegfm.models.mae import MaeConfig, ReveMae
from eegfm.models.reve import SIZES
from eegfm.pretrain.schedule import warmup_plateau_cooldown


def test_warmup_plateau_cooldown_over_the_whole_run() -> None:
    shape = [warmup_plateau_cooldown(s, 100, 0.1, 0.2, 0.01) for s in range(100)]
    assert shape[0] == pytest.approx(0.1) and shape[9] == 1.0  # linear warm-up over 10 steps
    assert all(v == 1.0 for v in shape[10:80])  # plateau
    assert all(a > b for a, b in itertools.pairwise(shape[80:]))  # cosine cool-down
    assert shape[99] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="must fit in one run"):
        warmup_plateau_cooldown(0, 100, 0.6, 0.6, 0.0)


def test_train_flops_match_a_flop_counter() -> None:
    """The MFU numerator against torch's own count of a forward + backward (matmuls and attention)."""
    mae = MaeConfig(decoder_dim=64, decoder_depth=2, decoder_heads=2)
    model = ReveMae(SIZES["reve_tiny"], mae)
    eeg, positions = torch.randn(4, 21, 2000), torch.rand(4, 21, 3) * 0.1
    # The math backend spells attention out as matmuls the counter sees (fused kernels it does not).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(eeg, positions, torch.Generator().manual_seed(0)).loss.backward()
    assert model.train_flops(4, 21, 11) == pytest.approx(counter.get_total_flops(), rel=0.03)
