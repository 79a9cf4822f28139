"""The shard contract: what ingest writes and every later stage reads.

This module is the one piece of `ingest` that `pretrain` may import (with `indexed_tar`, the shards'
writer; see the README's "Layout" and "The shard contract" sections, and the architecture notes in
`../shared/ARCHITECTURE.md` beside the checkout): names, member suffixes and the small pure functions that
both sides must compute identically.
"""

from __future__ import annotations

import hashlib
import re

SHARD_PATTERN = "{dataset}-{split}-{task}-{index:06d}.tar"
INDEX_SUFFIX = ".index.json"  # beside each shard: where each sample's bytes are, and its shape
INDEX_FORMAT = "eegfm-shard-index/2"  # /2: each row ends with the sample's crc32
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.html"
TASKS_DIR = "_tasks"  # per-task state and manifests, merged into MANIFEST_NAME

EEG_SUFFIX = "eeg.npy"  # C×T float16 (or float32), µV at the target rate
POS_SUFFIX = "pos.npy"  # C×3 float32, metres, MNE head frame
META_SUFFIX = "json"  # the metadata below

SPLITS = ("train", "val", "test")
UNITS = "uV"

# Keys every sample's JSON carries; later stages may rely on each of them.
REQUIRED_META = (
    "dataset",
    "subject",
    "session",
    "recording",
    "source_file",
    "split",
    "channels",
    "montage",
    "montage_name",
    "sfreq",
    "orig_sfreq",
    "start_s",
    "duration_s",
    "reference",
    "units",
    "preprocess_hash",
    "channel_mean",
    "channel_std",
)

# Labelled (task) shards: the same contract, plus these keys in every sample's JSON (`task` names the task
# recipe, configs/tasks/<task>.yaml; `label` is the class's index in the manifest's `classes`, `label_name`
# the class) and these in the manifest (`classes`: names in label order; `class_counts`: {split: {class:
# windows}}). A task's shards are named like a dataset's, with the task's name as the dataset part.
TASK_META = ("task", "label", "label_name")
TASK_MANIFEST = ("task", "classes", "class_counts")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def shard_name(dataset: str, split: str, task: int, index: int) -> str:
    """File name of one shard; `task` is the ingest partition that wrote it."""
    return SHARD_PATTERN.format(dataset=dataset, split=split, task=f"{task:04d}", index=index)


def task_stem(task_index: int, num_tasks: int) -> str:
    """Name (without suffix) of partition `task_index`'s manifest and journal under TASKS_DIR; the
    manifest `<stem>.json` exists once that partition has finished."""
    return f"task-{task_index:04d}-of-{num_tasks:04d}"


def index_name(shard: str) -> str:
    """The index beside a shard: `x.tar` → `x.index.json`.

    It lists, in tar order, each sample's key, the byte range [offset, offset + size) of its members
    (headers included), its EEG shape and the `zlib.crc32` of that byte range (columns `key, offset,
    size, channels, times, crc32`), so that a loader can plan batches by shape and read any sample with
    one ranged read, and check it, without opening the tar. `indexed_tar.IndexedTarWriter` writes both.
    """
    return shard.removesuffix(".tar") + INDEX_SUFFIX


def montage_tag(reference: str, channels: list[str] | tuple[str, ...]) -> str:
    """Stable short id of a reference and an ordered canonical channel set: same reference, same channels
    in the same order, same tag.

    The reference is part of it because an average-referenced and a linked-ears recording of the same
    electrodes are different signals, and `montage_name` (which every tag has exactly one of) names both.
    """
    return hashlib.sha1(f"{reference}|{','.join(channels)}".encode()).hexdigest()[:10]


def montage_name(reference: str, channels: list[str] | tuple[str, ...]) -> str:
    """Readable montage name, e.g. `tcp_ar/21`."""
    return f"{reference}/{len(channels)}"


def recording_key(source_file: str) -> str:
    """A WebDataset-safe, unique key prefix for one input file (its path relative to the corpus root).

    The file's stem keeps keys readable; a hash of the whole relative path keeps them unique. WebDataset
    splits a member name at the first dot of its base name, so keys hold only letters, digits, `_`, `-`.
    """
    name = source_file.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    slug = _UNSAFE.sub("-", stem).strip("-") or "recording"
    return f"{slug}-{hashlib.sha1(source_file.encode()).hexdigest()[:8]}"


def sample_key(source_file: str, window_index: int) -> str:
    """Key of the `window_index`-th window (counted over the whole recording, gaps included)."""
    return f"{recording_key(source_file)}_w{window_index:06d}"
