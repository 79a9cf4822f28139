"""The pretraining data stream: a global plan over the shards' indexes, sliced by rank and worker.

Every epoch is planned from the shard indexes alone, identically on every rank and worker:

1. each dataset contributes its samples (all of them, or a weighted share of the epoch), shuffled by
   (seed, epoch); the datasets' picks are then shuffled together;
2. the stream is cut into *micro-batches* of one EEG shape each (REVE's channel budget: `budget // C`
   windows of C channels), in the order they fill up, so no window is padded and no token attends to
   padding;
3. optimizer step s of the epoch takes micro-batches [p + s·W·A, p + (s+1)·W·A) (W ranks, A accumulation
   steps), rank r the A of them at p + s·W·A + r·A. The last W·A − 1 micro-batches at most are left out,
   so every rank takes the same number of steps and DDP can never hang on an uneven split.

The loader's whole state is a `Cursor(epoch, position)`: micro-batches of the epoch already consumed.
It does not depend on W, so a run can resume on another number of GPUs without repeating or skipping a
sample of the current epoch. Samples are read by byte range (the shard index gives it), all of a
micro-batch's at once, so object storage serves them concurrently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import fsspec
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from eegfm.ingest import contract
from eegfm.storage import join_url, read_json

_BLOCK = 512
TOKEN_SUFFIX = "tok.npy"  # a window's code ids (C × P × codes per patch), in the token shards
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z][0-9]+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}"
)


class Cursor(NamedTuple):
    """Where the stream is: `position` micro-batches of `epoch` are consumed."""

    epoch: int = 0
    position: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset to stream: its shards folder (or manifest URL), and its share of each epoch."""

    url: str
    weight: float | None = None  # None: every sample once per epoch; else share of the epoch's samples
    split: str | None = None  # its split, where its recipe names them otherwise (e.g. "pretrain")


@dataclass
class ShardTable:
    """Every sample of the selected shards, as flat arrays (global sample id = row)."""

    shard_urls: list[str]
    shard: np.ndarray  # int32, index into shard_urls
    offset: np.ndarray  # int64, first byte of the sample's members
    size: np.ndarray  # int64
    channels: np.ndarray  # int32
    times: np.ndarray  # int32
    dataset_starts: list[int] = field(default_factory=list)  # first row of each dataset, plus the total
    # Precomputed code ids (`eegfm tokenize`): the token shard beside each shard, and each window's range.
    token_urls: list[str] | None = None
    token_offset: np.ndarray | None = None
    token_size: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.shard)


def manifest_url(url: str) -> tuple[str, str]:
    """(manifest URL, folder the shard URLs are relative to) for a folder or a manifest URL."""
    if url.endswith(".json"):
        return url, url.rsplit("/", 1)[0]
    return join_url(url, contract.MANIFEST_NAME), url.rstrip("/")


def token_shard_name(shard: str, tokenizer_id: str) -> str:
    """The token shard beside a shard: `x.tar` → `x.tokens-<tokenizer id>.tar` (same windows, same order)."""
    return f"{shard.removesuffix('.tar')}.tokens-{tokenizer_id}.tar"


def _read_indexes(urls: list[str], what: str) -> list[dict]:
    """Index files, fetched concurrently (object storage); a missing one is named with `what` to do."""
    fs, _ = fsspec.core.url_to_fs(urls[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in urls]
    try:
        blobs = fs.cat(paths, on_error="raise")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}: {what}") from e
    return [json.loads(blobs[path]) for path in paths]


