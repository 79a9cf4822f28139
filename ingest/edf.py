"""A lenient EDF/EDF+/BDF/BDF+ reader that streams data records from any fsspec file.

Why our own: measured on the files in ../shared/data/real-edf, MNE resamples every signal of a mixed-rate
file to the highest rate and cannot read from an fsspec file object; edfio 0.4.18 miscounts the records
of BDF files (it reads 24-bit samples as 16-bit) and pyEDFlib refuses EDF+D and most non-compliant
headers. EDF is a fixed 256-byte header, 256 bytes per signal and fixed-size records, so a numpy reader is
short, reads any byte range it is asked for (memory independent of recording length), and lets each
real-archive quirk be a named decision rather than a crash. Tests check it against MNE and pyEDFlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, BinaryIO

import numpy as np

from eegfm.ingest.signals import ReadError, Signal

ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
_TAL_ONSET = re.compile(rb"^([+-]\d+(?:\.\d*)?)\x14")


class EdfError(ReadError):
    """An EDF/BDF file that cannot be read; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class EdfSignal:
    index: int
    label: str
    transducer: str
    unit: str
    physical_min: float
    physical_max: float
    digital_min: float
    digital_max: float
    prefilter: str
    samples_per_record: int
    byte_offset: int  # of this signal's samples within a data record

    @property
    def is_annotation(self) -> bool:
        return self.label in ANNOTATION_LABELS


@dataclass
class EdfHeader:
    version: str
    patient: str
    recording: str
    startdate: str
    starttime: str
    reserved: str
    header_bytes: int
    declared_records: int
    n_records: int  # complete records actually present and used
    record_duration: float
    sample_bytes: int  # 2 for EDF, 3 for BDF
    signals: list[EdfSignal]
    notes: list[str] = field(default_factory=list)

    @property
    def is_bdf(self) -> bool:
        return self.sample_bytes == 3

    @property
    def is_discontinuous(self) -> bool:
        return self.reserved.startswith(("EDF+D", "BDF+D"))

    @property
    def record_bytes(self) -> int:
        return sum(s.samples_per_record for s in self.signals) * self.sample_bytes

    @property
    def annotation_signal(self) -> EdfSignal | None:
        return next((s for s in self.signals if s.is_annotation), None)

    @property
    def data_signals(self) -> list[EdfSignal]:
        return [s for s in self.signals if not s.is_annotation]

    def sfreq(self, signal: EdfSignal) -> float:
        return signal.samples_per_record / self.record_duration


def _text(raw: bytes) -> str:
    # Headers are specified as ASCII; real ones carry latin-1 (µ, accents) and stray bytes. latin-1 decodes
    # every byte, so a label is never lost to a decode error.
    return raw.decode("latin-1").replace("\x00", " ").strip()


def _number(raw: bytes, what: str) -> float:
    text = _text(raw).replace(",", ".")
    try:
        return float(text)
    except ValueError:
        raise EdfError(f"header field '{what}' is not a number: {text!r}") from None


