"""The run's resolved config: `config.yaml` in the run directory (written once, by global rank 0), and a
copy in every checkpoint, so a checkpoint alone says how it was trained. Values read from the environment
(`${oc.env:…}`) are kept as such, so no secret is written."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from eegfm.config import to_yaml
from eegfm.storage import atomic_write, join_url

CONFIG_NAME = "config.yaml"


class SaveRunConfig(pl.Callback):
    def __init__(self, cfg: Any, run_dir: str):
        self.cfg, self.run_dir = cfg, run_dir

    def state_dict(self) -> dict[str, Any]:
        return {"config": to_yaml(self.cfg)}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            with atomic_write(join_url(self.run_dir, CONFIG_NAME)) as path, open(path, "w") as f:
                f.write(self.state_dict()["config"])
