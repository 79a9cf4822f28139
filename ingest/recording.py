"""One input file → windows ready for the shards, or a reason it was skipped.

The file is streamed chunk by chunk (memory independent of its length). Windows go to a local spool file
as they are made, because each sample's metadata carries the whole recording's per-channel statistics,
which are known only at the end; the spool is then read back in order by the shard writer.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import mne
import numpy as np

from eegfm.errors import StorageError
from eegfm.ingest import contract
from eegfm.ingest.channels import Channel, canonical_channel, cap_labels
from eegfm.ingest.edf import (
    EdfError,
    EdfHeader,
    EdfSignal,
    contiguous_segments,
    decode,
    read_header,
    read_records,
)
from eegfm.ingest.edf import record_onsets as read_record_onsets
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.preprocess import PreprocessConfig, SegmentPipeline, preprocess_hash
from eegfm.ingest.recipe import Recipe, SourceFile

log = logging.getLogger(__name__)

# Fixed amplitude-histogram bins (µV) shared by every file, so task histograms can simply be summed.
HISTOGRAM_EDGES = np.linspace(-1000.0, 1000.0, 201)  # values beyond the ends count in the end bins
_HISTOGRAM_WIDTH = HISTOGRAM_EDGES[1] - HISTOGRAM_EDGES[0]
_HISTOGRAM_STRIDE = 16  # every 16th sample is plenty for a histogram and keeps it off the hot path

# Factor to µV of every spelling of a voltage unit real files write, after `_unit_key` (NFKC, which maps
# the micro sign µ to Greek mu μ, then lower case, no spaces): uV, UV, µV, μV, microvolt(s), mV, V, nV.
# The field is 8 bytes, so writers cut the long names ("microvol", "millivol").
_VOLT_SCALES = {
    "uv": 1.0,
    "μv": 1.0,
    "microv": 1.0,
    "microvol": 1.0,
    "microvolt": 1.0,
    "microvolts": 1.0,
    "mv": 1e3,
    "millivol": 1e3,
    "millivolt": 1e3,
    "millivolts": 1e3,
    "v": 1e6,
    "volt": 1e6,
    "volts": 1e6,
    "nv": 1e-3,
    "nanovolt": 1e-3,
    "nanovolts": 1e-3,
}


@dataclass
class FileOutcome:
    """The manifest's line for one input file: written (with what) or skipped (with why)."""

    path: str
    status: str  # "written" | "skipped"
    reason: str | None
    split: str | None
    subject: str
    session: str
    recording: str
    samples: int = 0
    hours: float = 0.0
    montage: str | None = None
    montage_name: str | None = None
    channels: list[str] = field(default_factory=list)
    orig_sfreq: float | None = None
    dropped_channels: dict[str, str] = field(default_factory=dict)
    dropped_windows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Kept out of the manifest's per-file lines (summed or tabulated per task instead):
    histogram: list[int] = field(default_factory=list)  # amplitude counts over HISTOGRAM_EDGES
    positions: list[list[float]] = field(default_factory=list)  # per channel, metres

    def as_record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("histogram", "positions")}


@dataclass
class Sample:
    key: str
    members: dict[str, bytes]  # contract suffix → bytes
    hours: float
    shape: tuple[int, int]  # (channels, times) of the EEG member, for the shard's index


@dataclass
class IngestedFile:
    outcome: FileOutcome
    samples: Iterator[Sample]  # empty unless written; lazily read from the spool


def skipped(source: SourceFile, reason: str, **details: Any) -> IngestedFile:
    outcome = FileOutcome(
        source.path,
        "skipped",
        reason,
        source.split,
        source.subject,
        source.session,
        source.recording,
        **details,
    )
    return IngestedFile(outcome, iter(()))


@dataclass
class _ChannelPlan:
    signals: list[EdfSignal]
    labels: list[str]  # as the manifest names them (duplicates get their signal number)
    channels: list[Channel]
    scales: np.ndarray
    orig_sfreq: float
    dropped: dict[str, str]
    notes: list[str]


