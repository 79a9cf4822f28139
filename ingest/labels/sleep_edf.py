"""Sleep-EDF Expanded: a separate `*-Hypnogram.edf` (EDF+, annotations only) beside each `*-PSG.edf`.

The hypnogram's EDF+ annotations are `Sleep stage W`, `Sleep stage 1`…`4`, `Sleep stage R`, `Sleep stage ?`
and `Movement time`, each lasting a whole number of 30-s epochs (a run of equal stages is one annotation).
Its name is not the PSG's: the last character before `-` differs (the scorer's letter: `SC4001E0-PSG.edf`
↔ `SC4001EC-Hypnogram.edf`), so the two are paired by the first 7 characters of the name within one folder
(`SC4ssN` + `E`: study, subject, night). A PSG with no such hypnogram, or with two, is skipped with that
reason rather than guessed at.

Each annotation is cut into its 30-s epochs here, so that a task's `onset` windows are the scorer's epochs
exactly (not a grid that could sit astride two of them), and onsets are moved onto the PSG's clock by the
difference of the two files' start times (equal in the published corpus; a re-export need not keep them).
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime

import fsspec

from eegfm.ingest.edf import EdfError, EdfHeader, read_header
from eegfm.ingest.labels import (
    Annotation,
    LabelError,
    LabelsConfig,
    LabelSource,
    RecordingFile,
    read_label_file,
)
from eegfm.ingest.labels.edfplus import read_annotations
from eegfm.storage import join_url, storage_errors, strip_protocol

EPOCH_S = 30.0
HYPNOGRAM_SUFFIX = "-Hypnogram.edf"
PAIR_CHARS = 7
_EPS = 1e-6


def pair_key(path: str) -> tuple[str, str]:
    """(folder, first 7 characters of the file name): what a PSG and its hypnogram share."""
    folder, _, name = path.rpartition("/")
    return folder, name[:PAIR_CHARS]


def hypnograms_by_key(paths: list[str]) -> dict[tuple[str, str], list[str]]:
    """The corpus's hypnograms (relative paths) grouped by `pair_key`."""
    table: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(paths):
        if path.endswith(HYPNOGRAM_SUFFIX):
            table[pair_key(path)].append(path)
    return dict(table)


def epochs(annotations: list[Annotation], epoch_s: float = EPOCH_S) -> list[Annotation]:
    """Each annotation cut into consecutive epochs of `epoch_s` from its onset (a shorter last piece kept
    as it is: a window from its onset then runs into the next annotation, and is counted so)."""
    out = []
    for a in annotations:
        start = a.start_s
        while start < a.stop_s - _EPS:
            out.append(Annotation(start, min(start + epoch_s, a.stop_s), a.text))
            start += epoch_s
    return out


def _start(header: EdfHeader) -> datetime | None:
    try:
        return datetime.strptime(f"{header.startdate} {header.starttime}", "%d.%m.%y %H.%M.%S")
    except ValueError:
        return None


def prepare(config: LabelsConfig, root: str) -> dict[tuple[str, str], list[str]]:
    """List the corpus's hypnograms once: pairing needs to see them all (to find the ambiguous ones)."""
    with storage_errors(root, "listing the hypnograms"):
        fs, path = fsspec.core.url_to_fs(root)
        base = strip_protocol(path).rstrip("/")
        found = fs.find(path) if fs.exists(path) else []
    return hypnograms_by_key([strip_protocol(p)[len(base) :].lstrip("/") for p in found])


def read(
    config: LabelsConfig, recording: RecordingFile, hypnograms: dict[tuple[str, str], list[str]]
) -> list[Annotation]:
    folder, key = pair_key(recording.source.path)
    paired = hypnograms.get((folder, key), [])
    if not paired:
        raise LabelError(f"no hypnogram ({key}*{HYPNOGRAM_SUFFIX} beside it)")
    if len(paired) > 1:
        names = ", ".join(p.rpartition("/")[2] for p in paired)
        raise LabelError(f"ambiguous hypnogram ({len(paired)} files start with {key}: {names})")
    data = read_label_file(join_url(recording.root, paired[0]), "hypnogram")
    try:
        header = read_header(io.BytesIO(data), len(data))
        stages = read_annotations(io.BytesIO(data), header)
    except EdfError as e:
        raise LabelError(f"unreadable hypnogram ({paired[0].rpartition('/')[2]}: {e})") from None
    psg_start, hypnogram_start = _start(recording.edf()[1]), _start(header)
    shift = (hypnogram_start - psg_start).total_seconds() if psg_start and hypnogram_start else 0.0
    shifted = [Annotation(a.start_s + shift, a.stop_s + shift, a.text) for a in stages]
    if not shifted:
        raise LabelError("no sleep stage in the hypnogram")
    return epochs(shifted)


SOURCE = LabelSource(read, prepare)
