"""Encoders out of training, as `model.safetensors` + `config.json`: no pickle, loadable anywhere.

REVE's (from the masked autoencoder), CBraMod's and LUNA's tensors carry braindecode's names, so the file
loads into braindecode's `REVE`, `CBraMod` and `LUNA` too (`config.json` holds the keyword arguments that
build each: `braindecode_<model>`), except a LUNA trained with the authors' hidden LayerNorms
(`hidden_norm`), which braindecode's class lacks: that export says so and keeps the authors' names for
them. The stage-2 masked-code encoder, FEMBA's and LuMamba's keep their own (the authors') names. Every
export loads back with `load_encoder`.
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
from eegfm.models import cbramod, femba, lumamba, luna
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


def braindecode_cbramod_kwargs(config: cbramod.CBraModConfig) -> dict[str, Any] | None:
    """Keyword arguments of braindecode's `CBraMod` for this shape, or None where it cannot build it (its
    conditional position conv is fixed at 19 × 7)."""
    if tuple(config.position_kernel) != (19, 7):
        return None
    width, groups = config.conv_channels, (config.conv_groups, config.conv_channels)
    first = (width, config.first_kernel, config.first_stride, config.first_kernel // 2, groups)
    return {
        "patch_size": config.patch_size,
        "dim_feedforward": config.ffn_dim,
        "n_layer": config.depth,
        "nhead": config.heads,
        "emb_dim": config.embed_dim,
        "drop_prob": config.dropout,
        "channels_kernel_stride_padding_norm": [first, (width, 3, 1, 1, groups), (width, 3, 1, 1, groups)],
        "return_encoder_output": True,
    }


def braindecode_luna_kwargs(config: luna.LunaConfig) -> dict[str, Any]:
    """Keyword arguments of braindecode's `LUNA` (the reconstruction model, n_outputs=0) for this shape."""
    return {
        "patch_size": config.patch_size,
        "num_queries": config.queries,
        "embed_dim": config.embed_dim,
        "depth": config.depth,
        "num_heads": config.heads,
        "mlp_ratio": config.mlp_ratio,
    }


KINDS: list[tuple[type[nn.Module], str]] = [  # subclasses first: LuMamba's encoder is a LUNA encoder
    (ReveEncoder, "reve"),
    (MaskedCodeEncoder, "labram_mcm"),
    (cbramod.CBraModEncoder, "cbramod"),
    (lumamba.LuMambaEncoder, "lumamba"),
    (luna.LunaEncoder, "luna"),
    (femba.FembaEncoder, "femba"),
]


def encoder_kind(encoder: nn.Module) -> str:
    return next(kind for cls, kind in KINDS if isinstance(encoder, cls))


def _tensor_names(encoder: nn.Module) -> dict[str, str]:
    """Our state-dict names → the file's: braindecode's for REVE (whose 4D encoding sits one module
    higher there), CBraMod and LUNA; our own for the others."""
    kind = encoder_kind(encoder)
    if kind == "cbramod":
        return cbramod.braindecode_names(encoder)
    if kind == "luna":
        return luna.braindecode_names(encoder)
    strip = "position." if kind == "reve" else ""
    return {name: name.removeprefix(strip) for name in encoder.state_dict()}


def _model_config(encoder: nn.Module) -> Any:
    return encoder.lumamba if isinstance(encoder, lumamba.LuMambaEncoder) else encoder.config


