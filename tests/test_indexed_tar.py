"""The one tar + index writer of data and token shards: reproducible bytes, a crc32 per sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from shardcheck import check_crcs, read_shard

from eegfm.ingest import contract
from eegfm.ingest.indexed_tar import IndexedTarWriter


def _write(folder: Path, shape_columns: tuple[str, ...] = ("channels", "times")) -> IndexedTarWriter:
    rng = np.random.default_rng(0)
    tar = IndexedTarWriter(str(folder), "d-train-0000-000000.tar", shape_columns)
    for i in range(5):
        n = 100 + 37 * i  # sizes off the 512-byte blocks, so ranges end mid-padding
        shape = (i + 1, n) if len(shape_columns) == 2 else (i + 1, 2, 3)
        tar.write(f"k{i}", {"a.bin": rng.bytes(n), "json": json.dumps({"i": i}).encode()}, shape)
    return tar


def _index(folder: Path) -> dict:
    return json.loads((folder / contract.index_name("d-train-0000-000000.tar")).read_text())


def test_index_rows_end_with_the_crc32_of_each_sample(tmp_path: Path) -> None:
    size = _write(tmp_path).commit(note="extra field")
    shard = tmp_path / "d-train-0000-000000.tar"
    index = _index(tmp_path)
    assert index["format"] == contract.INDEX_FORMAT == "eegfm-shard-index/2"
    assert index["columns"] == ["key", "offset", "size", "channels", "times", "crc32"]
    assert index["bytes"] == size == shard.stat().st_size and index["note"] == "extra field"
    check_crcs(shard, index)
    assert list(read_shard(shard)) == [f"k{i}" for i in range(5)]
    assert sum(1 for _ in wds.WebDataset(str(shard), shardshuffle=False)) == 5

    # The checksum covers each sample's bytes: one flipped byte inside sample 3 is caught there.
    data = bytearray(shard.read_bytes())
    _, offset, length, *_ = index["samples"][3]
    data[offset + length - 600] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="crc32 of k3"):
        check_crcs(shard, index)


def test_same_samples_same_bytes_and_token_columns(tmp_path: Path) -> None:
    for folder in (tmp_path / "a", tmp_path / "b"):
        _write(folder).commit()
    assert (tmp_path / "a").joinpath("d-train-0000-000000.tar").read_bytes() == (tmp_path / "b").joinpath(
        "d-train-0000-000000.tar"
    ).read_bytes()
    assert _index(tmp_path / "a") == _index(tmp_path / "b")
    _write(tmp_path / "tok", ("channels", "patches", "codes")).commit()
    index = _index(tmp_path / "tok")
    assert index["columns"] == ["key", "offset", "size", "channels", "patches", "codes", "crc32"]
    check_crcs(tmp_path / "tok" / "d-train-0000-000000.tar", index)


def test_discarded_or_unfinished_tar_leaves_nothing_visible(tmp_path: Path) -> None:
    tar = _write(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" not in p.name] == []  # not committed yet
    tar.discard()
    assert list(tmp_path.iterdir()) == []
