"""The node-local shard cache against a real S3 server (SeaweedFS): requests counted by the server itself."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import fsspec
import pytest

from eegfm.errors import ConfigError
from eegfm.pretrain.config import DataConfig
from eegfm.pretrain.plan import Cursor
from eegfm.pretrain.shard_cache import SUFFIX
from eegfm.pretrain.stream import ShardStream
from eegfm.pretrain.table import DatasetSpec, load_table

pytestmark = pytest.mark.s3
BUDGET = 100


@pytest.fixture
def s3_table(s3_env, tueg_on_s3: str):
    return load_table([DatasetSpec(tueg_on_s3)], "train")


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
    before = s3_env.settled_counts("data")
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
    before = s3_env.settled_counts("data")
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
    before = s3_env.settled_counts("data")
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


_LOAD_TABLE = """
import hashlib, sys
import numpy as np
from eegfm.pretrain.node_table import load_table_on_node
from eegfm.pretrain.table import DatasetSpec
table = load_table_on_node([DatasetSpec(sys.argv[1])], "train", None, sys.argv[2])
assert all(isinstance(getattr(table, c), np.memmap) for c in ("shard", "offset", "crc")), type(table.offset)
print(table_digest(table))
"""


def table_digest(table) -> str:
    import hashlib

    import numpy as np

    digest = hashlib.sha256(repr((table.shard_urls, table.shard_bytes, table.dataset_identity)).encode())
    for column in ("shard", "offset", "size", "channels", "times", "crc"):
        digest.update(np.ascontiguousarray(getattr(table, column)).tobytes())
    return digest.hexdigest()


def test_the_processes_of_a_node_read_the_shard_indexes_once(
    s3_table, s3_env, tueg_on_s3: str, tmp_path: Path
) -> None:
    """Two processes starting at once on one node (one cache folder): one builds the table, from one GET
    per shard index; both map the same file, equal to the table read directly. Each also reads the
    manifest for its key (one GET), and the builder once more (a HEAD and a GET, which SeaweedFS counts
    as two GETs): 15 + 4. The old way, each process reading every index with a HEAD and a GET, made
    2 × (2 + 2 × 15) = 64."""
    import subprocess
    import sys

    code = "from test_shard_cache import table_digest\n" + _LOAD_TABLE
    command = [sys.executable, "-c", code, tueg_on_s3, str(tmp_path / "node")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    before = s3_env.settled_counts("data")
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert outputs == [table_digest(s3_table)] * 2
    shards = len(s3_table.shard_urls)
    counted = s3_env.wait_for_requests(before, {"GET": shards + 4}, bucket="data")
    assert counted == {"GET": shards + 4}, counted
    # A second start on the node reads only the manifest.
    before = s3_env.settled_counts("data")
    assert subprocess.run(command, env=env, capture_output=True, text=True).stdout.strip() == outputs[0]
    assert s3_env.wait_for_requests(before, {"GET": 1}, bucket="data") == {"GET": 1}


def test_a_prefetch_never_evicts_what_is_needed_sooner(s3_table, s3_env, tmp_path: Path) -> None:
    """Shards A (needed now) and B (next) fill the cache; a prefetch of C (also next) finds no shard
    needed later than itself and gives up, evicting nothing; the read of C evicts B, the one needed
    furthest ahead, never A. (Eviction by file age or name would take A, fetched first.)"""
    from eegfm.pretrain.shard_cache import ShardCache

    a, b, c = 0, 1, 2
    sizes = s3_table.shard_bytes
    cache = ShardCache(str(tmp_path), sizes[a] + max(sizes[b], sizes[c]), s3_table.shard_urls, sizes)
    cache.plan_ahead([[a], [b, c]])
    assert cache.ensure(a) and cache.ensure(b)
    assert cache.ensure(c, ahead=True) is False
    assert cache.path(a).exists() and cache.path(b).exists() and not cache.path(c).exists()
    cache.read(c, [0], [512])
    assert cache.path(a).exists() and not cache.path(b).exists() and cache.path(c).exists()
    assert cache.fetches == 3


def test_a_killed_fetch_leaves_nothing_behind(s3_table, tmp_path: Path) -> None:
    """A temporary whose shard lock is free (its fetcher died) is removed by the next process; one whose
    lock is held (a fetch in flight) is left alone, and its reservation counts against the limit."""
    import fcntl

    from eegfm.pretrain.shard_cache import FETCH, ShardCache

    urls, sizes = s3_table.shard_urls, s3_table.shard_bytes
    names = ShardCache(str(tmp_path), 0, urls, sizes).names
    dead = tmp_path / f"{names[0]}{FETCH}{sizes[0]}-abcd1234"
    live = tmp_path / f"{names[1]}{FETCH}{sizes[1]}-efgh5678"
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    with open(tmp_path / f"{names[1]}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's fetch of shard 1, still running
        cache = ShardCache(str(tmp_path), 0, urls, sizes)
        assert not dead.exists() and live.exists()
        assert cache._held() == ({}, sizes[1])


def test_a_shard_corrupt_on_the_server_stops_the_run_naming_it(
    s3_env, tueg_shards: Path, tmp_path: Path
) -> None:
    """The cache blames a CRC mismatch on its own copy first and fetches the shard again; when the fresh
    copy fails too, the stream stops with one line naming the S3 shard, the byte and the sample."""
    import shutil

    from eegfm.pretrain.stream import FAILURE

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tueg_shards, corrupt)
    victim = sorted(corrupt.glob("*-000003.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    victim.write_bytes(bytes(data))
    fsspec.filesystem("s3").put(str(corrupt), "data/corrupt", recursive=True)
    table = load_table([DatasetSpec("s3://data/corrupt")], "train")
    stream = ShardStream(
        table, [None], seed=0, budget=BUDGET, clip=15.0, start=Cursor(), rank=0, world=1, accumulation=1,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    failure = next(b for b in stream if FAILURE in b)[FAILURE]
    assert f"s3://data/corrupt/{victim.name} @ byte" in failure and "checksum mismatch" in failure, failure
    assert "(sample " in failure and "\n" not in failure


def test_the_default_limit_is_the_same_however_full_the_cache_is(s3_table, s3_env, tmp_path: Path) -> None:
    """With `data.cache_limit_gb` null, the limit is 90 % of free space plus what the cache holds: a
    process starting after the cache filled gets the first one's limit, but for what *other* writers
    changed on the disk meanwhile (the other half of the parallel suite writes to the same disk), which
    the test measures and takes out. A limit of 90 % of free space alone would come out 0.9 x 7 MB (the
    cache's own shards) lower, seven times the tolerance; an unlimited default would fill the disk."""
    import shutil

    from eegfm.pretrain.shard_cache import ShardCache

    urls, sizes = s3_table.shard_urls, s3_table.shard_bytes
    free_before = shutil.disk_usage(tmp_path).free
    empty = ShardCache(str(tmp_path), None, urls, sizes)
    for shard in range(len(urls)):
        empty.ensure(shard)
    cached = sum(p.stat().st_size for p in tmp_path.glob("*" + SUFFIX))
    free_after = shutil.disk_usage(tmp_path).free
    full = ShardCache(str(tmp_path), None, urls, sizes)
    others = (free_before - free_after) - cached  # bytes other writers took meanwhile (negative: freed)
    drift = full.limit_bytes - (empty.limit_bytes - 0.9 * others)
    assert cached == sum(sizes) and abs(drift) < sum(sizes) / 8, (empty.limit_bytes, full.limit_bytes, others)
    assert DataConfig().cache_limit_gb is None
