"""The fine-tuning config as typed data: one dataclass per section, a docstring per field, checked on load.

`configs/finetune/<name>.yaml` (and what it `extends:`), then the command's flags (`--checkpoint`,
`--task-shards`, `--mode`, `--seeds`), then `key=value` overrides, merged onto `FinetuneConfig`: an unknown
key, a wrong type or a value out of range is a `ConfigError` naming the key. The trainer section has the
names `pretrain.train.build_strategy` reads, so fine-tuning runs on the same strategies as pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eegfm.errors import ConfigError
from eegfm.models.features import LAYERS
from eegfm.models.heads import HEAD_KINDS

MODES = ("lp", "ft", "lp+ft")
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class EncoderSource:
    checkpoint: str | None = None
    """The pretrained encoder: a run directory (its newest checkpoint), a .ckpt, or an `eegfm export`."""


@dataclass
class TaskData:
    shards: str | None = None
    """Labelled task shards (folder or manifest URL, local or s3://) with train, val and test splits."""
    clip: float = 15.0
    """Clip at ±clip after the per-recording channel z-score, as in pretraining (`data.clip`)."""
    batch_windows: int = 32
    """Windows per batch (all of one channel count and length: no padding)."""
    num_workers: int = 0
    """DataLoader worker processes reading the training batches (0: read in the training process)."""

    def __post_init__(self) -> None:
        _check(self.clip > 0, "task.clip", f"must be positive, got {self.clip}")
        _check(self.batch_windows >= 1, "task.batch_windows", f"must be ≥ 1, got {self.batch_windows}")
        _check(self.num_workers >= 0, "task.num_workers", f"must be ≥ 0, got {self.num_workers}")


@dataclass
class HeadConfig:
    kind: str = "attention"
    """attention (a learned query pools the tokens, then LayerNorm → Linear) or flatten (LayerNorm → Linear
    over every token; needs one channel count and window length across the task)."""
    layers: str = "last"
    """Tokens of the `last` encoder layer, or of `all` layers side by side."""

    def __post_init__(self) -> None:
        _check(self.kind in HEAD_KINDS, "head.kind", f"one of {', '.join(HEAD_KINDS)}, not {self.kind!r}")
        _check(self.layers in LAYERS, "head.layers", f"one of {', '.join(LAYERS)}, not {self.layers!r}")


@dataclass
class PhaseConfig:
    epochs: int = 30
    """Most epochs of this phase (fewer when early stopping ends it)."""
    lr: float = 1.0e-3
    """Peak learning rate (AdamW) of the head; the encoder's layers get it times layer_decay^depth (ft)."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay (ft only): block i of L gets lr·decay^(L−i), the embeddings
    lr·decay^(L+1), the head and the final norm lr."""
    weight_decay: float = 0.01
    """AdamW weight decay of matrices; norms, biases and learned queries get none."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's (β1, β2)."""
    warmup_epochs: float = 1.0
    """Epochs of linear warm-up; then a cosine down to min_lr_ratio · lr at the last epoch."""
    min_lr_ratio: float = 0.01
    """Final learning rate as a share of the peak."""
    patience: int = 10
    """Early stopping: stop after this many epochs without a better val balanced accuracy (0: never)."""

    def _check_as(self, section: str) -> None:
        _check(self.epochs >= 1, f"{section}.epochs", f"must be ≥ 1, got {self.epochs}")
        _check(self.lr > 0, f"{section}.lr", f"must be positive, got {self.lr}")
        _check(
            0 < self.layer_decay <= 1, f"{section}.layer_decay", f"must be in (0, 1], got {self.layer_decay}"
        )
        _check(self.weight_decay >= 0, f"{section}.weight_decay", f"must be ≥ 0, got {self.weight_decay}")
        _check(len(self.betas) == 2, f"{section}.betas", f"must be two numbers, got {list(self.betas)}")
        _check(self.warmup_epochs >= 0, f"{section}.warmup_epochs", f"must be ≥ 0, got {self.warmup_epochs}")
        _check(
            0 <= self.min_lr_ratio <= 1,
            f"{section}.min_lr_ratio",
            f"must be in [0, 1], got {self.min_lr_ratio}",
        )
        _check(self.patience >= 0, f"{section}.patience", f"must be ≥ 0, got {self.patience}")


@dataclass
class LinearProbePhase(PhaseConfig):
    """Linear probing: the encoder frozen, only the head trained."""

    def __post_init__(self) -> None:
        self._check_as("lp")
        _check(self.layer_decay == 1.0, "lp.layer_decay", "the encoder is frozen in lp; set ft.layer_decay")


@dataclass
class FullFinetunePhase(PhaseConfig):
    """Full fine-tuning: every encoder parameter trained, with layer-wise learning-rate decay."""

    lr: float = 1.0e-4
    """Peak learning rate (AdamW) of the head; the encoder's layers get it times layer_decay^depth."""
    layer_decay: float = 0.75
    """Layer-wise learning-rate decay: block i of L gets lr·decay^(L−i), the embeddings lr·decay^(L+1),
    the head and the final norm lr."""
    weight_decay: float = 0.05
    """AdamW weight decay of matrices; norms, biases and learned queries get none."""

    def __post_init__(self) -> None:
        self._check_as("ft")


@dataclass
class FinetuneTrainer:
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    devices: Any = 1
    """Devices per node: a count, auto, or a list of indices."""
    num_nodes: int = 1
    """Nodes of the job (SLURM and torchrun supply the ranks)."""
    strategy: str = "auto"
    """auto (one device: none; several: Lightning's DDP), ddp, fsdp or deepspeed (as in pretraining)."""
    fsdp_sharding: str = "FULL_SHARD"
    """FSDP sharding strategy (FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD)."""
    deepspeed: str = "configs/pretrain/deepspeed/zero2.yaml"
    """DeepSpeed config file (ZeRO stage); clipping comes from trainer.gradient_clip."""
    precision: str = "auto"
    """Lightning precision; auto: bf16-mixed on GPU, 32-true on CPU."""
    gradient_clip: float = 1.0
    """Gradient-norm clipping threshold (0: none)."""
    progress_bar: bool = False
    """Lightning's progress bar."""

    def __post_init__(self) -> None:
        _check(self.num_nodes >= 1, "trainer.num_nodes", f"must be ≥ 1, got {self.num_nodes}")
        _check(
            self.strategy in STRATEGIES,
            "trainer.strategy",
            f"one of {', '.join(STRATEGIES)}, not {self.strategy!r}",
        )
        _check(self.gradient_clip >= 0, "trainer.gradient_clip", f"must be ≥ 0, got {self.gradient_clip}")


@dataclass
class FinetuneCheckpoints:
    keep: int = 2
    """Newest epoch checkpoints kept per seed and phase (-1: all)."""

    def __post_init__(self) -> None:
        _check(self.keep >= 1 or self.keep == -1, "checkpoint.keep", f"must be ≥ 1 or -1, got {self.keep}")


@dataclass
class FinetuneRunDir:
    dir: str = "runs/finetune"
    """The run directory (local or s3://): config.yaml, finetune.json, seed=N/<phase>/ folders."""


@dataclass
class FinetuneConfig:
    """`eegfm finetune`: a pretrained encoder and a classification head trained on labelled task shards."""

    encoder: EncoderSource = field(default_factory=EncoderSource)
    """The pretrained encoder (`--checkpoint`)."""
    task: TaskData = field(default_factory=TaskData)
    """The labelled task shards (`--task-shards`) and how they are read."""
    mode: str = "lp"
    """lp (frozen encoder, head trained), ft (everything trained, layer-wise lr decay), or lp+ft (lp, then
    ft starting from lp's best head)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds, each a whole run (head init, batch order); finetune.json reports their mean ± std."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """The classification head."""
    lp: LinearProbePhase = field(default_factory=LinearProbePhase)
    """The linear-probing phase (modes lp and lp+ft)."""
    ft: FullFinetunePhase = field(default_factory=FullFinetunePhase)
    """The full fine-tuning phase (modes ft and lp+ft)."""
    trainer: FinetuneTrainer = field(default_factory=FinetuneTrainer)
    """Devices, strategy, precision, clipping."""
    checkpoint: FinetuneCheckpoints = field(default_factory=FinetuneCheckpoints)
    """How many epoch checkpoints are kept."""
    run: FinetuneRunDir = field(default_factory=FinetuneRunDir)
    """Where the run's outputs go."""

    def __post_init__(self) -> None:
        _check(self.mode in MODES, "mode", f"one of {', '.join(MODES)}, not {self.mode!r}")
        _check(bool(self.seeds), "seeds", "names no seed (e.g. --seeds 0,1,2)")
        _check(len(set(self.seeds)) == len(self.seeds), "seeds", f"repeats a seed: {list(self.seeds)}")

    @property
    def phases(self) -> list[str]:
        return self.mode.split("+")
