"""Layout `bids`: recordings, their ids and their sidecar facts from a BIDS EEG tree, through mne-bids.

Why not path regexes: BIDS names every id as an entity (`sub-`, `ses-`, `task-`, `run-`) and puts what the
data file cannot say in sidecars, found by BIDS's inheritance rules; mne-bids implements both. Discovery
(`discover_bids`) lists the recordings with `mne_bids.find_matching_paths` and reads each one's sidecars
with `BIDSPath.find_matching_sidecar` once, into a `BidsSidecar` that travels with its `SourceFile` to the
worker. There, `with_sidecar` lays `channels.tsv`'s types and bad marks over the reader's signals, and the
recording's `PowerLineFrequency`, reference and digitised electrode positions replace the recipe's.

Digitised positions must end in MNE's head frame, the frame of every template position in the shards. The
transform goes through the anatomical landmarks (NAS, LPA, RPA) that `coordsystem.json` gives, with MNE's
`compute_native_head_t`; `CapTrak` without landmarks is the head frame by its definition. mne-bids' own
reader is not used for this step: it takes CapTrak as the head frame but leaves other systems unmoved
(frame `unknown`), which would mix frames silently. Anything that cannot be brought into the head frame
falls back to the recipe's template, with a note saying why.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from eegfm.ingest.formats_mne import _vhdr_sidecars
from eegfm.ingest.recipe import Recipe, RecipeError, SourceFile, assign_split
from eegfm.ingest.signals import ReadError, RecordingReader, Signal
from eegfm.storage import join_url, storage_errors, strip_protocol

Position = tuple[float, float, float]

# The data files of BIDS EEG (the other files of a recording, .vmrk/.eeg and .fdt, are its companions).
EEG_EXTENSIONS = (".edf", ".bdf", ".vhdr", ".set")
_COMPANIONS = {".vhdr": (".vmrk", ".eeg"), ".set": (".fdt",)}
_UNIT_METRES = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_LANDMARKS = {
    "nas": ("nas", "nasion", "nz"),
    "lpa": ("lpa", "left_preauricular", "leftpreauricular"),
    "rpa": ("rpa", "right_preauricular", "rightpreauricular"),
}
# BIDS channel types that name an eye, heart or other non-scalp signal under another spelling.
_TYPE_KIND = {"veog": "eog", "heog": "eog"}
# A head's electrodes lie 5 to 15 cm from the head frame's origin; outside that, the units are wrong.
_HEAD_RADIUS_M = (0.05, 0.15)


@dataclass(frozen=True)
class BidsSidecar:
    """What one recording's BIDS sidecars say about it; read once at discovery."""

    entities: dict[str, str] = field(default_factory=dict)
    """The recording's BIDS entities (subject, session, task, run, acquisition) that it names."""
    channel_types: dict[str, str] = field(default_factory=dict)
    """channels.tsv: channel name → its `type`, lower case (eeg, eog, misc…), after the recipe's retyping."""
    bad_channels: dict[str, str] = field(default_factory=dict)
    """channels.tsv: channel name → why its `status` is bad (its status_description, or `status bad`)."""
    power_line_hz: float | None = None
    """eeg.json PowerLineFrequency (the notch of this recording); None when absent or n/a."""
    eeg_reference: str = ""
    """eeg.json EEGReference as written; "" when absent or n/a."""
    sampling_hz: float | None = None
    """eeg.json SamplingFrequency, checked against the file's rate."""
    participant: dict[str, str | None] = field(default_factory=dict)
    """participants.tsv: the subject's row (column → value; n/a → None)."""
    events: str = ""
    """events.tsv of the recording, relative to the root ("" when none): for evaluation tasks."""
    positions: dict[str, Position] = field(default_factory=dict)
    """electrodes.tsv: channel name → digitised position in metres, MNE head frame; empty: template."""
    coordinate_system: str = ""
    """coordsystem.json EEGCoordinateSystem of those positions ("" when no electrodes.tsv)."""
    notes: tuple[str, ...] = ()
    """What the sidecars got wrong or left out (a coordinate system that fell back to the template…)."""


