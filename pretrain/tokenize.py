"""`eegfm tokenize`: every window's code ids, in a token shard beside its shard; streaming and resumable.

For each shard `x.tar` of a dataset, `x.tokens-<id>.tar` holds `<key>.tok.npy` (C × P × codes per patch,
int16 or int32) for the same windows in the same order, and `x.tokens-<id>.index.json` holds the byte
ranges and crc32s (the shard index's format, both written by `IndexedTarWriter`) plus the tokenizer's id,
version and checkpoint. `<id>` hashes the tokenizer's weights, so ids of different tokenizers never mix. A
token shard counts once its index is written, after the tar: a killed job run again redoes at most the
shard it was in. Shards are read one at a time, so memory does not grow with the dataset.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import fsspec
import numpy as np
import torch
from tqdm import tqdm

from eegfm import __version__
from eegfm.ingest import contract
from eegfm.ingest.indexed_tar import IndexedTarWriter
from eegfm.models.tokenizer import NeuralTokenizer
from eegfm.pretrain.checkpoints import latest_checkpoint, run_config
from eegfm.pretrain.decode import decode_sample
from eegfm.pretrain.table import TOKEN_SUFFIX, manifest_url, token_shard_name
from eegfm.pretrain.tokenizer import load_tokenizer
from eegfm.storage import exists, join_url, read_json


def tokenizer_id(tokenizer: NeuralTokenizer) -> str:
    """A short hash of the tokenizer's weights and codebooks."""
    digest = hashlib.sha1()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _tokenize_shard(
    tokenizer: NeuralTokenizer, data: bytes, rows: list[list], where: str, clip: float, batch_windows: int
) -> list[np.ndarray]:
    """Code ids of a shard's windows, in batches of consecutive windows of one shape."""
    dtype = np.int16 if tokenizer.config.codebook_size <= np.iinfo(np.int16).max else np.int32
    out: list[np.ndarray] = []
    start = 0
    while start < len(rows):
        shape = tuple(rows[start][3:5])
        stop = start
        while stop < len(rows) and stop - start < batch_windows and tuple(rows[stop][3:5]) == shape:
            stop += 1
        eeg = torch.empty((stop - start, *shape))
        positions = [
            decode_sample(data[offset : offset + size], f"{where} @ {offset}", clip, window)[1]
            for (_, offset, size, *_), window in zip(rows[start:stop], eeg, strict=True)
        ]
        ids = tokenizer.tokenize(eeg, torch.from_numpy(np.stack(positions)))
        out.extend(ids.numpy().astype(dtype))
        start = stop
    return out


def tokenize_dataset(
    checkpoint: str, shards: str, *, batch_windows: int = 256, progress: bool = True
) -> dict[str, Any]:
    """Tokenize every shard of a dataset (folder or manifest URL) with a stage-1 checkpoint (or run dir)."""
    found = latest_checkpoint(checkpoint)
    if found is None:
        raise FileNotFoundError(f"no complete tokenizer checkpoint at {checkpoint}")
    tokenizer = load_tokenizer(found)
    clip = float(run_config(found).data.clip)  # the normalisation the tokenizer was trained with
    identity = tokenizer_id(tokenizer)
    location, folder = manifest_url(shards)
    manifest = read_json(location)
    summary = {"tokenizer": identity, "checkpoint": found, "shards": 0, "windows": 0, "already_done": 0}
    started = time.perf_counter()
    for shard in tqdm(manifest["shards"], desc=f"tokenize {identity}", unit="shard", disable=not progress):
        name = token_shard_name(shard["url"], identity)
        index_url = join_url(folder, contract.index_name(name))
        if exists(index_url):
            summary["already_done"] += 1
            continue
        rows = read_json(join_url(folder, contract.index_name(shard["url"])))["samples"]
        with fsspec.open(join_url(folder, shard["url"]), "rb") as f:
            data = f.read()
        ids = _tokenize_shard(tokenizer, data, rows, shard["url"], clip, batch_windows)
        tar = IndexedTarWriter(folder, name, ("channels", "patches", "codes"))
        try:
            for (key, *_), codes in zip(rows, ids, strict=True):
                tar.write(key, {TOKEN_SUFFIX: _npy_bytes(codes)}, codes.shape)
        except BaseException:
            tar.discard()
            raise
        tar.commit(tokenizer={"id": identity, "eegfm": __version__, "checkpoint": found})
        summary["shards"] += 1
        summary["windows"] += len(rows)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
