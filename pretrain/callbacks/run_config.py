"""The run's resolved config: `config.yaml` in the run directory (written once, by global rank 0), and a
copy in every checkpoint, so a checkpoint alone says how it was trained."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from eegfm.storage import atomic_write, join_url


class SaveRunConfig(pl.Callback):
    def __init__(self, cfg: DictConfig, run_dir: str):
        self.cfg, self.run_dir = cfg, run_dir

    def state_dict(self) -> dict[str, Any]:
        return {"config": OmegaConf.to_yaml(self.cfg, resolve=True)}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            with atomic_write(join_url(self.run_dir, "config.yaml")) as path, open(path, "w") as f:
                f.write(self.state_dict()["config"])