def read_header(f: BinaryIO, file_size: int) -> EdfHeader:
    """Parse the header of an open EDF/BDF file; raises EdfError with the reason if it cannot be read."""
    f.seek(0)
    main = f.read(256)
    if len(main) < 256:
        raise EdfError(f"file is {file_size} bytes, shorter than an EDF header")
    version = main[0:8]
    if version == b"\xffBIOSEMI":
        sample_bytes, version_text = 3, "BIOSEMI"
    elif _text(version) == "0":
        sample_bytes, version_text = 2, "0"
    else:
        raise EdfError(f"not an EDF/BDF file (version field {version!r})")
    n_signals = int(_number(main[252:256], "number of signals"))
    if n_signals < 0:
        raise EdfError(f"negative number of signals ({n_signals})")
    header_bytes = 256 * (n_signals + 1)
    block = f.read(256 * n_signals)
    if len(block) < 256 * n_signals:
        raise EdfError("file ends inside the signal headers")
    declared_bytes = _number(main[184:192], "header bytes")
    notes: list[str] = []
    if int(declared_bytes) != header_bytes:
        notes.append(
            f"header-bytes field says {int(declared_bytes)}, {n_signals} signals make {header_bytes}"
        )

    def column(offset: int, width: int) -> list[bytes]:
        start = offset * n_signals
        return [block[start + i * width : start + (i + 1) * width] for i in range(n_signals)]

    labels = column(0, 16)
    transducers = column(16, 80)
    units = column(96, 8)
    pmins, pmaxs = column(104, 8), column(112, 8)
    dmins, dmaxs = column(120, 8), column(128, 8)
    prefilters = column(136, 80)
    counts = column(216, 8)

    reserved = _text(main[192:236])
    record_duration = _number(main[244:252], "duration of a data record")
    signals: list[EdfSignal] = []
    offset = 0
    for i in range(n_signals):
        label = _text(labels[i])
        spr = int(_number(counts[i], f"samples per record of signal {i} ({label})"))
        if spr < 0:
            raise EdfError(f"signal {i} ({label}) has negative samples per record")
        signals.append(
            EdfSignal(
                index=i,
                label=label,
                transducer=_text(transducers[i]),
                unit=_text(units[i]),
                physical_min=_number(pmins[i], f"physical minimum of {label}"),
                physical_max=_number(pmaxs[i], f"physical maximum of {label}"),
                digital_min=_number(dmins[i], f"digital minimum of {label}"),
                digital_max=_number(dmaxs[i], f"digital maximum of {label}"),
                prefilter=_text(prefilters[i]),
                samples_per_record=spr,
                byte_offset=offset,
            )
        )
        offset += spr * sample_bytes

    record_bytes = offset
    declared = int(_number(main[236:244], "number of data records"))
    complete = (file_size - header_bytes) // record_bytes if record_bytes else 0
    if declared == -1:
        n_records = complete
        notes.append(f"record count -1 in header: {complete} complete records found")
    elif declared > complete:
        n_records = complete
        notes.append(f"truncated: header says {declared} records, file holds {complete} complete ones")
    else:
        n_records = declared
        if complete > declared:
            notes.append(f"{complete - declared} records after the declared {declared} ignored")
    if record_duration <= 0 and any(not s.is_annotation for s in signals):
        raise EdfError(f"data record duration is {record_duration} s")
    return EdfHeader(
        version=version_text,
        patient=_text(main[8:88]),
        recording=_text(main[88:168]),
        startdate=_text(main[168:176]),
        starttime=_text(main[176:184]),
        reserved=reserved,
        header_bytes=header_bytes,
        declared_records=declared,
        n_records=n_records,
        record_duration=record_duration,
        sample_bytes=sample_bytes,
        signals=signals,
        notes=notes,
    )


def read_records(f: BinaryIO, header: EdfHeader, first: int, count: int) -> np.ndarray:
    """Raw bytes of records [first, first + count) as a (count, record_bytes) uint8 array."""
    f.seek(header.header_bytes + first * header.record_bytes)
    buf = f.read(count * header.record_bytes)
    if len(buf) != count * header.record_bytes:
        raise EdfError(f"file ended while reading records {first}..{first + count}")
    return np.frombuffer(buf, dtype=np.uint8).reshape(count, header.record_bytes)


def _digital(records: np.ndarray, header: EdfHeader, signal: EdfSignal) -> np.ndarray:
    """One signal's digital samples from raw records, (count, samples_per_record) int32 or int16."""
    width = signal.samples_per_record * header.sample_bytes
    raw = records[:, signal.byte_offset : signal.byte_offset + width]
    if header.sample_bytes == 2:
        return np.ascontiguousarray(raw).view("<i2")
    triples = raw.reshape(len(records), signal.samples_per_record, 3).astype(np.int32)
    value = triples[..., 0] | (triples[..., 1] << 8) | (triples[..., 2] << 16)
    return (value << 8) >> 8  # sign-extend 24 bits


def decode(records: np.ndarray, header: EdfHeader, signals: list[EdfSignal], scale: np.ndarray) -> np.ndarray:
    """Physical values of `signals` (all with one samples-per-record) as a time-major (T, C) float32 array.

    `scale` multiplies each signal's physical value (e.g. 1e3 for a mV signal to give µV).
    """
    spr = signals[0].samples_per_record
    gain = np.array([(s.physical_max - s.physical_min) / (s.digital_max - s.digital_min) for s in signals])
    offset = np.array([s.physical_min - s.digital_min * g for s, g in zip(signals, gain, strict=True)])
    gain32 = (gain * scale).astype(np.float32)
    offset32 = (offset * scale).astype(np.float32)
    out = np.empty((len(records) * spr, len(signals)), dtype=np.float32)
    if header.sample_bytes == 2 and _contiguous(signals):
        # The common case: one strided view of all wanted signals, one pass.
        start = signals[0].byte_offset // 2
        words = records.view("<i2")[:, start : start + spr * len(signals)]
        out[:] = words.reshape(len(records), len(signals), spr).transpose(0, 2, 1).reshape(-1, len(signals))
    else:
        for c, s in enumerate(signals):
            out[:, c] = _digital(records, header, s).reshape(-1)
    out *= gain32
    out += offset32
    return out