def load_table(specs: Sequence[DatasetSpec], split: str, tokens: str | None = None) -> ShardTable:
    """Read the manifests and the shard indexes of one split (and, with `tokens` = a tokenizer id, the
    token shards' indexes); errors name the file and what is wrong."""
    urls: list[str] = []
    columns: list[list[np.ndarray]] = [[], [], [], [], []]
    token_urls: list[str] = []
    token_columns: list[list[np.ndarray]] = [[], [], []]
    starts = [0]
    for spec in specs:
        manifest_location, folder = manifest_url(spec.url)
        try:
            manifest = read_json(manifest_location)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{manifest_location}: no manifest (is ingest finished? `eegfm merge`)"
            ) from e
        wanted = spec.split or split
        shards = [s for s in manifest["shards"] if s["split"] == wanted]
        if not shards:
            raise ValueError(f"{manifest_location}: no shard of split {wanted!r}")
        index_urls = [join_url(folder, contract.index_name(s["url"])) for s in shards]
        indexes = _read_indexes(
            index_urls,
            f"shard index missing: the shards under {folder} were written without indexes; "
            "ingest them again with this version of eegfm",
        )
        for shard, url, index in zip(shards, index_urls, indexes, strict=True):
            rows = index["samples"]
            if index.get("format") != contract.INDEX_FORMAT or len(rows) != shard["samples"]:
                raise ValueError(f"{url}: index does not match the manifest's {shard['samples']} samples")
            arr = np.array([r[1:5] for r in rows], dtype=np.int64).reshape(-1, 4)
            columns[0].append(np.full(len(rows), len(urls), dtype=np.int32))
            for col, values in zip(columns[1:], arr.T, strict=True):
                col.append(values)
            urls.append(join_url(folder, shard["url"]))
        if tokens:
            names = [token_shard_name(s["url"], tokens) for s in shards]
            token_indexes = _read_indexes(
                [join_url(folder, contract.index_name(n)) for n in names],
                f"no token shards of tokenizer {tokens} under {folder}: run `eegfm tokenize` first",
            )
            for name, index, data_index in zip(names, token_indexes, indexes, strict=True):
                if [r[0] for r in index["samples"]] != [r[0] for r in data_index["samples"]]:
                    raise ValueError(f"{join_url(folder, name)}: its windows are not its shard's")
                token_columns[1].append(np.array([r[1] for r in index["samples"]], dtype=np.int64))
                token_columns[2].append(np.array([r[2] for r in index["samples"]], dtype=np.int64))
                token_urls.append(join_url(folder, name))
        starts.append(starts[-1] + sum(s["samples"] for s in shards))
    shard, offset, size, channels, times = (np.concatenate(c) for c in columns)
    table = ShardTable(urls, shard, offset, size, channels.astype(np.int32), times.astype(np.int32), starts)
    if tokens:
        table.token_urls = token_urls
        table.token_offset, table.token_size = (np.concatenate(c) for c in token_columns[1:])
    return table


