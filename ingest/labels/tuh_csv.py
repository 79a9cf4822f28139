"""TUH's annotation CSVs: `.csv_bi` (TUSZ: `TERM` rows, seizure vs background) and `.csv` (per channel,
seizure types), beside each EDF with the same stem.

The format (TUSZ v2): `#` comment lines (version, bname, duration, montage_file), then the header
`channel,start_time,stop_time,label,confidence` and one row per labelled stretch. Rows less confident than
`labels.min_confidence` are left out, as if absent (their stretch is then covered by no annotation, and
counted so); stop times beyond the recording are clipped to its end, since TUH rounds them up.
"""

from __future__ import annotations

import csv
import io

from eegfm.ingest.labels import (
    Annotation,
    LabelError,
    LabelsConfig,
    LabelSource,
    RecordingFile,
    beside,
    read_label_file,
)

COLUMNS = ("channel", "start_time", "stop_time", "label", "confidence")


def parse_tuh_csv(text: str, duration_s: float, min_confidence: float = 0.5) -> list[Annotation]:
    """Annotations of a TUH `.csv`/`.csv_bi` text, clipped to [0, duration_s); `LabelError` if malformed."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines or [c.strip() for c in lines[0].split(",")] != list(COLUMNS):
        raise LabelError(f"TUH label file without the header {','.join(COLUMNS)}")
    out: list[Annotation] = []
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        if len(row) != len(COLUMNS):
            raise LabelError(f"TUH label file: row {number} has {len(row)} fields, expected 5")
        try:
            start, stop, confidence = float(row[1]), float(row[2]), float(row[4])
        except ValueError:
            raise LabelError(f"TUH label file: row {number} has a non-numeric time or confidence") from None
        if confidence < min_confidence:
            continue
        stop = min(stop, duration_s)
        if stop > start:
            out.append(Annotation(start, stop, row[3].strip()))
    return out


def read(config: LabelsConfig, recording: RecordingFile, _state: object) -> list[Annotation]:
    url = beside(recording, config.suffix or ".csv_bi")
    text = read_label_file(url, f"{config.suffix or '.csv_bi'} label file").decode("utf-8", "replace")
    return parse_tuh_csv(text, recording.duration_s, config.min_confidence)


SOURCE = LabelSource(read)
