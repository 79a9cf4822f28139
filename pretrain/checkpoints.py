"""Checkpoints in any fsspec folder (local or `s3://…`), each visible only once complete; the one place
that finds, reads and names them.

A checkpoint is written to a local temporary file and then renamed (local) or uploaded in one PUT
(object storage), so an interrupted save never leaves a file that looks complete: the newest `*.ckpt`
in `checkpoints/` is always loadable, which is all `--resume auto` needs. A killed local save leaves a
`step=N.ckpt.tmp-*` file, which is never read and is removed when the run starts again.
"""

from __future__ import annotations

import re
from typing import Any

import fsspec
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import OmegaConf

from eegfm import storage
from eegfm.errors import ConfigError, DataError
from eegfm.storage import atomic_write, join_url

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"step=(\d+)\.ckpt$")


def checkpoint_name(step: int) -> str:
    return f"step={step:08d}.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str, storage_options: Any = None) -> None:
        with atomic_write(str(path)) as local:
            torch.save(checkpoint, local)


def list_checkpoints(run_dir: str) -> list[str]:
    """The run's complete checkpoints, oldest first, as URLs (or local paths)."""
    folder = join_url(run_dir, CHECKPOINTS_DIR)
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.exists(path):
        return []
    steps = {}
    for entry in fs.ls(path, detail=True, refresh=True):
        name = entry["name"]
        found = _NAME.search(name.rsplit("/", 1)[-1])
        # DeepSpeed saves a folder and writes its `latest` file last: without it the save is incomplete.
        if found and (entry["type"] != "directory" or fs.exists(join_url(name, "latest"))):
            steps[int(found[1])] = fs.unstrip_protocol(name) if "://" in folder else name
    return [steps[step] for step in sorted(steps)]


def remove_stale_temporaries(run_dir: str) -> list[str]:
    """Remove the `step=N.ckpt.tmp-*` files that killed saves left in the run's checkpoint folder (none on
    object storage, where an upload appears whole or not at all). Called as a run starts, before it
    saves: only files no live writer holds are removed (`eegfm.storage.remove_stale_temporaries`)."""
    return storage.remove_stale_temporaries(join_url(run_dir, CHECKPOINTS_DIR), "step=")


def load_state(checkpoint: str) -> dict[str, Any]:
    """A checkpoint's whole state, tensors on the CPU; plain data only (`weights_only`: no pickle code)."""
    try:
        with fsspec.open(checkpoint, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{checkpoint}: no such checkpoint") from None


def step_of(checkpoint: str) -> int:
    """The optimizer step a checkpoint was taken at: from its name, else from its contents."""
    found = _NAME.search(checkpoint)
    return int(found[1]) if found else int(load_state(checkpoint)["global_step"])


def run_config(checkpoint: str) -> Any:
    """The typed config a checkpoint was trained with (saved in it by SaveRunConfig)."""
    from eegfm.pretrain.config import pretrain_config

    state = load_state(checkpoint)
    saved = [v["config"] for k, v in state.get("callbacks", {}).items() if k.startswith("SaveRunConfig")]
    if len(saved) != 1:
        raise DataError(f"{checkpoint}: holds no run config (not an eegfm pretraining checkpoint?)")
    return pretrain_config(OmegaConf.create(saved[0]), source=f"{checkpoint} (its saved config)")


def latest_checkpoint(run_dir_or_file: str) -> str | None:
    """A checkpoint file as it is, or the newest complete checkpoint of a run directory (None if none)."""
    if run_dir_or_file.endswith(".ckpt"):
        return run_dir_or_file
    found = list_checkpoints(run_dir_or_file)
    return found[-1] if found else None


def resolve_resume(run_dir: str, resume: str | None) -> str | None:
    """`--resume auto`: the run's newest complete checkpoint, or None for a fresh start; a path: that
    checkpoint (or that run's newest). Without --resume, a run directory with checkpoints is refused."""
    if resume is None:
        found = latest_checkpoint(run_dir)
        if found is not None:
            raise ConfigError(
                f"{run_dir} already has checkpoints ({found}): pass --resume auto to continue it"
            )
        return None
    found = latest_checkpoint(run_dir if resume == "auto" else resume)
    if found is None and resume != "auto":
        raise DataError(f"--resume {resume}: no complete checkpoint there")
    return found
