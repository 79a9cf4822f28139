"""The in-loop probe: every `eval.every_n_steps` steps, the frozen encoder probed on labelled tasks.

The same probe as `eegfm probe` (mean of the last layer's tokens, `fit_and_score`: a logistic regression
with C chosen on val and a k-NN, scored on test), on a bounded, fixed set of windows per task:

- Windows: of each task's train/val/test splits, all of them, or `eval.max_windows` in all, shared out in
  proportion to the splits' sizes (largest remainders) and drawn per split with `eval.seed`, in table
  order; cut into batches of one shape of at most `BATCH_WINDOWS` windows (as `eegfm probe` cuts them, so
  with every window chosen the features are those of `eegfm probe` to the bit). The same windows every
  evaluation, on any number of ranks.
- Embedding, sharded: batch k is embedded by rank k mod W (under FSDP/DeepSpeed through their wrapper,
  each rank running as many forwards, the extra ones repeats that are not counted); each rank's features
  (float32, on the CPU) are gathered to every rank (`all_gather_object`) and put back in batch order, so
  the features the probe sees do not depend on the number of ranks.
- Fitting: once, on rank 0 (scikit-learn on the CPU; the other ranks would only repeat it); its metrics
  are broadcast (`broadcast_object_list`) so that every rank logs the same values.
- Baselines: the random-init encoder (same architecture, weights from `eval.seed`) and the log band-power
  features do not change during the run, so they are embedded and fit at the first evaluation of a
  process and their metrics reused after; the shuffled-labels baseline (`eval.probe_shuffles` shuffles)
  depends on the encoder and is fit every time.

Like `Evaluation`, it never disturbs training: eval mode without gradients (each module's mode restored),
no draw from a global random generator (checked: a draw stops the run; the random-init encoder is built
inside a forked generator), its own reads (the stream's cursor is left alone). A killed and resumed run
therefore logs the same probe columns, bit for bit, as the uninterrupted one (`seconds` aside).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from eegfm.errors import ConfigError, DataError
from eegfm.models.features import embed_batch
from eegfm.models.mcm import MaskedCodeEncoder
from eegfm.models.reve import ReveEncoder
from eegfm.pretrain.callbacks.throughput import Throughput
from eegfm.pretrain.config import PretrainConfig, ProbeTask
from eegfm.pretrain.probe import (
    ENCODER,
    SPLITS,
    align_channels,
    band_power_features,
    fit_and_score,
    mean_over_shuffles,
    random_init_like,
)
from eegfm.pretrain.stream import completes_step
from eegfm.pretrain.table import ShardTable
from eegfm.pretrain.taskshards import TaskInfo, labelled_batches, load_split, read_task_info, shape_groups
from eegfm.pretrain.validation import _global_states, _same_states

# Seed stream of the windows' choice: apart from the val set's (validation.VALIDATION_STREAM).
PROBE_STREAM = 2000
BATCH_WINDOWS = 64  # `eegfm probe`'s default batch_windows: the same batches, so the same features
RANDOM_INIT = "random_init"
BAND_POWER = "band_power"
SHUFFLED = "shuffled_labels"


@dataclass
class ProbeSet:
    """One task's fixed windows, as batches of (split, table rows)."""

    name: str
    """The task's name in the columns (eval.tasks[i].name)."""
    url: str
    """Its task shards."""
    task: TaskInfo
    """Its classes."""
    tables: dict[str, ShardTable]
    """Each split's sample table."""
    batches: list[tuple[str, np.ndarray]]
    """(split, rows) of each batch, train then val then test, in embedding order; every window once."""
    clip: float
    """data.clip, as in training."""

    @property
    def windows(self) -> int:
        return sum(len(rows) for _, rows in self.batches)

    def rank_slots(self, rank: int, world: int) -> list[tuple[int, bool]]:
        """(batch index, counted) of each forward rank `rank` runs: batches rank, rank + W, …, then
        uncounted repeats until every rank has run as many as the busiest (FSDP needs equal forwards)."""
        slots = -(-len(self.batches) // world)
        n = len(self.batches)
        return [(k % n, k < n) for k in range(rank, rank + slots * world, world)]


def split_quotas(sizes: dict[str, int], max_windows: int) -> dict[str, int]:
    """Windows per split: all of them, or `max_windows` in all shared in proportion to the sizes, by
    largest remainders (ties to the earlier split), each split keeping at least 2."""
    total = sum(sizes.values())
    if total <= max_windows:
        return dict(sizes)
    exact = {split: max_windows * n / total for split, n in sizes.items()}
    quotas = {split: int(share) for split, share in exact.items()}
    for split in sorted(sizes, key=lambda s: quotas[s] - exact[s])[: max_windows - sum(quotas.values())]:
        quotas[split] += 1
    return {split: min(sizes[split], max(2, q)) for split, q in quotas.items()}


def choose_split_rows(size: int, count: int, seed: int, split_index: int) -> np.ndarray:
    """`count` rows of a split of `size`, drawn without replacement from (seed, split), in table order."""
    if count >= size:
        return np.arange(size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, PROBE_STREAM, split_index]))
    return np.sort(rng.choice(size, size=count, replace=False))


