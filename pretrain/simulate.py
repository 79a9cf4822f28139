"""`eegfm simulate-stream`: the real epoch plan on a synthetic REVE-sized table, without data.

The table is built as arrays (no files): datasets of 19–128-channel recordings, 10-s windows at 200 Hz
stored as float16 (C × 2000 × 2 bytes plus 3 kB of tar headers, metadata and positions), written
recording after recording into 256-MB shards, as ingest writes them. Every recording has a subject.
The plan is `plan.table_layout` + `plan.epoch_plan`, the code a training run uses, timed and traced
in a fresh process; the request and byte figures follow from the plan's shard reads.

Reads assumed: every node reads every shard of a block once, whole (the node cache the issue asks for),
so the plan and the cursor do not depend on the number of nodes or GPUs: an elastic resume works on any
world size. Today's loader instead makes one ranged GET per window (`object_gets_per_s_window_reads`).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from eegfm.errors import ConfigError
from eegfm.pretrain.plan import BlockPlan, epoch_plan, table_layout
from eegfm.pretrain.table import ShardTable

TIMES = 2000  # 10-s windows at 200 Hz
WINDOWS_PER_HOUR = 360
SAMPLE_OVERHEAD = 3072  # bytes of a sample beyond its float16 EEG: tar headers, metadata JSON, positions
MIB = 1 << 20
# (name, {channels: share of its recordings}, share of the hours): a REVE-like mix, ≈ 47 channels a window
DATASETS = (
    ("clinical-10-20", {19: 0.6, 21: 0.25, 22: 0.15}, 0.45),
    ("clinical-32", {32: 1.0}, 0.20),
    ("research-64", {64: 1.0}, 0.20),
    ("research-128", {128: 1.0}, 0.15),
)


@dataclass
class SyntheticCorpus:
    """The table, and what the table does not carry: each window's recording and subject."""

    table: ShardTable
    recording: np.ndarray  # int32 per window
    subject: np.ndarray  # int32 per window


