"""`eegfm pretrain`: a typed config in, a Lightning run out (checkpoints, metrics.csv, config.yaml).

Lightning runs the loop; this is its order, per micro-batch of the stream (callbacks in brackets):

1. the loader worker reads the micro-batch's byte ranges, checks each sample's CRC-32, decodes and
   normalises it, and draws its masks from the micro-batch's own generator;
2. a step begins (first micro-batch of a step): every `checkpoint.every_n_steps` steps the loggers are
   flushed and a checkpoint of the finished steps is saved [StepCheckpoints];
3. forward and loss [objective]; the loss's finiteness is noted [NonFiniteGuard]; backward;
4. after the step's last micro-batch: gradients checked (non-finite: stop, or skip the update)
   [NonFiniteGuard]; clip; optimizer and learning-rate steps;
5. the stream's cursor moves past the finished step, after checking Lightning stepped where the plan
   says [StreamCursor]; sample keys, throughput and codebook health are logged [SampleLog, Throughput,
   CodebookHealth]; every `eval.every_n_steps` steps the objective is evaluated on the fixed val
   windows (eval mode, no gradients, its own reads and generators: the cursor and the random states
   stay as they were) and `val_*` is logged in the finished step's row [Evaluation];
   every `eval.every_n_steps` steps the frozen encoder is probed on `eval.tasks` too [InLoopProbe];
6. a stop signal (SIGUSR1/SIGTERM), OR-reduced over the ranks, ends the run here, on a step boundary
   [StepCheckpoints]; at the end a final checkpoint is saved (never with non-finite weights).
"""

from __future__ import annotations

import warnings
from typing import Any

import fsspec
import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import OmegaConf

from eegfm.config import load_config
from eegfm.errors import ConfigError
from eegfm.models.cbramod import CrissCrossLayer
from eegfm.models.layers import Attention, FeedForward
from eegfm.models.luna import RotaryBlock
from eegfm.models.mamba import BiMamba
from eegfm.pretrain.callbacks.codebook_health import CodebookHealth
from eegfm.pretrain.callbacks.nonfinite_guard import NonFiniteGuard
from eegfm.pretrain.callbacks.rng_state import RngState
from eegfm.pretrain.callbacks.run_config import CONFIG_NAME, SaveRunConfig
from eegfm.pretrain.callbacks.sample_log import SampleLog
from eegfm.pretrain.callbacks.step_checkpoints import StepCheckpoints
from eegfm.pretrain.callbacks.stream_cursor import StreamCursor
from eegfm.pretrain.callbacks.throughput import Throughput
from eegfm.pretrain.cbramod import CbramodPretraining
from eegfm.pretrain.checkpoints import AtomicCheckpointIO, resolve_resume, step_of
from eegfm.pretrain.config import PretrainConfig, load_pretrain_config, pretrain_config
from eegfm.pretrain.datamodule import ShardDataModule
from eegfm.pretrain.femba import FembaPretraining
from eegfm.pretrain.inloop_probe import probe_callback
from eegfm.pretrain.lumamba import LumambaPretraining
from eegfm.pretrain.luna import LunaPretraining
from eegfm.pretrain.mae import MaePretraining
from eegfm.pretrain.mcm import McmPretraining
from eegfm.pretrain.metrics import RunCsvLogger
from eegfm.pretrain.tokenizer import TokenizerPretraining
from eegfm.pretrain.validation import evaluation_callback
from eegfm.storage import exists, join_url

OBJECTIVES = {
    "mae": MaePretraining,
    "tokenizer": TokenizerPretraining,
    "mcm": McmPretraining,
    "cbramod": CbramodPretraining,
    "luna": LunaPretraining,
    "lumamba": LumambaPretraining,
    "femba": FembaPretraining,
}


def build_module(cfg: PretrainConfig, *, shape_only: bool = False) -> pl.LightningModule:
    """The config's objective; `shape_only` builds one for counting parameters (no weights needed)."""
    return OBJECTIVES[cfg.objective].from_config(cfg, shape_only=shape_only)


