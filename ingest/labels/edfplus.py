"""EDF+ annotations (TALs): the labels EEGMMIDB keeps inside each run and Sleep-EDF in its hypnograms.

An EDF+ file's `EDF Annotations` signal holds, in every data record, Time-stamped Annotation Lists:
`+onset[\\x15duration]\\x14text\\x14[text\\x14…]\\x00`, the first of each record an empty one that only
keeps time. Parsed here from the raw bytes (no library reads annotations from an fsspec stream, and the
reader of the signals already has the header), with onsets measured from the first record's, so they
share the clock of the windows of a continuous recording.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from eegfm.ingest.edf import EdfHeader, read_records
from eegfm.ingest.labels import Annotation, LabelError

_TAL = re.compile(rb"([+-]\d+(?:\.\d*)?)(?:\x15(\d+(?:\.\d*)?))?\x14(.*?)\x14\x00", re.S)


def parse_tals(data: bytes) -> list[tuple[float, float | None, str]]:
    """(onset s, duration s or None, text) of every annotation in `data` (the annotation bytes of one or
    more records), in order; the records' empty time-keeping TALs give no annotation."""
    out: list[tuple[float, float | None, str]] = []
    for tal in data.split(b"\x00"):
        if not tal.strip(b"\x00"):
            continue
        match = _TAL.fullmatch(tal + b"\x00")
        if match is None:
            raise LabelError(f"malformed EDF+ annotation {tal[:40]!r}")
        onset, duration = float(match.group(1)), match.group(2)
        for text in match.group(3).split(b"\x14"):
            if text:
                out.append(
                    (onset, None if duration is None else float(duration), text.decode("utf-8", "replace"))
                )
    return out


def read_annotations(f: BinaryIO, header: EdfHeader, batch: int = 4096) -> list[Annotation]:
    """Every annotation of an open EDF+/BDF+ file, onsets from the first record's; an annotation without
    a duration lasts until the next one starts (or the recording ends)."""
    signal = header.annotation_signal
    if signal is None:
        raise LabelError("no EDF+ annotations in the file (not EDF+, or no annotation signal)")
    width = signal.samples_per_record * header.sample_bytes
    raw: list[bytes] = []
    for first in range(0, header.n_records, batch):
        records = read_records(f, header, first, min(batch, header.n_records - first))
        raw += [row.tobytes() for row in records[:, signal.byte_offset : signal.byte_offset + width]]
    time_zero = 0.0
    if raw:
        keeping = re.match(rb"([+-]\d+(?:\.\d*)?)\x14", raw[0])
        time_zero = float(keeping.group(1)) if keeping else 0.0
    if header.is_discontinuous:
        time_zero = 0.0  # EDF+D windows keep the file's own clock (recording.py's segment onsets)
    events = sorted(parse_tals(b"\x00".join(raw)), key=lambda e: e[0])
    end = header.n_records * header.record_duration
    out = []
    for i, (onset, duration, text) in enumerate(events):
        start = onset - time_zero
        if duration is None:
            later = [o for o, _, _ in events[i + 1 :] if o > onset]
            stop = (later[0] - time_zero) if later else end
        else:
            stop = start + duration
        out.append(Annotation(start, stop, text))
    return out