def discover_bids(recipe: Recipe) -> list[SourceFile]:
    """Every BIDS EEG recording under the root (of the recipe's `bids_tasks`), sorted by path, with its ids
    from its entities, its split by subject, and its sidecar facts. A root in object storage (s3://…) is
    walked through a local view of its sidecars (`remote_view`)."""
    fs, root = fsspec.core.url_to_fs(recipe.root)
    if isinstance(fs, LocalFileSystem):
        return _discover_in(recipe, Path(strip_protocol(root)), sizes=None)
    with tempfile.TemporaryDirectory(prefix="eegfm-bids-view-") as view:
        sizes = remote_view(recipe.root, Path(view))
        return _discover_in(recipe, Path(view), sizes)


# What a remote view copies: the sidecars and BrainVision headers (they name the .vmrk/.eeg companions).
_VIEW_COPIED = (".json", ".tsv", ".vhdr")
_NOT_RAW = ("derivatives/", "sourcedata/", ".git/", ".datalad/")


def remote_view(root: str, view: Path) -> dict[str, int]:
    """Lay out the BIDS tree at `root` (object storage) under the local folder `view` for mne-bids: its
    sidecars (.json, .tsv) and BrainVision headers copied, every other file an empty placeholder (mne-bids
    matches names; the data stay remote and are read from `root` by the workers). One listing, then one
    batch of GETs for the copied files. Returns each file's size in bytes by its relative path.

    Why a view: mne-bids walks local folders only, and BIDS's sidecar inheritance and entity parsing are
    what it is for; the alternative (re-implementing them over fsspec) would be a second BIDS reader."""
    with storage_errors(root, "listing the BIDS dataset"):
        fs, base = fsspec.core.url_to_fs(root)
        found = fs.find(base, detail=True)
    prefix = strip_protocol(base).rstrip("/")
    sizes: dict[str, int] = {}
    copied: dict[str, str] = {}
    for full, info in found.items():
        rel = strip_protocol(full)[len(prefix) :].lstrip("/")
        if not rel or rel.startswith(_NOT_RAW):  # never recordings here (see _discover_in): not fetched
            continue
        sizes[rel] = int(info.get("size") or 0)
        target = view / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.lower().endswith(_VIEW_COPIED):
            copied[full] = rel
        else:
            target.touch()
    with storage_errors(root, "reading the BIDS sidecars"):
        contents = fs.cat(list(copied)) if copied else {}
    for full, data in contents.items():
        (view / copied[full]).write_bytes(data)
    return sizes


def _discover_in(recipe: Recipe, base: Path, sizes: dict[str, int] | None) -> list[SourceFile]:
    """Discovery on the local tree `base` (the dataset itself, or a remote one's view, with `sizes`)."""
    import mne_bids

    with _quiet():
        found = mne_bids.find_matching_paths(
            base,
            tasks=list(recipe.bids_tasks) or None,
            datatypes="eeg",
            suffixes="eeg",
            extensions=list(EEG_EXTENSIONS),
        )
    participants = _participants(base / "participants.tsv")
    files = []
    for bids_path in found:
        rel = Path(bids_path.fpath).relative_to(base).as_posix()
        if not rel.startswith("sub-"):  # derivatives/, sourcedata/: not the raw recordings
            continue
        if recipe.include and not any(fnmatchcase(rel, g) for g in recipe.include):
            continue
        if any(fnmatchcase(rel, g) for g in recipe.exclude):
            continue
        files.append(_source(recipe, base, rel, bids_path, participants, sizes))
    if not files:
        tasks = f" of tasks {list(recipe.bids_tasks)}" if recipe.bids_tasks else ""
        raise RecipeError(
            f"recipe {recipe.name!r}: no BIDS EEG recording{tasks} (sub-*/[ses-*/]eeg/*_eeg"
            f"{{{','.join(EEG_EXTENSIONS)}}}) under root {recipe.root!r}. Is ROOT (--root) the BIDS "
            "dataset's top folder (the one with dataset_description.json)?"
        )
    return sorted(files, key=lambda f: f.path)


