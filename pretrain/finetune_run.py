"""`eegfm finetune`: seeds × phases of fine-tuning, each a Lightning fit, summarised in `finetune.json`.

Layout of a run directory (local or s3://):

    config.yaml                 the resolved config (`--resume auto` starts from it)
    finetune.json               per-seed test (and val) metrics at the best val epoch, mean ± std over seeds
    seed=<s>/<phase>/           phase lp or ft: metrics.csv (one row per epoch), checkpoints/step=N.ckpt

A phase whose newest checkpoint says it finished is not run again; one that did not is resumed from that
checkpoint at the next epoch. `lp+ft` runs lp, then ft starting from lp's best-epoch head.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import OmegaConf

from eegfm.config import CONFIG_DIR, load_config, to_yaml, typed
from eegfm.errors import ConfigError, DataError
from eegfm.models.heads import ClassificationHead
from eegfm.models.mcm import MaskedCodeEncoder
from eegfm.models.reve import ReveEncoder
from eegfm.pretrain.callbacks.run_config import CONFIG_NAME
from eegfm.pretrain.checkpoints import AtomicCheckpointIO, latest_checkpoint, load_state, step_of
from eegfm.pretrain.finetune import EpochCheckpoints, Finetuning, Selection, TaskDataModule, encoder_depth
from eegfm.pretrain.finetune_config import FinetuneConfig, PhaseConfig
from eegfm.pretrain.metrics import RunCsvLogger
from eegfm.pretrain.probe import SPLITS, load_probe_encoder
from eegfm.pretrain.table import ShardTable
from eegfm.pretrain.taskshards import TaskInfo, load_split, read_task_info
from eegfm.storage import atomic_write, exists, join_url, read_json, write_json

DEFAULT_CONFIG = CONFIG_DIR / "finetune" / "base.yaml"
REPORT_NAME = "finetune.json"


# ---- the config ----------------------------------------------------------------------------------------


def _flag_layer(flags: dict[str, Any]) -> dict[str, Any]:
    """The command's flags as a config layer (values kept as given: a path with `=` or `:` stays a path)."""
    layer: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = layer
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return layer


def resolve_finetune_config(
    config: str | None, flags: dict[str, Any], overrides: list[str], resume: str | None
) -> FinetuneConfig:
    """The run's config: `--config` (default configs/finetune/base.yaml), or with `--resume` the run's saved
    config.yaml when there is one; then the flags (`--checkpoint` …), then the `key=value` overrides."""
    source = str(config or DEFAULT_CONFIG)
    raw = load_config(source)
    if resume is not None:
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), None)
        if run_dir is None:
            run_dir = typed(FinetuneConfig, raw, overrides, source=source).run.dir
        saved = join_url(run_dir, CONFIG_NAME)
        if exists(saved):
            rank_zero_info(f"resuming with {saved} as the base config, flags and overrides on top")
            source = saved
            raw = OmegaConf.create(_read_text(saved))
    raw = OmegaConf.merge(raw, OmegaConf.create(_flag_layer(flags)))
    return typed(FinetuneConfig, raw, overrides, source=source)


def _read_text(url: str) -> str:
    import fsspec

    with fsspec.open(url, "r") as f:
        return f.read()


# ---- one phase, one seed ---------------------------------------------------------------------------------


def resolve_strategy(cfg: FinetuneConfig) -> Any:
    if cfg.trainer.strategy == "auto":
        return "auto"
    from eegfm.pretrain.train import build_strategy

    return build_strategy(cfg)  # type: ignore[arg-type]  # reads trainer.strategy/fsdp_sharding/deepspeed


