"""GDF 2.x (BCI Competition IV 2a/2b, BNCI Horizon) as a `signals.RecordingReader`, streamed with numpy
from any fsspec file.

Why our own and not MNE's `read_raw_gdf`: with MNE 1.13 and NumPy 2.4 MNE reads our fixtures' samples and
event table correctly (the NumPy-2 breakages, mne-python #12907/#13414, are fixed there), but not their
units. MNE maps only the physical-dimension codes of µV (4275) and mV (4274) and takes any other code as
dimensionless ×1, which it then reports as volts: measured on `format_fixtures.write_gdf` files, a GDF in
nV comes out 10⁹ too large and one with no unit code (0) 10⁶ too large, the latter without a warning.
The unit is the one thing channel_plan must get right, so it is read here from the header and scaled by
`unit_scale`. GDF is a fixed header, 256 bytes per channel and fixed-size records (like EDF), so the
reader is short, reads only the records asked for (memory bounded by one chunk), streams from s3 without
a local copy and keeps each channel's own rate (MNE resamples a mixed-rate file to its highest rate).

Layout (GDF 2.x, Schlögl): fixed header of 256 bytes (number of records int64 at 236, record duration
uint32[2] at 244, number of channels uint16 at 252, header length in 256-byte blocks uint16 at 184), then
per field an array over channels: label 16, transducer 80, unit text 6, unit code uint16, physical min/max
and digital min/max float64, 68 obsolete, low/high pass and notch float32, samples per record int32, type
int32, position 3×float32, 20 bytes of impedance; a record holds each channel's samples in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from eegfm.ingest.signals import ReadError, Signal

# GDF data types → numpy (GDF 2.x type codes).
_TYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<i8", 8: "<u8", 16: "<f4", 17: "<f8"}
_VOLT = 4256  # the unit code of volt; its low 5 bits are a decimal prefix
_VOLT_PREFIXES = {0: "V", 18: "mV", 19: "uV", 20: "nV", 21: "pV"}
# (name, bytes per channel, numpy dtype or None for text/skipped) of the variable header, in file order.
_FIELDS = (
    ("label", 16, None),
    ("transducer", 80, None),
    ("unit_text", 6, None),
    ("unit_code", 2, "<u2"),
    ("physical_min", 8, "<f8"),
    ("physical_max", 8, "<f8"),
    ("digital_min", 8, "<f8"),
    ("digital_max", 8, "<f8"),
    ("obsolete", 68, None),
    ("lowpass", 4, "<f4"),
    ("highpass", 4, "<f4"),
    ("notch", 4, "<f4"),
    ("samples_per_record", 4, "<i4"),
    ("type", 4, "<i4"),
    ("position", 12, None),
    ("sensor_info", 20, None),
)


class GdfError(ReadError):
    """A GDF file that cannot be read; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class GdfChannel:
    index: int
    label: str
    unit: str
    physical_min: float
    physical_max: float
    digital_min: float
    digital_max: float
    samples_per_record: int
    dtype: np.dtype
    byte_offset: int  # of this channel's samples within a record


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").replace("\x00", " ").strip()


def _unit(code: int, text: str) -> str:
    """The unit as `channel_plan.unit_scale` spells it: from the code when there is one, else the text."""
    if code == 0:
        return text
    if code & ~31 == _VOLT and code & 31 in _VOLT_PREFIXES:
        return _VOLT_PREFIXES[code & 31]
    return text if text else f"GDF unit code {code}"


