"""A small BIDS EEG dataset written by mne-bids, with the sidecar facts a real OpenNeuro dataset carries.

Every recording is written by `mne_bids.write_raw_bids` in the tree's `data_format` (EDF via edfio, BDF,
BrainVision via pybv, EEGLAB via eeglabio), then a few sidecars are edited the way real datasets differ
from what mne-bids writes (millimetres, a native digitiser frame with landmarks, a reference, a
participants table). `write_bids_tree` returns what a correct reader must find — above all each subject's
digitised positions in MNE's head frame, computed here without MNE's transforms, so that a test compares
the ingest's transform with an independent truth — and the µV written into each file.

Subjects (all task `rest` unless said):
- 01: sessions 1 and 2; CapTrak positions in mm with landmarks; EEGReference average; events.tsv;
  plus one recording of task `oddball` (for `bids_tasks` filters).
- 02: runs 1 and 2, no session; positions in a native digitiser frame (`Other`, mm, rotated and
  shifted) with NAS/LPA/RPA in coordsystem.json; EEGReference Cz.
- 03: BDF in the EDF tree (a mixed dataset); no electrodes.tsv (template positions); PowerLineFrequency 60
  (the recipe says 50).
- 04: positions in `Other` without landmarks (cannot reach the head frame: template with a note);
  eeg.json's SamplingFrequency disagrees with the file; channels.tsv names a channel the file lacks.
Every recording has an EOG channel named `Fpz`, a MISC channel named `Iz` (scalp names, typed otherwise in
channels.tsv) and one channel marked bad (`C4`, with a status_description). In the EEGLAB tree the data of
sub-01 and sub-02 lie in a .fdt beside the .set (EEGLAB's layout for saved sets), those of sub-03 and
sub-04 inside the .set (eeglabio's).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eegfm.ingest.fixtures import simulate_eeg
from eegfm.ingest.positions import montage_positions

TEMPLATE = "colin27_1005"
EEG = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4")
EEG += ("P8", "O1", "O2")
EOG = "Fpz"  # an electrode name used as EOG: only channels.tsv says it is not EEG
MISC = "Iz"
BAD = "C4"
BAD_DESCRIPTION = "bridged with C2"
# Head-frame landmarks (metres): they define the frame (origin at the nasion's foot on LPA-RPA, x to RPA).
NASION, LPA, RPA = (0.0, 0.114, 0.0), (-0.0825, 0.0, 0.0), (0.0825, 0.0, 0.0)
OFFSET_M = 0.005  # each digitised electrode lies this far from the template's
CHANNELS = (*EEG, EOG, MISC)
# mne-bids' write formats; EDF's tree keeps sub-03 in BDF.
DATA_FORMATS = ("EDF", "BDF", "BrainVision", "EEGLAB")


@dataclass
class BidsTruth:
    """What a correct reader of the tree finds."""

    root: Path
    recordings: dict[str, str] = field(default_factory=dict)
    """Relative path of each recording → its subject."""
    digitised: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    """Subject → channel → its head-frame position (metres), for subjects whose positions are usable."""
    template_fallback: tuple[str, ...] = ("03", "04")
    """Subjects whose shards must carry template positions (no electrodes.tsv, or an unusable frame)."""
    mains_hz: dict[str, float] = field(default_factory=dict)
    """Subject → PowerLineFrequency in its eeg.json."""
    references: dict[str, str] = field(default_factory=dict)
    """Subject → EEGReference in its eeg.json (absent: n/a)."""
    participants: dict[str, dict[str, str]] = field(default_factory=dict)
    """participant_id → its participants.tsv row."""
    written_uv: dict[str, np.ndarray] = field(default_factory=dict)
    """Relative path of each recording → the µV written into it (channels `CHANNELS` × samples)."""


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    rx, ry, rz = np.radians(degrees)
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


def digitised_cap(seed: int) -> dict[str, tuple[float, float, float]]:
    """A subject's measured cap in the head frame: each template electrode moved OFFSET_M in a random
    direction (deterministic from `seed`)."""
    rng = np.random.default_rng(seed)
    template = montage_positions(TEMPLATE)
    cap = {}
    for name in EEG:
        direction = rng.standard_normal(3)
        moved = np.asarray(template[name]) + OFFSET_M * direction / np.linalg.norm(direction)
        cap[name] = tuple(float(v) for v in moved)
    return cap


def write_bids_tree(
    root: Path, *, duration_s: float = 24.0, sfreq: float = 256.0, data_format: str = "EDF"
) -> BidsTruth:
    """Write the dataset under `root` (created) with its data files in `data_format` (one of
    `DATA_FORMATS`); returns what a reader must find in it."""
    import mne
    import mne_bids

    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format {data_format!r}: one of {', '.join(DATA_FORMATS)}")
    other = "BDF" if data_format == "EDF" else data_format
    truth = BidsTruth(root=root)
    caps = {"01": digitised_cap(1), "02": digitised_cap(2), "04": digitised_cap(4)}
    plan = [  # subject, session, task, run, format
        ("01", "1", "rest", None, data_format),
        ("01", "2", "rest", None, data_format),
        ("01", "1", "oddball", None, data_format),
        ("02", None, "rest", "1", data_format),
        ("02", None, "rest", "2", data_format),
        ("03", None, "rest", None, other),
        ("04", None, "rest", None, data_format),
    ]
    folders: dict[Path, str] = {}
    names = list(CHANNELS)
    types = ["eeg"] * len(EEG) + ["eog", "misc"]
    for i, (subject, session, task, run, fmt) in enumerate(plan):
        mains = 60.0 if subject == "03" else 50.0
        data = simulate_eeg(names, sfreq, duration_s, mains_hz=mains, rng=np.random.default_rng(100 + i))
        raw = mne.io.RawArray(data * 1e-6, mne.create_info(names, sfreq, types), verbose=False)
        raw.info["line_freq"] = mains
        raw.info["bads"] = [BAD]
        if subject in caps:
            raw.set_montage(
                mne.channels.make_dig_montage(
                    ch_pos={n: np.asarray(p) for n, p in caps[subject].items()},
                    nasion=NASION,
                    lpa=LPA,
                    rpa=RPA,
                    coord_frame="head",
                ),
                verbose=False,
            )
        if subject == "01":
            raw.set_annotations(mne.Annotations([2.0, 9.0], [1.0, 1.0], ["stimulus", "response"]))
        path = mne_bids.BIDSPath(
            subject=subject, session=session, task=task, run=run, datatype="eeg", root=root
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne_bids.write_raw_bids(raw, path, format=fmt, allow_preload=True, overwrite=True, verbose=False)
        rel = path.fpath.relative_to(root).as_posix()
        truth.recordings[rel] = subject
        truth.written_uv[rel] = data
        folders[Path(path.fpath).parent] = subject
    if data_format == "EEGLAB":  # EEGLAB's own layout for saved sets: the data in a .fdt beside the .set
        for rel, subject in truth.recordings.items():
            if subject in ("01", "02"):
                move_data_to_fdt(root / rel)
    for folder, subject in folders.items():  # once each, after mne-bids has written all of a folder
        _edit_sidecars(folder, subject)
    truth.digitised = {s: caps[s] for s in ("01", "02")}
    truth.mains_hz = {"01": 50.0, "02": 50.0, "03": 60.0, "04": 50.0}
    truth.references = {"01": "average", "02": "Cz"}
    truth.participants = _write_participants(root)
    return truth


def move_data_to_fdt(set_file: Path) -> Path:
    """Move an EEGLAB .set's embedded data (as eeglabio writes it) into `<stem>.fdt`, as EEGLAB saves large
    sets: float32 frames of every channel, one per sample, and the .set's `data` field naming the file."""
    import scipy.io

    fields = scipy.io.loadmat(str(set_file), appendmat=False)
    fields = {k: v for k, v in fields.items() if not k.startswith("__")}
    fdt = set_file.with_suffix(".fdt")
    np.asarray(fields["data"], dtype="<f4").T.tofile(fdt)
    fields["data"] = fdt.name
    scipy.io.savemat(str(set_file), fields, appendmat=False, oned_as="row")
    return fdt


