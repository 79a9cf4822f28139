"""Neuroscan CNT 4.x continuous files (SEED, LaBraM's Neuroscan corpora) as a `RecordingReader`.

Why MNE's reader: `mne.io.read_raw_cnt(preload=False)` is lazy (`get_data(picks, start, stop)` reads only
that sample range), knows the block-multiplexed layout (`channel_offset`) and the event table, and is the
reader most CNT users know. It opens paths only, so a remote file is copied to a local temporary folder
first (`local_copy.local_files`; disk use one file's size).

What we pass, and why (MNE's quirks, from its source and issues):
- `data_format`: a CNT header does not say whether samples are int16 or int32. MNE's `auto` infers it from
  the header's sample count and event-table offset, and fails for a file over 2 GB (the offset is a
  32-bit field) or a header sample count of 0 (mne-python #9482 shows what a wrong guess reads:
  alternating channels of a few discrete values). We read those header fields ourselves first
  (`_layout`): a file shorter than its event-table offset is refused as truncated (MNE would only say
  it cannot compute the data format), and over 2 GB the width whose data ends closest before the end of
  the file is passed explicitly.
- `header="new"`: MNE's default `auto` also reads a bad-channel flag at byte 4 of each electrode record,
  which is inside the 10-byte label: every label of five or more characters (`HEOG-L`) comes back bad.
  The published ELECTLOC structure has its `bad` flag at byte 14, which `new` reads.
- `date_format` is left at its default: the session date is not used here (a bad one is only a warning).
Channels are all typed EEG by MNE; `channel_plan` drops non-EEG ones by label and position. Values are
MNE's volts (unit `V`), so `channel_plan` scales them to µV like any other file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eegfm.ingest.local_copy import local_files
from eegfm.ingest.signals import ReadError, RecordingReader, Signal

if TYPE_CHECKING:
    from eegfm.ingest.recipe import Recipe, SourceFile

_SETUP_BYTES, _ELECTRODE_BYTES = 900, 75
_N_CHANNELS, _RATE, _N_SAMPLES, _EVENT_TABLE = 370, 376, 864, 886
_TEEG_BYTES = 9  # event type (1 byte), total length, offset (4 bytes each)
_LARGE = 2**31  # the event table offset is a signed 32-bit field: beyond it the offset wraps


def _layout(path: Path) -> tuple[str, list[str]]:
    """The `data_format` to pass MNE (int16/int32) from the header, or a `ReadError` saying what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as f:
        setup = f.read(_SETUP_BYTES)
    if len(setup) < _SETUP_BYTES:
        raise ReadError(f"file is {size} bytes, shorter than a Neuroscan CNT header ({_SETUP_BYTES})")
    n_channels = int(np.frombuffer(setup, "<u2", 1, _N_CHANNELS)[0])
    n_samples = int(np.frombuffer(setup, "<i4", 1, _N_SAMPLES)[0])
    event_table = int(np.frombuffer(setup, "<i4", 1, _EVENT_TABLE)[0])
    sfreq = int(np.frombuffer(setup, "<u2", 1, _RATE)[0])
    if n_channels == 0 or sfreq == 0:
        raise ReadError(f"not a Neuroscan CNT header ({n_channels} channels at {sfreq} Hz)")
    data_start = _SETUP_BYTES + _ELECTRODE_BYTES * n_channels
    if size < _LARGE:
        if event_table > size or event_table < data_start:
            raise ReadError(
                f"truncated: the header puts the event table at byte {event_table}, the file has {size} bytes"
            )
        data_bytes = event_table - data_start
        if n_samples > 0 and data_bytes % (n_channels * n_samples) == 0:
            width = data_bytes // (n_channels * n_samples)
            if width in (2, 4):
                return f"int{8 * width}", []
        # The header's sample count does not fit (MNE's `auto` would fail or guess): the widths that divide.
        if data_bytes % (n_channels * 4) == 0:
            raise ReadError(
                f"cannot tell int16 from int32 samples: the header's sample count ({n_samples}) fits neither"
            )
        if data_bytes % (n_channels * 2) != 0:
            raise ReadError(f"{data_bytes} data bytes are not whole samples of {n_channels} channels")
        return "int16", ["CNT header's sample count does not fit the data: read as int16 (the only width)"]
    if n_samples <= 0:
        raise ReadError("file over 2 GB with no sample count in its header: the sample width is unknown")
    fits = {w: size - data_start - n_samples * n_channels * w for w in (2, 4)}
    fits = {w: rest for w, rest in fits.items() if rest >= _TEEG_BYTES}
    if not fits:
        raise ReadError(f"truncated: {n_samples} samples of {n_channels} channels do not fit the file")
    width = min(fits, key=fits.__getitem__)
    return f"int{8 * width}", [
        f"file over 2 GB: samples read as int{8 * width} (the width that fills the file)"
    ]


class CntRecording:
    """A CNT file opened lazily by MNE; reads are `get_data` of the asked channels and range."""

    def __init__(self, path: Path):
        import mne

        data_format, self.notes = _layout(path)
        try:
            self.raw = mne.io.read_raw_cnt(
                path, data_format=data_format, header="new", preload=False, verbose="error"
            )
        except Exception as e:  # MNE raises RuntimeError for a header it cannot read
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ReadError(f"MNE cannot read this CNT file: {first_line}") from None
        bads = set(self.raw.info["bads"])
        sfreq = float(self.raw.info["sfreq"])
        self.signals = [
            Signal(
                index=i, label=name, unit="V", sfreq=sfreq, bad="bad flag in the CNT header" * (name in bads)
            )
            for i, name in enumerate(self.raw.ch_names)
        ]

    @property
    def duration_s(self) -> float:
        return self.raw.n_times / self.raw.info["sfreq"]

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        return [(0, self.raw.n_times, 0.0)] if self.raw.n_times else []

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        return max(1, round(chunk_s * sfreq))

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        values = self.raw.get_data(picks=[s.index for s in signals], start=start, stop=stop)
        return (values.T * np.asarray(scales, dtype=np.float64)).astype(np.float32)


@contextlib.contextmanager
def open_cnt(source: SourceFile, _recipe: Recipe) -> Iterator[RecordingReader]:
    """Open a `.cnt` file (a remote one is copied to a local temporary folder first)."""
    with local_files(source.url) as path:
        yield CntRecording(path)
