"""CHB-MIT: one `chbNN-summary.txt` per subject folder, a block per recording:

    File Name: chb01_03.edf
    File Start Time: 13:43:04
    File End Time: 14:43:04
    Number of Seizures in File: 1
    Seizure Start Time: 2996 seconds
    Seizure End Time: 3036 seconds

Later subjects number the seizures (`Seizure 1 Start Time: …`), some omit the clock times, and a summary
also lists the channels (again under `Channels changed:` when the montage changes between files); lines
that are none of these are left alone. A recording is seizure where the summary says, background
everywhere else (the summary lists every recording of the subject, seizures or not). The summaries are
read before the run: a block that contradicts itself (a seizure line outside a block, a start without its
end, an end before its start, a count that disagrees with the seizures listed) stops it with one line
naming the file and line, since its recordings could not be labelled right.
"""

from __future__ import annotations

import math
import re

import fsspec

from eegfm.errors import DataError
from eegfm.ingest.labels import (
    Annotation,
    LabelError,
    LabelsConfig,
    LabelSource,
    RecordingFile,
    read_label_file,
)
from eegfm.storage import join_url, storage_errors, strip_protocol

SUMMARY_SUFFIX = "-summary.txt"
_FILE = re.compile(r"^File\s+Name\s*:\s*(\S+)\s*$", re.I)
_COUNT = re.compile(r"^Number\s+of\s+Seizures\s+in\s+File\s*:\s*(\S+)\s*$", re.I)
_SEIZURE = re.compile(
    r"^Seizure\s*(?:\d+\s*)?(Start|End)\s+Time\s*:\s*(\S+?)\s*(?:seconds?|secs?|s)?\s*$", re.I
)

Seizures = dict[str, list[tuple[float, float]]]


def parse_summary(text: str, name: str) -> Seizures:
    """{recording file name: its seizures (start s, end s)} from a summary's text; `name` for messages."""
    out: Seizures = {}
    current: str | None = None
    count: int | None = None
    start: float | None = None
    block_line = 0

    def close(line: int) -> None:
        if current is None:
            return
        if start is not None:
            raise DataError(f"{name}: line {line}: seizure start without its end in the block of {current}")
        if count is None:
            raise DataError(f"{name}: line {block_line}: no 'Number of Seizures in File' for {current}")
        if count != len(out[current]):
            raise DataError(
                f"{name}: line {block_line}: {current} says {count} seizures but lists {len(out[current])}"
            )

    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if match := _FILE.match(line):
            close(number)
            current, count, start, block_line = match.group(1), None, None, number
            if current in out:
                raise DataError(f"{name}: line {number}: {current} has a second block")
            out[current] = []
        elif match := _COUNT.match(line):
            if current is None:
                raise DataError(f"{name}: line {number}: seizure count outside a 'File Name:' block")
            try:
                count = int(match.group(1))
            except ValueError:
                raise DataError(
                    f"{name}: line {number}: seizure count {match.group(1)!r} is not a number"
                ) from None
        elif match := _SEIZURE.match(line):
            if current is None:
                raise DataError(f"{name}: line {number}: seizure time outside a 'File Name:' block")
            try:
                seconds = float(match.group(2))
            except ValueError:
                seconds = math.nan
            if not math.isfinite(seconds) or seconds < 0:
                raise DataError(f"{name}: line {number}: seizure time {match.group(2)!r} is not seconds ≥ 0")
            if match.group(1).lower() == "start":
                if start is not None:
                    raise DataError(f"{name}: line {number}: a second seizure start before the first's end")
                start = seconds
            else:
                if start is None or seconds <= start:
                    raise DataError(f"{name}: line {number}: seizure end without a start before it")
                out[current].append((start, seconds))
                start = None
        elif line.lower().startswith("seizure"):
            raise DataError(f"{name}: line {number}: unreadable seizure line {line[:60]!r}")
    close(len(lines))
    return out


def intervals(seizures: list[tuple[float, float]], duration_s: float) -> list[Annotation]:
    """The recording as seizure and background stretches, back to back, clipped to [0, duration_s)."""
    out, reached = [], 0.0
    for start, end in sorted(seizures):
        start, end = min(start, duration_s), min(end, duration_s)
        if start > reached:
            out.append(Annotation(reached, start, "background"))
        if end > max(start, reached):
            out.append(Annotation(max(start, reached), end, "seizure"))
        reached = max(reached, end)
    if reached < duration_s:
        out.append(Annotation(reached, duration_s, "background"))
    return out


def prepare(config: LabelsConfig, root: str) -> dict[str, Seizures]:
    """Every summary of the corpus, by the folder it is in (a subject's recordings sit beside it)."""
    with storage_errors(root, "listing the summaries"):
        fs, path = fsspec.core.url_to_fs(root)
        base = strip_protocol(path).rstrip("/")
        found = [p for p in (fs.find(path) if fs.exists(path) else []) if p.endswith(SUMMARY_SUFFIX)]
    table: dict[str, Seizures] = {}
    for full in sorted(found):
        rel = strip_protocol(full)[len(base) :].lstrip("/")
        url = join_url(root, rel)
        table.setdefault(rel.rpartition("/")[0], {}).update(
            parse_summary(read_label_file(url, "summary").decode("utf-8", "replace"), url)
        )
    return table


def read(config: LabelsConfig, recording: RecordingFile, table: dict[str, Seizures]) -> list[Annotation]:
    folder, _, name = recording.source.path.rpartition("/")
    if folder not in table:
        raise LabelError(f"no {SUMMARY_SUFFIX} in the recording's folder ({folder or '.'})")
    if name not in table[folder]:
        raise LabelError(f"recording not listed in its {SUMMARY_SUFFIX} ({name})")
    return intervals(table[folder][name], recording.duration_s)


SOURCE = LabelSource(read, prepare)