def unit_scale(signal: EdfSignal) -> tuple[float, str | None] | str:
    """Factor from the signal's physical unit to µV (and a note), or the reason it cannot be trusted.

    A blank unit field must never silently mean volts (a ×10⁶ error): it is read as µV only when the
    physical range could not be volts or millivolts for scalp EEG (|range| ≥ 10).
    """
    unit = _unit_key(signal.unit)
    if unit in _VOLT_SCALES:
        return _VOLT_SCALES[unit], None
    if unit == "":
        largest = max(abs(signal.physical_min), abs(signal.physical_max))
        if largest >= 10.0:
            return 1.0, f"{signal.label}: blank unit field, physical range ±{largest:g} read as µV"
        return f"blank unit field and a small physical range: cannot tell V, mV or µV apart (±{largest:g})"
    return f"unit {signal.unit!r} is not a voltage"


def _unit_key(unit: str) -> str:
    """A unit field as `_VOLT_SCALES` spells it, whatever encoding the file's writer used.

    The reader decodes header bytes as latin-1 (every byte decodes), so a µ written in UTF-8 (C2 B5, or
    Greek mu CE BC) arrives as two characters (`Âµ`, `Î¼`); those are re-decoded as the UTF-8 they were.
    NFKC then folds the micro sign (latin-1 B5) into Greek mu, so both micro letters compare equal.
    """
    text = unit.strip()
    # Not UTF-8 bytes: keep the latin-1 reading (a lone B5 is the latin-1 micro sign).
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("latin-1").decode("utf-8")
    return unicodedata.normalize("NFKC", text).lower().replace(" ", "")


def plan_channels(header: EdfHeader, recipe: Recipe) -> _ChannelPlan:
    """Which signals become which canonical channels, and why every other one is dropped."""
    dropped: dict[str, str] = {}
    notes: list[str] = []
    candidates: list[tuple[EdfSignal, Channel, float]] = []
    rename = dict(recipe.rename)
    montage = recipe.positions
    unknown_cap = False
    if recipe.cap:
        cap_montage = _cap_montage(recipe.cap, [s.label for s in header.data_signals])
        unknown_cap = cap_montage is None
        if cap_montage is not None:
            montage = cap_montage
            cap_names = list(montage_positions(montage))
            rename.update({label: cap_names[i] for i, label in enumerate(cap_labels(len(cap_names)))})
    counts = Counter(s.label for s in header.data_signals)
    key = {
        s.index: s.label if counts[s.label] == 1 else f"{s.label} (signal {s.index})"
        for s in header.data_signals
    }
    for s in header.data_signals:
        label = key[s.index]
        if unknown_cap and _CAP_LABEL.match(s.label):
            dropped[label] = "cap labels match no BioSemi montage (32/64/128/160/256 electrodes)"
            continue
        channel = canonical_channel(s.label, montage, rename)
        if isinstance(channel, str):
            dropped[label] = channel
            continue
        if recipe.eeg_channels and channel.name not in recipe.eeg_channels:
            dropped[label] = "not among the recipe's EEG channels"
            continue
        if s.physical_min == s.physical_max or s.digital_min == s.digital_max:
            dropped[label] = "physical or digital min equals max (no gain)"
            continue
        if s.samples_per_record == 0:
            dropped[label] = "no samples"
            continue
        scale = unit_scale(s)
        if isinstance(scale, str):
            dropped[label] = scale
            continue
        if scale[1]:
            notes.append(scale[1])
        previous = next((c for _, c, _ in candidates if c.name == channel.name), None)
        if previous is not None:
            dropped[label] = f"duplicate label ({previous.name} already kept)"
            continue
        candidates.append((s, channel, scale[0]))
    # One rate per recording: keep the rate most EEG channels share (the higher one on a tie).
    by_rate = Counter(s.samples_per_record for s, _, _ in candidates)
    spr = max(by_rate, key=lambda r: (by_rate[r], r)) if by_rate else 0
    kept = []
    for s, channel, scale in candidates:
        if s.samples_per_record != spr:
            dropped[key[s.index]] = (
                f"sampling rate differs from the recording's EEG rate "
                f"({header.sfreq(s):g} Hz vs {spr / header.record_duration:g} Hz)"
            )
        else:
            kept.append((s, channel, scale))
    return _ChannelPlan(
        signals=[s for s, _, _ in kept],
        labels=[key[s.index] for s, _, _ in kept],
        channels=[c for _, c, _ in kept],
        scales=np.array([k for _, _, k in kept], dtype=np.float64),
        orig_sfreq=spr / header.record_duration if spr else 0.0,
        dropped=dropped,
        notes=notes,
    )