def _contiguous(signals: list[EdfSignal]) -> bool:
    return all(b.index == a.index + 1 for a, b in pairwise(signals))


def record_onsets(f: BinaryIO, header: EdfHeader, batch: int = 4096) -> np.ndarray:
    """Onset in seconds of every data record, from each record's time-keeping annotation (EDF+D)."""
    signal = header.annotation_signal
    if signal is None:
        raise EdfError("EDF+D file without an annotation signal: record onsets unknown")
    onsets = np.empty(header.n_records, dtype=np.float64)
    width = signal.samples_per_record * header.sample_bytes
    for first in range(0, header.n_records, batch):
        count = min(batch, header.n_records - first)
        records = read_records(f, header, first, count)
        for i, row in enumerate(records[:, signal.byte_offset : signal.byte_offset + width]):
            match = _TAL_ONSET.match(row.tobytes())
            if match is None:
                raise EdfError(f"record {first + i} has no time-keeping annotation")
            onsets[first + i] = float(match.group(1))
    return onsets


def contiguous_segments(onsets: np.ndarray, record_duration: float) -> list[tuple[int, int]]:
    """Split records into runs whose onsets follow each other without a gap: [(first, stop), …]."""
    if len(onsets) == 0:
        return []
    expected = onsets[:-1] + record_duration
    breaks = np.flatnonzero(np.abs(onsets[1:] - expected) > 1e-3 * max(record_duration, 1e-3)) + 1
    edges = [0, *breaks.tolist(), len(onsets)]
    return list(pairwise(edges))


class EdfRecording:
    """An EDF/BDF file as a `RecordingReader`: reads whole data records and cuts the asked range from them.

    `file` and `header` stay available to the label sources that keep labels inside the EDF (EDF+ TALs).
    """

    def __init__(self, f: BinaryIO, file_size: int):
        self.file = f
        self.header = read_header(f, file_size)
        self.notes = list(self.header.notes)
        self._edf_signals = {s.index: s for s in self.header.data_signals}
        self.signals = [_as_signal(self.header, s) for s in self.header.data_signals]

    @property
    def duration_s(self) -> float:
        return self.header.n_records * self.header.record_duration

    def _samples_per_record(self, sfreq: float) -> int:
        spr = round(sfreq * self.header.record_duration)
        if spr <= 0:
            raise EdfError(f"no signal at {sfreq:g} Hz")
        return spr

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        spr = self._samples_per_record(sfreq)
        if self.header.n_records == 0:
            return []
        if not self.header.is_discontinuous:
            return [(0, self.header.n_records * spr, 0.0)]
        onsets = record_onsets(self.file, self.header)
        return [
            (a * spr, b * spr, float(onsets[a]))
            for a, b in contiguous_segments(onsets, self.header.record_duration)
        ]

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        records = max(1, int(chunk_s / self.header.record_duration)) if self.header.record_duration else 1
        return records * self._samples_per_record(sfreq)

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        edf_signals = [self._edf_signals[s.index] for s in signals]
        spr = edf_signals[0].samples_per_record
        first, last = start // spr, -(-stop // spr)
        records = read_records(self.file, self.header, first, last - first)
        values = decode(records, self.header, edf_signals, np.asarray(scales))
        offset = start - first * spr
        return values[offset : offset + (stop - start)]


def _as_signal(header: EdfHeader, s: EdfSignal) -> Signal:
    return Signal(
        index=s.index,
        label=s.label,
        unit=s.unit,
        sfreq=header.sfreq(s) if header.record_duration > 0 else 0.0,
        largest_physical=max(abs(s.physical_min), abs(s.physical_max)),
        has_gain=s.physical_min != s.physical_max and s.digital_min != s.digital_max,
        kind="",
    )