def load_probe_set(task: ProbeTask, max_windows: int, seed: int, clip: float, where: str) -> ProbeSet:
    """A task's fixed windows; task shards that are missing, unlabelled or lack a split are a one-line
    `DataError` naming them and the config key (`where`)."""
    try:
        info = read_task_info(task.shards)
        tables = {split: load_split(task.shards, split) for split in SPLITS}
    except DataError as e:
        raise DataError(f"{where} ({task.name}): {e}") from None
    quotas = split_quotas({split: len(table) for split, table in tables.items()}, max_windows)
    batches = []
    for index, split in enumerate(SPLITS):
        rows = choose_split_rows(len(tables[split]), quotas[split], seed, index)
        batches.extend((split, b) for b in shape_groups(tables[split], rows, BATCH_WINDOWS))
    return ProbeSet(task.name, task.shards, info, tables, batches, clip)


@dataclass
class Embedded:
    """One task's gathered features, per split, in window order."""

    labels: dict[str, np.ndarray]
    features: dict[str, dict[str, np.ndarray]]  # model → split → (n, D)
    band_power: dict[str, np.ndarray] | None  # split → (n, U·5), when asked for


def _gather(share: dict[int, Any], world: int) -> dict[int, Any]:
    if world == 1:
        return share
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, share)
    merged: dict[int, Any] = {}
    for part in gathered:
        merged.update(part)
    return merged


def embed_probe_set(
    probe: ProbeSet,
    encoders: dict[str, Any],
    *,
    device: torch.device,
    band_power: bool,
    rank: int = 0,
    world: int = 1,
    forward: Any = None,
) -> Embedded:
    """This rank's share of the task's batches embedded by each encoder (`forward(eeg, positions)` for
    the trained one, when given: through a sharding wrapper), gathered on every rank in batch order."""
    share: dict[int, dict[str, Any]] = {}
    for index, counted in probe.rank_slots(rank, world):
        split, rows = probe.batches[index]
        (batch,) = labelled_batches(
            probe.url,
            split,
            probe.task,
            clip=probe.clip,
            batch_windows=BATCH_WINDOWS,
            rows=rows,
            table=probe.tables[split],
        )
        eeg, positions = batch.eeg.to(device), batch.positions.to(device)
        out: dict[str, Any] = {"labels": batch.labels}
        for name, encoder in encoders.items():
            run = forward if (name == ENCODER and forward is not None) else None
            features = (
                run(eeg, positions)
                if run is not None
                else embed_batch(encoder, eeg, positions, pooling="mean", layers="last")
            )
            out[name] = features.float().cpu().numpy()
        if band_power:
            out[BAND_POWER] = (
                band_power_features(batch.eeg.numpy().astype(np.float64), batch.sfreq),
                [c or [f"ch{i}" for i in range(batch.eeg.shape[1])] for c in batch.channels],
            )
        if counted:
            share[index] = out
    merged = _gather(share, world)
    order = range(len(probe.batches))
    splits = {split: [k for k in order if probe.batches[k][0] == split] for split in SPLITS}
    labels = {split: np.concatenate([merged[k]["labels"] for k in ks]) for split, ks in splits.items()}
    features = {
        name: {split: np.concatenate([merged[k][name] for k in ks]) for split, ks in splits.items()}
        for name in encoders
    }
    powers = None
    if band_power:
        powers = {}
        everything = [(split, k) for split, ks in splits.items() for k in ks]
        per_window = [w for _, k in everything for w in merged[k][BAND_POWER][0]]
        channels = [c for _, k in everything for c in merged[k][BAND_POWER][1]]
        aligned = align_channels(per_window, channels)  # one channel union over the task's windows
        start = 0
        for split in SPLITS:
            powers[split] = aligned[start : start + len(labels[split])]
            start += len(labels[split])
    return Embedded(labels, features, powers)


