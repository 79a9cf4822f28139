"""Encoders out of training, as `model.safetensors` + `config.json`: no pickle, loadable anywhere.

The REVE encoder's tensor names are braindecode's REVE names, so the file loads into that class too.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from eegfm.models.reve import ReveConfig, ReveEncoder
from eegfm.storage import atomic_write, join_url

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def braindecode_state_dict(encoder: ReveEncoder) -> dict[str, torch.Tensor]:
    """The encoder's tensors under braindecode REVE's names (our 4D encoding sits one module deeper)."""
    return {
        name.removeprefix("position."): t.detach().cpu().contiguous()
        for name, t in encoder.state_dict().items()
    }


def braindecode_kwargs(config: ReveConfig) -> dict[str, float | int | bool]:
    """Keyword arguments that build braindecode's REVE with this encoder's shape."""
    return {
        "embed_dim": config.embed_dim,
        "depth": config.depth,
        "heads": config.heads,
        "head_dim": config.head_dim,
        "mlp_dim_ratio": config.mlp_ratio,
        "use_geglu": True,
        "freqs": config.freqs,
        "patch_size": config.patch_size,
        "patch_overlap": config.patch_size - config.patch_stride,
    }


def export_encoder(encoder: ReveEncoder, out: str) -> None:
    """Write `out/model.safetensors` and `out/config.json` (local path or fsspec URL)."""
    with atomic_write(join_url(out, WEIGHTS)) as path, open(path, "wb") as f:
        f.write(save_safetensors(braindecode_state_dict(encoder), metadata={"format": "pt", "model": "reve"}))
    config = {
        "model": "reve",
        "eegfm": asdict(encoder.config),
        "braindecode_reve": braindecode_kwargs(encoder.config),
    }
    with atomic_write(join_url(out, CONFIG)) as path, open(path, "w") as f:
        json.dump(config, f, indent=1)


def encoder_from_checkpoint(checkpoint: str) -> ReveEncoder:
    """The REVE encoder of a pretraining checkpoint (any objective whose model has `.encoder`)."""
    with fsspec.open(checkpoint, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    encoder = ReveEncoder(ReveConfig(**state["hyper_parameters"]["encoder"]))
    prefix = "model.encoder."
    weights = {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(weights)
    return encoder.eval()


def load_encoder(out: str) -> ReveEncoder:
    """Rebuild an exported encoder from its two files."""
    with fsspec.open(join_url(out, CONFIG), "r") as f:
        config = ReveConfig(**json.load(f)["eegfm"])
    with fsspec.open(join_url(out, WEIGHTS), "rb") as f:
        tensors = load_safetensors(f.read())
    encoder = ReveEncoder(config)
    ours = {name.removeprefix("position."): name for name in encoder.state_dict()}
    encoder.load_state_dict({ours[name]: tensor for name, tensor in tensors.items()})
    return encoder