def _source(
    recipe: Recipe,
    base: Path,
    rel: str,
    bids_path: Any,
    participants: dict[str, dict[str, str | None]],
    sizes: dict[str, int] | None = None,
) -> SourceFile:
    subject = bids_path.subject
    sidecar = read_sidecars(
        bids_path, base, participants.get(f"sub-{subject}", {}), type_overrides=recipe.bids_channel_types
    )
    excluded = subject in recipe.exclude_subjects or f"sub-{subject}" in recipe.exclude_subjects
    return SourceFile(
        path=rel,
        url=join_url(recipe.root, rel),
        size=_recording_size(base / rel, base, sizes),
        subject=subject,
        session=bids_path.session or "",
        recording=rel.rsplit("/", 1)[-1].rsplit(".", 1)[0],
        reference=reference_id(sidecar.eeg_reference, recipe.reference),
        split=None if excluded else assign_split(recipe.name, subject, recipe.splits),
        skip_reason=f"subject excluded by the recipe ({subject})" if excluded else None,
        bids=sidecar,
    )


def _recording_size(path: Path, base: Path, sizes: dict[str, int] | None = None) -> int:
    """Bytes of the data file and its companions: what changes when the recording does (`sizes`: a
    remote dataset's, by relative path; else the files' own)."""
    files = (path, *recording_companions(path))
    if sizes is not None:
        return sum(sizes.get(p.relative_to(base).as_posix(), 0) for p in files)
    return sum(os.path.getsize(p) for p in files if os.path.exists(p))


def recording_companions(path: Path) -> list[Path]:
    """The files beside a data file that its reader opens: the .eeg and .vmrk a BrainVision header names
    (by name, as `formats_mne` reads them: a renamed recording's header may still name the old stem; its
    stem's where the header is unreadable), an EEGLAB set's `<stem>.fdt` (the one BIDS requires, and MNE's
    fall-back)."""
    stem, extension = os.path.splitext(path)
    if extension.lower() == ".vhdr":
        try:
            return [path.parent / name for name in _vhdr_sidecars(path)]
        except (ReadError, OSError):
            pass
    return [Path(stem + companion) for companion in _COMPANIONS.get(extension.lower(), ())]