class FsdpStrategy(FSDPStrategy):
    """Lightning's FSDP strategy, which also runs on the CPU. Lightning refuses FSDP with `accelerator=cpu`
    (by an exact-type check on the strategy, and by passing no device to FSDP, which then looks for an
    accelerator), and gathers full state dicts with `offload_to_cpu`, which on CPU tensors frees the
    gathered parameters under the copies (a segfault). torch's FSDP itself trains on the CPU over gloo when
    told its device, which is how the tests train it (two processes): the same wrapping, optimizer groups
    and full-state checkpoints as on GPUs. On GPUs nothing differs from Lightning's."""

    def _full_state_on_cpu(self) -> Any:
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=False, rank0_only=True),
            FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True),
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self.root_device.type != "cpu":
            return super().lightning_module_state_dict()
        with self._full_state_on_cpu():
            return self.model.state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.root_device.type != "cpu":
            return super().optimizer_state(optimizer)
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer's own
        with self._full_state_on_cpu():
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # keyed by parameter index, as Lightning stores it
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        )


# FSDP's units: each transformer or Mamba block of every objective's model is sharded (and gathered) on
# its own, so a rank holds one block's full parameters at a time, not the whole model's.
FSDP_BLOCKS: set[type[torch.nn.Module]] = {
    Attention,  # REVE, LaBraM
    FeedForward,
    CrissCrossLayer,  # CBraMod
    RotaryBlock,  # LUNA
    torch.nn.TransformerEncoderLayer,  # LUNA's and LuMamba's channel unification
    BiMamba,  # FEMBA, LuMamba
}


def build_strategy(cfg: PretrainConfig) -> Strategy:
    name = cfg.trainer.strategy
    if name == "ddp":
        # Buffers are synced once at start, not at every forward: codebooks stay equal by their own
        # reductions, which CodebookHealth checks.
        return DDPStrategy(find_unused_parameters=False, forward_sync_buffers=False)
    if name == "fsdp":
        # Full state dicts: one checkpoint file, written atomically like DDP's, loadable on any world size.
        # Original parameters stay visible (use_orig_params), so the optimizer's weight-decay groups are
        # chosen by name even though FSDP flattens them.
        return FsdpStrategy(
            auto_wrap_policy=FSDP_BLOCKS,
            sharding_strategy=cfg.trainer.fsdp_sharding,
            state_dict_type="full",
            use_orig_params=True,
        )
    if not torch.cuda.is_available():
        raise ConfigError("trainer.strategy=deepspeed needs CUDA GPUs; use ddp (or fsdp) on CPU")
    return deepspeed_strategy(cfg)


def deepspeed_strategy(cfg: PretrainConfig) -> DeepSpeedStrategy:
    """DeepSpeed from the config file `trainer.deepspeed`. Lightning fills in accumulation and clipping
    from the Trainer (it refuses a config that sets `gradient_accumulation_steps` itself)."""
    return DeepSpeedStrategy(config=deepspeed_config(cfg))


