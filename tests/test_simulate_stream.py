"""`eegfm simulate-stream`: the real epoch plan on a synthetic REVE-like table, at a small scale."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from eegfm.pretrain.config import DataConfig
from eegfm.pretrain.simulate import synthetic_corpus

HOURS = 2000.0  # 720k windows in ≈ 520 shards of 256 MB: 5 blocks at the default


def _simulate(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "eegfm.cli", "simulate-stream", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def figures() -> dict:
    done = _simulate("--hours", str(HOURS), "--gpus", "8", "--nodes", "2", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_synthetic_table_is_reve_like() -> None:
    corpus = synthetic_corpus(200.0)
    table = corpus.table
    assert len(table) == 200 * 360 and table.dataset_starts[-1] == len(table)
    assert set(np.unique(table.channels).tolist()) == {19, 21, 22, 32, 64, 128}
    per_shard = np.bincount(table.shard)
    assert (per_shard > 0).all() and np.array_equal(table.shard, np.sort(table.shard))
    ends = table.offset + table.size
    assert all(int(ends[table.shard == s].max()) == b for s, b in enumerate(table.shard_bytes))
    assert max(table.shard_bytes) < 256 * 2**20 + int(table.size.max())
    # Recordings are written whole, one after another: a shard holds few of them.
    assert len(np.unique(corpus.recording)) < len(table) / 100


def test_the_figures_are_consistent(figures: dict) -> None:
    f = figures
    assert f["shuffle_block"] == DataConfig.shuffle_block and f["windows"] == HOURS * 360
    assert f["blocks"] == math.ceil(f["shards"] / f["shuffle_block"]) > 1
    assert f["planned_windows"] == f["windows"]
    assert math.isclose(f["epoch_seconds"], f["windows"] / (8 * 7400.0))
    # Every node reads every shard once per epoch (no weights: one copy of each).
    assert f["shard_reads_per_node_per_epoch"] == f["shards"]
    assert math.isclose(f["object_gets_per_s"] * f["epoch_seconds"], 2 * f["shards"])
    assert math.isclose(f["node_read_bytes_per_s"] * f["epoch_seconds"], f["bytes_per_node_per_epoch"])
    assert f["object_gets_per_s_window_reads"] == 8 * 7400.0
    # The working window is two blocks of ~256-MB shards, far less than an epoch's reads.
    two_blocks = 2 * f["shuffle_block"] * 2**28
    assert 0.75 * two_blocks < f["cache_bytes_per_node"] <= 1.01 * two_blocks
    assert f["cache_bytes_per_node"] < f["bytes_per_node_per_epoch"] / 2
    # A few bytes per window, not the global plan's ~80.
    assert f["plan_peak_rss_mib"] * 2**20 / f["windows"] < 32


def test_the_default_block_mixes_at_least_half_as_many_recordings_as_a_global_shuffle(figures: dict) -> None:
    assert figures["recordings_per_micro_batch"] >= 0.5 * figures["recordings_per_micro_batch_global"]
    assert figures["subjects_per_micro_batch"] >= 0.4 * figures["subjects_per_micro_batch_global"]
    # ... while reading far fewer shards per micro-batch than the global shuffle's one per window.
    assert figures["shards_per_micro_batch"] < 0.6 * figures["shards_per_micro_batch_global"]


def test_the_global_estimate_matches_the_real_global_plan() -> None:
    """`recordings_per_micro_batch_global` is estimated by drawing micro-batches (the real global plan
    costs 1.6 GB at 60,000 h); at this scale the real one (`--shuffle-block 0`) is planned and counted."""
    done = _simulate("--hours", "600", "--gpus", "8", "--nodes", "2", "--shuffle-block", "0", "--json")
    f = json.loads(done.stdout)
    for what in ("recordings", "subjects", "shards"):
        real, estimate = f[f"{what}_per_micro_batch"], f[f"{what}_per_micro_batch_global"]
        assert math.isclose(real, estimate, rel_tol=0.03), (what, real, estimate)
    assert f["object_gets_per_s"] == f["object_gets_per_s_window_reads"]  # global: a GET per window


def test_a_job_that_does_not_split_over_its_nodes_is_one_line() -> None:
    done = _simulate("--hours", "10", "--gpus", "8", "--nodes", "3")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "gpus ≥ 1 a multiple of nodes" in done.stderr
