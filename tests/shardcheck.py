"""Checks of the shard contract that several test modules apply to what ingest wrote."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from eegfm.ingest import contract


def read_shard(path: Path | str) -> dict[str, dict[str, bytes]]:
    """A tar shard as {key: {suffix: bytes}}, in member order, with plain tarfile."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path) as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            key, suffix = base.split(".", 1)
            samples[key][suffix] = tar.extractfile(member).read()
    return dict(samples)


def check_crcs(shard: Path, index: dict[str, Any]) -> None:
    """Every index row's last column is zlib.crc32 of its byte range of the tar; the ranges tile the tar's
    samples back to back from byte 0."""
    data = shard.read_bytes()
    assert index["columns"][:3] == ["key", "offset", "size"] and index["columns"][-1] == "crc32"
    assert all(len(row) == len(index["columns"]) for row in index["samples"])
    end = 0
    for key, offset, size, *_, crc in index["samples"]:
        assert offset == end, f"{shard.name}: {key} does not start where the previous sample ended"
        assert zlib.crc32(data[offset : offset + size]) == crc, f"{shard.name}: crc32 of {key}"
        end = offset + size


def check_index(shard: Path, samples: dict[str, dict[str, bytes]]) -> None:
    """The index beside a shard names its samples in order; each byte range is that sample's members,
    and its crc32 theirs."""
    index = json.loads(shard.with_name(contract.index_name(shard.name)).read_text())
    assert index["format"] == contract.INDEX_FORMAT and index["shard"] == shard.name
    assert index["columns"] == ["key", "offset", "size", "channels", "times", "crc32"]
    data = shard.read_bytes()
    assert index["bytes"] == len(data)
    assert [row[0] for row in index["samples"]] == list(samples)
    check_crcs(shard, index)
    for key, offset, size, channels, times, _ in index["samples"]:
        with tarfile.open(fileobj=io.BytesIO(data[offset : offset + size])) as tar:
            members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
        assert members == samples[key]
        eeg = np.load(io.BytesIO(members[contract.EEG_SUFFIX]), allow_pickle=False)
        assert eeg.shape == (channels, times)


def check_contract(out: Path, window_samples: int = 2000, dtype: str = "float16") -> dict[str, Any]:
    """Assert the shard contract over a local output folder; returns the manifest."""
    manifest = json.loads((out / contract.MANIFEST_NAME).read_text())
    seen: set[str] = set()
    total = 0
    for shard in manifest["shards"]:
        assert shard["url"] == contract.shard_name(
            manifest["dataset"], shard["split"], shard["task"], int(shard["url"][-10:-4])
        )
        samples = read_shard(out / shard["url"])
        assert len(samples) == shard["samples"] > 0
        check_index(out / shard["url"], samples)
        for key, members in samples.items():
            assert key not in seen, f"duplicate key {key}"
            seen.add(key)
            assert set(members) == {contract.EEG_SUFFIX, contract.POS_SUFFIX, contract.META_SUFFIX}
            eeg = np.load(io.BytesIO(members[contract.EEG_SUFFIX]), allow_pickle=False)
            pos = np.load(io.BytesIO(members[contract.POS_SUFFIX]), allow_pickle=False)
            meta = json.loads(members[contract.META_SUFFIX])
            assert set(contract.REQUIRED_META) <= set(meta), set(contract.REQUIRED_META) - set(meta)
            n_channels = len(meta["channels"])
            assert eeg.dtype == np.dtype(dtype) and eeg.shape == (n_channels, window_samples)
            assert pos.dtype == np.float32 and pos.shape == (n_channels, 3)
            assert np.all(np.isfinite(eeg)) and np.all(np.isfinite(pos))
            assert np.all(np.abs(pos) < 0.2), "positions must be metres"
            assert meta["split"] == shard["split"] and meta["units"] == "uV" and meta["sfreq"] == 200.0
            assert meta["montage"] == contract.montage_tag(meta["reference"], meta["channels"])
            assert len(meta["channel_mean"]) == len(meta["channel_std"]) == n_channels
            assert key.startswith(contract.recording_key(meta["source_file"]))
            assert meta["preprocess_hash"] == manifest["preprocess_hash"]
            assert meta["preprocess"] == {
                **manifest["config"]["preprocess"],
                "mains_hz": manifest["config"]["mains_hz"],
            }
        total += len(samples)
    files = manifest["files"]
    assert len({f["path"] for f in files}) == len(files), "an input file is listed twice"
    for f in files:
        assert f["status"] in ("written", "skipped")
        assert (f["status"] == "skipped") == bool(f["reason"]), f
        assert not (f["reason"] or "").startswith("failed:"), f"ingest crashed on {f['path']}: {f['reason']}"
    assert sum(f["samples"] for f in files) == total == manifest["totals"]["samples"]
    return manifest
