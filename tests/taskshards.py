"""Labelled task shards for the probe tests, written with ingest's own shard writer and manifest builder.

Until `eegfm shards --task` writes them, this is the task-shard contract in one place: pretraining shards
(`ingest/contract.py`) whose `<key>.json` also holds `task`, `label`, `label_name`, and whose manifest also
holds `task`, `classes` and `class_counts`. The classes differ in physiology, not in label noise: class 0
is a dominant 2-Hz delta rhythm (frontal), class 1 a 10-Hz alpha rhythm (occipital), class 2 (if asked
for) a 20-Hz beta rhythm (central), each over a 1/f background; every subject is in one split only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from eegfm.ingest import contract
from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.indexed_tar import IndexedTarWriter
from eegfm.ingest.manifest import build_manifest
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.windows import HISTOGRAM_EDGES
from eegfm.storage import write_json

SFREQ = 200.0
WINDOW_S = 10.0
CLASSES = ("delta", "alpha", "beta")
RHYTHM_HZ = (2.0, 10.0, 20.0)
REFERENCE = "average"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _pink_noise(rng: np.random.Generator, channels: int, samples: int) -> np.ndarray:
    """1/f background: white noise shaped in the frequency domain, unit standard deviation per channel."""
    spectrum = np.fft.rfft(rng.standard_normal((channels, samples)), axis=1)
    freqs = np.fft.rfftfreq(samples, 1 / SFREQ)
    spectrum /= np.sqrt(np.maximum(freqs, 0.5))
    noise = np.fft.irfft(spectrum, n=samples, axis=1)
    return noise / noise.std(axis=1, keepdims=True)


def _spatial_gains(positions: np.ndarray) -> list[np.ndarray]:
    """Where each rhythm is strongest: delta frontal (+y), alpha occipital (−y), beta central (high z)."""
    y, z = positions[:, 1] / np.abs(positions[:, 1]).max(), positions[:, 2] / np.abs(positions[:, 2]).max()
    return [0.6 + 0.4 * np.clip(y, -1, 1), 0.6 + 0.4 * np.clip(-y, -1, 1), 0.6 + 0.4 * np.clip(z, -1, 1)]


def window(
    rng: np.random.Generator, label: int, positions: np.ndarray, rhythm_uv: float, background_uv: float
) -> np.ndarray:
    """One C×T window (µV) of class `label`: its rhythm, with a jittered frequency and per-channel phase,
    over a 1/f background."""
    channels, samples = len(positions), int(WINDOW_S * SFREQ)
    t = np.arange(samples) / SFREQ
    freq = RHYTHM_HZ[label] * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.3, size=(channels, 1))
    amplitude = rhythm_uv * rng.uniform(0.7, 1.3) * _spatial_gains(positions)[label][:, None]
    rhythm = amplitude * np.sin(2 * np.pi * freq * t[None, :] + phase)
    return rhythm + background_uv * _pink_noise(rng, channels, samples)


def write_task_shards(
    out: Path,
    *,
    task: str = "rhythm",
    n_classes: int = 2,
    subjects: dict[str, int] | None = None,
    windows_per_class: int = 4,
    rhythm_uv: float = 20.0,
    background_uv: float = 15.0,
    seed: int = 0,
    samples_per_shard: int = 16,
    dataset: str = "synthtask",
) -> Path:
    """Write a labelled task under `out` (shards, indexes, manifest.json); returns `out`.

    `subjects` is the number of subjects per split (default 6 train, 3 val, 3 test); each subject is one
    recording holding `windows_per_class` windows of every class, in an interleaved order.
    """
    subjects = subjects or {"train": 6, "val": 3, "test": 3}
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    table = montage_positions("standard_1005")
    positions = np.array([table[c] for c in GENERIC_EEG], dtype=np.float32)
    tag = contract.montage_tag(REFERENCE, GENERIC_EEG)
    classes = CLASSES[:n_classes]
    shards, files = [], []
    class_counts: dict[str, dict[str, int]] = {}
    subject_number = 0
    for split, count in subjects.items():
        class_counts[split] = dict.fromkeys(classes, 0)
        writer, shard_index, in_shard = None, 0, 0
        for _ in range(count):
            subject = f"s{subject_number:03d}"
            subject_number += 1
            source = f"{subject}/{subject}_task.edf"
            labels = np.tile(np.arange(n_classes), windows_per_class)
            rng.shuffle(labels)
            windows = [window(rng, int(label), positions, rhythm_uv, background_uv) for label in labels]
            stacked = np.stack(windows)
            mean, std = stacked.mean(axis=(0, 2)), stacked.std(axis=(0, 2))
            for index, (label, eeg) in enumerate(zip(labels.tolist(), windows, strict=True)):
                if writer is None:
                    name = contract.shard_name(dataset, split, 0, shard_index)
                    writer = IndexedTarWriter(str(out), name, ("channels", "times"))
                meta = {
                    "dataset": dataset,
                    "subject": subject,
                    "session": "0",
                    "recording": f"{subject}_task",
                    "source_file": source,
                    "split": split,
                    "channels": GENERIC_EEG,
                    "channel_pairs": None,
                    "montage": tag,
                    "montage_name": contract.montage_name(REFERENCE, GENERIC_EEG),
                    "sfreq": SFREQ,
                    "orig_sfreq": SFREQ,
                    "start_s": index * WINDOW_S,
                    "duration_s": WINDOW_S,
                    "window_index": index,
                    "reference": REFERENCE,
                    "units": contract.UNITS,
                    "preprocess": {},
                    "preprocess_hash": "synthetic",
                    "channel_mean": mean.tolist(),
                    "channel_std": std.tolist(),
                    "task": task,
                    "label": label,
                    "label_name": classes[label],
                }
                members = {
                    contract.EEG_SUFFIX: _npy(eeg.astype(np.float16)),
                    contract.POS_SUFFIX: _npy(positions),
                    contract.META_SUFFIX: json.dumps(meta, sort_keys=True).encode(),
                }
                writer.write(contract.sample_key(source, index), members, eeg.shape)
                class_counts[split][classes[label]] += 1
                in_shard += 1
                if in_shard == samples_per_shard:
                    shards.append(_commit(writer, split, in_shard))
                    writer, shard_index, in_shard = None, shard_index + 1, 0
            files.append(
                {
                    "path": source,
                    "status": "written",
                    "reason": None,
                    "split": split,
                    "subject": subject,
                    "montage": tag,
                    "channels": GENERIC_EEG,
                    "hours": len(windows) * WINDOW_S / 3600,
                    "samples": len(windows),
                    "dropped_channels": {},
                    "dropped_windows": {},
                }
            )
        if writer is not None:
            shards.append(_commit(writer, split, in_shard))
    manifest = build_manifest(
        [
            {
                "dataset": dataset,
                "preprocess_hash": "synthetic",
                "config": {"task": task},
                "files": files,
                "shards": shards,
                "histogram": [0] * (len(HISTOGRAM_EDGES) - 1),
                "montages": {
                    tag: {
                        "montage_name": contract.montage_name(REFERENCE, GENERIC_EEG),
                        "channels": GENERIC_EEG,
                        "positions": positions.tolist(),
                    }
                },
            }
        ]
    )
    manifest.update(task=task, classes=list(classes), class_counts=class_counts)
    write_json(str(out / contract.MANIFEST_NAME), manifest)
    return out


def _commit(writer: IndexedTarWriter, split: str, samples: int) -> dict:
    size = writer.commit()
    return {
        "url": writer.name,
        "split": split,
        "task": 0,
        "samples": samples,
        "hours": samples * WINDOW_S / 3600,
        "bytes": size,
    }
