"""Samples from the bytes of their tar members: no tarfile, no numpy header parser, no copies.

A sample's byte range (from the shard index) holds its tar members; these functions turn it into a
normalised EEG window and its positions. Anything malformed is a `DataError` naming the shard, the byte
offset and the sample, never a parser's traceback.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable

import numpy as np
import torch

from eegfm.errors import DataError
from eegfm.ingest import contract

_BLOCK = 512
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z][0-9]+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}"
)


def check_crc(blob: bytes, expected: int, where: Callable[[], str]) -> None:
    """The bytes the index's CRC-32 promised: corruption anywhere in a sample is caught before decoding
    (crc32 runs at several GB/s, a small fraction of decoding). `where` names the sample, lazily: only a
    failure pays for looking its key up."""
    found = zlib.crc32(blob)
    if found != int(expected):
        raise DataError(
            f"{where()}: checksum mismatch (CRC-32 {found:08x}, index says {int(expected):08x}): the "
            "shard is corrupt; restore or re-ingest it"
        )


def tar_members(blob: memoryview, where: str) -> dict[str, memoryview]:
    """{'<key>.<suffix>': bytes} of a run of tar members (ustar, with PAX `path` records if any)."""
    members, pos, name = {}, 0, None
    while pos + _BLOCK <= len(blob):
        header = bytes(blob[pos : pos + _BLOCK])
        if not header.strip(b"\0"):
            break
        try:
            size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
        except ValueError:
            raise DataError(f"{where}: corrupt tar header (size field {header[124:136]!r})") from None
        kind = header[156:157]
        body = blob[pos + _BLOCK : pos + _BLOCK + size]
        if len(body) < size:
            raise DataError(f"{where}: tar member cut short ({len(body)} of {size} bytes)")
        pos += _BLOCK + -(-size // _BLOCK) * _BLOCK
        if kind == b"x":  # PAX extended header: may carry the next member's path
            for record in bytes(body).decode(errors="replace").splitlines():
                key, _, value = record.partition(" ")[2].partition("=")
                if key == "path":
                    name = value
            continue
        if kind not in (b"0", b"\0"):
            raise DataError(f"{where}: unexpected tar member type {kind!r}")
        prefix = header[345:500].rstrip(b"\0").decode(errors="replace")
        plain = header[:100].rstrip(b"\0").decode(errors="replace")
        members[name or (f"{prefix}/{plain}" if prefix else plain)] = body
        name = None
    return members


def npy_array(body: memoryview, where: str) -> np.ndarray:
    """A C-order .npy member without copying; numpy's own reader parses its header with `ast`, which
    costs more than decoding the window itself."""
    if bytes(body[:6]) != b"\x93NUMPY" or len(body) < 12:
        raise DataError(f"{where}: not a .npy member")
    length = int.from_bytes(body[8:10], "little") if body[6] == 1 else int.from_bytes(body[8:12], "little")
    start = 10 if body[6] == 1 else 12
    header = _NPY_HEADER.match(bytes(body[start : start + length]))
    if header is None:
        raise DataError(f"{where}: not a plain C-order .npy member")
    shape = tuple(int(n) for n in header[2].split(b",") if n.strip())
    try:
        return np.frombuffer(body[start + length :], dtype=header[1].decode()).reshape(shape)
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: .npy member does not hold its shape {shape}: {e}") from None


Stats = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]  # mean, 1 / std, positions, channel names


class RecordingStats:
    """Per-recording (channel mean, 1 / channel std, positions, channel names) already checked, keyed by
    (scope, recording): every window of a recording carries the same ones (ingest computes them over the
    whole recording), so a stream parses a recording's JSON and positions once, not once per window — the
    JSON alone cost more than the CRC-32 of the window. `scope` (the shard's folder) keeps two datasets'
    equal keys apart. The bytes of every window are still checked against their CRC-32 before this is
    consulted. Bounded: the oldest entries go first beyond `limit`."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.entries: dict[tuple[str, str], Stats] = {}

    def get(self, scope: str, recording: str) -> Stats | None:
        return self.entries.get((scope, recording))

    def put(self, scope: str, recording: str, value: Stats) -> None:
        if len(self.entries) >= self.limit:
            del self.entries[next(iter(self.entries))]
        self.entries[(scope, recording)] = value


def _checked_stats(members: dict[str, memoryview], where: str) -> Stats:
    """(mean, 1 / std, positions, channel names) of a sample, from its JSON and positions member, checked."""
    try:
        positions = npy_array(members[contract.POS_SUFFIX], where)
        meta = json.loads(bytes(members[contract.META_SUFFIX]))
    except KeyError as e:
        raise DataError(f"{where}: a sample has no {e.args[0]} member") from None
    except ValueError as e:
        raise DataError(f"{where}: its metadata is not JSON ({e})") from None
    try:  # numpy: torch's per-call overhead on 20-element vectors cost more than the window's arithmetic
        mean = np.asarray(meta["channel_mean"], dtype=np.float32)
        std = np.asarray(meta["channel_std"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: unusable channel_mean/channel_std in its metadata ({e})") from None
    channels = len(positions)
    usable = mean.shape == std.shape == (channels,) and bool(np.isfinite(mean).all() and (std > 0).all())
    if not usable or not np.isfinite(std).all():
        raise DataError(f"{where}: unusable channel statistics (non-finite, ≤ 0 or not one per channel)")
    # The names matter only where a run selects channels by name (`data.channels`), which checks them.
    names = meta.get("channels")
    usable_names = isinstance(names, list) and len(names) == channels
    return mean, 1 / std, positions, tuple(str(name) for name in names) if usable_names else ()


def decode_sample(
    blob: bytes | bytearray,
    where: str,
    clip: float,
    out: torch.Tensor,
    stats: RecordingStats | None = None,
    scope: str = "",
    scale_uv: float | None = None,
) -> tuple[str, np.ndarray]:
    """One sample's members → its key and positions (C×3); its EEG goes into `out` (`decode_window`)."""
    return decode_window(blob, where, clip, out, stats, scope, scale_uv)[:2]


def decode_window(
    blob: bytes | bytearray,
    where: str,
    clip: float,
    out: torch.Tensor,
    stats: RecordingStats | None = None,
    scope: str = "",
    scale_uv: float | None = None,
) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """One sample's members → its key, positions (C×3) and channel names (() where its metadata names
    none); its EEG goes into `out` (C×T float32), z-scored per channel (or, with `scale_uv`, divided by
    it: µV → model units) and clipped to ±clip.

    The z-score uses the whole recording's per-channel statistics that ingest stored (REVE's load-time
    normalisation); a sample without usable statistics is an error, not a silent guess. Arithmetic runs
    in torch: numpy converts float16 in software, several times slower than the whole rest of decoding.
    With `stats` (a stream's `RecordingStats`), a recording's statistics and positions are parsed and
    checked at its first window only.
    """
    members: dict[str, memoryview] = {}
    key = "?"
    writable = blob if isinstance(blob, bytearray) else bytearray(blob)  # torch shares the buffer
    for name, body in tar_members(memoryview(writable), where).items():
        key, suffix = name.rsplit("/", 1)[-1].split(".", 1)
        members[suffix] = body
    where = f"{where} (sample {key})"
    recording = key.rsplit("_w", 1)[0]
    known = stats.get(scope, recording) if stats is not None else None
    if known is None:
        known = _checked_stats(members, where)
        if stats is not None:
            stats.put(scope, recording, known)
    mean, inverse_std, positions, names = known
    try:
        eeg = npy_array(members[contract.EEG_SUFFIX], where)
    except KeyError as e:
        raise DataError(f"{where}: a sample has no {e.args[0]} member") from None
    if eeg.shape != out.shape or len(positions) != out.shape[0]:
        raise DataError(f"{where}: EEG of shape {eeg.shape}, its index says {tuple(out.shape)}")
    if scale_uv is None:
        out.copy_(torch.from_numpy(eeg)).sub_(torch.from_numpy(mean)[:, None]).mul_(
            torch.from_numpy(inverse_std)[:, None]
        )
    else:  # a fixed scale (CBraMod's µV / 100): amplitudes keep their meaning across recordings
        out.copy_(torch.from_numpy(eeg)).div_(scale_uv)
    # One reduction finds any NaN or ±inf (their sum is not finite; finite z-scores cannot overflow it),
    # before clipping would turn ±inf into ±clip.
    if not math.isfinite(float(out.sum())):
        raise DataError(f"{where}: non-finite EEG values")
    out.clamp_(-clip, clip)
    return key, positions, names


def token_member(blob: bytes, where: str) -> torch.Tensor:
    """The code ids (C × P × codes per patch) of one window's member in a token shard."""
    members = tar_members(memoryview(bytearray(blob)), where)
    if len(members) != 1:
        raise DataError(f"{where}: a token sample holds {len(members)} members, not 1")
    (body,) = members.values()
    return torch.from_numpy(npy_array(body, where))