_CAP_LABEL = re.compile(r"^[A-H]([1-9]|[12]\d|3[0-2])$")


def _cap_montage(cap: str, labels: list[str]) -> str | None:
    """The montage whose electrode order the cap labels follow; `auto` picks BioSemi's by electrode count."""
    if cap != "auto":
        return cap
    name = f"biosemi{sum(1 for label in labels if _CAP_LABEL.match(label))}"
    return name if name in mne.channels.get_builtin_montages() else None


def ingest_file(source: SourceFile, recipe: Recipe, spool_dir: str | None = None) -> IngestedFile:
    """Read, select, preprocess and window one file. Never raises for bad input: it returns a skip."""
    if source.skip_reason:
        return skipped(source, source.skip_reason)
    try:
        with fsspec.open(source.url, "rb") as f:
            return _ingest_open_file(f, source, recipe, spool_dir)
    except EdfError as e:
        return skipped(source, f"unreadable: {e}")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the machine's disk, not the file: no skip can help
            spool = spool_dir or tempfile.gettempdir()
            raise StorageError(
                f"{spool}: no space left on device while spooling {source.path}: free space there, "
                "or point TMPDIR at a larger disk"
            ) from e
        return skipped(source, f"I/O error: {e}")
    except Exception as e:  # one odd file must not end a many-hour run: listed with the error, and logged
        log.warning("ingest of %s failed", source.url, exc_info=True)
        return skipped(source, f"failed: {type(e).__name__}: {e}")


def _ingest_open_file(f: Any, source: SourceFile, recipe: Recipe, spool_dir: str | None) -> IngestedFile:
    config = recipe.preprocess
    header = read_header(f, source.size)
    notes = list(header.notes)
    if not header.data_signals:
        return skipped(source, "annotation-only file (no signal channels)", notes=notes)
    if header.n_records == 0:
        return skipped(source, "no complete data record", notes=notes)
    plan = plan_channels(header, recipe)
    notes += plan.notes
    details = {"dropped_channels": plan.dropped, "notes": notes}
    if len(plan.channels) < config.min_channels:
        return skipped(source, "no EEG channel with a known position", **details)
    if header.is_discontinuous:
        onsets = read_record_onsets(f, header)
        segments = [(a, b, float(onsets[a])) for a, b in contiguous_segments(onsets, header.record_duration)]
        if len(segments) > 1:
            notes.append(f"EDF+D: {len(segments)} contiguous segments")
    else:
        segments = [(0, header.n_records, 0.0)]
    duration = header.n_records * header.record_duration
    if all((b - a) * header.record_duration < config.window_s for a, b, _ in segments):
        return skipped(source, f"shorter than one window ({duration:g} s < {config.window_s:g} s)", **details)

    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - closed by the sample stream or below
    try:
        windower = _stream_windows(f, header, plan, segments, config, recipe.mains_hz, spool)
        return _finish(source, recipe, plan, windower, spool, details)
    except BaseException:
        spool.close()
        raise


