"""Which reader opens which file: the recipe's `format`, or the file's extension when it says `auto`.

Every reader gives a `signals.RecordingReader`. Each format's opener is registered below by name and file
extensions; one obvious place to add a format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import fsspec

from eegfm.ingest.edf import EdfRecording
from eegfm.ingest.signals import ReadError, RecordingReader

if TYPE_CHECKING:
    from eegfm.ingest.recipe import Recipe, SourceFile

Opener = Callable[["SourceFile", "Recipe"], AbstractContextManager[RecordingReader]]

_READERS: dict[str, Opener] = {}
_EXTENSIONS: dict[str, str] = {}


def register(name: str, extensions: tuple[str, ...], opener: Opener) -> None:
    """Make `opener` the reader of format `name` and of files ending in `extensions` (lower case)."""
    _READERS[name] = opener
    for extension in extensions:
        _EXTENSIONS[extension] = name


@contextlib.contextmanager
def _open_edf(source: SourceFile, _recipe: Recipe) -> Iterator[RecordingReader]:
    with fsspec.open(source.url, "rb") as f:
        yield EdfRecording(f, source.size)


register("edf", (".edf", ".rec"), _open_edf)
register("bdf", (".bdf",), _open_edf)


def known_formats() -> list[str]:
    return sorted(_READERS)


def format_of(path: str, declared: str = "auto") -> str:
    """The format name of `path`: `declared` unless it is `auto`, else by the longest matching extension."""
    if declared != "auto":
        if declared not in _READERS:
            raise ReadError(f"unknown format {declared!r}; known: {', '.join(known_formats())}")
        return declared
    lower = path.lower()
    for extension in sorted(_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(extension):
            return _EXTENSIONS[extension]
    raise ReadError(
        "no reader for this file's extension; set the recipe's `format:` "
        f"(one of {', '.join(known_formats())})"
    )


def open_recording(source: SourceFile, recipe: Recipe) -> AbstractContextManager[RecordingReader]:
    """Open one source file with the reader its format needs (raises `ReadError` when none can)."""
    return _READERS[format_of(source.path, recipe.format)](source, recipe)


# Formats read through MNE's lazy readers (ingest/formats_mne.py).
from eegfm.ingest.formats_mne import open_with_mne  # noqa: E402 - registered after the EDF readers

register("brainvision", (".vhdr",), open_with_mne("brainvision"))
register("eeglab", (".set",), open_with_mne("eeglab"))
register("fif", (".fif", ".fif.gz"), open_with_mne("fif"))


@contextlib.contextmanager
def _open_gdf(source: SourceFile, _recipe: Recipe) -> Iterator[RecordingReader]:
    from eegfm.ingest.gdf import GdfRecording

    with fsspec.open(source.url, "rb") as f:
        yield GdfRecording(f, source.size)


register("gdf", (".gdf",), _open_gdf)  # our own reader: MNE misreads GDF units (ingest/gdf.py)

# WFDB, Neuroscan CNT and MATLAB files (ingest/formats_wfdb.py, formats_cnt.py, formats_mat.py).
from eegfm.ingest.formats_wfdb import open_wfdb  # noqa: E402

register("wfdb", (".hea",), open_wfdb)
from eegfm.ingest.formats_cnt import open_cnt  # noqa: E402

register("cnt", (".cnt",), open_cnt)
from eegfm.ingest.formats_mat import open_mat  # noqa: E402

register("mat", (".mat",), open_mat)
