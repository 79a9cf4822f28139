"""BrainVision, EEGLAB and FIF recordings through MNE's lazy readers, as `signals.RecordingReader`s.

Why MNE: its readers of these formats are the reference implementations the corpora's own tools are
checked against, and opened with `preload=False` they read only the sample range asked for
(`raw.get_data(picks, start, stop)`), so memory stays bounded by one chunk, as for EDF. MNE gives volts for
every voltage channel, so each such signal's unit is "V" and `channel_plan.unit_scale` makes it µV.

Remote files (s3://…): MNE reads local paths only, and a BrainVision or EEGLAB recording is more than one
file (the .vhdr names its .eeg and .vmrk; a .set may keep its data in a .fdt). Such a recording is copied,
with its sidecars, into a temporary folder under TMPDIR, which is removed when the reader closes; local
files are read in place.

EEGLAB data embedded in the .set (no .fdt): MNE cannot read part of a MATLAB variable, so on the first read
it loads the whole data array as stored (float32: 4 bytes × channels × samples, e.g. 0.46 GB for 1 h of 64
channels at 500 Hz) and keeps it while the reader is open. We accept that cost (such files are small in
practice: EEGLAB writes a .fdt by default for large sets) and say it in the manifest's notes.
"""

from __future__ import annotations

import configparser
import contextlib
import itertools
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from eegfm.ingest.signals import ReadError, Signal

if TYPE_CHECKING:
    import mne

    from eegfm.ingest.recipe import Recipe, SourceFile

