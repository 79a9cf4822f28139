"""Encoders out of training, as `model.safetensors` + `config.json`: no pickle, loadable anywhere.

Two encoders: REVE's (from the masked autoencoder), whose tensor names are braindecode's REVE names so
the file loads into that class too; and the stage-2 masked-code encoder (LaBraM-style, channels by
electrode position), which loads back into `models.mcm.MaskedCodeEncoder`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import fsspec
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from eegfm.errors import DataError
from eegfm.models.mcm import MaskedCodeEncoder, McmConfig
from eegfm.models.reve import ReveConfig, ReveEncoder
from eegfm.models.tokenizer import TokenizerConfig
from eegfm.pretrain.checkpoints import load_state
from eegfm.storage import atomic_write, join_url

WEIGHTS, CONFIG = "model.safetensors", "config.json"


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


def _tensor_names(encoder: nn.Module) -> dict[str, str]:
    """Our state-dict names → the file's: REVE's 4D encoding sits one module higher in braindecode."""
    strip = "position." if isinstance(encoder, ReveEncoder) else ""
    return {name: name.removeprefix(strip) for name in encoder.state_dict()}


def export_encoder(encoder: ReveEncoder | MaskedCodeEncoder, out: str) -> None:
    """Write `out/model.safetensors` and `out/config.json` (local path or fsspec URL)."""
    kind = "reve" if isinstance(encoder, ReveEncoder) else "labram_mcm"
    names = _tensor_names(encoder)
    tensors = {names[k]: t.detach().cpu().contiguous() for k, t in encoder.state_dict().items()}
    with atomic_write(join_url(out, WEIGHTS)) as path, open(path, "wb") as f:
        f.write(save_safetensors(tensors, metadata={"format": "pt", "model": kind}))
    config: dict[str, Any] = {"model": kind, "eegfm": asdict(encoder.config)}
    if kind == "reve":
        config["braindecode_reve"] = braindecode_kwargs(encoder.config)
    with atomic_write(join_url(out, CONFIG)) as path, open(path, "w") as f:
        json.dump(config, f, indent=1)


def encoder_from_checkpoint(checkpoint: str) -> ReveEncoder | MaskedCodeEncoder:
    """The encoder of a pretraining checkpoint: REVE's (MAE) or the masked-code model's (stage 2)."""
    state = load_state(checkpoint)
    hparams = state["hyper_parameters"]
    if "mae" in hparams:
        encoder: nn.Module = ReveEncoder(ReveConfig(**hparams["encoder"]))
    elif "mcm" in hparams:
        tokenizer = TokenizerConfig(**hparams["tokenizer"])
        encoder = MaskedCodeEncoder(McmConfig.for_tokenizer(tokenizer, **hparams["mcm"]))
    else:
        raise DataError(f"{checkpoint}: no encoder to export (a tokenizer checkpoint is used as it is)")
    prefix = "model.encoder."
    encoder.load_state_dict(
        {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    )
    return encoder.eval()


def load_encoder(out: str) -> ReveEncoder | MaskedCodeEncoder:
    """Rebuild an exported encoder from its two files."""
    with fsspec.open(join_url(out, CONFIG), "r") as f:
        config = json.load(f)
    with fsspec.open(join_url(out, WEIGHTS), "rb") as f:
        tensors = load_safetensors(f.read())
    if config["model"] == "reve":
        encoder: nn.Module = ReveEncoder(ReveConfig(**config["eegfm"]))
    else:
        encoder = MaskedCodeEncoder(McmConfig(**config["eegfm"]))
    names = _tensor_names(encoder)
    encoder.load_state_dict({ours: tensors[theirs] for ours, theirs in names.items()})
    return encoder
