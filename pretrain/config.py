"""Pretraining configs as typed data: one dataclass per section, a docstring per field, checked on load.

`configs/pretrain/<name>.yaml` (and the files it `extends:`) plus `key=value` overrides are merged onto
the schema of the config's `objective` (`MaeRun`, `TokenizerRun`, `McmRun`, `CbramodRun`, …): an unknown
key, a value of the wrong type or out of range is a `ConfigError` naming the key. `eegfm pretrain
--print-config` shows the result with these docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from eegfm.config import load_config, parse_overrides, typed
from eegfm.errors import ConfigError
from eegfm.models.mae import MaeConfig
from eegfm.models.tokenizer import TokenizerConfig

STRATEGIES = ("ddp", "fsdp", "deepspeed")
NORMALISATIONS = ("zscore", "scale")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class DataConfig:
    shards: list[Any] = field(default_factory=lambda: ["shards/tueg"])
    """Shard folders or manifest URLs (local or s3://), or {url, weight, split} entries to mix datasets."""
    split: str = "train"
    """The split every dataset is read from, unless its entry names its own."""
    channel_budget: int = 4800
    """Channel-windows per micro-batch (per GPU): budget // C windows of C channels, no padding."""
    clip: float = 15.0
    """Clip at ±clip after normalising (z-score: in standard deviations; scale: in model units)."""
    normalise: str = "zscore"
    """zscore: each channel minus its recording's mean, over its std (REVE, LaBraM, LUNA); scale:
    µV / scale_uv (CBraMod's fixed µV / 100), so amplitudes compare across recordings."""
    scale_uv: float = 100.0
    """Microvolts per model unit with normalise=scale (unused with zscore)."""
    channels: list[str] = field(default_factory=list)
    """Channels every window is cut to, in this order, by name ([]: all, any count). A window lacking
    one is skipped and counted (skipped_windows), never padded: for fixed-montage models (FEMBA)."""
    seed: int = 0
    """Seed of the epoch plan (shuffles) and of the per-micro-batch masks."""
    shuffle_block: int = 128
    """Shards per shuffle block: shards read in order B at a time, windows shuffled within (0: global)."""
    cache_dir: str = ""
    """Node-local folder of whole remote shards, shared by a node's ranks ("": $TMPDIR/eegfm-shard-cache)."""
    cache_limit_gb: float | None = None
    """Shard cache limit in GB, furthest-needed evicted first (null: 90 % of its disk's room; 0: no limit)."""
    num_workers: int = 4
    """DataLoader worker processes per rank (0: read in the training process)."""
    prefetch: int = 4
    """Micro-batches each worker keeps ready."""

    def __post_init__(self) -> None:
        _check(self.channel_budget > 0, "data.channel_budget", f"must be positive, got {self.channel_budget}")
        _check(self.clip > 0, "data.clip", f"must be positive, got {self.clip}")
        _check(
            self.normalise in NORMALISATIONS,
            "data.normalise",
            f"must be one of {', '.join(NORMALISATIONS)}, not {self.normalise!r}",
        )
        _check(self.scale_uv > 0, "data.scale_uv", f"must be positive, got {self.scale_uv}")
        _check(
            self.shuffle_block >= 0,
            "data.shuffle_block",
            f"must be ≥ 0 (0: shuffle every window globally), got {self.shuffle_block}",
        )
        _check(
            self.cache_limit_gb is None or self.cache_limit_gb >= 0,
            "data.cache_limit_gb",
            f"must be ≥ 0 (0: no limit; null: 90 % of the disk's room), got {self.cache_limit_gb}",
        )
        _check(self.num_workers >= 0, "data.num_workers", f"must be ≥ 0, got {self.num_workers}")
        _check(self.prefetch >= 1, "data.prefetch", f"must be ≥ 1, got {self.prefetch}")
        _check(bool(self.shards), "data.shards", "names no dataset")
        _check(
            len(set(self.channels)) == len(self.channels),
            "data.channels",
            f"names a channel twice: {list(self.channels)}",
        )

    @property
    def scale(self) -> float | None:
        """µV per model unit for the decoder, or None for the per-recording z-score."""
        return self.scale_uv if self.normalise == "scale" else None

    def normalisation(self) -> dict[str, Any]:
        """What the stream's fingerprint and checkpoints record of the normalisation."""
        if self.normalise == "scale":
            return {"normalise": "scale", "scale_uv": self.scale_uv}
        return {"normalise": "zscore"}

    def selection(self) -> dict[str, Any]:
        """What the stream's fingerprint records of the channel selection (nothing without one, so the
        fingerprints of runs saved before the setting existed stay equal)."""
        return {"channels": list(self.channels)} if self.channels else {}


@dataclass
class OptimConfig:
    lr: float = 2.4e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.05
    """AdamW weight decay of matrices; norms, biases and learned tokens get none."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW's (β1, β2)."""
    eps: float = 1.0e-8
    """AdamW's ε."""
    warmup_fraction: float = 0.05
    """Share of the run's steps spent warming the learning rate up linearly."""
    cooldown_fraction: float = 0.2
    """Share of the run's steps at the end spent cooling down (cosine) to min_lr_ratio · lr."""
    min_lr_ratio: float = 0.01
    """Final learning rate as a share of the peak."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"must be positive, got {self.lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be ≥ 0, got {self.weight_decay}")
        _check(len(self.betas) == 2, "optim.betas", f"must be two numbers, got {list(self.betas)}")
        for name in ("warmup_fraction", "cooldown_fraction", "min_lr_ratio"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"optim.{name}", f"must be within [0, 1], got {value}")
        total = self.warmup_fraction + self.cooldown_fraction
        _check(total <= 1, "optim.warmup_fraction", f"warm-up and cool-down exceed the run ({total})")


@dataclass
class TrainerConfig:
    max_steps: int = 200000
    """Optimizer steps of the whole run (the learning-rate schedule spans them)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    devices: Any = "auto"
    """Devices per node: auto, a count, or a list of indices."""
    num_nodes: int = 1
    """Nodes of the job (SLURM and torchrun supply the ranks)."""
    strategy: str = "ddp"
    """Distribution strategy: ddp, fsdp or deepspeed."""
    fsdp_sharding: str = "FULL_SHARD"
    """FSDP sharding strategy (FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD)."""
    deepspeed: str = "configs/pretrain/deepspeed/zero2.yaml"
    """DeepSpeed config file (ZeRO stage, bf16); accumulation and clipping come from trainer.*."""
    precision: str = "auto"
    """Lightning precision; auto: bf16-mixed on GPU, 32-true on CPU."""
    accumulate: int = 1
    """Micro-batches per optimizer step and rank (gradient accumulation)."""
    gradient_clip: float = 1.0
    """Gradient-norm clipping threshold (0: none)."""
    log_every: int = 50
    """Steps between logged rows of metrics.csv."""
    seed: int = 0
    """Seed of the initial weights (the same on every rank and every attempt)."""
    skip_nonfinite: bool = False
    """On a non-finite loss or gradient: false stops the run naming the step and samples; true skips
    that micro-batch's update and counts it (`skipped_nonfinite` in metrics.csv)."""

    def __post_init__(self) -> None:
        _check(self.max_steps > 0, "trainer.max_steps", f"must be positive, got {self.max_steps}")
        _check(self.num_nodes >= 1, "trainer.num_nodes", f"must be ≥ 1, got {self.num_nodes}")
        _check(
            self.strategy in STRATEGIES,
            "trainer.strategy",
            f"must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}",
        )
        _check(self.accumulate >= 1, "trainer.accumulate", f"must be ≥ 1, got {self.accumulate}")
        _check(self.gradient_clip >= 0, "trainer.gradient_clip", f"must be ≥ 0, got {self.gradient_clip}")
        _check(self.log_every >= 1, "trainer.log_every", f"must be ≥ 1, got {self.log_every}")
        _check(
            not (self.skip_nonfinite and self.strategy == "deepspeed"),
            "trainer.skip_nonfinite",
            "cannot skip updates under DeepSpeed (it owns the gradients); use ddp or fsdp, or leave it false",
        )


@dataclass
class CheckpointConfig:
    every_n_steps: int = 2000
    """Steps between checkpoints (also saved at the end and on SIGUSR1/SIGTERM)."""
    keep: int = 3
    """Newest checkpoints kept (-1: all)."""

    def __post_init__(self) -> None:
        _check(self.every_n_steps >= 1, "checkpoint.every_n_steps", f"must be ≥ 1, got {self.every_n_steps}")
        _check(self.keep >= 1 or self.keep == -1, "checkpoint.keep", f"must be ≥ 1 or -1, got {self.keep}")


@dataclass
class ProbeTask:
    name: str = ""
    """The task's name in the columns: probe/<name>/<metric>."""
    shards: str = ""
    """Its labelled task shards (`eegfm shards --task`): a folder or manifest URL with train/val/test."""


@dataclass
class EvalConfig:
    every_n_steps: int = 0
    """Steps between evaluations of the objective on a fixed set of held-out windows, logged as val_loss
    (0: none)."""
    val_windows: int = 2048
    """Windows of the val set: all of the split's, or this many chosen by eval.seed, the same every time."""
    split: str = "val"
    """The split of every dataset of data.shards evaluated on (ingest puts held-out subjects there)."""
    seed: int = 0
    """Seed of the val windows' choice and masks, apart from data.seed so runs with other seeds compare."""
    tasks: list[ProbeTask] = field(default_factory=list)
    """Labelled tasks probed with the frozen encoder every eval.every_n_steps: [{name: …, shards: …}]."""
    max_windows: int = 2048
    """Windows of each task the in-loop probe embeds (train/val/test in proportion), the same every time."""
    probe_shuffles: int = 0
    """Label shuffles of the in-loop shuffled-labels baseline (0: not computed; each costs one probe fit)."""

    def __post_init__(self) -> None:
        _check(
            self.every_n_steps >= 0, "eval.every_n_steps", f"must be ≥ 0 (0: off), got {self.every_n_steps}"
        )
        _check(self.val_windows >= 1, "eval.val_windows", f"must be ≥ 1, got {self.val_windows}")
        _check(bool(self.split), "eval.split", "names no split (e.g. val)")
        _check(self.seed >= 0, "eval.seed", f"must be ≥ 0, got {self.seed}")
        _check(self.max_windows >= 6, "eval.max_windows", f"must be ≥ 6, got {self.max_windows}")
        _check(self.probe_shuffles >= 0, "eval.probe_shuffles", f"must be ≥ 0, got {self.probe_shuffles}")
        names = [task.name for task in self.tasks]
        for i, task in enumerate(self.tasks):
            _check(bool(task.name) and "/" not in task.name, f"eval.tasks[{i}].name", "a name without '/'")
            _check(bool(task.shards), f"eval.tasks[{i}].shards", "names no task shards")
            _check(task.name not in names[:i], f"eval.tasks[{i}].name", f"{task.name!r} appears twice")
        _check(
            not self.tasks or self.every_n_steps > 0,
            "eval.tasks",
            "probes run every eval.every_n_steps; set it > 0 (or drop eval.tasks)",
        )


@dataclass
class RunConfig:
    dir: str = "runs/default"
    """The run directory (local path or s3://…): config.yaml, metrics.csv, checkpoints/."""


@dataclass
class LoggingConfig:
    tensorboard: Any = "${run.dir}/tensorboard"
    """A local folder for TensorBoard events, or false (TensorBoard cannot write to s3://)."""
    flush_every: int = 20
    """Logged rows kept in memory between rewrites of metrics.csv."""
    progress_bar: bool = True
    """Lightning's progress bar."""
    sample_keys: str | None = None
    """A local folder: every rank's sample keys per micro-batch (provenance, resume checks)."""

    def __post_init__(self) -> None:
        board = self.tensorboard
        _check(
            board is False or board is None or isinstance(board, str),
            "logging.tensorboard",
            f"a local folder or false, got {board!r}",
        )
        _check(
            not (isinstance(board, str) and "://" in board),
            "logging.tensorboard",
            f"{board}: TensorBoard writes to a local folder only; give a local path, or false",
        )
        _check(self.flush_every >= 1, "logging.flush_every", f"must be ≥ 1, got {self.flush_every}")


@dataclass
class PretrainConfig:
    """What every objective's run shares."""

    objective: str = "mae"
    """mae (REVE masked autoencoder), tokenizer (VQ-NSP / residual VQ), mcm (masked code modelling), cbramod,
    luna, femba or lumamba (masked reconstruction of those models)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The shard stream."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and the learning-rate schedule."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Steps, devices, strategy, precision, accumulation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When checkpoints are saved and how many are kept."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation loss on held-out windows during pretraining."""
    run: RunConfig = field(default_factory=RunConfig)
    """Where the run's outputs go."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """metrics.csv, TensorBoard, progress bar, sample keys."""


@dataclass
class ModelSize:
    size: str = "reve_base"
    """A named size (the SIZES of the objective's model module: models/reve.py, mcm.py, cbramod.py, …)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the size's config to change, e.g. {depth: 12}."""


@dataclass
class MaeRun(PretrainConfig):
    """REVE-style masked-autoencoder pretraining."""

    model: ModelSize = field(default_factory=ModelSize)
    """The encoder's size."""
    mae: MaeConfig = field(default_factory=MaeConfig)
    """Masking, decoder and loss of the MAE."""

    def __post_init__(self) -> None:
        from eegfm.models.reve import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")


@dataclass
class TokenizerRun(PretrainConfig):
    """Stage 1: a neural tokenizer (LaBraM VQ-NSP or NeuroRVQ-style residual VQ)."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer's architecture and codebook."""


@dataclass
class McmSettings:
    mask_ratio: float = 0.5
    """Share of the patches replaced by the mask token in the first pass (the second masks the rest)."""

    def __post_init__(self) -> None:
        _check(0 < self.mask_ratio < 1, "mcm.mask_ratio", f"must be within (0, 1), got {self.mask_ratio}")


@dataclass
class Stage1:
    checkpoint: str | None = None
    """A stage-1 tokenizer checkpoint, or its run directory (its newest checkpoint); required."""
    precomputed: bool = False
    """Read the code ids `eegfm tokenize` wrote beside the shards instead of tokenizing on the fly."""


@dataclass
class McmRun(PretrainConfig):
    """Stage 2: LaBraM's masked code modelling against a frozen stage-1 tokenizer."""

    model: ModelSize = field(default_factory=lambda: ModelSize(size="labram_base"))
    """The stage-2 encoder's size."""
    mcm: McmSettings = field(default_factory=McmSettings)
    """Masking of the code prediction."""
    tokenizer: Stage1 = field(default_factory=Stage1)
    """The frozen stage-1 tokenizer."""

    def __post_init__(self) -> None:
        from eegfm.models.mcm import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")


@dataclass
class CbramodSettings:
    mask_ratio: float = 0.5
    """Probability that each (window, channel, patch) is hidden (the authors' Bernoulli ½)."""

    def __post_init__(self) -> None:
        _check(0 < self.mask_ratio < 1, "cbramod.mask_ratio", f"must be within (0, 1), got {self.mask_ratio}")


@dataclass
class CbramodRun(PretrainConfig):
    """CBraMod: masked-patch reconstruction with criss-cross attention, on µV / 100 (models/cbramod.py)."""

    model: ModelSize = field(default_factory=lambda: ModelSize(size="cbramod"))
    """The encoder's size (models/cbramod.py SIZES)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(normalise="scale"))
    """The shard stream; CBraMod reads µV / scale_uv (100), the authors' units, not z-scores."""
    cbramod: CbramodSettings = field(default_factory=CbramodSettings)
    """Masking of the reconstruction."""

    def __post_init__(self) -> None:
        from eegfm.models.cbramod import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")


@dataclass
class LunaSettings:
    mask_ratio: float = 0.5
    """Share of each window's (channel, patch) cells hidden, an exact count (the authors' masking_ratio)."""
    unmasked_weight: float = 0.05
    """Weight of the Smooth-L1 on the visible samples, beside the hidden ones' (the authors' 0.05)."""
    query_loss_weight: float = 0.8
    """Weight of the query-specialisation loss (the authors' 0.8)."""

    def __post_init__(self) -> None:
        _check(0 < self.mask_ratio < 1, "luna.mask_ratio", f"must be within (0, 1), got {self.mask_ratio}")
        for name in ("unmasked_weight", "query_loss_weight"):
            _check(getattr(self, name) >= 0, f"luna.{name}", f"must be ≥ 0, got {getattr(self, name)}")


@dataclass
class LunaRun(PretrainConfig):
    """LUNA: any montage unified into learned queries per patch, masked reconstruction (models/luna.py)."""

    model: ModelSize = field(default_factory=lambda: ModelSize(size="luna_base"))
    """The encoder's size (models/luna.py SIZES); model.overrides.hidden_norm=false for braindecode's."""
    luna: LunaSettings = field(default_factory=LunaSettings)
    """Masking and loss weights."""

    def __post_init__(self) -> None:
        from eegfm.models.luna import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")


@dataclass
class LumambaSettings:
    mask_ratio: float = 0.5
    """Share of each window's (channel, patch) cells hidden, an exact count (the authors' shipped 0.5)."""
    unmasked_weight: float = 0.05
    """Weight of the Smooth-L1 on the visible samples, beside the hidden ones' (the authors' 0.05)."""
    query_loss_weight: float = 0.8
    """Weight of the query-specialisation loss (the authors' 0.8)."""
    lejepa_weight: float = 0.0
    """Weight of the LeJEPA term (0: off; the authors use 0.05 when they turn it on)."""
    lejepa_lambda: float = 0.002
    """LeJEPA's λ: (1 − λ) · view prediction + λ · SIGReg (the authors' 0.002)."""
    local_views: int = 4
    """Local crops (4 patches each) per window, predicted from the global ones (LeJEPA only)."""
    global_views: int = 2
    """Global crops (16 patches each) per window, whose mean embedding is the target (LeJEPA only)."""
    slices: int = 256
    """Random directions SIGReg tests the local embeddings along, drawn each step (LeJEPA only)."""

    def __post_init__(self) -> None:
        _check(0 < self.mask_ratio < 1, "lumamba.mask_ratio", f"must be within (0, 1), got {self.mask_ratio}")
        for name in ("unmasked_weight", "query_loss_weight", "lejepa_weight"):
            _check(getattr(self, name) >= 0, f"lumamba.{name}", f"must be ≥ 0, got {getattr(self, name)}")
        _check(
            0 <= self.lejepa_lambda <= 1,
            "lumamba.lejepa_lambda",
            f"must be within [0, 1], got {self.lejepa_lambda}",
        )
        for name in ("local_views", "global_views", "slices"):
            _check(getattr(self, name) >= 1, f"lumamba.{name}", f"must be ≥ 1, got {getattr(self, name)}")


@dataclass
class LumambaRun(PretrainConfig):
    """LuMamba: LUNA's channel unification + bidirectional Mamba, masked reconstruction
    (models/lumamba.py)."""

    model: ModelSize = field(default_factory=lambda: ModelSize(size="lumamba_tiny"))
    """The encoder's size (models/lumamba.py SIZES)."""
    lumamba: LumambaSettings = field(default_factory=LumambaSettings)
    """Masking, loss weights and the optional LeJEPA term."""

    def __post_init__(self) -> None:
        from eegfm.models.lumamba import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")


# FEMBA's default montage: the 18 channels of the 10-20 system that every TUEG montage (and the fixture's
# 19- and 21-channel ones) has (all 19 but Pz), ordered so each 2-channel patch row holds neighbours along
# the double-banana chains: (Fp1, F7), (T7, P7), (F3, C3), (P3, O1), then the right side, then (Fz, Cz).
FEMBA_CHANNELS = [
    *("Fp1", "F7", "T7", "P7", "F3", "C3", "P3", "O1"),
    *("Fp2", "F8", "T8", "P8", "F4", "C4", "P4", "O2"),
    *("Fz", "Cz"),
]


@dataclass
class FembaSettings:
    mask_ratio: float = 0.6
    """Share of each window's 2 × 16 rectangles hidden, an exact count (the authors' masking_ratio)."""
    lowpass: bool = True
    """Reconstruct the low-passed window (the "physiologically aware" objective); false: the raw window."""
    sfreq: float = 200.0
    """The shards' sample rate in Hz (ingest's target_sfreq), which the low-pass filter is designed for."""
    passband_hz: float = 40.0
    """The low-pass target keeps frequencies below this (within 0.1 %)."""
    stopband_hz: float = 50.0
    """The low-pass target is ≥ 60 dB down above this (also removes mains residue)."""

    def __post_init__(self) -> None:
        _check(0 < self.mask_ratio < 1, "femba.mask_ratio", f"must be within (0, 1), got {self.mask_ratio}")
        _check(self.sfreq > 0, "femba.sfreq", f"must be positive, got {self.sfreq}")
        _check(
            0 < self.passband_hz < self.stopband_hz <= self.sfreq / 2,
            "femba.passband_hz",
            f"needs 0 < passband_hz < stopband_hz <= sfreq/2, got {self.passband_hz}, {self.stopband_hz}, "
            f"{self.sfreq / 2}",
        )


@dataclass
class FembaRun(PretrainConfig):
    """FEMBA: bidirectional Mamba over 2 × 16 patches of a fixed montage, masked reconstruction of the
    low-passed window (models/femba.py)."""

    model: ModelSize = field(
        default_factory=lambda: ModelSize(size="femba_tiny", overrides={"n_times": 2000})
    )
    """The encoder's size (models/femba.py SIZES); n_times must be the shards' window (10 s at 200 Hz: 2000),
    its channel count comes from data.channels."""
    data: DataConfig = field(default_factory=lambda: DataConfig(channels=list(FEMBA_CHANNELS)))
    """The shard stream; FEMBA reads every window cut to data.channels (an even count, in patch order)."""
    femba: FembaSettings = field(default_factory=FembaSettings)
    """Masking and the reconstruction target."""

    def __post_init__(self) -> None:
        from eegfm.models.femba import SIZES

        _check(self.model.size in SIZES, "model.size", f"{self.model.size!r} is not one of {sorted(SIZES)}")
        count = len(self.data.channels)
        _check(
            count > 0 and count % 2 == 0,
            "data.channels",
            f"FEMBA needs a fixed montage of an even number of named channels (its patches span 2), got "
            f"{count}: list them in patch order",
        )
        _check(
            "channels" not in self.model.overrides,
            "model.overrides.channels",
            "FEMBA's channel count is that of data.channels; list the channels there instead",
        )


SCHEMAS: dict[str, type[PretrainConfig]] = {
    "mae": MaeRun,
    "tokenizer": TokenizerRun,
    "mcm": McmRun,
    "cbramod": CbramodRun,
    "luna": LunaRun,
    "lumamba": LumambaRun,
    "femba": FembaRun,
}


def pretrain_config(raw: Any, overrides: list[str] | None = None, source: str = "config") -> PretrainConfig:
    """A pretraining config from YAML-like data and overrides, typed by its `objective`."""
    objective = OmegaConf.select(OmegaConf.merge(raw, parse_overrides(overrides or [])), "objective")
    if objective not in SCHEMAS:
        raise ConfigError(f"{source}: objective {objective!r} is not one of {', '.join(SCHEMAS)}")
    return typed(SCHEMAS[objective], raw, overrides, source=source)


def load_pretrain_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """`configs/pretrain/<name>.yaml` (with what it extends) and `key=value` overrides, typed."""
    return pretrain_config(load_config(path), overrides, source=str(path))