def read_sidecars(
    bids_path: Any,
    base: Path,
    participant: dict[str, str | None],
    type_overrides: Mapping[str, str] | None = None,
) -> BidsSidecar:
    """One recording's sidecar facts; a missing or unreadable sidecar is a note, never a failure.

    `type_overrides` (the recipe's `bids_channel_types`, keys in any case) replaces channels.tsv types
    that the dataset gets wrong, before they become the signals' kinds, here at discovery, so that the
    ingest and the dry run see the same types; a note says how many channels it retyped.
    """
    overrides = {k.strip().lower(): v.strip().lower() for k, v in (type_overrides or {}).items()}
    retyped: dict[tuple[str, str], int] = {}
    notes: list[str] = []
    entities = {
        name: value
        for name in ("subject", "session", "task", "acquisition", "run")
        if (value := getattr(bids_path, name)) is not None
    }
    types: dict[str, str] = {}
    bads: dict[str, str] = {}
    channels_tsv = _sidecar(bids_path, "channels", ".tsv", notes)
    if channels_tsv is not None:
        try:
            rows = _read_tsv(channels_tsv)
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            notes.append(
                f"channels.tsv unreadable ({type(e).__name__}: {e}): channel types and bad marks unknown"
            )
            rows = []
        for row in rows:
            name = (row.get("name") or "").strip()
            if not name:
                continue
            kind = (row.get("type") or "").strip().lower()
            if kind in overrides:
                retyped[kind, overrides[kind]] = retyped.get((kind, overrides[kind]), 0) + 1
                kind = overrides[kind]
            types[name] = _TYPE_KIND.get(kind, kind)
            if (row.get("status") or "").strip().lower() == "bad":
                why = _value(row.get("status_description"))
                bads[name] = f"status bad in channels.tsv ({why})" if why else "status bad in channels.tsv"
        notes.extend(
            f"channels.tsv type {old.upper()} read as {new.upper()} (recipe bids_channel_types): "
            f"{n} channel{'s' if n != 1 else ''}"
            for (old, new), n in retyped.items()
        )
    info: dict[str, Any] = {}
    eeg_json = _sidecar(bids_path, "eeg", ".json", notes)
    if eeg_json is not None:
        try:
            info = json.loads(Path(eeg_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            notes.append(
                f"eeg.json unreadable ({type(e).__name__}): PowerLineFrequency and reference unknown"
            )
    events_tsv = _sidecar(bids_path, "events", ".tsv", notes)
    positions, system = _digitised(bids_path, notes)
    return BidsSidecar(
        entities=entities,
        channel_types=types,
        bad_channels=bads,
        power_line_hz=_frequency(info.get("PowerLineFrequency")),
        eeg_reference=_value(info.get("EEGReference")) or "",
        sampling_hz=_frequency(info.get("SamplingFrequency")),
        participant=participant,
        events=Path(events_tsv).relative_to(base).as_posix() if events_tsv is not None else "",
        positions=positions,
        coordinate_system=system,
        notes=tuple(notes),
    )


def _digitised(bids_path: Any, notes: list[str]) -> tuple[dict[str, Position], str]:
    electrodes = _sidecar(bids_path, "electrodes", ".tsv", notes)
    coordsystem = _sidecar(bids_path, "coordsystem", ".json", notes)
    if electrodes is None:
        return {}, ""
    if coordsystem is None:
        notes.append(
            "electrodes.tsv without coordsystem.json: frame and units unknown, template positions used"
        )
        return {}, ""
    result = head_frame_positions(Path(electrodes), Path(coordsystem))
    if isinstance(result, str):
        notes.append(f"digitised positions not used, template positions instead: {result}")
        return {}, ""
    return result


def head_frame_positions(electrodes: Path, coordsystem: Path) -> tuple[dict[str, Position], str] | str:
    """electrodes.tsv's positions in metres in MNE's head frame, and the coordinate system they were in;
    or why they cannot be brought there (unknown units, no landmarks outside CapTrak, a head-sized check
    that fails)."""
    import mne

    try:
        system = json.loads(coordsystem.read_text(encoding="utf-8"))
        rows = _read_tsv(str(electrodes))
    except (OSError, ValueError, csv.Error) as e:
        return f"{coordsystem.name} or {electrodes.name} unreadable ({type(e).__name__}: {e})"
    name = str(system.get("EEGCoordinateSystem") or "")
    unit = str(system.get("EEGCoordinateUnits") or "")
    if unit not in _UNIT_METRES:
        return f"coordinate system {name!r} has units {unit!r} (not m, cm or mm)"
    scale = _UNIT_METRES[unit]
    ch_pos: dict[str, np.ndarray] = {}
    landmarks: dict[str, np.ndarray] = {}
    for row in rows:
        xyz = [_number(row.get(axis)) for axis in "xyz"]
        label = (row.get("name") or "").strip()
        if not label or any(v is None for v in xyz):
            continue
        point = np.array(xyz, dtype=float) * scale
        which = _landmark(label)
        if which:
            landmarks.setdefault(which, point)
        else:
            ch_pos[label] = point
    if not ch_pos:
        return f"{electrodes.name} gives no electrode with numeric x, y, z"
    landmarks = {**landmarks, **_coordsystem_landmarks(system, name, unit)}
    if {"nas", "lpa", "rpa"} <= landmarks.keys():
        montage = mne.channels.make_dig_montage(
            ch_pos=ch_pos,
            nasion=landmarks["nas"],
            lpa=landmarks["lpa"],
            rpa=landmarks["rpa"],
            coord_frame="unknown",
        )
        native_to_head = mne.channels.compute_native_head_t(montage, verbose=False)
        names = list(ch_pos)
        head = mne.transforms.apply_trans(native_to_head, np.array([ch_pos[n] for n in names]))
        ch_pos = dict(zip(names, head, strict=True))
    elif name != "CapTrak":  # CapTrak is the head frame by definition (RAS through the landmarks)
        return (
            f"coordinate system {name!r} without anatomical landmarks (NAS, LPA, RPA): "
            "cannot be brought into the head frame"
        )
    radius = float(np.median([np.linalg.norm(p) for p in ch_pos.values()]))
    if not _HEAD_RADIUS_M[0] <= radius <= _HEAD_RADIUS_M[1]:
        return (
            f"electrodes lie {radius:.3g} m from the head frame's origin (a head: "
            f"{_HEAD_RADIUS_M[0]:g} to {_HEAD_RADIUS_M[1]:g} m): units {unit!r} or the landmarks are wrong"
        )
    return {n: tuple(float(v) for v in p) for n, p in ch_pos.items()}, name


def _coordsystem_landmarks(system: dict[str, Any], name: str, unit: str) -> dict[str, np.ndarray]:
    """NAS/LPA/RPA from AnatomicalLandmarkCoordinates, when they are in the electrodes' system."""
    coordinates = system.get("AnatomicalLandmarkCoordinates")
    landmark_system = system.get("AnatomicalLandmarkCoordinateSystem") or name
    landmark_unit = system.get("AnatomicalLandmarkCoordinateUnits") or unit
    if not isinstance(coordinates, dict) or landmark_system != name or landmark_unit not in _UNIT_METRES:
        return {}
    found = {}
    for label, value in coordinates.items():
        which = _landmark(label)
        if which and isinstance(value, list) and len(value) == 3:
            found[which] = np.array(value, dtype=float) * _UNIT_METRES[landmark_unit]
    return found


def _landmark(label: str) -> str | None:
    key = re.sub(r"[\s-]+", "_", label.strip().lower())
    return next((which for which, names in _LANDMARKS.items() if key in names), None)


def reference_id(eeg_reference: str, default: str) -> str:
    """A short id of eeg.json's EEGReference for montage tags: `ar` for an average reference (TUH's
    name), else the text as a slug (`Cz` → `cz`, `linked mastoids` → `linked_mastoids`); long free text
    keeps a hash so that two different descriptions stay two references. `default` when not stated."""
    text = eeg_reference.strip()
    if not text:
        return default
    lower = text.lower()
    if lower in ("average", "avg", "car", "common average", "average reference", "common average reference"):
        return "ar"
    slug = re.sub(r"[^a-z0-9]+", "_", lower).strip("_") or "unknown"
    if len(slug) > 32:
        slug = f"{slug[:24].rstrip('_')}_{hashlib.sha1(text.encode()).hexdigest()[:7]}"
    return slug


def mains_hz(source: SourceFile, recipe: Recipe) -> float:
    """The notch of this recording: its eeg.json PowerLineFrequency where given, else the recipe's."""
    if source.bids is not None and source.bids.power_line_hz:
        return source.bids.power_line_hz
    return recipe.mains_hz


def sample_metadata(sidecar: BidsSidecar, positions_source: str, notch_hz: float) -> dict[str, Any]:
    """What a BIDS recording adds to each sample's JSON.

    `mains_hz` is the notch this recording got (its PowerLineFrequency). `preprocess` and
    `preprocess_hash` stay the dataset's, as the shard contract wants one per dataset: they name the
    configuration (the recipe's mains_hz being the fall-back), and the same configuration and inputs give
    the same shards.
    """
    return {
        "positions_source": positions_source,
        "mains_hz": notch_hz,
        "participant": dict(sidecar.participant),
        "events": sidecar.events,
        "bids": dict(sidecar.entities),
    }


class _SidecarReader:
    """A reader whose signals carry channels.tsv's types and bad marks; everything else is the file's."""

    def __init__(self, reader: RecordingReader, sidecar: BidsSidecar):
        self._reader = reader
        types = {_key(k): v for k, v in sidecar.channel_types.items()}
        bads = {_key(k): v for k, v in sidecar.bad_channels.items()}
        self.signals = [
            replace(s, kind=types.get(_key(s.label), s.kind), bad=bads.get(_key(s.label), s.bad))
            for s in reader.signals
        ]
        self.notes = [*reader.notes, *sidecar.notes, *_mismatches(reader.signals, sidecar)]

    def __getattr__(self, name: str) -> Any:  # duration_s, segments, chunk_samples, read, annotations…
        return getattr(self._reader, name)


def _mismatches(signals: list[Signal], sidecar: BidsSidecar) -> Iterator[str]:
    """Notes where channels.tsv and eeg.json disagree with the file itself."""
    if sidecar.channel_types:
        in_file = {_key(s.label) for s in signals}
        in_tsv = {_key(k): k for k in sidecar.channel_types}
        only_tsv = [name for key, name in in_tsv.items() if key not in in_file]
        only_file = [s.label for s in signals if _key(s.label) not in in_tsv]
        if only_tsv:
            yield f"channels.tsv lists channels the file lacks: {', '.join(only_tsv)}"
        if only_file:
            listed = ", ".join(only_file)
            yield f"channels.tsv does not list the file's channels: {listed} (type from the file)"
    if sidecar.sampling_hz and signals:
        rates = sorted({s.sfreq for s in signals})
        if not any(math.isclose(r, sidecar.sampling_hz, rel_tol=1e-6) for r in rates):
            yield (
                f"eeg.json SamplingFrequency {sidecar.sampling_hz:g} Hz, but the file's signals are at "
                f"{', '.join(f'{r:g}' for r in rates)} Hz (the file's rate is used)"
            )


def _key(label: str) -> str:
    """A channel name as channels.tsv and the file are matched: case and outer blanks aside."""
    return label.strip().lower()


def with_sidecar(reader: RecordingReader, sidecar: BidsSidecar) -> RecordingReader:
    """`reader` with channels.tsv's types and bad marks on its signals (matched by channel name) and notes
    where the sidecars and the file disagree."""
    return _SidecarReader(reader, sidecar)  # type: ignore[return-value]


def _sidecar(bids_path: Any, suffix: str, extension: str, notes: list[str]) -> str | None:
    """The sidecar BIDS's inheritance gives this recording, or None; an ambiguous one is a note."""
    try:
        with _quiet():
            found = bids_path.find_matching_sidecar(suffix=suffix, extension=extension, on_error="ignore")
    except RuntimeError as e:  # several candidates (e.g. two spaces of electrodes.tsv)
        notes.append(f"{suffix}{extension}: {e}")
        return None
    return str(found) if found is not None else None


def _participants(path: Path) -> dict[str, dict[str, str | None]]:
    """participants.tsv: participant_id → its row (n/a → None); empty when the file is absent."""
    if not path.exists():
        return {}
    try:
        rows = _read_tsv(str(path))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    return {
        row["participant_id"].strip(): {k: _value(v) for k, v in row.items() if k is not None}
        for row in rows
        if row.get("participant_id")
    }


def _read_tsv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _value(text: Any) -> str | None:
    """A sidecar value as a string, or None for BIDS's n/a and blanks."""
    if text is None:
        return None
    text = str(text).strip()
    return None if text in ("", "n/a", "N/A") else text


def _number(value: Any) -> float | None:
    """A finite number, or None (n/a, blank, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _frequency(value: Any) -> float | None:
    """A rate in Hz from a sidecar, or None unless it is a positive number."""
    number = _number(value)
    return number if number is not None and number > 0 else None


class _quiet:
    """mne-bids' logging and warnings off: discovery reports through notes, not stderr."""

    def __enter__(self) -> None:
        import mne

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._level = mne.utils.use_log_level("error")
        self._level.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._level.__exit__(*exc)
        self._warnings.__exit__(*exc)


def measured_positions(sidecar: BidsSidecar | None) -> Mapping[str, Position] | None:
    """The per-recording position override for `plan_channels` (None: template positions)."""
    return sidecar.positions if sidecar is not None and sidecar.positions else None
