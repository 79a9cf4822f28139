"""The sample table: every window of the selected shards as flat arrays, read from manifests and indexes.

It is all the planner needs (shape and byte range of each window) and all the loader needs to check what
it reads (each sample's CRC-32 and each shard's size, from the index). Errors name the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np

from eegfm.errors import DataError
from eegfm.ingest import contract
from eegfm.storage import join_url, read_json

TOKEN_SUFFIX = "tok.npy"  # a window's code ids (C × P × codes per patch), in the token shards
SAMPLE_COLUMNS = ("offset", "size", "channels", "times", "crc32")
TOKEN_COLUMNS = ("offset", "size", "crc32")


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
    crc: np.ndarray  # uint32, CRC-32 of the sample's bytes [offset, offset + size)
    shard_bytes: list[int] = field(default_factory=list)  # each shard's size, as its index records it
    dataset_starts: list[int] = field(default_factory=list)  # first row of each dataset, plus the total
    # What identifies each dataset's content: manifest, preprocessing and a digest of its samples' CRCs.
    dataset_identity: list[dict] = field(default_factory=list)
    # Precomputed code ids (`eegfm tokenize`): the token shard beside each shard, and each window's range.
    token_urls: list[str] | None = None
    token_bytes: list[int] | None = None  # each token shard's size, as its index records it
    token_offset: np.ndarray | None = None
    token_size: np.ndarray | None = None
    token_crc: np.ndarray | None = None

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
    # Whole files as open ranges `bytes=0-`: one GET each (`cat` first asks each object's size, a HEAD).
    blobs = fs.cat_ranges(paths, [0] * len(paths), [None] * len(paths), on_error="return")
    indexes = []
    for url, blob in zip(urls, blobs, strict=True):
        if isinstance(blob, FileNotFoundError):
            raise DataError(f"{url}: {what}")
        if isinstance(blob, Exception):
            raise blob
        try:
            index = json.loads(blob)
        except ValueError:
            raise DataError(f"{url}: not a JSON shard index (corrupt?): {what}") from None
        if index.get("format") != contract.INDEX_FORMAT:
            raise DataError(
                f"{url}: index format {index.get('format')!r}, this eegfm reads {contract.INDEX_FORMAT!r} "
                "(with per-sample checksums): ingest the dataset again with this version"
            )
        indexes.append(index)
    return indexes


def _columns(index: dict, url: str, wanted: tuple[str, ...]) -> np.ndarray:
    """The index's `wanted` columns, in that order, as an (n, len(wanted)) int64 array."""
    names = index.get("columns", [])
    try:
        picks = [names.index(c) for c in wanted]
    except ValueError:
        raise DataError(f"{url}: index lacks a column of {wanted} (has {names})") from None
    rows = index["samples"]
    return np.array([[r[i] for i in picks] for r in rows], dtype=np.int64).reshape(-1, len(wanted))