def run_phase(
    cfg: FinetuneConfig,
    name: str,
    phase: PhaseConfig,
    encoder: ReveEncoder | MaskedCodeEncoder,
    head: ClassificationHead,
    data: TaskDataModule,
    task: TaskInfo,
    folder: str,
) -> Selection | None:
    """Train one phase in `folder` (or resume it, or read it when it finished); returns its selection (best
    epoch, its val and test metrics and head), or None when a signal stopped it."""
    from eegfm.pretrain.train import resolve_precision

    checkpoint = latest_checkpoint(folder)
    if checkpoint is not None:
        saved = load_state(checkpoint).get("finetune")
        if saved is None:
            raise DataError(f"{checkpoint}: not a fine-tuning checkpoint; give the run another run.dir")
        if saved["finished"]:
            return Selection(**saved)
    metrics = RunCsvLogger(folder, flush_every=1)
    if checkpoint is not None:
        metrics.resume_from(step_of(checkpoint) + 1)  # the rows of the epochs that checkpoint holds
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))  # EpochCheckpoints requeues on SIGUSR1
    callback = EpochCheckpoints(folder, cfg.checkpoint.keep, metrics)
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=resolve_strategy(cfg),
        precision=resolve_precision(cfg.trainer.precision),
        max_epochs=phase.epochs,
        gradient_clip_val=cfg.trainer.gradient_clip or None,
        logger=False,
        callbacks=[callback],
        plugins=plugins,
        use_distributed_sampler=False,  # each rank takes its share of the planned batches
        reload_dataloaders_every_n_epochs=1,  # each epoch's order is planned from (seed, epoch)
        num_sanity_val_steps=0,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,  # EpochCheckpoints saves after each epoch's validation
        default_root_dir=folder,
    )
    module = Finetuning(
        encoder,
        head,
        phase=phase,
        frozen=name == "lp",
        layers=cfg.head.layers,
        n_classes=task.n_classes,
        steps_per_epoch=data.steps_per_epoch(trainer.world_size),
        metrics=metrics,
    )
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint)
    metrics.save()
    return None if module.interrupted else module.selection


def head_tokens(
    cfg: FinetuneConfig, encoder: ReveEncoder | MaskedCodeEncoder, tables: dict[str, ShardTable]
) -> int | None:
    """Tokens per window a flatten head sees (None for attention); every window must give as many."""
    if cfg.head.kind != "flatten":
        return None
    shapes = {
        (int(c), int(t))
        for table in tables.values()
        for c, t in np.unique(np.stack([table.channels, table.times], axis=1), axis=0)
    }
    if len(shapes) != 1:
        raise ConfigError(
            f"head.kind=flatten needs one (channels, samples) shape across the task, found {sorted(shapes)}: "
            "use head.kind=attention"
        )
    channels, times = shapes.pop()
    layers = encoder_depth(encoder) if cfg.head.layers == "all" else 1
    return layers * channels * encoder.config.n_patches(times)


def run_seed(
    cfg: FinetuneConfig,
    seed: int,
    pretrained: ReveEncoder | MaskedCodeEncoder,
    task: TaskInfo,
    tables: dict[str, ShardTable],
) -> dict[str, Any] | None:
    """Every phase of one seed; its result (the last phase's best epoch and metrics), or None if stopped."""
    torch.manual_seed(seed)
    encoder = copy.deepcopy(pretrained)
    generator = torch.Generator().manual_seed(seed)
    head = ClassificationHead(
        cfg.head.kind, encoder.config.embed_dim, task.n_classes, head_tokens(cfg, encoder, tables), generator
    )
    data = TaskDataModule(
        cfg.task.shards,
        task,
        tables,
        batch_windows=cfg.task.batch_windows,
        clip=cfg.task.clip,
        seed=seed,
        num_workers=cfg.task.num_workers,
    )
    phases: dict[str, dict[str, Any]] = {}
    selection = None
    for name in cfg.phases:
        if selection is not None:  # lp+ft: ft starts from lp's best-epoch head
            head.load_state_dict(selection.head)
        folder = join_url(cfg.run.dir, f"seed={seed}", name)
        selection = run_phase(cfg, name, getattr(cfg, name), encoder, head, data, task, folder)
        if selection is None:
            return None
        phases[name] = {
            "best_epoch": selection.best_epoch,
            "epochs": selection.epochs_done,
            "val": selection.val,
            "test": selection.test,
        }
    return {**phases[cfg.phases[-1]], "phases": phases}


