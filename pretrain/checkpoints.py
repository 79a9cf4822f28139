"""Checkpoints in any fsspec folder (local or `s3://…`), each visible only once complete.

A checkpoint is written to a local temporary file and then renamed (local) or uploaded in one PUT
(object storage), so an interrupted save never leaves a file that looks complete: the newest `*.ckpt`
in `checkpoints/` is always loadable, which is all `--resume auto` needs.
"""

from __future__ import annotations

import re
from typing import Any

import fsspec
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

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


def run_config(checkpoint: str) -> DictConfig:
    """The resolved config a checkpoint was trained with (saved in it by SaveRunConfig)."""
    with fsspec.open(checkpoint, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    (text,) = (v["config"] for k, v in state["callbacks"].items() if k.startswith("SaveRunConfig"))
    return OmegaConf.create(text)


def latest_checkpoint(run_dir_or_file: str) -> str | None:
    """A checkpoint file as it is, or the newest complete checkpoint of a run directory (None if none)."""
    if run_dir_or_file.endswith(".ckpt"):
        return run_dir_or_file
    found = list_checkpoints(run_dir_or_file)
    return found[-1] if found else None