# MNE channel types that `channel_plan` knows as not EEG, under its names; every other non-EEG type (MEG,
# sEEG, ECoG, fNIRS…) becomes "misc", so it is dropped rather than mistaken for scalp EEG by its label.
_KINDS = {
    "eeg": "eeg",
    "eog": "eog",
    "ecg": "ecg",
    "emg": "emg",
    "stim": "stim",
    "misc": "misc",
    "resp": "resp",
    "bio": "bio",
    "gsr": "gsr",
    "temperature": "temp",
    "syst": "syst",
}
_FIFF_UNIT_V = 107
_FIFF_UNIT_NONE = -1
# Annotations that mark where one contiguous stretch ends and the next begins (EEGLAB's cut-out data,
# BrainVision's "New Segment" markers); MNE's acquisition skips (FIF) are left out altogether.
_BOUNDARIES = ("boundary", "BAD boundary")
_NEW_SEGMENT = "New Segment"
_SKIP = "BAD_ACQ_SKIP"
_MAX_WARNING_NOTES = 5
_BINARY_BYTES = {"INT_16": 2, "UINT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4}


class MneRecording:
    """An MNE `Raw` opened without preloading, read chunk by chunk in the units `signals` say."""

    def __init__(self, raw: mne.io.BaseRaw, notes: list[str]):
        self.raw = raw
        self.notes = notes
        sfreq = float(raw.info["sfreq"])
        bads = set(raw.info["bads"])
        self.signals = [
            Signal(
                index=i,
                label=ch["ch_name"],
                unit=_unit(int(ch["unit"])),
                sfreq=sfreq,
                kind=_KINDS.get(kind, "misc"),
                bad="listed in the file's bad channels" if ch["ch_name"] in bads else "",
            )
            for i, (ch, kind) in enumerate(zip(raw.info["chs"], raw.get_channel_types(), strict=True))
        ]
        self._sfreq = sfreq

    @property
    def duration_s(self) -> float:
        return self.raw.n_times / self._sfreq

    def _check_rate(self, sfreq: float) -> None:
        if sfreq != self._sfreq:
            raise ReadError(f"no signal at {sfreq:g} Hz (the recording is at {self._sfreq:g} Hz)")

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        self._check_rate(sfreq)
        n = self.raw.n_times
        annotations = self.raw.annotations
        cuts: set[int] = set()
        skipped: list[tuple[int, int]] = []
        if len(annotations):
            starts = self.raw.time_as_index(
                annotations.onset, use_rounding=True, origin=annotations.orig_time
            )
            lengths = np.round(annotations.duration * sfreq).astype(int)
            for description, start, length in zip(annotations.description, starts, lengths, strict=True):
                if description in _BOUNDARIES or description.startswith(_NEW_SEGMENT):
                    cuts.add(int(start))
                elif description == _SKIP:
                    skipped.append((int(start), int(start) + int(length)))
        edges = sorted({0, n, *(c for c in cuts if 0 < c < n)})
        segments = []
        for a, b in itertools.pairwise(edges):
            for first, stop in _without(a, b, skipped):
                segments.append((first, stop, first / sfreq))
        return segments

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        self._check_rate(sfreq)
        return max(1, round(chunk_s * sfreq))

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        picks = [s.index for s in signals]
        data = self.raw.get_data(picks=picks, start=start, stop=stop)  # (C, T) float64, volts
        if data.shape[1] != stop - start:
            raise ReadError(f"samples {start}..{stop} asked, {data.shape[1]} read")
        out = data.T.astype(np.float32)
        out *= np.asarray(scales, dtype=np.float32)
        return out


def _unit(fiff_unit: int) -> str:
    if fiff_unit == _FIFF_UNIT_V:
        return "V"
    if fiff_unit == _FIFF_UNIT_NONE:
        return "none"
    return f"FIFF unit {fiff_unit}"  # T, T/m, K…: not a voltage, so channel_plan says so


def _without(a: int, b: int, skipped: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[a, b) less the skipped spans."""
    pieces = [(a, b)]
    for s, e in skipped:
        pieces = [p for x, y in pieces for p in ((x, min(y, s)), (max(x, e), y)) if p[0] < p[1]]
    return pieces


# -- Opening: local copies of remote recordings, sidecar checks, MNE's reader ---------------------------


def _is_local(url: str) -> bool:
    protocol = fsspec.core.split_protocol(url)[0]
    return protocol in (None, "file", "local")


@contextlib.contextmanager
def _local_files(url: str, sidecars: Any) -> Iterator[Path]:
    """The recording's local path: `url` itself when local, else a temporary copy of it and its sidecars.

    `sidecars(local_main_file)` names the files beside it that the recording needs; those that exist
    remotely are copied (a missing one is reported by the checks that follow, as for a local file).
    """
    if _is_local(url):
        yield Path(fsspec.core.split_protocol(url)[1])
        return
    folder = tempfile.mkdtemp(prefix="eegfm-mne-")
    try:
        fs, path = fsspec.core.url_to_fs(url)
        parent, name = path.rsplit("/", 1)
        local = Path(folder) / name
        fs.get(path, str(local))
        for sidecar in sidecars(local):
            remote = f"{parent}/{sidecar}"
            if fs.exists(remote):
                fs.get(remote, str(Path(folder) / sidecar))
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _vhdr_sections(vhdr: Path) -> configparser.ConfigParser:
    text = vhdr.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines or ("Brain Vision" not in lines[0] and "BrainVision" not in lines[0]):
        raise ReadError(f"{vhdr.name} is not a BrainVision header (first line {lines[:1]!r})")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string("\n".join(lines[1:]))
    except configparser.Error as e:
        raise ReadError(f"{vhdr.name}: unreadable header ({e.__class__.__name__})") from None
    if "Common Infos" not in parser:
        raise ReadError(f"{vhdr.name}: no [Common Infos] section")
    return parser


def _vhdr_sidecars(vhdr: Path) -> list[str]:
    entries = _vhdr_sections(vhdr)["Common Infos"]
    return [entries[k] for k in ("DataFile", "MarkerFile") if entries.get(k)]


def _check_vhdr(vhdr: Path) -> list[str]:
    """The .eeg and .vmrk the header names must exist: without the markers the recording's segment
    boundaries ("New Segment") are unknown, so windows could straddle a discontinuity."""
    sections = _vhdr_sections(vhdr)
    entries = sections["Common Infos"]
    notes = []
    for key, what in (("DataFile", "data file"), ("MarkerFile", "marker file")):
        name = entries.get(key, "")
        if not name:
            raise ReadError(f"{vhdr.name} names no {what} ({key}=)")
        if not (vhdr.parent / name).is_file():
            raise ReadError(f"{what} {name} named by {vhdr.name} is missing")
    data = vhdr.parent / entries["DataFile"]
    n_channels = int(entries.get("NumberOfChannels", "0") or 0)
    binary_format = sections.get("Binary Infos", "BinaryFormat", fallback="")
    binary = (
        _BINARY_BYTES.get(binary_format.strip(), 0) if entries.get("DataFormat", "BINARY") == "BINARY" else 0
    )
    if binary and n_channels > 0:
        frame = binary * n_channels
        size = data.stat().st_size
        if size < frame:
            raise ReadError(f"data file {data.name} holds no complete sample ({size} bytes)")
        if size % frame:
            if entries.get("DataOrientation", "MULTIPLEXED").upper() == "VECTORIZED":
                raise ReadError(f"truncated: {data.name} is not whole channels ({size} bytes, vectorized)")
            notes.append(
                f"truncated: {data.name} ends inside a sample; its {size // frame} complete samples are read"
            )
    return notes


def _set_sidecars(set_file: Path) -> list[str]:
    return [set_file.with_suffix(".fdt").name]


def _fif_sidecars(fif: Path) -> list[str]:
    """MNE names the continuation of a split FIF `<stem>-1.fif`, `<stem>-2.fif`…; copy any there."""
    name = fif.name
    stem = name[: -len(".fif.gz")] if name.endswith(".fif.gz") else fif.stem
    suffix = ".fif.gz" if name.endswith(".fif.gz") else ".fif"
    return [f"{stem}-{i}{suffix}" for i in range(1, 10)]


def _read_raw(fmt: str, path: Path) -> tuple[mne.io.BaseRaw, list[str]]:
    import mne

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if fmt == "brainvision":
                notes += _check_vhdr(path)
                raw = mne.io.read_raw_brainvision(path, preload=False, verbose="error")
            elif fmt == "eeglab":
                raw = mne.io.read_raw_eeglab(path, preload=False, verbose="error")
                notes += _check_eeglab(raw, path)
            elif fmt == "fif":
                raw = mne.io.read_raw_fif(path, preload=False, verbose="error")
            else:
                raise ReadError(f"no MNE reader for format {fmt!r}")
        except ReadError:
            raise
        except Exception as e:  # MNE's reasons (missing .fdt, bad header…) are the manifest's
            raise ReadError(f"{fmt} reader (MNE): {type(e).__name__}: {e}") from None
    seen = []
    for w in caught:
        message = str(w.message).splitlines()[0] if str(w.message) else type(w.message).__name__
        if message not in seen:
            seen.append(message)
    notes += [f"MNE: {m}" for m in seen[:_MAX_WARNING_NOTES]]
    return raw, notes


def _check_eeglab(raw: mne.io.BaseRaw, set_file: Path) -> list[str]:
    """A .fdt shorter than the .set says is cut to its complete samples (as EDF's truncated records)."""
    data_file = Path(raw.filenames[0])
    n_channels, n_times = raw.info["nchan"], raw.n_times
    if data_file.suffix.lower() != ".fdt":
        return [
            f"EEGLAB data embedded in {set_file.name}: read whole into memory on the first read "
            f"({n_channels * n_times * 4 / 1e6:.0f} MB as float32)"
        ]
    complete = data_file.stat().st_size // (4 * n_channels)
    if complete >= n_times:
        return []
    if complete == 0:
        raise ReadError(f"data file {data_file.name} holds no complete sample")
    raw.crop(tmax=(complete - 1) / raw.info["sfreq"], include_tmax=True)
    return [f"truncated: {data_file.name} holds {complete} of the {n_times} samples {set_file.name} declares"]


_SIDECARS = {"brainvision": _vhdr_sidecars, "eeglab": _set_sidecars, "fif": _fif_sidecars}


def open_with_mne(fmt: str) -> Any:
    """The `formats.register` opener of `fmt` (brainvision, eeglab or fif)."""

    @contextlib.contextmanager
    def opener(source: SourceFile, _recipe: Recipe) -> Iterator[MneRecording]:
        with _local_files(source.url, _SIDECARS[fmt]) as path:
            raw, notes = _read_raw(fmt, path)
            yield MneRecording(raw, notes)

    return opener
