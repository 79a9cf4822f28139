"""`eegfm pretrain`: a config in, a Lightning run out (checkpoints, metrics.csv, config.yaml in run.dir)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from omegaconf import DictConfig, OmegaConf

from eegfm.models.layers import Attention, FeedForward
from eegfm.pretrain.callbacks.codebook_health import CodebookHealth
from eegfm.pretrain.callbacks.rng_state import RngState
from eegfm.pretrain.callbacks.run_config import SaveRunConfig
from eegfm.pretrain.callbacks.sample_log import SampleLog
from eegfm.pretrain.callbacks.step_checkpoints import StepCheckpoints
from eegfm.pretrain.callbacks.stream_cursor import StreamCursor
from eegfm.pretrain.callbacks.throughput import Throughput
from eegfm.pretrain.checkpoints import AtomicCheckpointIO, latest_checkpoint
from eegfm.pretrain.datamodule import ShardDataModule
from eegfm.pretrain.mae import MaePretraining
from eegfm.pretrain.mcm import McmPretraining
from eegfm.pretrain.metrics import RunCsvLogger
from eegfm.pretrain.tokenizer import TokenizerPretraining

OBJECTIVES = {"mae": MaePretraining, "tokenizer": TokenizerPretraining, "mcm": McmPretraining}


def build_module(cfg: DictConfig, *, shape_only: bool = False) -> pl.LightningModule:
    """The config's objective; `shape_only` builds one for counting parameters (no weights needed)."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective {cfg.objective!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[cfg.objective].from_config(cfg, shape_only=shape_only)


def build_strategy(cfg: DictConfig) -> Strategy:
    name = cfg.trainer.strategy
    if name == "ddp":
        # Buffers are synced once at start, not at every forward: codebooks stay equal by their own
        # reductions, which CodebookHealth checks.
        return DDPStrategy(find_unused_parameters=False, forward_sync_buffers=False)
    if name == "fsdp":
        # Full state dicts: one checkpoint file, written atomically like DDP's, loadable on any world size.
        return FSDPStrategy(
            auto_wrap_policy={Attention, FeedForward},
            sharding_strategy=cfg.trainer.fsdp_sharding,
            state_dict_type="full",
        )
    if name == "deepspeed":
        if not torch.cuda.is_available():
            raise ValueError("trainer.strategy=deepspeed needs CUDA GPUs; use ddp (or fsdp) on CPU")
        return DeepSpeedStrategy(config=deepspeed_config(cfg))
    raise ValueError(f"trainer.strategy must be ddp, fsdp or deepspeed, not {name!r}")


def deepspeed_config(cfg: DictConfig) -> dict[str, Any]:
    """The DeepSpeed config file named by `trainer.deepspeed`, with the run's batch and clipping settings
    (DeepSpeed owns clipping and accumulation when it runs)."""
    config = OmegaConf.to_container(OmegaConf.load(cfg.trainer.deepspeed), resolve=True)
    config["gradient_accumulation_steps"] = int(cfg.trainer.accumulate)
    config["gradient_clipping"] = float(cfg.trainer.gradient_clip)
    config["train_micro_batch_size_per_gpu"] = 1  # one micro-batch of the stream; its size varies by shape
    return config


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def _step_of(checkpoint: str) -> int:
    found = re.search(r"step=(\d+)\.ckpt$", checkpoint)
    if found:
        return int(found[1])
    import fsspec

    with fsspec.open(checkpoint, "rb") as f:
        return int(torch.load(f, map_location="cpu", weights_only=True)["global_step"])


def resolve_resume(run_dir: str, resume: str | None) -> str | None:
    """`--resume auto`: the run's newest complete checkpoint, or None for a fresh start; a path: that
    checkpoint (or that run's newest). Without --resume, a run directory with checkpoints is refused."""
    if resume is None:
        found = latest_checkpoint(run_dir)
        if found is not None:
            raise ValueError(
                f"{run_dir} already has checkpoints ({found}): pass --resume auto to continue it"
            )
        return None
    found = latest_checkpoint(run_dir if resume == "auto" else resume)
    if found is None and resume != "auto":
        raise FileNotFoundError(f"no complete checkpoint at {resume}")
    return found