def synthetic_corpus(hours: float, shard_mb: float = 256.0, seed: int = 0) -> SyntheticCorpus:
    """A REVE-like table of `hours` of EEG: recordings of lognormal length (median 20 min), 1–several
    per subject, each dataset's recordings written in order into shards of `shard_mb`."""
    rng = np.random.default_rng(seed)
    shard_bytes = int(shard_mb * MIB)
    shard_of, offsets, channels, recordings, subjects, sizes_all = [], [], [], [], [], []
    shard_sizes: list[int] = []
    starts = [0]
    n_recordings = n_subjects = 0
    for _, mix, share in DATASETS:
        target = max(1, round(hours * share * WINDOWS_PER_HOUR))
        lengths = np.round(rng.lognormal(np.log(120), 0.8, target // 100 + 16)).astype(np.int64)
        lengths = np.maximum(lengths, 1)
        while lengths.sum() < target:
            lengths = np.concatenate([lengths, lengths])
        keep = int(np.searchsorted(np.cumsum(lengths), target)) + 1
        lengths = lengths[:keep]
        lengths[-1] -= lengths.sum() - target
        per_subject = rng.geometric(0.4, keep)
        subject_of = np.repeat(np.arange(keep), per_subject)[:keep] + n_subjects
        counts, shares = np.array(list(mix)), np.array(list(mix.values()))
        rec_channels = rng.choice(counts, keep, p=shares / shares.sum()).astype(np.int32)
        window_channels = np.repeat(rec_channels, lengths)
        sizes = window_channels.astype(np.int64) * TIMES * 2 + SAMPLE_OVERHEAD
        ends = np.cumsum(sizes)
        local = (ends - sizes) // shard_bytes  # a window goes to the shard where it starts
        _, first, per_shard = np.unique(local, return_index=True, return_counts=True)
        _, local = np.unique(local, return_inverse=True)  # shards numbered without gaps
        shard_start_byte = (ends - sizes)[first]
        offsets.append((ends - sizes) - np.repeat(shard_start_byte, per_shard))
        shard_sizes += (np.add.reduceat(sizes, first)).tolist()
        shard_of.append((local + len(shard_sizes) - len(first)).astype(np.int32))
        channels.append(window_channels)
        sizes_all.append(sizes)
        recordings.append((np.repeat(np.arange(keep), lengths) + n_recordings).astype(np.int32))
        subjects.append(np.repeat(subject_of, lengths).astype(np.int32))
        n_recordings += keep
        n_subjects = int(subject_of.max()) + 1
        starts.append(starts[-1] + target)
    shard = np.concatenate(shard_of)
    n = len(shard)
    table = ShardTable(
        shard_urls=[f"s3://bucket/shards/{i:06d}.tar" for i in range(len(shard_sizes))],
        shard=shard,
        offset=np.concatenate(offsets),
        size=np.concatenate(sizes_all),
        channels=np.concatenate(channels),
        times=np.full(n, TIMES, dtype=np.int32),
        crc=np.zeros(n, dtype=np.uint32),
        shard_bytes=shard_sizes,
        dataset_starts=starts,
    )
    return SyntheticCorpus(table, np.concatenate(recordings), np.concatenate(subjects))


def _distinct_per_batch(labels: np.ndarray, values: np.ndarray, n_batches: int) -> np.ndarray:
    """Distinct `values` within each micro-batch (`labels`: each window's micro-batch, 0 … n − 1)."""
    pairs = np.unique(labels.astype(np.int64) << 32 | values.astype(np.int64))
    return np.bincount(pairs >> 32, minlength=n_batches)


def _mixing(corpus: SyntheticCorpus, samples: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(recordings, subjects, shards) summed over these micro-batches, and their count."""
    n = len(bounds) - 1
    labels = np.repeat(np.arange(n), np.diff(bounds))
    return np.array(
        [
            _distinct_per_batch(labels, corpus.recording[samples], n).sum(),
            _distinct_per_batch(labels, corpus.subject[samples], n).sum(),
            _distinct_per_batch(labels, corpus.table.shard[samples], n).sum(),
            n,
        ],
        dtype=np.int64,
    )


def global_mixing(corpus: SyntheticCorpus, budget: int, batches: int = 4000, seed: int = 1) -> dict:
    """Recordings, subjects and shards per micro-batch under the global shuffle, estimated from
    `batches` micro-batches drawn as it makes them: a global permutation's micro-batches of a shape are
    uniform random sets of `budget // C` of that shape's windows (the partly filled last one aside)."""
    table, rng = corpus.table, np.random.default_rng(seed)
    channels, counts = np.unique(table.channels, return_counts=True)
    per_batch = np.minimum(np.maximum(budget // channels, 1), counts)
    weights = counts / per_batch  # each shape's micro-batches in an epoch
    totals = []
    for c, size, weight in zip(channels.tolist(), per_batch.tolist(), weights.tolist(), strict=True):
        rows = np.flatnonzero(table.channels == c)
        draws = max(1, round(batches * weight / weights.sum()))
        samples = np.concatenate([rng.choice(rows, size, replace=False) for _ in range(draws)])
        totals.append(_mixing(corpus, samples, np.arange(draws + 1) * size) / draws)
    mean = np.average(np.array(totals)[:, :3], axis=0, weights=weights)
    return {"recordings": float(mean[0]), "subjects": float(mean[1]), "shards": float(mean[2])}


def measure_plan(hours: float, block: int, budget: int, seed: int, shard_mb: float) -> dict:
    """In this process: build the corpus, then plan one epoch as a loader worker does (the layout, the
    epoch's block counts, every block's micro-batches) with tracemalloc on; the mixing is counted per
    block outside the timer."""
    corpus = synthetic_corpus(hours, shard_mb, seed)
    table = corpus.table
    table_bytes = sum(a.nbytes for a in (table.shard, table.offset, table.size, table.channels, table.times))
    table_bytes += table.crc.nbytes
    tracemalloc.start()
    started = time.perf_counter()
    layout = table_layout(table, budget) if block else None
    plan = epoch_plan(table, layout, [None] * (len(table.dataset_starts) - 1), seed, 0, budget, block)
    startup = time.perf_counter() - started
    planning = startup
    mixing = np.zeros(4, dtype=np.int64)
    partial_windows = planned = 0
    blocks = plan.n_blocks if isinstance(plan, BlockPlan) else 1
    block_bytes, shard_copies, read_bytes = [], 0, 0
    for k in range(blocks):
        started = time.perf_counter()
        if isinstance(plan, BlockPlan):
            samples, bounds = plan.block_batches(k)
        else:
            samples, bounds = plan.samples, plan.bounds
        planning += time.perf_counter() - started
        if k == 0:
            startup += time.perf_counter() - started
        mixing += _mixing(corpus, samples, bounds)
        sizes = np.diff(bounds)
        full = np.maximum(budget // table.channels[samples[bounds[:-1]]], 1)
        partial_windows += int(sizes[sizes < full].sum())
        planned += len(samples)
        if isinstance(plan, BlockPlan):
            shards = plan.copy_shard[plan.block_copies(k)]
        else:
            shards = np.unique(table.shard)
        block_bytes.append(int(np.asarray(table.shard_bytes, dtype=np.int64)[shards].sum()))
        shard_copies += len(shards)
        read_bytes += block_bytes[-1]
    _, plan_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "windows": len(table),
        "shards": len(table.shard_urls),
        "recordings": int(corpus.recording.max()) + 1,
        "subjects": int(corpus.subject.max()) + 1,
        "table_mib": table_bytes / MIB,
        "plan_seconds": planning,
        "plan_startup_seconds": startup,
        "plan_peak_rss_mib": plan_peak / MIB,
        "blocks": blocks,
        "micro_batches": int(mixing[3]),
        "planned_windows": planned,
        "partial_batch_windows": partial_windows,
        "shard_reads_per_node_per_epoch": shard_copies,
        "bytes_per_node_per_epoch": read_bytes,
        "cache_bytes_per_node": max(a + b for a, b in zip(block_bytes, [*block_bytes[1:], 0], strict=True)),
        "recordings_per_micro_batch": mixing[0] / mixing[3],
        "subjects_per_micro_batch": mixing[1] / mixing[3],
        "shards_per_micro_batch": mixing[2] / mixing[3],
        "global": global_mixing(corpus, budget),
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def simulate_stream(
    hours: float,
    gpus: int,
    nodes: int,
    windows_per_s_per_gpu: float = 7400.0,
    block: int = 128,
    budget: int = 4800,
    seed: int = 0,
    shard_mb: float = 256.0,
) -> dict:
    """The figures of `eegfm simulate-stream`; the plan is measured in a fresh process (spawned), so its
    peak memory is this plan's and not what the caller did before."""
    if hours <= 0 or gpus < 1 or nodes < 1 or gpus % nodes or windows_per_s_per_gpu <= 0 or block < 0:
        raise ConfigError(
            f"simulate-stream: need hours > 0, gpus ≥ 1 a multiple of nodes ≥ 1, a positive rate and a "
            f"block ≥ 0; got hours={hours}, gpus={gpus}, nodes={nodes}, rate={windows_per_s_per_gpu}, "
            f"block={block}"
        )
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        m = pool.submit(measure_plan, hours, block, budget, seed, shard_mb).result()
    epoch_seconds = m["planned_windows"] / (gpus * windows_per_s_per_gpu)
    window_reads = gpus * windows_per_s_per_gpu  # today's loader: one ranged GET per window
    # Block plan: each node reads each shard copy of the epoch once, whole. Global shuffle: a micro-batch
    # reads ~ one window per shard, so only a cache holding the whole dataset would avoid window reads.
    gets = nodes * m["shard_reads_per_node_per_epoch"] / epoch_seconds if block else window_reads
    return {
        "hours": hours,
        "gpus": gpus,
        "nodes": nodes,
        "windows_per_s_per_gpu": windows_per_s_per_gpu,
        "shuffle_block": block,
        "channel_budget": budget,
        **{k: v for k, v in m.items() if k != "global"},
        "epoch_seconds": epoch_seconds,
        "object_gets_per_s": gets,
        "object_gets_per_s_window_reads": window_reads,
        "node_read_bytes_per_s": m["bytes_per_node_per_epoch"] / epoch_seconds,
        "recordings_per_micro_batch_global": m["global"]["recordings"],
        "subjects_per_micro_batch_global": m["global"]["subjects"],
        "shards_per_micro_batch_global": m["global"]["shards"],
        "elastic_world_sizes": "any: each node reads every shard of a block; the plan ignores the node count",
    }
