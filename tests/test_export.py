"""An exported REVE encoder loads back, and into braindecode's REVE class, with the same outputs."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.positions import montage_positions
from eegfm.models.mcm import SIZES as MCM_SIZES
from eegfm.models.mcm import MaskedCodeEncoder, McmConfig
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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
PICKLE_MAGICS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))  # PROTO opcode, protocols 2–5


def _pickle_free_problems(folder: Path) -> list[str]:
    """Why the export in `folder` is not exactly a safetensors file and a JSON config; [] if it is.

    model.safetensors: an 8-byte little-endian header length, a JSON header whose tensors' byte ranges
    tile the rest of the file, and `safetensors` parses it; config.json: JSON; no file a zip archive or a
    protocol 2–5 pickle.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    problems = []
    names = sorted(path.name for path in folder.iterdir())
    if names != ["config.json", "model.safetensors"]:
        problems.append(f"the export holds {names}")
    for path in folder.iterdir():
        head = path.read_bytes()[:4]
        if head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGICS):
            problems.append(f"{path.name} starts with {head!r}: a zip archive or a pickle")
    weights = (folder / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", weights[:8].ljust(8, b"\0"))
    try:
        header = json.loads(weights[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"model.safetensors has no JSON header: {e}")
    else:
        ranges = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
        ends = [0] + [end for _, end in ranges]
        if [start for start, _ in ranges] != ends[:-1] or 8 + length + ends[-1] != len(weights):
            problems.append("model.safetensors: the header's byte ranges do not tile the data")
    try:
        load_file(folder / "model.safetensors")
    except SafetensorError as e:
        problems.append(f"safetensors cannot read model.safetensors: {e}")
    try:
        json.loads((folder / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"config.json is not JSON: {e}")
    return problems


@pytest.mark.parametrize("kind", ["reve", "labram_mcm"])
def test_export_holds_no_pickle(kind: str, tmp_path: Path) -> None:
    """The export is a safetensors file and a JSON config; the same check catches a `torch.save`d file (a
    zip archive), a legacy `torch.save` (a protocol-2 pickle) and a plain pickle put in its place."""
    torch.manual_seed(0)
    if kind == "reve":
        encoder: torch.nn.Module = ReveEncoder(SIZES["reve_tiny"])
    else:
        encoder = MaskedCodeEncoder(McmConfig(**MCM_SIZES["labram_tiny"], codebook_size=512))
    export_encoder(encoder, str(tmp_path / "export"))
    assert _pickle_free_problems(tmp_path / "export") == []

    state = encoder.state_dict()
    writers = {
        "torch.save": lambda f: torch.save(state, f),
        "legacy torch.save": lambda f: torch.save(state, f, _use_new_zipfile_serialization=False),
        "pickle protocol 5": lambda f: pickle.dump({k: v.numpy() for k, v in state.items()}, f, protocol=5),
    }
    for name, write in writers.items():
        with open(tmp_path / "export" / "model.safetensors", "wb") as f:
            write(f)
        problems = _pickle_free_problems(tmp_path / "export")
        assert any("a zip archive or a pickle" in p for p in problems), (name, problems)
        assert any("safetensors cannot read" in p or "no JSON header" in p for p in problems), (
            name,
            problems,
        )
