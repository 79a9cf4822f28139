"""The pretraining stream: the epoch plan, rank slicing, the cursor, workers, mixing and decoding."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eegfm.errors import ConfigError, DataError
from eegfm.ingest import contract
from eegfm.pretrain.config import DataConfig
from eegfm.pretrain.datamodule import ShardDataModule, dataset_specs, fingerprint_changes
from eegfm.pretrain.decode import decode_sample
from eegfm.pretrain.plan import (
    BlockPlan,
    Cursor,
    epoch_counts,
    epoch_order,
    micro_batches,
    rank_assignments,
    table_layout,
)
from eegfm.pretrain.stream import ShardStream
from eegfm.pretrain.table import DatasetSpec, load_table

BUDGET = 100  # 100 // 21 = 4 windows of 21 channels, 5 of 19, 4 of 22


@pytest.fixture(scope="module")
def table(tueg_shards: Path):
    return load_table([DatasetSpec(str(tueg_shards))], "train")


def _stream(table, **kwargs) -> ShardStream:
    options = dict(seed=0, budget=BUDGET, clip=15.0, start=Cursor(), rank=0, world=1, accumulation=1)
    return ShardStream(table, [None] * (len(table.dataset_starts) - 1), **{**options, **kwargs})


def _take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


def test_table_matches_the_manifest(tueg_shards: Path, table) -> None:
    manifest = json.loads((tueg_shards / contract.MANIFEST_NAME).read_text())
    assert len(table) == manifest["totals"]["samples"] == table.dataset_starts[-1]
    assert len(table.shard_urls) == len(manifest["shards"])
    assert set(table.channels.tolist()) == {19, 21} and set(table.times.tolist()) == {2000}


def test_an_epoch_is_every_sample_once_in_same_shape_micro_batches(table) -> None:
    order = epoch_order(table, [None], seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(len(table)))
    samples, bounds = micro_batches(table, order, BUDGET)
    assert sorted(samples.tolist()) == list(range(len(table)))
    sizes = Counter()
    for i in range(len(bounds) - 1):
        rows = samples[bounds[i] : bounds[i + 1]]
        (channels,) = set(table.channels[rows].tolist())
        sizes[channels] += 1
        assert len(rows) <= BUDGET // channels
    full = {c: sum(table.channels == c) // (BUDGET // c) for c in (19, 21)}
    partial = {c: int(sum(table.channels == c) % (BUDGET // c) > 0) for c in (19, 21)}
    assert sizes == {c: full[c] + partial[c] for c in (19, 21)}
    # Another epoch, another order; the same epoch, the same order.
    assert not np.array_equal(epoch_order(table, [None], 3, 1), order)
    assert np.array_equal(epoch_order(table, [None], 3, 0), order)


def test_ranks_split_each_step_and_the_cursor_does_not_depend_on_world_size() -> None:
    n = {0: 23, 1: 23, 2: 23}  # micro-batches planned per epoch

    def steps(world: int, accumulation: int, start: Cursor, count: int) -> list[list]:
        ranks = [rank_assignments(n.__getitem__, start, r, world, accumulation) for r in range(world)]
        return [[next(it) for it in ranks for _ in range(accumulation)] for _ in range(count)]

    # Two ranks × two accumulation steps: 5 steps of 4 micro-batches; 3 left out; then epoch 1.
    plan = steps(2, 2, Cursor(), 6)
    epoch0 = [(a.epoch, a.index) for step in plan[:5] for a in step]
    assert sorted(epoch0) == [(0, i) for i in range(20)]
    # Listed rank by rank: rank r takes micro-batches r·A … r·A + A − 1 of the step.
    assert [(a.epoch, a.index) for a in plan[5]] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert plan[2][0].after_step == Cursor(0, 12) and plan[4][0].after_step == Cursor(1, 0)
    # Resume after 3 steps on 3 ranks, no accumulation: the epoch's remaining micro-batches, once each.
    resumed = steps(3, 1, plan[2][0].after_step, 4)
    assert sorted(a.index for step in resumed[:3] for a in step) == list(range(12, 21))
    assert resumed[3][0].epoch == 1 and resumed[2][0].after_step == Cursor(1, 0)
    with pytest.raises(DataError, match="fewer than one step"):
        next(rank_assignments(lambda epoch: 3, Cursor(), 0, 2, 2))


def test_stream_batches_are_normalised_shapes_and_carry_their_place(table) -> None:
    batch = next(iter(_stream(table)))
    size, channels, n_times = batch["eeg"].shape
    assert batch["positions"].shape == (size, channels, 3) and n_times == 2000
    assert size == len(batch["keys"]) <= BUDGET // channels
    assert batch["eeg"].dtype == torch.float32 and batch["eeg"].abs().max() <= 15.0
    assert abs(float(batch["eeg"].mean())) < 0.3 and 0.5 < float(batch["eeg"].std()) < 1.5
    assert (batch["epoch"], batch["index"], batch["cursor"]) == (0, 0, Cursor(0, 1))


def test_workers_do_not_change_the_stream(table) -> None:
    def keys(workers: int) -> list[list[str]]:
        loader = DataLoader(_stream(table), batch_size=None, num_workers=workers)
        return [b["keys"] for b in _take(iter(loader), 30)]  # 30 > one epoch: crosses into epoch 1

    assert keys(0) == keys(2)


def test_resume_from_a_cursor_continues_the_same_stream(table) -> None:
    whole = [b["keys"] for b in _take(iter(_stream(table, world=2, rank=1)), 12)]
    after = _take(iter(_stream(table, world=2, rank=1)), 5)[-1]["cursor"]
    resumed = [b["keys"] for b in _take(iter(_stream(table, world=2, rank=1, start=after)), 7)]
    assert resumed == whole[5:]


def test_weights_mix_datasets_by_share(tueg_shards: Path, chbmit_shards: Path) -> None:
    specs = dataset_specs(
        [{"url": str(tueg_shards), "weight": 1.0}, {"url": str(chbmit_shards), "weight": 1.0}]
    )
    table = load_table(specs, "train")
    tueg, total = table.dataset_starts[1], len(table)
    order = epoch_order(table, [1.0, 1.0], seed=0, epoch=0)
    assert len(order) == total
    from_chbmit = order >= tueg
    assert abs(from_chbmit.sum() - total / 2) <= 0.5  # 24 windows upsampled to half of the epoch
    assert len(set(order[~from_chbmit].tolist())) == (~from_chbmit).sum()  # downsampled: no repeats
    natural = epoch_order(table, [None, None], seed=0, epoch=0)
    assert sorted(natural.tolist()) == list(range(total))
    with pytest.raises(ConfigError, match="all be given"):
        epoch_order(table, [1.0, None], 0, 0)


def test_bad_statistics_name_the_shard(table) -> None:
    stream = _stream(table)
    row = 0
    url = table.shard_urls[table.shard[row]]
    with open(url, "rb") as f:
        f.seek(int(table.offset[row]))
        blob = f.read(int(table.size[row]))
    eeg = torch.empty((int(table.channels[row]), int(table.times[row])))
    key, positions = decode_sample(blob, url, 15.0, eeg)
    assert positions.shape == (eeg.shape[0], 3) and stream.clip == 15.0
    assert eeg.abs().max() <= 15.0 and abs(float(eeg.mean())) < 1
    broken = blob.replace(b'"channel_std": [', b'"channel_std":[-', 1)  # same length: a negative std
    with pytest.raises(DataError, match=rf"{url} \(sample {key}\): unusable channel statistics"):
        decode_sample(broken, url, 15.0, eeg)
    # A string where the statistics should be (a buggy writer), padded to keep the tar's sizes right.
    start = blob.index(b'"channel_std": [')
    end = blob.index(b"]", start) + 1
    text = b'"channel_std": "abc"'
    broken = blob[:start] + text + b" " * (end - start - len(text)) + blob[end:]
    with pytest.raises(DataError, match=rf"{url} \(sample {key}\): unusable channel_mean/channel_std"):
        decode_sample(broken, url, 15.0, eeg)
    # A corrupt tar header: the size field of the first member is not octal.
    broken = blob[:124] + b"zzzzzzzzzzz\0" + blob[136:]
    with pytest.raises(DataError, match=rf"{url}: corrupt tar header"):
        decode_sample(broken, url, 15.0, eeg)


def test_a_recordings_statistics_are_parsed_once_per_scope(table) -> None:
    """With a stream's RecordingStats, windows of one recording decode exactly as without it; a second
    dataset (another scope) whose recording has the same key but other statistics gets its own."""
    from eegfm.pretrain.decode import RecordingStats

    first = int(np.searchsorted(table.shard, table.shard[0]))
    rows = [r for r in range(first, first + 4) if table.shard[r] == table.shard[first]]
    url = table.shard_urls[table.shard[rows[0]]]
    blobs = []
    with open(url, "rb") as f:
        for row in rows:
            f.seek(int(table.offset[row]))
            blobs.append(f.read(int(table.size[row])))
    shape = (int(table.channels[rows[0]]), int(table.times[rows[0]]))
    stats, plain = RecordingStats(), []
    for blob in blobs:
        plain.append(torch.empty(shape))
        cached = torch.empty(shape)
        key = decode_sample(blob, url, 15.0, plain[-1])[0]
        assert decode_sample(blob, url, 15.0, cached, stats, "a")[0] == key
        assert torch.equal(plain[-1], cached)
    assert len(stats.entries) == len({b.split(b"_w")[0] for b in blobs}) == 1  # one recording
    # The same window in another dataset whose statistics differ: channel 0's std gains a leading "1"
    # (same byte length, still valid JSON).
    other = blobs[0].replace(b'"channel_std": [', b'"channel_std":[1', 1)
    expected, got = torch.empty(shape), torch.empty(shape)
    decode_sample(other, url, 15.0, expected)
    decode_sample(other, url, 15.0, got, stats, "b")
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], plain[0][0]) and torch.equal(got[1:], plain[0][1:])


def test_missing_index_is_a_clear_error(tueg_shards: Path, tmp_path: Path) -> None:
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in tueg_shards.iterdir():
        if path.is_file() and not path.name.endswith(contract.INDEX_SUFFIX):
            (copy / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match="written without indexes"):
        load_table([DatasetSpec(str(copy))], "train")
    with pytest.raises(ValueError, match="no shard of split 'val'"):
        load_table([DatasetSpec(str(tueg_shards))], "val")
    # A dataset may name its own split (BioSemi's recipe writes `pretrain`), beside the default one.
    specs = dataset_specs([str(tueg_shards), {"url": str(tueg_shards), "split": "val"}])
    with pytest.raises(ValueError, match="no shard of split 'val'"):
        load_table(specs, "train")
    assert len(load_table(dataset_specs([{"url": str(tueg_shards), "split": "train"}]), "val")) == 95


def _batches(plan) -> list[np.ndarray]:
    return [plan.batch(i) for i in range(len(plan))]


def test_block_plan_reads_block_by_block_every_window_once_in_same_shape_micro_batches(table) -> None:
    layout = table_layout(table, BUDGET)
    plan = BlockPlan(table, layout, [None], seed=3, epoch=0, budget=BUDGET, block=3)
    assert plan.n_blocks == -(-len(table.shard_urls) // 3) > 2
    batches = _batches(plan)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(table)))
    for i, rows in enumerate(batches):
        (channels,) = set(table.channels[rows].tolist())
        assert 1 <= len(rows) <= BUDGET // channels
        # A micro-batch reads only the shards of its own block: three shards, front to back.
        block_shards = plan.copy_shard[plan.block_copies(plan.block_of(i))]
        assert set(table.shard[rows].tolist()) <= set(block_shards.tolist())
    # The plan is a function of (table, weights, seed, epoch, budget, block) alone: another process
    # (rank, worker) building it from scratch gets the same micro-batches; another epoch, others.
    again = BlockPlan(table, table_layout(table, BUDGET), [None], seed=3, epoch=0, budget=BUDGET, block=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, _batches(again), strict=True))
    other = BlockPlan(table, layout, [None], seed=3, epoch=1, budget=BUDGET, block=3)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, _batches(other), strict=False))
    # Micro-batches mix shards: most draw from more than one of the block's shards.
    assert np.mean([len(set(table.shard[rows].tolist())) > 1 for rows in batches]) > 0.5


def test_block_plan_keeps_each_datasets_weighted_share(tueg_shards: Path, chbmit_shards: Path) -> None:
    specs = dataset_specs(
        [{"url": str(tueg_shards), "weight": 1.0}, {"url": str(chbmit_shards), "weight": 1.0}]
    )
    table = load_table(specs, "train")
    plan = BlockPlan(table, table_layout(table, BUDGET), [1.0, 1.0], seed=0, epoch=0, budget=BUDGET, block=2)
    rows = np.concatenate(_batches(plan))
    sizes = np.diff(table.dataset_starts)
    expected = epoch_counts(sizes, [1.0, 1.0])
    tueg = rows < table.dataset_starts[1]
    assert [tueg.sum(), (~tueg).sum()] == expected.tolist()  # upsampled CHB-MIT, downsampled TUEG
    assert len(set(rows[tueg].tolist())) == tueg.sum()  # downsampled: no repeats
    counts = np.bincount(rows[~tueg] - table.dataset_starts[1])
    assert counts.max() - counts.min() <= 1  # upsampled: in laps, every window as often as any other


@pytest.mark.parametrize("block", [0, 2])
def test_workers_and_resume_do_not_change_the_stream_with_either_shuffle(table, block: int) -> None:
    def keys(workers: int, **kwargs) -> list[list[str]]:
        stream = _stream(table, shuffle_block=block, **kwargs)
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        return [b["keys"] for b in _take(iter(loader), 30)]  # 30 > one epoch: crosses into epoch 1

    whole = keys(0, world=2, rank=1)
    assert whole == keys(2, world=2, rank=1)
    after = _take(iter(_stream(table, shuffle_block=block, world=2, rank=1)), 5)[-1]["cursor"]
    assert keys(0, world=2, rank=1, start=after)[:25] == whole[5:]


@pytest.mark.parametrize("block", [0, 2])
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (3, 2)])
def test_an_elastic_resume_repeats_and_skips_nothing(table, block: int, before: int, after: int) -> None:
    """Three steps on `before` ranks, then the rest of the epoch on `after` ranks from the saved cursor:
    every micro-batch of the epoch once, in order, but for a tail shorter than one step of the new world
    (it waits for the next epoch's shuffle, as in any epoch); no window twice."""
    first = [iter(_stream(table, shuffle_block=block, world=before, rank=r)) for r in range(before)]
    seen = [next(stream) for _ in range(3) for stream in first]
    cursor = seen[-1]["cursor"]
    assert all(b["cursor"] == cursor for b in seen[-before:])  # one cursor, the same on every rank
    second = [
        iter(_stream(table, shuffle_block=block, world=after, rank=r, start=cursor)) for r in range(after)
    ]
    rest = []
    while (step := [next(stream) for stream in second])[0]["epoch"] == 0:
        rest += step
    indexes = sorted(b["index"] for b in seen + rest)
    assert indexes == list(range(len(indexes)))
    assert 0 <= len(_stream(table, shuffle_block=block).plan(0)) - len(indexes) < after
    keys = [k for b in seen + rest for k in b["keys"]]
    assert len(keys) == len(set(keys))


def test_the_shuffle_block_is_checked_and_part_of_the_stream_fingerprint(tueg_shards: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.shuffle_block: must be ≥ 0 \(0: shuffle every window"):
        DataConfig(shuffle_block=-1)

    def fingerprint(block: int) -> dict:
        module = ShardDataModule(DataConfig(shards=[str(tueg_shards)], shuffle_block=block), accumulation=1)
        module.setup("fit")
        return module.fingerprint()

    assert fingerprint_changes(fingerprint(0), fingerprint(2)) == ["shuffle_block: 0 → 2"]
