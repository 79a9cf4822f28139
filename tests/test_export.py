"""An exported REVE encoder loads back, and into braindecode's REVE class, with the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.positions import montage_positions
from eegfm.models.reve import SIZES, ReveEncoder
from eegfm.pretrain.export import braindecode_kwargs, export_encoder, load_encoder


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    table = montage_positions("standard_1005")
    positions = torch.tensor([table[c] for c in GENERIC_EEG], dtype=torch.float32)
    return torch.randn(batch, len(GENERIC_EEG), 2000), positions.expand(batch, -1, -1)


def test_export_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = ReveEncoder(SIZES["reve_tiny"]).eval()
    export_encoder(encoder, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["eegfm"]["embed_dim"] == 64
    assert (tmp_path / "model.safetensors").read_bytes()[:8] != b"\x80\x02"  # not a pickle
    eeg, pos = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(str(tmp_path)).eval()(eeg, pos), encoder(eeg, pos))


def test_exported_encoder_runs_in_braindecode_reve(braindecode, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = ReveEncoder(SIZES["reve_tiny"]).eval()
    export_encoder(encoder, str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())["braindecode_reve"]
    assert config == braindecode_kwargs(encoder.config)
    theirs = braindecode.REVE(n_outputs=2, n_chans=len(GENERIC_EEG), n_times=2000, sfreq=200, **config).eval()
    from safetensors.torch import load_file

    missing, unexpected = theirs.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert not unexpected and all(name.startswith("final_layer.") for name in missing), missing
    eeg, pos = _inputs()
    with torch.no_grad():
        reference = theirs(eeg, pos=pos, return_output=True)[-1]  # the last transformer layer's tokens
        ours = encoder(eeg, pos).reshape(reference.shape)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