def load_table(specs: Sequence[DatasetSpec], split: str, tokens: str | None = None) -> ShardTable:
    """Read the manifests and the shard indexes of one split (and, with `tokens` = a tokenizer id, the
    token shards' indexes); errors name the file and what is wrong."""
    urls: list[str] = []
    shard_bytes: list[int] = []
    parts: list[np.ndarray] = []
    shard_ids: list[np.ndarray] = []
    token_urls: list[str] = []
    token_bytes: list[int] = []
    token_parts: list[np.ndarray] = []
    starts = [0]
    identity = []
    for spec in specs:
        manifest_location, folder = manifest_url(spec.url)
        try:
            manifest = read_json(manifest_location)
        except FileNotFoundError:
            raise DataError(f"{manifest_location}: no manifest (is ingest finished? `eegfm merge`)") from None
        wanted = spec.split or split
        shards = [s for s in manifest["shards"] if s["split"] == wanted]
        if not shards:
            raise DataError(f"{manifest_location}: no shard of split {wanted!r}")
        index_urls = [join_url(folder, contract.index_name(s["url"])) for s in shards]
        indexes = _read_indexes(
            index_urls,
            f"shard index missing: the shards under {folder} were written without indexes; "
            "ingest them again with this version of eegfm",
        )
        content = hashlib.sha256()
        for shard, url, index in zip(shards, index_urls, indexes, strict=True):
            if len(index["samples"]) != shard["samples"]:
                raise DataError(f"{url}: index does not match the manifest's {shard['samples']} samples")
            columns = _columns(index, url, SAMPLE_COLUMNS)
            parts.append(columns)
            shard_ids.append(np.full(len(columns), len(urls), dtype=np.int32))
            urls.append(join_url(folder, shard["url"]))
            shard_bytes.append(int(index["bytes"]))
            content.update(f"{shard['url']}:{len(columns)}:".encode())
            content.update(columns[:, 4].astype("<u4").tobytes())
        identity.append(
            {
                "manifest": manifest_location,
                "split": wanted,
                "weight": spec.weight,
                "preprocess_hash": manifest.get("preprocess_hash"),
                "shards": len(shards),
                "samples": sum(s["samples"] for s in shards),
                "content": content.hexdigest()[:16],
            }
        )
        if tokens:
            names = [token_shard_name(s["url"], tokens) for s in shards]
            token_indexes = _read_indexes(
                [join_url(folder, contract.index_name(n)) for n in names],
                f"no token shards of tokenizer {tokens} under {folder}: run `eegfm tokenize` first",
            )
            for name, index, data_index in zip(names, token_indexes, indexes, strict=True):
                if [r[0] for r in index["samples"]] != [r[0] for r in data_index["samples"]]:
                    raise DataError(f"{join_url(folder, name)}: its windows are not its shard's")
                token_parts.append(_columns(index, join_url(folder, name), TOKEN_COLUMNS))
                token_urls.append(join_url(folder, name))
                token_bytes.append(int(index["bytes"]))
        starts.append(starts[-1] + sum(s["samples"] for s in shards))
    columns = np.concatenate(parts)
    table = ShardTable(
        shard_urls=urls,
        shard=np.concatenate(shard_ids),
        offset=columns[:, 0].copy(),
        size=columns[:, 1].copy(),
        channels=columns[:, 2].astype(np.int32),
        times=columns[:, 3].astype(np.int32),
        crc=columns[:, 4].astype(np.uint32),
        shard_bytes=shard_bytes,
        dataset_starts=starts,
        dataset_identity=identity,
    )
    if tokens:
        token_columns = np.concatenate(token_parts)
        table.token_urls, table.token_bytes = token_urls, token_bytes
        table.token_offset, table.token_size = token_columns[:, 0].copy(), token_columns[:, 1].copy()
        table.token_crc = token_columns[:, 2].astype(np.uint32)
    return table


def sample_key(table: ShardTable, row: int) -> str:
    """The key of sample `row`, read back from its shard's index (for error messages: the table keeps no
    keys, which would cost more memory than all its other columns)."""
    shard = int(table.shard[row])
    first = int(np.searchsorted(table.shard, shard))  # rows are grouped by shard, in index order
    index = read_json(contract.index_name(table.shard_urls[shard]))
    return str(index["samples"][row - first][0])


def check_shard_sizes(table: ShardTable) -> None:
    """Every shard as long as its index says: a truncated (or overwritten) shard is caught at start-up,
    by one listing per folder, not when the loader reaches its missing bytes hours later."""
    fs, _ = fsspec.core.url_to_fs(table.shard_urls[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in table.shard_urls]
    found: dict[str, int] = {}
    for folder in sorted({p.rsplit("/", 1)[0] for p in paths}):
        for entry in fs.ls(folder, detail=True):
            found[entry["name"].rstrip("/")] = int(entry.get("size") or 0)
    for url, path, expected in zip(table.shard_urls, paths, table.shard_bytes, strict=True):
        size = found.get(path, found.get(fs._strip_protocol(path)))
        if size is None:
            raise DataError(f"{url}: shard missing (its index and manifest exist): ingest it again")
        if size != expected:
            raise DataError(
                f"{url}: {size} bytes, its index says {expected}: the shard is truncated or was "
                "overwritten; ingest it again (or restore it)"
            )