# ---- the command -----------------------------------------------------------------------------------------


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {metric: {mean, std}}} over the seeds (numpy's mean and std, ddof=0)."""
    first = next(iter(per_seed.values()))
    return {
        split: {
            metric: {
                "mean": float(np.mean([r[split][metric] for r in per_seed.values()])),
                "std": float(np.std([r[split][metric] for r in per_seed.values()])),
            }
            for metric in first[split]
        }
        for split in ("val", "test")
    }


def launch_rank() -> int:
    """This process's global rank as its launcher set it, before any process group exists: torchrun's
    RANK, SLURM's SLURM_PROCID, or the LOCAL_RANK Lightning gives the processes it starts for devices > 1
    on one machine (the first process has none: 0)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _refuse_reuse(cfg: FinetuneConfig, resume: str | None) -> None:
    if resume not in (None, "auto"):
        raise ConfigError(f"--resume {resume}: fine-tuning resumes a whole run directory: --resume auto")
    if resume is None and exists(join_url(cfg.run.dir, CONFIG_NAME)):
        raise ConfigError(
            f"{cfg.run.dir} already holds a run ({CONFIG_NAME}): pass --resume auto to continue it"
        )


def run_finetune(cfg: FinetuneConfig, resume: str | None = None) -> dict[str, Any] | None:
    """Fine-tune every seed as configured; returns the report written to `finetune.json`, or None when a
    signal stopped the run (resume it with --resume auto)."""
    if not cfg.encoder.checkpoint:
        raise ConfigError("encoder.checkpoint: not set; pass --checkpoint (a run directory, .ckpt or export)")
    if not cfg.task.shards:
        raise ConfigError("task.shards: not set; pass --task-shards (labelled task shards)")
    is_zero = launch_rank() == 0
    if is_zero:  # the other ranks start after rank 0 has written config.yaml: only rank 0 may judge it
        _refuse_reuse(cfg, resume)
    task = read_task_info(cfg.task.shards)
    tables = {split: load_split(cfg.task.shards, split) for split in SPLITS}
    for split, table in tables.items():
        if len(table) == 0:
            raise DataError(
                f"{task.manifest}: the {split} split holds no window; fine-tuning needs train, val, test"
            )
    encoder, checkpoint, step, _ = load_probe_encoder(cfg.encoder.checkpoint, verb="eegfm finetune")
    if is_zero:
        with atomic_write(join_url(cfg.run.dir, CONFIG_NAME)) as path, open(path, "w") as f:
            f.write(to_yaml(cfg))
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in cfg.seeds:
        result = run_seed(cfg, seed, encoder, task, tables)
        if result is None:
            rank_zero_info(f"stopped by a signal during seed {seed}; continue with --resume auto")
            return None
        per_seed[seed] = result
    report = {
        "task": task.name,
        "classes": list(task.classes),
        "mode": cfg.mode,
        "checkpoint": checkpoint,
        "step": step,
        "head": {"kind": cfg.head.kind, "layers": cfg.head.layers},
        "seeds": list(cfg.seeds),
        "per_seed": {str(seed): result for seed, result in per_seed.items()},
        **summarize(per_seed),
        "std": "numpy.std over the seeds (ddof=0)",
        "windows": {split: len(table) for split, table in tables.items()},
        "task_shards": cfg.task.shards,
    }
    if is_zero:
        write_json(join_url(cfg.run.dir, REPORT_NAME), report)
    return report


def read_report(run_dir: str) -> dict[str, Any]:
    return read_json(join_url(run_dir, REPORT_NAME))


def format_summary(report: dict[str, Any]) -> str:
    """One line: the task, the mode and the test metrics as mean ± std over the seeds."""
    metrics = ", ".join(
        f"{k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in report["test"].items() if k != "loss"
    )
    return f"{report['task']} {report['mode']} ({len(report['seeds'])} seeds): test {metrics}"
