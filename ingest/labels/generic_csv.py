"""A generic label table: one CSV for the whole corpus, `path,start_s,duration_s,label` per row.

For corpora that ship no labels of their own format (or labels converted from anything else): `path` is
the recording's path relative to the corpus root, times are seconds from the recording's start. The table
is read once, before the run; a malformed row stops the run naming the file and line, since a silently
skipped row would label windows wrongly (as uncovered) rather than visibly.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict

from eegfm.errors import DataError
from eegfm.ingest.labels import (
    Annotation,
    LabelError,
    LabelsConfig,
    LabelSource,
    RecordingFile,
    read_label_file,
)
from eegfm.storage import join_url

COLUMNS = ("path", "start_s", "duration_s", "label")


def parse_generic_csv(text: str, name: str) -> dict[str, list[Annotation]]:
    """{relative path: its annotations in file order} from the CSV's text; `name` is for messages."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if header != list(COLUMNS):
        raise DataError(
            f"{name}: the first line must be the header {','.join(COLUMNS)}, got {','.join(header)}"
        )
    table: defaultdict[str, list[Annotation]] = defaultdict(list)
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            raise DataError(f"{name}: line {line} has {len(row)} fields, expected 4 ({','.join(COLUMNS)})")
        path, start, duration, label = (cell.strip() for cell in row)
        try:
            start_s, duration_s = float(start), float(duration)
        except ValueError:
            raise DataError(
                f"{name}: line {line}: start_s and duration_s must be numbers, got {start!r}, {duration!r}"
            ) from None
        if not (math.isfinite(start_s) and math.isfinite(duration_s)) or start_s < 0 or duration_s <= 0:
            raise DataError(
                f"{name}: line {line}: need start_s ≥ 0 and duration_s > 0, got {start}, {duration}"
            )
        if not path or not label:
            raise DataError(f"{name}: line {line}: path and label must not be empty")
        table[path.lstrip("/")].append(Annotation(start_s, start_s + duration_s, label))
    return dict(table)


def prepare(config: LabelsConfig, root: str) -> dict[str, list[Annotation]]:
    if not config.file:
        raise DataError("task recipe: labels.file must name the CSV (path,start_s,duration_s,label)")
    url = config.file if "://" in config.file or config.file.startswith("/") else join_url(root, config.file)
    try:
        data = read_label_file(url, "label table")
    except LabelError:
        raise DataError(f"{url}: no such label table: write it, or set labels.file=<path or URL>") from None
    return parse_generic_csv(data.decode("utf-8-sig"), url)


def read(
    config: LabelsConfig, recording: RecordingFile, table: dict[str, list[Annotation]]
) -> list[Annotation]:
    annotations = table.get(recording.source.path)
    if not annotations:
        raise LabelError(f"no row for this recording in the label table ({config.file})")
    return annotations


SOURCE = LabelSource(read, prepare)
