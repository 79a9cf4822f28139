"""The node-local shard cache against a real S3 server (SeaweedFS): requests counted by the server itself."""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec
import pytest

from eegfm.errors import ConfigError
from eegfm.pretrain.plan import Cursor
from eegfm.pretrain.shard_cache import SUFFIX
from eegfm.pretrain.stream import ShardStream
from eegfm.pretrain.table import DatasetSpec, load_table

pytestmark = pytest.mark.s3
BUDGET = 100


@pytest.fixture
def s3_table(s3_env, tueg_shards: Path):
    fs = fsspec.filesystem("s3")
    if not fs.exists("data/tueg"):  # the server lives for the session
        fs.mkdir("data")
        fs.put(str(tueg_shards), "data/tueg", recursive=True)
    return load_table([DatasetSpec("s3://data/tueg")], "train")


def _epoch_keys(table, rank: int, world: int, cache_dir: Path, **kwargs) -> list[list[str]]:
    """This rank's keys, micro-batch by micro-batch, over one epoch."""
    stream = ShardStream(
        table,
        [None],
        seed=0,
        budget=BUDGET,
        clip=15.0,
        start=Cursor(),
        rank=rank,
        world=world,
        accumulation=1,
        cache_dir=str(cache_dir),
        **kwargs,
    )
    out = []
    for batch in stream:
        if batch["epoch"] > 0:
            break
        out.append(batch["keys"])
    return out


def test_two_ranks_on_a_node_fetch_each_shard_once(s3_table, s3_env, tmp_path: Path) -> None:
    shards = len(s3_table.shard_urls)
    before = s3_env.request_counts("data")
    results: dict[int, list] = {}
    ranks = [
        threading.Thread(target=lambda r=r: results.__setitem__(r, _epoch_keys(s3_table, r, 2, tmp_path)))
        for r in (0, 1)
    ]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join()
    counted = s3_env.wait_for_requests(before, {"GET": shards}, bucket="data")
    # One ranged GET per shard for the whole node (no HEAD, no per-window GET), nothing else.
    assert counted == {"GET": shards}, (counted, shards)
    assert len(list(tmp_path.glob("*" + SUFFIX))) == shards
    keys = [k for r in (0, 1) for batch in results[r] for k in batch]
    assert len(keys) == len(set(keys)) == len(s3_table)
    # A second epoch's worth from the warm cache reads nothing from the server.
    before = s3_env.request_counts("data")
    _epoch_keys(s3_table, 0, 1, tmp_path)
    assert s3_env.wait_for_requests(before, {}, bucket="data", timeout=0.5) == {}


def test_a_damaged_cached_shard_is_fetched_again(s3_table, s3_env, tmp_path: Path) -> None:
    clean = _epoch_keys(s3_table, 0, 1, tmp_path / "clean")
    cached = sorted((tmp_path / "clean").glob("*" + SUFFIX))
    truncated, corrupted = cached[0], cached[1]
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    data = bytearray(corrupted.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # a sample's payload zeroed, same size: only the CRC sees it
    corrupted.write_bytes(bytes(data))
    before = s3_env.request_counts("data")
    assert _epoch_keys(s3_table, 0, 1, tmp_path / "clean") == clean
    assert s3_env.wait_for_requests(before, {"GET": 2}, bucket="data") == {"GET": 2}


def test_a_cache_smaller_than_the_data_evicts_and_keeps_going(s3_table, s3_env, tmp_path: Path) -> None:
    unlimited = _epoch_keys(s3_table, 0, 1, tmp_path / "all")
    biggest = max(s3_table.shard_bytes)
    limit_gb = 3 * biggest / 1e9
    assert 3 * biggest < sum(s3_table.shard_bytes) / 2
    limited = _epoch_keys(s3_table, 0, 1, tmp_path / "some", cache_limit_gb=limit_gb, cache_lookahead=1)
    assert limited == unlimited
    held = sum(p.stat().st_size for p in (tmp_path / "some").glob("*" + SUFFIX))
    assert held <= 3 * biggest
    with pytest.raises(ConfigError, match=r"data\.cache_limit_gb"):
        _epoch_keys(s3_table, 0, 1, tmp_path / "tiny", cache_limit_gb=biggest / 2e9)
