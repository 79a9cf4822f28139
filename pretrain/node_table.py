"""The sample table of remote datasets, built once per node and memory-mapped by every process on it.

At REVE's scale the table has 21.6 M rows of 32 bytes (659 MiB) read from 15,600 shard indexes. Built by
every rank, that is 15,600 index GETs per rank at every start-up (half a million for 32 GPUs) and a
private copy of the table in every rank. Here the first process of a node to need it builds it (under a
file lock in the node's cache folder) and writes it as one file, `tables/<key>.table`, through the
project's atomic write; every process of the node, its loader workers included, maps that file
read-only, so the indexes are read once per node and the node's page cache holds one copy of the table.

The key covers the table format, the split, the tokenizer and, per dataset, its URL, weight, split and
the SHA-256 of its manifest's bytes, so a re-ingested dataset (a new manifest) gets a new table. A stale
cached table cannot train silently anyway: every sample is checked against the CRC-32 its shard's index
gave, and every shard's size against the listing, at start-up.

File layout: 8 bytes (little-endian header length), a JSON header (the table's lists and, per column, its
dtype, length and byte offset), then each column's raw bytes at a 64-byte aligned offset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import fsspec
import numpy as np

from eegfm.errors import DataError
from eegfm.pretrain.shard_cache import default_cache_dir, file_lock, is_remote
from eegfm.pretrain.table import DatasetSpec, ShardTable, load_table, manifest_url
from eegfm.storage import atomic_write, remove_stale_temporaries, storage_errors

TABLE_FORMAT = "eegfm-node-table/1"
ARRAYS = ("shard", "offset", "size", "channels", "times", "crc", "token_offset", "token_size", "token_crc")
LISTS = ("shard_urls", "shard_bytes", "dataset_starts", "dataset_identity", "token_urls", "token_bytes")
ALIGN = 64


def table_key(specs: Sequence[DatasetSpec], split: str, tokens: str | None) -> str:
    """What the node's table is a function of (see the module's docstring): reads each manifest once."""
    digest = hashlib.sha256(json.dumps([TABLE_FORMAT, split, tokens]).encode())
    for spec in specs:
        location, _ = manifest_url(spec.url)
        fs, path = fsspec.core.url_to_fs(location)
        try:
            with storage_errors(location, "reading"):
                manifest = fs.cat_file(path, start=0)  # an open range: one GET, no HEAD
        except FileNotFoundError:
            raise DataError(f"{location}: no manifest (is ingest finished? `eegfm merge`)") from None
        digest.update(json.dumps([spec.url, spec.weight, spec.split]).encode())
        digest.update(hashlib.sha256(manifest).digest())
    return digest.hexdigest()[:32]


def load_table_on_node(
    specs: Sequence[DatasetSpec], split: str, tokens: str | None = None, cache_dir: str = ""
) -> ShardTable:
    """`load_table`, shared by a node's processes when any dataset is remote; local datasets are read
    directly (their indexes cost no request)."""
    if not any(is_remote(spec.url) for spec in specs):
        return load_table(specs, split, tokens)
    folder = Path(cache_dir or default_cache_dir()) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    key = table_key(specs, split, tokens)
    path = folder / f"{key}.table"
    with file_lock(folder / f"{key}.lock"):
        if not path.exists():
            remove_stale_temporaries(str(folder), path.name)
            write_table(load_table(specs, split, tokens), str(path))
    return map_table(path)


def write_table(table: ShardTable, path: str) -> None:
    """The table as one file (the module's layout), atomically."""
    header: dict = {"format": TABLE_FORMAT, "lists": {name: getattr(table, name) for name in LISTS}}
    columns, offset = {}, 0
    arrays = {name: getattr(table, name) for name in ARRAYS if getattr(table, name) is not None}
    for name, array in arrays.items():
        offset = -(-offset // ALIGN) * ALIGN
        columns[name] = {"dtype": array.dtype.str, "length": len(array), "offset": offset}
        offset += array.nbytes
    header["columns"] = columns
    encoded = json.dumps(header).encode()
    base = -(-(8 + len(encoded)) // ALIGN) * ALIGN
    with atomic_write(path) as local, open(local, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little") + encoded)
        for name, array in arrays.items():
            out.seek(base + columns[name]["offset"])
            out.write(np.ascontiguousarray(array).tobytes())
        out.truncate(base + offset)


def map_table(path: Path) -> ShardTable:
    """The table in `path`, its columns mapped read-only (shared through the page cache)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    if header.get("format") != TABLE_FORMAT:
        raise DataError(f"{path}: not a table of format {TABLE_FORMAT}: delete it (it is only a cache)")
    base = -(-(8 + length) // ALIGN) * ALIGN
    arrays = {}
    for name, column in header["columns"].items():
        dtype, length = np.dtype(column["dtype"]), column["length"]
        arrays[name] = (
            np.memmap(path, dtype=dtype, mode="r", offset=base + column["offset"], shape=length)
            if length
            else np.empty(0, dtype=dtype)  # mmap cannot map zero bytes
        )
    return ShardTable(**header["lists"], **arrays)