def run_pretraining(cfg: DictConfig, resume: str | None = None) -> pl.Trainer:
    """Train as configured; returns the finished trainer."""
    if int(cfg.trainer.max_steps) <= 0:
        raise ValueError("trainer.max_steps must be positive: the learning-rate schedule spans the whole run")
    run_dir = str(cfg.run.dir)
    checkpoint = resolve_resume(run_dir, resume)
    torch.manual_seed(int(cfg.trainer.seed))  # the same initial weights on every rank and every attempt
    module = build_module(cfg)
    tokens = None
    if isinstance(module, McmPretraining) and cfg.tokenizer.precomputed:
        from eegfm.pretrain.tokenize import tokenizer_id

        tokens = tokenizer_id(module.tokenizer)  # only the token shards of this tokenizer are read
    data = ShardDataModule(cfg.data, int(cfg.trainer.accumulate), module.batch_transform(), tokens)
    metrics = RunCsvLogger(run_dir, flush_every=int(cfg.logging.flush_every))
    loggers: list[Any] = [metrics]
    if cfg.logging.tensorboard:
        if "://" in str(cfg.logging.tensorboard):
            raise ValueError(
                f"logging.tensorboard={cfg.logging.tensorboard}: TensorBoard writes to a local folder only; "
                "give a local path, or false"
            )
        loggers.append(TensorBoardLogger(str(cfg.logging.tensorboard), name="", version=""))
    callbacks: list[pl.Callback] = [
        StreamCursor(),
        StepCheckpoints(run_dir, int(cfg.checkpoint.every_n_steps), int(cfg.checkpoint.keep)),
        Throughput(int(cfg.trainer.log_every)),
        SaveRunConfig(cfg, run_dir),
        RngState(),
    ]
    if isinstance(module, TokenizerPretraining):
        callbacks.append(CodebookHealth(int(cfg.trainer.log_every)))
    if cfg.logging.sample_keys:
        callbacks.append(SampleLog(str(cfg.logging.sample_keys)))
    strategy = build_strategy(cfg)
    deepspeed = isinstance(strategy, DeepSpeedStrategy)  # DeepSpeed owns accumulation, clipping and saving
    plugins: list[Any] = [] if deepspeed else [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))  # StepCheckpoints saves, then requeues
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=int(cfg.trainer.num_nodes),
        strategy=strategy,
        precision=resolve_precision(cfg.trainer.precision),
        max_steps=int(cfg.trainer.max_steps),
        accumulate_grad_batches=1 if isinstance(strategy, DeepSpeedStrategy) else int(cfg.trainer.accumulate),
        gradient_clip_val=None
        if isinstance(strategy, DeepSpeedStrategy)
        else float(cfg.trainer.gradient_clip),
        log_every_n_steps=int(cfg.trainer.log_every),
        logger=loggers,
        callbacks=callbacks,
        plugins=plugins,
        use_distributed_sampler=False,  # the stream slices itself by rank
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=bool(cfg.logging.progress_bar),
        enable_model_summary=False,
        enable_checkpointing=False,  # StepCheckpoints saves, after the step's metrics are flushed
        default_root_dir=run_dir,
    )
    if checkpoint is not None:
        metrics.resume_from(_step_of(checkpoint))
    with warnings.catch_warnings():
        # The stream is one endless Lightning epoch that resumes itself exactly; Lightning's warnings
        # about resuming mid-epoch and about an unsized loader do not apply to it.
        warnings.filterwarnings(
            "ignore", message=".*resuming from a checkpoint that ended before the epoch.*"
        )
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        trainer.fit(module, datamodule=data, ckpt_path=checkpoint)
    return trainer