def export_encoder(encoder: nn.Module, out: str) -> list[str]:
    """Write `out/model.safetensors` and `out/config.json` (local path or fsspec URL); returns notes for
    the user (one line each), e.g. why the export does not load into braindecode."""
    kind = encoder_kind(encoder)
    names = _tensor_names(encoder)
    tensors = {names[k]: t.detach().cpu().contiguous() for k, t in encoder.state_dict().items()}
    with atomic_write(join_url(out, WEIGHTS)) as path, open(path, "wb") as f:
        f.write(save_safetensors(tensors, metadata={"format": "pt", "model": kind}))
    config: dict[str, Any] = {"model": kind, "eegfm": asdict(_model_config(encoder))}
    notes = []
    if kind == "reve":
        config["braindecode_reve"] = braindecode_kwargs(encoder.config)
    elif kind == "cbramod":
        kwargs = braindecode_cbramod_kwargs(encoder.config)
        if kwargs is None:
            notes.append(
                f"{out}: not loadable into braindecode's CBraMod (its position conv is fixed at 19 × 7, this "
                f"encoder's is {tuple(encoder.config.position_kernel)}); load it with eegfm's load_encoder"
            )
        else:
            config["braindecode_cbramod"] = kwargs
    elif kind == "luna":
        if encoder.config.hidden_norm:
            notes.append(
                f"{out}: not loadable into braindecode's LUNA: this run trained the authors' hidden "
                "LayerNorms (hidden_norm=true), which braindecode 1.8.1 lacks; load it with eegfm's "
                "load_encoder, or pretrain with model.overrides.hidden_norm=false for a braindecode export"
            )
        else:
            config["braindecode_luna"] = braindecode_luna_kwargs(encoder.config)
    with atomic_write(join_url(out, CONFIG)) as path, open(path, "w") as f:
        json.dump(config, f, indent=1)
    return notes


def _build(kind: str, config: dict[str, Any]) -> nn.Module:
    """An encoder of `kind` from its config's fields (as `asdict` wrote them)."""
    if kind == "reve":
        return ReveEncoder(ReveConfig(**config))
    if kind == "labram_mcm":
        return MaskedCodeEncoder(McmConfig(**config))
    if kind == "cbramod":
        return cbramod.CBraModEncoder(
            cbramod.CBraModConfig(**{**config, "position_kernel": tuple(config["position_kernel"])})
        )
    if kind == "luna":
        return luna.LunaEncoder(luna.LunaConfig(**config))
    if kind == "femba":
        return femba.FembaEncoder(femba.FembaConfig(**config))
    if kind == "lumamba":
        return lumamba.LuMambaEncoder(lumamba.LuMambaConfig(**config))
    raise DataError(f"unknown encoder kind {kind!r}")


def encoder_from_checkpoint(checkpoint: str) -> nn.Module:
    """The encoder of a pretraining checkpoint: REVE's (MAE), the masked-code model's (stage 2), or the
    CBraMod, LUNA, FEMBA or LuMamba encoder of those objectives."""
    state = load_state(checkpoint)
    hparams = state["hyper_parameters"]
    seeds = [kind for kind in ("cbramod", "luna", "femba", "lumamba") if kind in hparams]
    if "mae" in hparams:
        encoder: nn.Module = ReveEncoder(ReveConfig(**hparams["encoder"]))
    elif "mcm" in hparams:
        tokenizer = TokenizerConfig(**hparams["tokenizer"])
        encoder = MaskedCodeEncoder(McmConfig.for_tokenizer(tokenizer, **hparams["mcm"]))
    elif seeds:
        encoder = _build(seeds[0], hparams[seeds[0]])
    else:
        raise DataError(f"{checkpoint}: no encoder to export (a tokenizer checkpoint is used as it is)")
    prefix = "model.encoder."
    encoder.load_state_dict(
        {k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    )
    return encoder.eval()


def load_encoder(out: str) -> nn.Module:
    """Rebuild an exported encoder from its two files."""
    with fsspec.open(join_url(out, CONFIG), "r") as f:
        config = json.load(f)
    with fsspec.open(join_url(out, WEIGHTS), "rb") as f:
        tensors = load_safetensors(f.read())
    encoder = _build(config["model"], config["eegfm"])
    names = _tensor_names(encoder)
    encoder.load_state_dict({ours: tensors[theirs] for ours, theirs in names.items()})
    return encoder
