"""WFDB records (PhysioNet: I-CARE, …) as a `RecordingReader`: a `.hea` header and the `.dat` files it names.

Why the `wfdb` package: it is PhysioNet's own reader and knows every WFDB sample format (16, 24, 212,
310, FLAC…). `wfdb.rdheader` reads the header alone; each `read` asks `wfdb.rdrecord` for its sample range
and channels only (`sampfrom`/`sampto`/`channels`), which reads that byte range of the .dat files, so
memory is one chunk whatever the record's length. Labels are the header's signal names and units its
unit fields (`uV`, `mV`), so `channel_plan` scales them like EDF's. wfdb opens paths only: a remote
record's .hea and .dat files are copied to a local temporary folder first (`local_copy.local_files`).

Refused with a reason (a manifest skip): a multi-segment record (a header of segments), a data file
shorter than the header's signal length (truncated), a header naming a .dat file that is not there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eegfm.ingest.local_copy import local_files
from eegfm.ingest.signals import ReadError, RecordingReader, Signal

if TYPE_CHECKING:
    from eegfm.ingest.recipe import Recipe, SourceFile

# Bytes per sample and bits of each uncompressed WFDB format (PhysioNet's "signal(5)" specification).
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3}
_BYTES_PER_SAMPLE["311"] = 4 / 3
_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 10, "311": 10}


def _read_header(record_name: str) -> Any:
    import wfdb  # imported when a WFDB file is met: it pulls in pandas (~0.3 s for every ingest otherwise)

    try:
        header = wfdb.rdheader(record_name)
    except Exception as e:  # wfdb raises ValueError, IndexError, FileNotFoundError… for a bad header
        raise ReadError(f"WFDB header unreadable: {type(e).__name__}: {e}") from None
    if isinstance(header, wfdb.MultiRecord):
        raise ReadError("multi-segment WFDB record (a header of segments): not supported")
    return header


def _record_name(header_path: Path) -> str:
    return str(header_path)[: -len(header_path.suffix)]


def _data_files(header_path: Path) -> list[str]:
    """The .dat files the header names (what a remote record must copy beside it)."""
    header = _read_header(_record_name(header_path))
    return sorted({name for name in (header.file_name or []) if name})


class WfdbRecording:
    """A single-segment WFDB record; signals are the header's, at `fs × samples per frame` each."""

    def __init__(self, header_path: Path):
        self.record_name = _record_name(header_path)
        self.header = _read_header(self.record_name)
        self.notes: list[str] = []
        h = self.header
        self.n_frames = int(h.sig_len or 0)
        if h.fs is None or h.fs <= 0:
            raise ReadError(f"WFDB header gives sampling frequency {h.fs}")
        self._check_data_sizes(header_path.parent)
        self._spf = [int(n or 1) for n in (h.samps_per_frame or [1] * h.n_sig)]
        self.signals = [self._signal(i) for i in range(h.n_sig)]
        self._nan_noted = False

    def _check_data_sizes(self, folder: Path) -> None:
        """A truncated .dat file (fewer bytes than the header's signal length needs) is refused."""
        h = self.header
        frame_bytes: dict[str, float] = {}
        offsets: dict[str, int] = {}
        for i, name in enumerate(h.file_name or []):
            fmt = h.fmt[i]
            if fmt not in _BYTES_PER_SAMPLE:  # FLAC (508/516/524): sizes are not fixed, wfdb checks
                return
            spf = int((h.samps_per_frame or [1] * h.n_sig)[i] or 1)
            frame_bytes[name] = frame_bytes.get(name, 0.0) + spf * _BYTES_PER_SAMPLE[fmt]
            offsets[name] = int((h.byte_offset or [None] * h.n_sig)[i] or 0)
        for name, per_frame in frame_bytes.items():
            path = folder / name
            if not path.exists():
                raise ReadError(f"missing file {name} (the header names it; expected beside the header)")
            size = path.stat().st_size
            needed = offsets[name] + math.ceil(self.n_frames * per_frame)
            if size < needed:
                held = int((size - offsets[name]) // per_frame)
                raise ReadError(
                    f"truncated: {name} holds {max(held, 0)} of the header's {self.n_frames} "
                    "samples per signal"
                )

    def _signal(self, i: int) -> Signal:
        h = self.header
        gain = float(h.adc_gain[i]) if h.adc_gain is not None else 0.0
        baseline = float(h.baseline[i]) if h.baseline is not None and h.baseline[i] is not None else 0.0
        bits = _BITS.get(h.fmt[i], 16) if h.fmt else 16
        lowest, highest = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        largest = max(abs(lowest - baseline), abs(highest - baseline)) / gain if gain else float("inf")
        return Signal(
            index=i,
            label=(h.sig_name[i] if h.sig_name else "") or f"signal {i}",
            unit=(h.units[i] if h.units else "") or "",
            sfreq=float(h.fs) * self._spf[i],
            largest_physical=largest,
            has_gain=gain != 0.0,  # WFDB's gain 0 means "uncalibrated"
        )

    @property
    def duration_s(self) -> float:
        return self.n_frames / float(self.header.fs)

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        spf = round(sfreq / float(self.header.fs))
        return [(0, self.n_frames * spf, 0.0)] if self.n_frames else []

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        return max(1, round(chunk_s * sfreq))

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        import wfdb

        channels = [s.index for s in signals]
        spf = self._spf[channels[0]]
        first, last = start // spf, -(-stop // spf)
        try:
            record = wfdb.rdrecord(
                self.record_name,
                sampfrom=first,
                sampto=last,
                channels=channels,
                physical=True,
                smooth_frames=spf == 1,
                return_res=64,
            )
        except Exception as e:  # a damaged .dat that the size check could not see (FLAC)
            why = f"{type(e).__name__}: {e}"
            raise ReadError(f"WFDB data unreadable at samples {start}..{stop}: {why}") from None
        if spf == 1:
            values = record.p_signal
        else:
            values = np.stack(record.e_p_signal, axis=1)[start - first * spf : stop - first * spf]
        out = (values * np.asarray(scales, dtype=np.float64)).astype(np.float32)
        missing = np.isnan(out)
        if missing.any():  # WFDB's "invalid sample" value: read as 0 µV, said once in the manifest
            out[missing] = 0.0
            if not self._nan_noted:
                self.notes.append("WFDB invalid (missing) samples read as 0")
                self._nan_noted = True
        return out


@contextlib.contextmanager
def open_wfdb(source: SourceFile, _recipe: Recipe) -> Iterator[RecordingReader]:
    """Open a `.hea` file (and, for a remote record, copy it and its .dat files to a temporary folder)."""
    with local_files(source.url, _data_files) as header_path:
        yield WfdbRecording(header_path)