def epoch_order(table: ShardTable, weights: Sequence[float | None], seed: int, epoch: int) -> np.ndarray:
    """The epoch's samples (global ids) in stream order: each dataset's share, shuffled together.

    With no weights, every sample once. With weights, dataset d gives w_d / Σw of an epoch as long as all
    datasets together (rounded by largest remainders), drawn without replacement until it runs out, then
    from a fresh permutation.
    """
    starts = table.dataset_starts
    sizes = np.diff(starts)
    if all(w is None for w in weights):
        counts = sizes
    elif any(w is None for w in weights) or any(w <= 0 for w in weights):
        raise ValueError(f"data weights must all be given and positive, or all omitted: {list(weights)}")
    else:
        exact = np.asarray(weights, dtype=np.float64) / sum(weights) * sizes.sum()
        counts = np.floor(exact).astype(np.int64)  # then the largest remainders, so the epoch keeps N
        counts[np.argsort(counts - exact, kind="stable")[: sizes.sum() - counts.sum()]] += 1
    picks = []
    for d, (start, size, count) in enumerate(zip(starts, sizes, counts, strict=False)):
        rng = np.random.default_rng([seed, epoch, d])
        laps = -(-int(count) // int(size))
        picks.append(start + np.concatenate([rng.permutation(size) for _ in range(laps)])[:count])
    return np.random.default_rng([seed, epoch]).permutation(np.concatenate(picks))


def micro_batches(table: ShardTable, order: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the stream into same-shape micro-batches of `budget // channels` windows (at least one).

    A micro-batch takes its place in the plan when its last window arrives, as a per-shape bucket that
    fills up and is emitted would; the epoch's partly filled buckets come last. Returns (samples, bounds):
    micro-batch i is samples[bounds[i]:bounds[i + 1]].
    """
    channels, times = table.channels[order], table.times[order]
    shapes, group = np.unique(channels.astype(np.int64) << 32 | times, return_inverse=True)
    per_batch = np.maximum(budget // (shapes >> 32), 1)
    by_group = np.argsort(group, kind="stable")  # stream positions, grouped, in stream order
    g = group[by_group]
    counts = np.bincount(group, minlength=len(shapes))
    rank = np.arange(len(order)) - np.searchsorted(g, g)  # position within its shape group
    batches_per_group = -(-counts // per_batch)
    label = np.concatenate([[0], np.cumsum(batches_per_group)[:-1]])[g] + rank // per_batch[g]
    last = np.zeros(int(batches_per_group.sum()), dtype=np.int64)
    np.maximum.at(last, label, by_group)  # a batch is emitted when its last window arrives
    batch_rank = np.empty_like(last)
    batch_rank[np.argsort(last, kind="stable")] = np.arange(len(last))
    members = np.lexsort((by_group, batch_rank[label]))
    samples = order[by_group[members]]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(batch_rank[label], minlength=len(last)))])
    return samples, bounds


@dataclass(frozen=True)
class Assignment:
    """One micro-batch of one rank: where it is in the plan, and the cursor once its step is done."""

    epoch: int
    index: int  # micro-batch index within the epoch's plan
    after_step: Cursor


def rank_assignments(
    n_batches: Callable[[int], int], start: Cursor, rank: int, world: int, accumulation: int
) -> Iterator[Assignment]:
    """This rank's micro-batches, epoch after epoch, from `start` (see the module's docstring)."""
    per_step = world * accumulation
    epoch, position = start.epoch, start.position
    while True:
        steps = (n_batches(epoch) - position) // per_step
        if steps <= 0 and position == 0:
            raise ValueError(
                f"epoch {epoch} plans {n_batches(epoch)} micro-batches, fewer than one step needs "
                f"({world} ranks × {accumulation} accumulation): lower data.channel_budget or use more data"
            )
        for s in range(steps):
            base = position + s * per_step
            done = Cursor(epoch + 1, 0) if s == steps - 1 else Cursor(epoch, base + per_step)
            for a in range(accumulation):
                yield Assignment(epoch, base + rank * accumulation + a, done)
        epoch, position = epoch + 1, 0


def _members(blob: memoryview, where: str) -> dict[str, memoryview]:
    """{'<key>.<suffix>': bytes} of a run of tar members (ustar, with PAX `path` records if any)."""
    members, pos, name = {}, 0, None
    while pos + _BLOCK <= len(blob):
        header = bytes(blob[pos : pos + _BLOCK])
        if not header.strip(b"\0"):
            break
        size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
        kind = header[156:157]
        body = blob[pos + _BLOCK : pos + _BLOCK + size]
        pos += _BLOCK + -(-size // _BLOCK) * _BLOCK
        if kind == b"x":  # PAX extended header: may carry the next member's path
            for record in bytes(body).decode().splitlines():
                key, _, value = record.partition(" ")[2].partition("=")
                if key == "path":
                    name = value
            continue
        if kind not in (b"0", b"\0"):
            raise ValueError(f"{where}: unexpected tar member type {kind!r}")
        prefix = header[345:500].rstrip(b"\0").decode()
        plain = header[:100].rstrip(b"\0").decode()
        members[name or (f"{prefix}/{plain}" if prefix else plain)] = body
        name = None
    return members


def decode_sample(blob: bytes, where: str, clip: float, out: torch.Tensor) -> tuple[str, np.ndarray]:
    """One sample's members → its key and positions (C×3); its EEG goes into `out` (C×T float32),
    z-scored per channel and clipped to ±clip.

    The z-score uses the whole recording's per-channel statistics that ingest stored (REVE's load-time
    normalisation); a sample without usable statistics is an error, not a silent guess. Arithmetic runs
    in torch: numpy converts float16 in software, several times slower than the whole rest of decoding.
    """
    members: dict[str, memoryview] = {}
    for name, body in _members(memoryview(bytearray(blob)), where).items():  # writable: torch shares it
        key, suffix = name.rsplit("/", 1)[-1].split(".", 1)
        members[suffix] = body
    try:
        eeg = _npy(members[contract.EEG_SUFFIX], where)
        positions = _npy(members[contract.POS_SUFFIX], where)
        meta = json.loads(bytes(members[contract.META_SUFFIX]))
    except KeyError as e:
        raise ValueError(f"{where}: a sample has no {e.args[0]} member") from None
    mean = torch.tensor(meta["channel_mean"], dtype=torch.float32)[:, None]
    std = torch.tensor(meta["channel_std"], dtype=torch.float32)[:, None]
    usable = bool(torch.isfinite(std).all() and (std > 0).all()) and len(std) == len(positions)
    if not usable or eeg.shape != out.shape:
        raise ValueError(f"{where}: sample {key} has unusable channel statistics or shapes")
    out.copy_(torch.from_numpy(eeg)).sub_(mean).mul_(1 / std).clamp_(-clip, clip)
    return key, positions


def _npy(body: memoryview, where: str) -> np.ndarray:
    """A C-order .npy member without copying; numpy's own reader parses its header with `ast`, which
    costs more than decoding the window itself."""
    length = int.from_bytes(body[8:10], "little") if body[6] == 1 else int.from_bytes(body[8:12], "little")
    start = 10 if body[6] == 1 else 12
    header = _NPY_HEADER.match(bytes(body[start : start + length]))
    if bytes(body[:6]) != b"\x93NUMPY" or header is None:
        raise ValueError(f"{where}: not a plain C-order .npy member")
    shape = tuple(int(n) for n in header[2].split(b",") if n.strip())
    return np.frombuffer(body[start + length :], dtype=header[1].decode()).reshape(shape)


BatchTransform = Callable[[dict[str, Any], torch.Generator], dict[str, Any]]


class ShardStream(IterableDataset):
    """This rank's micro-batches as dicts: `eeg` (B, C, T), `positions` (B, C, 3), `keys`, and where the
    batch sits in the plan (`epoch`, `index`, `cursor` = the stream's state once its step is done).

    DataLoader workers take this rank's micro-batches round-robin, which is the order in which the
    DataLoader hands them out, so the stream is the same with any number of workers. `transform` runs in
    the workers (the MAE's masks), with a generator seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        table: ShardTable,
        weights: Sequence[float | None],
        *,
        seed: int,
        budget: int,
        clip: float,
        start: Cursor,
        rank: int,
        world: int,
        accumulation: int,
        transform: BatchTransform | None = None,
    ):
        self.table, self.weights, self.seed, self.budget, self.clip = table, list(weights), seed, budget, clip
        self.start, self.rank, self.world, self.accumulation = start, rank, world, accumulation
        self.transform = transform
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(samples, bounds) of an epoch's micro-batches; the last two epochs are kept."""
        if epoch not in self._plans:
            order = epoch_order(self.table, self.weights, self.seed, epoch)
            self._plans = {e: p for e, p in self._plans.items() if e == epoch - 1}
            self._plans[epoch] = micro_batches(self.table, order, self.budget)
        return self._plans[epoch]

    def assignments(self) -> Iterator[Assignment]:
        return rank_assignments(
            lambda epoch: len(self.plan(epoch)[1]) - 1, self.start, self.rank, self.world, self.accumulation
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for k, assignment in enumerate(self.assignments()):
            if k % workers == worker:
                yield self.read(assignment)

    def read(self, assignment: Assignment) -> dict[str, Any]:
        samples, bounds = self.plan(assignment.epoch)
        rows = samples[bounds[assignment.index] : bounds[assignment.index + 1]]
        table = self.table
        urls = [table.shard_urls[i] for i in table.shard[rows]]
        starts = table.offset[rows]
        blobs = _read_ranges(urls, starts, table.size[rows])
        eeg = torch.empty((len(rows), int(table.channels[rows[0]]), int(table.times[rows[0]])))
        decoded = [
            decode_sample(blob, f"{url} @ {start}", self.clip, out)
            for blob, url, start, out in zip(blobs, urls, starts.tolist(), eeg, strict=True)
        ]
        batch = {
            "eeg": eeg,
            "positions": torch.from_numpy(np.stack([d[1] for d in decoded])),
            "keys": [d[0] for d in decoded],
            "epoch": assignment.epoch,
            "index": assignment.index,
            "cursor": assignment.after_step,
        }
        if table.token_urls is not None:
            token_urls = [table.token_urls[i] for i in table.shard[rows]]
            blobs = _read_ranges(token_urls, table.token_offset[rows], table.token_size[rows])
            codes = [_token_member(blob, url) for url, blob in zip(token_urls, blobs, strict=True)]
            batch["codes"] = torch.stack(codes).long()
        if self.transform is not None:
            batch = self.transform(batch, batch_generator(self.seed, assignment.epoch, assignment.index))
        return batch


def _read_ranges(urls: list[str], starts: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """Byte ranges of (possibly remote) files, fetched together: concurrently on object storage."""
    fs, _ = fsspec.core.url_to_fs(urls[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in urls]
    return fs.cat_ranges(paths, starts.tolist(), (starts + sizes).tolist())


def _token_member(blob: bytes, where: str) -> torch.Tensor:
    """The code ids (C × P × codes per patch) of one window's member in a token shard."""
    (body,) = _members(memoryview(bytearray(blob)), where).values()
    return torch.from_numpy(_npy(body, where))


def batch_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A generator owned by one micro-batch: the same masks and jitter after any resume, on any world size."""
    entropy = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