def _edit_sidecars(folder: Path, subject: str) -> None:
    """What real datasets write differently from mne-bids: status descriptions, references, mm, frames."""
    for channels in folder.glob("*_channels.tsv"):
        rows = _read(channels)
        for row in rows:
            if row["name"] == BAD:
                row["status_description"] = BAD_DESCRIPTION
        if subject == "04":
            rows = [r for r in rows if r["name"] != "O2"]  # the file has O2; channels.tsv forgets it
            rows.append({**rows[0], "name": "EXTRA1", "type": "EEG"})  # and names one the file lacks
        _write(channels, rows)
    for sidecar in folder.glob("*_eeg.json"):
        info = json.loads(sidecar.read_text())
        info["EEGReference"] = {"01": "average", "02": "Cz"}.get(subject, "n/a")
        if subject == "04":
            info["SamplingFrequency"] = 500.0
        sidecar.write_text(json.dumps(info, indent=4))
    for electrodes in folder.glob("*_electrodes.tsv"):
        coordsystem = next(folder.glob("*_coordsystem.json"))
        system = json.loads(coordsystem.read_text())
        if subject == "01":  # CapTrak, but in millimetres
            _transform(electrodes, system, np.eye(3), np.zeros(3), "CapTrak")
        elif subject == "02":  # the digitiser's own frame: rotated, shifted, landmarks given
            _transform(
                electrodes, system, _rotation((12.0, -8.0, 75.0)), np.array([31.0, -12.0, 48.0]), "Other"
            )
        elif subject == "04":  # a frame with no landmarks: nothing brings it into the head frame
            _transform(electrodes, system, _rotation((0.0, 0.0, 90.0)), np.zeros(3), "Other")
            for key in [k for k in system if k.startswith("AnatomicalLandmark")]:
                del system[key]
        coordsystem.write_text(json.dumps(system, indent=4))
        if system["EEGCoordinateSystem"] != "CapTrak":  # the files' space entity names their system
            for sidecar in folder.glob("*_space-CapTrak_*"):
                sidecar.rename(sidecar.with_name(sidecar.name.replace("space-CapTrak", "space-Other")))