def deepspeed_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The DeepSpeed config file named by `trainer.deepspeed`, as a dict, with one micro-batch of the
    stream per "batch" (its size varies by shape)."""
    config = OmegaConf.to_container(load_config(cfg.trainer.deepspeed), resolve=True)
    owned = {"gradient_accumulation_steps", "gradient_clipping", "train_batch_size"} & set(config)
    if owned:
        raise ConfigError(
            f"{cfg.trainer.deepspeed}: remove {sorted(owned)}; they come from trainer.accumulate and "
            "trainer.gradient_clip"
        )
    config["train_micro_batch_size_per_gpu"] = 1
    return config


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def resolve_config(config: str | None, overrides: list[str], resume: str | None) -> PretrainConfig:
    """The run's config. With `--resume`, a run directory's saved `config.yaml` is the base (so a resume
    needs only `run.dir=…`), with the overrides on top; else `--config` with the overrides."""
    if resume is not None:
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), None)
        if run_dir is None and config is not None:
            run_dir = load_pretrain_config(config, overrides).run.dir
        if run_dir is not None and exists(join_url(run_dir, CONFIG_NAME)):
            saved = join_url(run_dir, CONFIG_NAME)
            rank_zero_info(f"resuming with {saved} as the base config, overrides on top: {overrides}")
            return pretrain_config(load_config_url(saved), overrides, source=saved)
    if config is None:
        raise ConfigError(
            "--config is needed for a new run (or --resume with run.dir=<a run with a saved config.yaml>)"
        )
    return load_pretrain_config(config, overrides)


def load_config_url(url: str) -> Any:
    with fsspec.open(url, "r") as f:
        return OmegaConf.create(f.read())


def run_pretraining(cfg: PretrainConfig, resume: str | None = None, reset_stream: bool = False) -> pl.Trainer:
    """Train as configured; returns the finished trainer."""
    run_dir = cfg.run.dir
    checkpoint = resolve_resume(run_dir, resume)
    if reset_stream and checkpoint is None:
        raise ConfigError("--reset-stream continues a run from a checkpoint; there is none to continue")
    evaluation = evaluation_callback(cfg)  # reads the val set first: a missing val split stops here
    probing = probe_callback(cfg)  # and the probe tasks' windows: missing task shards stop here too
    torch.manual_seed(cfg.trainer.seed)  # the same initial weights on every rank and every attempt
    module = build_module(cfg)
    tokens = None
    if isinstance(module, McmPretraining) and cfg.tokenizer.precomputed:
        from eegfm.pretrain.tokenize import tokenizer_id

        tokens = tokenizer_id(module.tokenizer)  # only the token shards of this tokenizer are read
    data = ShardDataModule(cfg.data, cfg.trainer.accumulate, module.batch_transform(), tokens, reset_stream)
    metrics = RunCsvLogger(run_dir, flush_every=cfg.logging.flush_every)
    loggers: list[Any] = [metrics]
    if cfg.logging.tensorboard:
        loggers.append(TensorBoardLogger(str(cfg.logging.tensorboard), name="", version=""))
    callbacks: list[pl.Callback] = [
        StreamCursor(),
        StepCheckpoints(run_dir, cfg.checkpoint.every_n_steps, cfg.checkpoint.keep),
        NonFiniteGuard(skip=cfg.trainer.skip_nonfinite),
        Throughput(cfg.trainer.log_every),
        SaveRunConfig(cfg, run_dir),
        RngState(),
    ]
    if isinstance(module, TokenizerPretraining):
        callbacks.append(CodebookHealth(cfg.trainer.log_every))
    if cfg.logging.sample_keys:
        callbacks.append(SampleLog(cfg.logging.sample_keys))
    if evaluation is not None:
        callbacks.append(evaluation)  # after Throughput, which leaves the evaluation's time out
    if probing is not None:
        callbacks.append(probing)  # after Throughput too
    strategy = build_strategy(cfg)
    # DeepSpeed writes its own (sharded) checkpoints; every other strategy saves through one atomic writer.
    plugins: list[Any] = [] if isinstance(strategy, DeepSpeedStrategy) else [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))  # StepCheckpoints saves, then requeues
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=strategy,
        precision=resolve_precision(cfg.trainer.precision),
        max_steps=cfg.trainer.max_steps,
        accumulate_grad_batches=cfg.trainer.accumulate,
        gradient_clip_val=cfg.trainer.gradient_clip or None,
        log_every_n_steps=cfg.trainer.log_every,
        logger=loggers,
        callbacks=callbacks,
        plugins=plugins,
        use_distributed_sampler=False,  # the stream slices itself by rank
        limit_val_batches=0,  # Lightning's validation loop is not used: Evaluation runs between steps
        num_sanity_val_steps=0,
        enable_progress_bar=cfg.logging.progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,  # StepCheckpoints saves, after the step's metrics are flushed
        default_root_dir=run_dir,
    )
    if checkpoint is not None:
        metrics.resume_from(step_of(checkpoint))
    with warnings.catch_warnings():
        # The stream is one endless Lightning epoch that resumes itself exactly; Lightning's warnings
        # about resuming mid-epoch and about an unsized loader do not apply to it.
        warnings.filterwarnings(
            "ignore", message=".*resuming from a checkpoint that ended before the epoch.*"
        )
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        trainer.fit(module, datamodule=data, ckpt_path=checkpoint)
    return trainer
