"""Windows of a recording's filtered stream: cut, QC statistics per window, and the local spool they
wait in until the recording's statistics are known."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from eegfm.errors import ConfigError
from eegfm.ingest import contract
from eegfm.ingest.channel_plan import ChannelPlan
from eegfm.ingest.preprocess import PreprocessConfig, SegmentPipeline
from eegfm.ingest.signals import RecordingReader

# Fixed amplitude-histogram bins (µV) shared by every file, so task histograms can simply be summed.
HISTOGRAM_EDGES = np.linspace(-1000.0, 1000.0, 201)  # values beyond the ends count in the end bins
_HISTOGRAM_WIDTH = HISTOGRAM_EDGES[1] - HISTOGRAM_EDGES[0]
_HISTOGRAM_STRIDE = 16  # every 16th sample is plenty for a histogram and keeps it off the hot path


@dataclass
class Sample:
    key: str
    members: dict[str, bytes]  # contract suffix → bytes
    hours: float
    shape: tuple[int, int]  # (channels, times) of the EEG member, for the shard's index


class Windower:
    """Cuts each segment's filtered stream into windows: spools their samples, keeps their QC statistics.

    Windows lie on a grid from each segment's start (every `stride_s` seconds; by default back to back),
    or, for a task whose windows sit on its events, start at the given `starts_s` (seconds from the
    recording's start, sorted): such a window is cut only where it lies wholly inside one segment.
    """

    def __init__(
        self,
        config: PreprocessConfig,
        n_channels: int,
        spool: Any,
        *,
        stride_s: float | None = None,
        starts_s: np.ndarray | None = None,
    ):
        self.config, self.spool = config, spool
        self.n_channels = n_channels
        self.stride = config.window_samples if stride_s is None else round(stride_s * config.target_sfreq)
        if not 0 < self.stride <= config.window_samples:
            raise ConfigError(
                f"window stride must be in (0, window_s = {config.window_s:g} s], got {stride_s!r} s"
            )
        self.starts_s = None if starts_s is None else np.sort(np.asarray(starts_s, dtype=np.float64))
        self._next_start = 0  # into starts_s: the first requested window not yet cut or passed
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
        self.buffer_start = 0  # the segment's sample index of pending[:, 0]
        if self.starts_s is not None:  # requested windows that began before this segment can no longer be cut
            half_sample = 0.5 / self.config.target_sfreq
            while (
                self._next_start < len(self.starts_s)
                and self.starts_s[self._next_start] < onset - half_sample
            ):
                self._next_start += 1

    def feed(self, y: np.ndarray) -> None:
        """Cut every complete window out of `y` (C, T) at once; keep the remainder for the next call."""
        y = np.concatenate([self.pending, y], axis=1) if self.pending.shape[1] else y
        w, offsets = self._cut(y) if self.starts_s is None else self._cut_at_starts(y)
        if len(offsets):
            self._account(w, self.onset + offsets / self.config.target_sfreq)

    def _cut(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grid's complete windows in `y`, as (windows, channels, samples), and their segment offsets."""
        n, s = self.config.window_samples, self.stride
        k = 0 if y.shape[1] < n else (y.shape[1] - n) // s + 1
        self.pending = y[:, k * s :]
        offsets = self.buffer_start + np.arange(k) * s
        self.buffer_start += k * s
        if k == 0:
            return y[:0], offsets
        if s == n:
            return y[:, : k * n].reshape(y.shape[0], k, n).transpose(1, 0, 2), offsets
        view = np.lib.stride_tricks.sliding_window_view(y, n, axis=1)[:, : (k - 1) * s + 1 : s]
        return view.transpose(1, 0, 2), offsets

    def _cut_at_starts(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The requested windows that `y` (from `buffer_start` on) holds whole; keeps what later ones need."""
        n, rate = self.config.window_samples, self.config.target_sfreq
        end = self.buffer_start + y.shape[1]
        offsets: list[int] = []
        while self._next_start < len(self.starts_s):
            offset = max(0, round((self.starts_s[self._next_start] - self.onset) * rate))
            if offset + n > end:
                break
            offsets.append(offset)
            self._next_start += 1
        cut = [y[:, o - self.buffer_start : o - self.buffer_start + n] for o in offsets]
        keep_from = end
        if self._next_start < len(self.starts_s):
            upcoming = max(0, round((self.starts_s[self._next_start] - self.onset) * rate))
            keep_from = min(end, max(self.buffer_start, upcoming))
        self.pending = y[:, keep_from - self.buffer_start :]
        self.buffer_start = keep_from
        w = np.stack(cut) if cut else np.empty((0, y.shape[0], n), y.dtype)
        return w, np.asarray(offsets, dtype=np.int64)

    def _account(self, w: np.ndarray, starts: np.ndarray) -> None:
        """QC statistics, clipping, histogram and spooling of windows `w` (windows, channels, samples)."""
        config, n = self.config, self.config.window_samples
        k = len(w)
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
        self._start.append(starts)
        self.emitted += k
        sub = w[:, :, ::_HISTOGRAM_STRIDE].ravel()
        bins = ((sub - HISTOGRAM_EDGES[0]) / _HISTOGRAM_WIDTH).astype(np.int64)
        np.clip(bins, 0, len(self.histogram) - 1, out=bins)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))
        self.spool.write(w.astype(config.dtype).tobytes())


def stream_windows(
    reader: RecordingReader,
    plan: ChannelPlan,
    segments: list[tuple[int, int, float]],
    config: PreprocessConfig,
    mains_hz: float,
    spool: Any,
    *,
    stride_s: float | None = None,
    starts_s: np.ndarray | None = None,
) -> Windower:
    windower = Windower(config, len(plan.signals), spool, stride_s=stride_s, starts_s=starts_s)
    chunk = reader.chunk_samples(plan.orig_sfreq, config.chunk_s)
    for first, stop, onset in segments:
        pipeline = SegmentPipeline(config, plan.orig_sfreq, len(plan.signals), mains_hz)
        windower.start_segment(onset)
        for start in range(first, stop, chunk):
            windower.feed(
                pipeline.push(reader.read(plan.signals, plan.scales, start, min(start + chunk, stop)))
            )
        windower.feed(pipeline.flush())
    return windower


def read_spool(
    spool: Any,
    kept: np.ndarray,
    starts: np.ndarray,
    live: np.ndarray,
    meta: dict[str, Any],
    positions: np.ndarray,
    config: PreprocessConfig,
    source_path: str,
    window_meta: list[dict[str, Any]] | None = None,
) -> Iterator[Sample]:
    """The kept windows' samples, in order, read back from the spool; `window_meta` (one per kept window,
    e.g. a task's label) is added to each window's metadata."""
    dtype = np.dtype(config.dtype)
    n_all, t = len(live), config.window_samples
    size = n_all * t * dtype.itemsize
    pos_bytes = _npy(positions)
    try:
        extra = window_meta if window_meta is not None else [{}] * len(kept)
        for index, start_s, more in zip(kept.tolist(), starts.tolist(), extra, strict=True):
            spool.seek(index * size)
            eeg = np.frombuffer(spool.read(size), dtype=dtype).reshape(n_all, t)[live]
            sample_meta = {**meta, "start_s": round(start_s, 6), "window_index": index, **more}
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
