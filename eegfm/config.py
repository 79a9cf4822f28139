"""OmegaConf YAML under configs/, merged with `key=value` overrides from the command line."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_config(path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Load one YAML file and apply dotted `key=value` overrides (values parsed as YAML).

    A file may start from another: `extends: base.yaml` (relative to the file) is loaded first and the
    file's own keys are merged over it, so sizes and variants state only what they change.
    """
    cfg = OmegaConf.load(path)
    if "extends" in cfg:
        base = load_config(Path(path).parent / cfg.pop("extends"))
        cfg = OmegaConf.merge(base, cfg)
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"overrides must look like key=value, got {bad}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg
