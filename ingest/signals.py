"""What every file-format reader gives ingest: a recording's signals, its contiguous stretches, and chunked
reads of chosen signals in physical units.

Why an interface and not one reader: the corpora come as EDF/BDF (our own streaming reader, `edf.py`),
BrainVision, EEGLAB, GDF, Neuroscan CNT, FIF (MNE's lazy readers), WFDB (the `wfdb` package) and MATLAB
files. Channel selection (`channel_plan.py`), filtering and windowing (`windows.py`) and labelling must not
care which: they see `Signal`s and `RecordingReader.read`, and memory stays bounded by one chunk whatever
the format, because every reader reads only the sample range it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from eegfm.errors import DataError


class ReadError(DataError):
    """A file that cannot be read; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Signal:
    """One channel of a recording, as its file (and sidecars) describe it."""

    index: int
    """Position among the reader's signals (what `read` is asked for)."""
    label: str
    """The label the file writes (`EEG Fp1-REF`, `Fp1`, `A1` …)."""
    unit: str
    """The physical unit the file writes (`uV`, `µV`, `mV`, `V`, or blank)."""
    sfreq: float
    """Samples per second."""
    largest_physical: float = float("inf")
    """Largest |value| the format can represent in `unit` (EDF's physical range); inf where unbounded."""
    has_gain: bool = True
    """False when the file's scaling is degenerate (EDF's physical or digital min equal to max)."""
    kind: str = ""
    """Channel type the file or a sidecar declares (eeg, eog, ecg, emg, stim, misc…); "" when not said."""
    bad: str = ""
    """Why a sidecar marks this channel bad (BIDS `channels.tsv` status); "" when it does not."""


class RecordingReader(Protocol):
    """An open recording. Sample indices are at the rate of the signals being read (one rate per read)."""

    signals: list[Signal]
    """Data signals only (annotation channels are not signals)."""
    notes: list[str]
    """Oddities of the file worth a line in the manifest (truncation, header repairs…)."""

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        ...

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        """Contiguous stretches as (first sample, stop sample, onset s) at `sfreq`; one for most formats."""
        ...

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        """A read size near `chunk_s` that suits the format (whole EDF records), in samples at `sfreq`."""
        ...

    def read(self, signals: list[Signal], scales: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of `signals` (all at one rate) × `scales`, as a (T, C) float32 array."""
        ...
