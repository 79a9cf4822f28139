"""Labelled windows from task shards: the pretraining shard contract plus a label in each sample's JSON.

A task's shards are written like pretraining shards (`ingest/contract.py`); each `<key>.json` adds `task`,
`label` (an int, the index into the manifest's `classes`) and `label_name`, and `manifest.json` adds
`task`, `classes` (names in label order) and `class_counts` ({split: {class: n}}). They are read with the
pretraining table and decoder (same checksums, same normalisation as in training); only the label is
pulled here, from the JSON member the decoder leaves aside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from eegfm.errors import DataError
from eegfm.ingest import contract
from eegfm.pretrain.decode import check_crc, decode_sample, tar_members
from eegfm.pretrain.stream import read_ranges
from eegfm.pretrain.table import DatasetSpec, ShardTable, load_table, manifest_url, sample_key
from eegfm.storage import read_json

HOW_TO_WRITE = "write task shards with `eegfm shards --task`"


@dataclass(frozen=True)
class TaskInfo:
    """What a task's manifest says about its labels."""

    name: str
    classes: tuple[str, ...]
    class_counts: dict[str, dict[str, int]]
    manifest: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class LabelledBatch:
    """Windows of one shape: EEG z-scored and clipped as in pretraining, with their labels."""

    eeg: torch.Tensor  # (B, C, T) float32
    positions: torch.Tensor  # (B, C, 3) metres
    labels: np.ndarray  # (B,) int64
    keys: list[str]
    channels: list[list[str]]  # each window's channel names, from its metadata
    sfreq: float
    rows: np.ndarray  # the windows' rows in the split's table


def read_task_info(url: str) -> TaskInfo:
    """The task's name and classes from its manifest; a manifest without them was not written as a task."""
    location, _ = manifest_url(url)
    try:
        manifest = read_json(location)
    except FileNotFoundError:
        raise DataError(f"{location}: no manifest (is ingest finished? `eegfm merge`)") from None
    classes = manifest.get("classes")
    if not manifest.get("task") or not isinstance(classes, list) or len(classes) < 2:
        raise DataError(f"{location}: no `task` and `classes` (not labelled task shards): {HOW_TO_WRITE}")
    return TaskInfo(
        str(manifest["task"]), tuple(map(str, classes)), manifest.get("class_counts", {}), location
    )


def load_split(url: str, split: str) -> ShardTable:
    """The split's sample table, read as the pretraining stream reads it."""
    return load_table([DatasetSpec(url)], split)


def shape_groups(table: ShardTable, rows: np.ndarray, batch_windows: int) -> list[np.ndarray]:
    """`rows` cut into batches of one (channels, times) shape, at most `batch_windows` each, in table order
    within a shape: the encoder sees no padding, and the order is the same on every run."""
    rows = np.asarray(rows, dtype=np.int64)
    shapes = np.stack([table.channels[rows], table.times[rows]], axis=1)
    batches = []
    for shape in np.unique(shapes, axis=0):
        mine = rows[(shapes == shape).all(axis=1)]
        batches.extend(np.split(mine, range(batch_windows, len(mine), batch_windows)))
    return batches


def labelled_batches(
    url: str,
    split: str,
    task: TaskInfo,
    *,
    clip: float,
    batch_windows: int = 64,
    rows: np.ndarray | None = None,
    table: ShardTable | None = None,
) -> Iterator[LabelledBatch]:
    """The split's labelled windows (or only `rows` of its table, e.g. one rank's share), batched by shape.
    Every sample is checked against its CRC-32, decoded as in pretraining, and must carry a label of the
    task; otherwise a DataError names the shard, the byte and the sample."""
    table = table if table is not None else load_split(url, split)
    rows = np.arange(len(table)) if rows is None else rows
    for batch_rows in shape_groups(table, rows, batch_windows):
        urls = [table.shard_urls[i] for i in table.shard[batch_rows]]
        starts = table.offset[batch_rows]
        blobs = read_ranges(urls, starts, table.size[batch_rows])
        eeg = torch.empty(
            (len(batch_rows), int(table.channels[batch_rows[0]]), int(table.times[batch_rows[0]]))
        )
        keys, positions, labels, channels, rates = [], [], [], [], set()
        for row, blob, shard_url, start, out in zip(
            batch_rows.tolist(), blobs, urls, starts.tolist(), eeg, strict=True
        ):
            check_crc(blob, table.crc[row], partial(_location, table, row))
            where = f"{shard_url} @ byte {start}"
            key, pos = decode_sample(blob, where, clip, out)
            meta = sample_metadata(blob, f"{where} (sample {key})")
            labels.append(sample_label(meta, task, f"{where} (sample {key})"))
            keys.append(key)
            positions.append(pos)
            channels.append([str(c) for c in meta.get("channels", [])])
            rates.add(float(meta.get("sfreq", 200.0)))
        if len(rates) != 1:
            raise DataError(f"{urls[0]}: windows of one shape at several rates {sorted(rates)}")
        yield LabelledBatch(
            eeg,
            torch.from_numpy(np.stack(positions)),
            np.asarray(labels, dtype=np.int64),
            keys,
            channels,
            rates.pop(),
            batch_rows,
        )


def _location(table: ShardTable, row: int) -> str:
    url = table.shard_urls[table.shard[row]]
    return f"{url} @ byte {table.offset[row]} (sample {sample_key(table, row)})"


def sample_metadata(blob: bytes, where: str) -> dict:
    """A sample's `<key>.json` member, parsed (the decoder reads it for the channel statistics only)."""
    for name, body in tar_members(memoryview(blob), where).items():
        if name.rsplit("/", 1)[-1].split(".", 1)[-1] == contract.META_SUFFIX:
            try:
                return json.loads(bytes(body))
            except ValueError as e:
                raise DataError(f"{where}: its metadata is not JSON ({e})") from None
    raise DataError(f"{where}: a sample has no {contract.META_SUFFIX} member")


def sample_label(meta: dict, task: TaskInfo, where: str) -> int:
    """The sample's class index, checked against the task it should belong to."""
    label = meta.get("label")
    if meta.get("task") != task.name or isinstance(label, bool) or not isinstance(label, int):
        raise DataError(
            f"{where}: no label of task {task.name!r} in its metadata (task={meta.get('task')!r}, "
            f"label={label!r}): {HOW_TO_WRITE}"
        )
    if not 0 <= label < task.n_classes:
        raise DataError(f"{where}: label {label} outside the task's {task.n_classes} classes {task.classes}")
    return label