def _transform(electrodes: Path, system: dict, rotation: np.ndarray, shift_mm: np.ndarray, name: str) -> None:
    """Rewrite electrodes.tsv and the landmarks as `rotation @ p + shift` in millimetres, system `name`."""

    def move(point: list[float]) -> list[float]:
        return [float(v) for v in rotation @ (np.asarray(point, dtype=float) * 1000.0) + shift_mm]

    rows = _read(electrodes)
    for row in rows:
        if row["x"] != "n/a":
            row["x"], row["y"], row["z"] = (f"{v:.4f}" for v in move([row["x"], row["y"], row["z"]]))
    _write(electrodes, rows)
    system["EEGCoordinateSystem"] = name
    system["EEGCoordinateUnits"] = "mm"
    if name != "CapTrak":
        system["EEGCoordinateSystemDescription"] = "the digitiser's native frame"
    landmarks = system.get("AnatomicalLandmarkCoordinates", {})
    system["AnatomicalLandmarkCoordinates"] = {k: move(v) for k, v in landmarks.items()}
    system["AnatomicalLandmarkCoordinateSystem"] = name
    system["AnatomicalLandmarkCoordinateUnits"] = "mm"


def _write_participants(root: Path) -> dict[str, dict[str, str]]:
    rows = [
        {"participant_id": "sub-01", "age": "34", "sex": "F", "group": "control"},
        {"participant_id": "sub-02", "age": "51", "sex": "M", "group": "patient"},
        {"participant_id": "sub-03", "age": "n/a", "sex": "F", "group": "control"},
        {"participant_id": "sub-04", "age": "27", "sex": "M", "group": "patient"},
    ]
    _write(root / "participants.tsv", rows)
    return {r["participant_id"]: r for r in rows}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
