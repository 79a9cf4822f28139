"""Label sources: each corpus's own label files → labelled intervals of one recording.

Every corpus ships its labels differently (a folder name, a CSV beside each EDF, EDF+ annotations, a
separate hypnogram file, a text summary per subject), so each format has one module here with a pure parser
from the file's text or bytes to `Annotation`s, and a `read` that finds and opens the file for one
recording. What an annotation's text means for a task (which class, or ignored) is the task recipe's
`label_map`, not the parser's: parsers keep the corpus's own words.

A recording whose label file is missing or unreadable is skipped with the reason (`LabelError`), like any
other input that cannot be used; a corpus-wide label file that is malformed stops the run before it starts
(`DataError` naming the file and line), since no recording could be labelled from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
from omegaconf import MISSING

from eegfm.errors import DataError
from eegfm.ingest.edf import EdfHeader, EdfRecording
from eegfm.ingest.recipe import SourceFile
from eegfm.ingest.signals import RecordingReader
from eegfm.storage import join_url, storage_errors


class LabelError(DataError):
    """One recording's labels cannot be had; the message is the skip reason recorded in the manifest."""


@dataclass(frozen=True)
class Annotation:
    """A labelled stretch of one recording, in the corpus's own words: [start_s, stop_s) from its start."""

    start_s: float
    stop_s: float
    text: str


@dataclass(frozen=True)
class LabelsConfig:
    """Where a task's labels come from and how to read them (the `labels:` section of a task recipe)."""

    source: str = MISSING
    """Label file format: one of SOURCE_NAMES (a module of ingest/labels/ each)."""
    pattern: str = ""
    """path: regex on the recording's relative path whose group `label` is the label (e.g. normal)."""
    file: str = ""
    """generic_csv: the CSV (path,start_s,duration_s,label), relative to the corpus root, or a URL."""
    suffix: str = ""
    """tuh_csv, tuev_rec: extension of the label file beside each EDF (.csv_bi, .csv, .rec)."""
    min_confidence: float = 0.5
    """tuh_csv: annotations less confident than this are ignored (as if absent)."""

    def __post_init__(self) -> None:
        from eegfm.errors import ConfigError

        if self.source != MISSING and self.source not in SOURCE_NAMES:
            raise ConfigError(f"labels.source must be one of {', '.join(SOURCE_NAMES)}, not {self.source!r}")


@dataclass(frozen=True)
class RecordingFile:
    """What a label source may look at for one recording: its ids and path, the corpus root, and the open
    recording (its duration; for sources that keep labels inside an EDF, the EDF file and header)."""

    source: SourceFile
    root: str
    reader: RecordingReader

    @property
    def duration_s(self) -> float:
        return self.reader.duration_s

    def edf(self) -> tuple[BinaryIO, EdfHeader]:
        """The open EDF file and its header; `LabelError` for a recording in another format."""
        if not isinstance(self.reader, EdfRecording):
            raise LabelError("this label source reads EDF+ annotations: the recording is not an EDF/BDF file")
        return self.reader.file, self.reader.header


@dataclass(frozen=True)
class LabelSource:
    """One format: `prepare` reads corpus-wide label files once, before the run (None: nothing to read);
    `read` gives one recording's annotations, raising `LabelError` when it has none to give."""

    read: Callable[[LabelsConfig, RecordingFile, Any], list[Annotation]]
    prepare: Callable[[LabelsConfig, str], Any] | None = None


SOURCE_NAMES = ("path", "generic_csv", "eegmmidb", "tuh_csv", "sleep_edf", "tuev_rec", "chbmit_summary")


def label_source(name: str) -> LabelSource:
    """The source module for `name` (imported on first use: each knows only its own format)."""
    from importlib import import_module

    module = import_module(f"eegfm.ingest.labels.{name}")
    return module.SOURCE


def read_label_file(url: str, what: str = "label file") -> bytes:
    """The bytes of a label file (local or s3://…); `LabelError` naming it when it does not exist."""
    with storage_errors(url, f"reading the {what}"):
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            raise LabelError(f"no {what} ({url.rsplit('/', 1)[-1]})")
        return fs.cat_file(path)


def beside(recording: RecordingFile, suffix: str) -> str:
    """URL of the file next to the recording with its extension replaced by `suffix` (TUH's `.csv_bi`)."""
    stem = recording.source.path.rsplit(".", 1)[0]
    return join_url(recording.root, stem + suffix)