class GdfRecording:
    """A GDF 2.x file: reads whole records and cuts the asked sample range from them."""

    def __init__(self, f: BinaryIO, file_size: int):
        self.file = f
        self.notes: list[str] = []
        f.seek(0)
        fixed = f.read(256)
        if len(fixed) < 256:
            raise GdfError(f"file is {file_size} bytes, shorter than a GDF header")
        version = fixed[:8]
        if version.startswith(b"GDF 1."):
            raise GdfError(f"GDF 1.x ({_text(version)}) is not read: only GDF 2.x")
        if not version.startswith(b"GDF 2."):
            raise GdfError(f"not a GDF 2.x file (version field {version!r})")
        n_channels = int(np.frombuffer(fixed, "<u2", 1, 252)[0])
        self.header_bytes = int(np.frombuffer(fixed, "<u2", 1, 184)[0]) * 256
        declared = int(np.frombuffer(fixed, "<i8", 1, 236)[0])
        numerator, denominator = (int(v) for v in np.frombuffer(fixed, "<u4", 2, 244))
        if numerator == 0 or denominator == 0:
            raise GdfError(f"record duration is {numerator}/{denominator} s")
        self.record_duration = numerator / denominator
        if self.header_bytes < 256 * (n_channels + 1):
            raise GdfError(f"header length {self.header_bytes} bytes is too short for {n_channels} channels")
        variable = f.read(256 * n_channels)
        if len(variable) < 256 * n_channels:
            raise GdfError("file ends inside the channel headers")
        fields: dict[str, Any] = {}
        offset = 0
        for name, width, dtype in _FIELDS:
            block = variable[offset : offset + width * n_channels]
            if dtype is None:
                fields[name] = [_text(block[i * width : (i + 1) * width]) for i in range(n_channels)]
            else:
                fields[name] = np.frombuffer(block, dtype).tolist()
            offset += width * n_channels
        self.channels: list[GdfChannel] = []
        byte_offset = 0
        for i in range(n_channels):
            code = fields["type"][i]
            if code not in _TYPES:
                raise GdfError(f"channel {i} ({fields['label'][i]}) has GDF data type {code}, not read here")
            dtype = np.dtype(_TYPES[code])
            spr = fields["samples_per_record"][i]
            if spr < 0:
                raise GdfError(f"channel {i} ({fields['label'][i]}) has negative samples per record")
            self.channels.append(
                GdfChannel(
                    index=i,
                    label=fields["label"][i],
                    unit=_unit(fields["unit_code"][i], fields["unit_text"][i]),
                    physical_min=fields["physical_min"][i],
                    physical_max=fields["physical_max"][i],
                    digital_min=fields["digital_min"][i],
                    digital_max=fields["digital_max"][i],
                    samples_per_record=spr,
                    dtype=dtype,
                    byte_offset=byte_offset,
                )
            )
            byte_offset += spr * dtype.itemsize
        self.record_bytes = byte_offset
        # The event table follows the records, so the file's size bounds the records but does not count them.
        complete = (file_size - self.header_bytes) // self.record_bytes if self.record_bytes else 0
        if declared < 0:
            self.n_records = complete
            self.notes.append(f"record count {declared} in header: {complete} complete records assumed")
        elif declared > complete:
            self.n_records = complete
            self.notes.append(
                f"truncated: header says {declared} records, file holds {complete} complete ones"
            )
        else:
            self.n_records = declared
        self.signals = [
            Signal(
                index=c.index,
                label=c.label,
                unit=c.unit,
                sfreq=c.samples_per_record / self.record_duration,
                largest_physical=max(abs(c.physical_min), abs(c.physical_max)),
                has_gain=c.physical_min != c.physical_max and c.digital_min != c.digital_max,
            )
            for c in self.channels
            if c.samples_per_record > 0
        ]

    @property
    def duration_s(self) -> float:
        return self.n_records * self.record_duration

    def _samples_per_record(self, sfreq: float) -> int:
        spr = round(sfreq * self.record_duration)
        if spr <= 0:
            raise GdfError(f"no channel at {sfreq:g} Hz")
        return spr

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        if self.n_records == 0:
            return []
        return [(0, self.n_records * self._samples_per_record(sfreq), 0.0)]

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        return max(1, int(chunk_s / self.record_duration)) * self._samples_per_record(sfreq)

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        channels = [self.channels[s.index] for s in signals]
        spr = channels[0].samples_per_record
        first, last = start // spr, -(-stop // spr)
        count = last - first
        self.file.seek(self.header_bytes + first * self.record_bytes)
        buf = self.file.read(count * self.record_bytes)
        if len(buf) != count * self.record_bytes:
            raise GdfError(f"file ended while reading records {first}..{last}")
        records = np.frombuffer(buf, np.uint8).reshape(count, self.record_bytes)
        scales = np.asarray(scales, dtype=np.float64)
        out = np.empty((count * spr, len(channels)), dtype=np.float32)
        for column, (c, scale) in enumerate(zip(channels, scales, strict=True)):
            width = spr * c.dtype.itemsize
            digital = np.ascontiguousarray(records[:, c.byte_offset : c.byte_offset + width]).view(c.dtype)
            gain = (c.physical_max - c.physical_min) / (c.digital_max - c.digital_min)
            offset = c.physical_min - c.digital_min * gain
            out[:, column] = (digital.reshape(-1) * (gain * scale) + offset * scale).astype(np.float32)
        skip = start - first * spr
        return out[skip : skip + (stop - start)]