def score_probe(
    embedded: Embedded, n_classes: int, model: str, seed: int, shuffle: list[int] | None = None
) -> dict[str, float]:
    """`fit_and_score` on one model's features (or the band powers), as `eegfm probe` calls it."""
    features = embedded.band_power if model == BAND_POWER else embedded.features[model]
    assert features is not None
    return fit_and_score(
        *((features[s], embedded.labels[s]) for s in SPLITS), n_classes, shuffle_seed=shuffle
    )


def probe_columns(
    name: str, metrics: dict[str, float], baselines: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The metrics.csv columns: probe/<task>/<metric> for the encoder (the chosen C and k included),
    probe/<task>/<baseline>/<metric> for each baseline's test metrics."""
    columns = {f"probe/{name}/{k}": float(v) for k, v in metrics.items()}
    for baseline, values in baselines.items():
        for k, v in values.items():
            if k not in ("C", "k", "shuffles") and "val_" not in k:
                columns[f"probe/{name}/{baseline}/{k}"] = float(v)
    return columns


def encoder_of(pl_module: pl.LightningModule) -> ReveEncoder | MaskedCodeEncoder:
    """The trained encoder the probe embeds with: the objective's `model.encoder`."""
    encoder = getattr(getattr(pl_module, "model", None), "encoder", None)
    if not isinstance(encoder, ReveEncoder | MaskedCodeEncoder):
        raise ConfigError(
            f"eval.tasks: the in-loop probe embeds with a REVE or masked-code encoder; this objective "
            f"({type(pl_module).__name__}) has none; drop eval.tasks"
        )
    return encoder


@dataclass
class InLoopProbe(pl.Callback):
    """Probes every task after every `every_n_steps`-th optimizer step and logs `probe/<task>/…` in the
    finished step's row of the loggers (metrics.csv, TensorBoard), with `probe/<task>/seconds`."""

    probes: list[ProbeSet]
    every_n_steps: int
    seed: int
    """eval.seed: the random-init encoder's weights and the label shuffles."""
    shuffles: int
    """eval.probe_shuffles."""
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Per task, the fixed baselines' metrics, computed at this process's first evaluation (rank 0)."""
    embedded_baselines: set[str] = field(default_factory=set)
    """Tasks whose baselines this process has embedded (every rank; the metrics are rank 0's)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        encoder_of(pl_module)  # an objective without a probe-able encoder stops before training

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not completes_step(batch) or trainer.global_step % self.every_n_steps:
            return
        started = time.perf_counter()
        columns: dict[str, float] = {}
        for probe in self.probes:
            task_started = time.perf_counter()
            task_columns = self.run(trainer, pl_module, probe)
            if trainer.is_global_zero:
                task_columns[f"probe/{probe.name}/seconds"] = time.perf_counter() - task_started
            columns.update(task_columns)
        columns = _broadcast(columns, trainer.world_size)
        seconds = time.perf_counter() - started
        for callback in trainer.callbacks:
            if isinstance(callback, Throughput):
                callback.started += seconds  # windows/s measures training, not probing
        step = trainer.global_step - 1  # the finished step's row, as val_* (0-based step column)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(columns, step=step)
        for probe in self.probes:
            accuracy = columns[f"probe/{probe.name}/balanced_accuracy"]
            rank_zero_info(
                f"step {step}: probe {probe.name} balanced accuracy {accuracy:.4f} "
                f"({probe.windows} windows, {columns[f'probe/{probe.name}/seconds']:.1f} s)"
            )

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: ProbeSet) -> dict[str, float]:
        """One task's probe: embedded on every rank in eval mode without gradients (modes restored after),
        fit on rank 0; returns rank 0's columns (other ranks: {})."""
        strategy = trainer.strategy
        encoder = encoder_of(pl_module)
        modes = {m: m.training for m in pl_module.modules()}
        before = _global_states()
        forward = None
        if isinstance(strategy, FSDPStrategy | DeepSpeedStrategy):
            # Their wrappers gather the sharded weights: the forward goes through them, on every rank.
            def embed(eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
                return embed_batch(encoder, eeg, positions, pooling="mean", layers="last")

            pl_module._inloop_probe_embed = embed  # what the redirection calls inside the wrapper

            def forward(eeg: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
                return strategy._forward_redirection(
                    strategy.model, pl_module, "_inloop_probe_embed", eeg, positions
                )

        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world = trainer.world_size if distributed else 1
        pl_module.eval()
        try:
            with torch.no_grad(), strategy.precision_plugin.val_step_context():
                columns = self.probe_once(
                    probe,
                    encoder,
                    device=pl_module.device,
                    rank=trainer.global_rank if world > 1 else 0,
                    world=world,
                    forward=forward,
                )
        finally:
            for module, training in modes.items():
                module.training = training
            pl_module.__dict__.pop("_inloop_probe_embed", None)
        if not _same_states(before, _global_states()):
            raise RuntimeError(
                f"step {trainer.global_step}: the in-loop probe drew from a global random generator, which "
                "would change training"
            )
        return columns

    def probe_once(
        self,
        probe: ProbeSet,
        encoder: ReveEncoder | MaskedCodeEncoder,
        *,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        forward: Any = None,
    ) -> dict[str, float]:
        """One task's probe of `encoder` (in eval mode, under no_grad), no Lightning needed: this rank's
        share embedded and gathered, the probe fit on rank 0; rank 0's columns (other ranks: {})."""
        first = probe.name not in self.embedded_baselines
        encoders: dict[str, Any] = {ENCODER: encoder}
        if first:  # built inside a forked generator: training's global generators stay as they were
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                encoders[RANDOM_INIT] = random_init_like(encoder, self.seed).to(device)
        embedded = embed_probe_set(
            probe, encoders, device=device, band_power=first, rank=rank, world=world, forward=forward
        )
        columns: dict[str, float] = {}
        if rank == 0:
            n = probe.task.n_classes
            if first:
                self.baselines[probe.name] = {
                    RANDOM_INIT: score_probe(embedded, n, RANDOM_INIT, self.seed),
                    BAND_POWER: score_probe(embedded, n, BAND_POWER, self.seed),
                }
            metrics = score_probe(embedded, n, ENCODER, self.seed)
            baselines = dict(self.baselines[probe.name])
            if self.shuffles:
                baselines[SHUFFLED] = mean_over_shuffles(
                    [
                        score_probe(embedded, n, ENCODER, self.seed, [self.seed, i])
                        for i in range(self.shuffles)
                    ]
                )
            columns = probe_columns(probe.name, metrics, baselines)
        self.embedded_baselines.add(probe.name)
        return columns


def _broadcast(columns: dict[str, float], world: int) -> dict[str, float]:
    """Rank 0's columns on every rank."""
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return columns
    box = [columns]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def probe_callback(cfg: PretrainConfig) -> InLoopProbe | None:
    """The run's `InLoopProbe`, or None without `eval.tasks`; the tasks' windows are chosen here, at
    start-up, so missing or unlabelled task shards stop the run before it trains."""
    settings = cfg.eval
    if not settings.tasks or not settings.every_n_steps:
        return None
    if cfg.objective == "tokenizer":
        raise ConfigError(
            "eval.tasks: a tokenizer has no encoder to probe; probe its stage-2 (mcm) run, or drop eval.tasks"
        )
    probes = [
        load_probe_set(task, settings.max_windows, settings.seed, cfg.data.clip, f"eval.tasks[{i}].shards")
        for i, task in enumerate(settings.tasks)
    ]
    return InLoopProbe(probes, settings.every_n_steps, settings.seed, settings.probe_shuffles)