class _Windower:
    """Cuts each segment's filtered stream into windows: spools their samples, keeps their QC statistics."""

    def __init__(self, config: PreprocessConfig, n_channels: int, spool: Any):
        self.config, self.spool = config, spool
        self.n_channels = n_channels
        # Per window (rows, in order; dropped windows too, so window indices and keys stay stable):
        self._std: list[np.ndarray] = []  # per channel, before clipping (QC)
        self._total: list[np.ndarray] = []  # per channel sums after clipping (recording statistics)
        self._total_sq: list[np.ndarray] = []
        self._start: list[np.ndarray] = []  # seconds from the recording's start
        self.clipped = 0
        self.histogram = np.zeros(len(HISTOGRAM_EDGES) - 1, np.int64)
        self.start_segment(0.0)

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(std, total, total_sq) as (windows, channels) arrays and the window starts."""
        if not self._std:
            empty = np.empty((0, self.n_channels))
            return empty, empty, empty, np.empty(0)
        return tuple(np.concatenate(x) for x in (self._std, self._total, self._total_sq, self._start))

    def start_segment(self, onset: float) -> None:
        """Windows never cross a gap: what is left of the previous segment (< one window) is dropped."""
        self.pending = np.empty((self.n_channels, 0), np.float32)
        self.onset, self.emitted = onset, 0

    def feed(self, y: np.ndarray) -> None:
        """Cut every complete window out of `y` (C, T) at once; keep the remainder for the next call."""
        config, n = self.config, self.config.window_samples
        y = np.concatenate([self.pending, y], axis=1) if self.pending.shape[1] else y
        k = y.shape[1] // n
        self.pending = y[:, k * n :]
        if k == 0:
            return
        w = y[:, : k * n].reshape(y.shape[0], k, n).transpose(1, 0, 2)  # (windows, channels, samples)
        total = w.sum(axis=2, dtype=np.float64)
        total_sq = np.einsum("kcn,kcn->kc", w, w, dtype=np.float64)
        # QC looks at the signal as recorded, before clipping.
        std = np.sqrt(np.maximum(total_sq / n - (total / n) ** 2, 0.0)).astype(np.float32)
        if config.clip_uv is not None and max(w.max(), -w.min()) > config.clip_uv:
            self.clipped += int((np.abs(w) > config.clip_uv).sum())
            w = np.clip(w, -config.clip_uv, config.clip_uv)
            total = w.sum(axis=2, dtype=np.float64)
            total_sq = np.einsum("kcn,kcn->kc", w, w, dtype=np.float64)
        self._std.append(std)
        self._total.append(total)
        self._total_sq.append(total_sq)
        self._start.append(self.onset + (self.emitted + np.arange(k)) * config.window_s)
        self.emitted += k
        sub = w[:, :, ::_HISTOGRAM_STRIDE].ravel()
        bins = ((sub - HISTOGRAM_EDGES[0]) / _HISTOGRAM_WIDTH).astype(np.int64)
        np.clip(bins, 0, len(self.histogram) - 1, out=bins)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.spool.write(w.astype(config.dtype).tobytes())


def _stream_windows(
    f: Any,
    header: EdfHeader,
    plan: _ChannelPlan,
    segments: list[tuple[int, int, float]],
    config: PreprocessConfig,
    mains_hz: float,
    spool: Any,
) -> _Windower:
    windower = _Windower(config, len(plan.signals), spool)
    records_per_chunk = max(1, int(config.chunk_s / header.record_duration))
    for first, stop, onset in segments:
        pipeline = SegmentPipeline(config, plan.orig_sfreq, len(plan.signals), mains_hz)
        windower.start_segment(onset)
        for start in range(first, stop, records_per_chunk):
            records = read_records(f, header, start, min(records_per_chunk, stop - start))
            windower.feed(pipeline.push(decode(records, header, plan.signals, plan.scales)))
        windower.feed(pipeline.flush())
    return windower


def _finish(
    source: SourceFile,
    recipe: Recipe,
    plan: _ChannelPlan,
    windower: _Windower,
    spool: Any,
    details: dict[str, Any],
) -> IngestedFile:
    """Recording-level QC (flat channels, bad windows), statistics, and the lazy sample stream."""
    config = recipe.preprocess
    std, total, total_sq, starts = windower.stats()
    dropped_windows: Counter[str] = Counter()
    if len(std) == 0:
        spool.close()
        return skipped(
            source, f"no contiguous segment as long as one window ({config.window_s:g} s)", **details
        )
    recording_std = np.sqrt((std**2).mean(axis=0))
    live = recording_std >= config.flat_std_uv
    for c in np.flatnonzero(~live):
        details["dropped_channels"][plan.labels[c]] = f"flat/dead (std {recording_std[c]:.3g} µV)"
    if live.sum() < config.min_channels:
        spool.close()
        return skipped(source, "every EEG channel is flat/dead", **details)
    good = (std[:, live] >= config.flat_std_uv) & (std[:, live] <= config.max_std_uv)
    keep = good.mean(axis=1) >= config.min_good_channel_fraction
    if (~keep).any():
        dropped_windows["too_few_good_channels"] = int((~keep).sum())
    details["dropped_windows"] = dict(dropped_windows)
    if not keep.any():
        spool.close()
        return skipped(source, "every window has too few good channels (flat or > max_std_uv)", **details)
    if windower.clipped:
        details["notes"].append(f"{windower.clipped} samples clipped at ±{config.clip_uv:g} µV")

    kept = np.flatnonzero(keep)
    count = len(kept) * config.window_samples
    mean = total[kept][:, live].sum(axis=0) / count
    var = np.maximum(total_sq[kept][:, live].sum(axis=0) / count - mean**2, 0.0)
    channels = [c for c, alive in zip(plan.channels, live, strict=True) if alive]
    names = [c.name for c in channels]
    hours = len(kept) * config.window_s / 3600
    outcome = FileOutcome(
        path=source.path,
        status="written",
        reason=None,
        split=source.split,
        subject=source.subject,
        session=source.session,
        recording=source.recording,
        samples=len(kept),
        hours=hours,
        montage=contract.montage_tag(source.reference, names),
        montage_name=contract.montage_name(source.reference, names),
        channels=names,
        orig_sfreq=plan.orig_sfreq,
        histogram=windower.histogram.tolist(),
        positions=[[round(v, 6) for v in c.position] for c in channels],
        **details,
    )
    meta = {
        "dataset": recipe.name,
        "subject": source.subject,
        "session": source.session,
        "recording": source.recording,
        "source_file": source.path,
        "split": source.split,
        "channels": names,
        "channel_pairs": [list(c.pair) if c.pair else None for c in channels],
        "montage": outcome.montage,
        "montage_name": outcome.montage_name,
        "sfreq": config.target_sfreq,
        "orig_sfreq": plan.orig_sfreq,
        "duration_s": config.window_s,
        "reference": source.reference,
        "units": contract.UNITS,
        "preprocess_hash": preprocess_hash(config, recipe.mains_hz),
        "preprocess": {**asdict(config), "mains_hz": recipe.mains_hz},
        "channel_mean": [round(float(v), 4) for v in mean],
        "channel_std": [round(float(v), 4) for v in np.sqrt(var)],
    }
    positions = np.array([c.position for c in channels], dtype=np.float32)
    samples = _read_spool(spool, kept, starts[kept], live, meta, positions, config, source.path)
    return IngestedFile(outcome, samples)


def _read_spool(
    spool: Any,
    kept: np.ndarray,
    starts: np.ndarray,
    live: np.ndarray,
    meta: dict[str, Any],
    positions: np.ndarray,
    config: PreprocessConfig,
    source_path: str,
) -> Iterator[Sample]:
    dtype = np.dtype(config.dtype)
    n_all, t = len(live), config.window_samples
    size = n_all * t * dtype.itemsize
    pos_bytes = _npy(positions)
    try:
        for index, start_s in zip(kept.tolist(), starts.tolist(), strict=True):
            spool.seek(index * size)
            eeg = np.frombuffer(spool.read(size), dtype=dtype).reshape(n_all, t)[live]
            sample_meta = {**meta, "start_s": round(start_s, 6), "window_index": index}
            key = contract.sample_key(source_path, index)
            members = {
                contract.EEG_SUFFIX: _npy(np.ascontiguousarray(eeg)),
                contract.POS_SUFFIX: pos_bytes,
                contract.META_SUFFIX: json.dumps(sample_meta, sort_keys=True).encode(),
            }
            yield Sample(key, members, config.window_s / 3600, eeg.shape)
    finally:
        spool.close()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
