"""Small recordings in the formats read through MNE (BrainVision, EEGLAB, FIF, GDF), for tests and benches.

Each is written by that format's own writer, so the tests read what real archives hold: BrainVision by
pybv, EEGLAB by eeglabio (data embedded in the .set; the .set + .fdt variant moves that same array into
the .fdt, the layout EEGLAB itself writes), FIF by MNE. GDF has no Python writer: `write_gdf` follows the
published GDF 2.x layout (Schlögl, "GDF – A general data format for biomedical signals", v2.x: a 256-byte
fixed header, 256 bytes per channel of variable header, fixed-size records, an event table after them),
and the tests check it against MNE's independent GDF reader.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from eegfm.ingest.fixtures import simulate_eeg

FORMATS = ("brainvision", "eeglab", "eeglab-fdt", "fif", "gdf")
EXTENSIONS = {"brainvision": ".vhdr", "eeglab": ".set", "eeglab-fdt": ".set", "fif": ".fif", "gdf": ".gdf"}
FIXTURE_EEG = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz")
# Non-EEG channels every fixture carries: (label, MNE channel type). A format that stores types (EEGLAB,
# FIF) must drop BIP1 by its type alone; its label says nothing.
FIXTURE_EXTRAS = (("VEOG", "eog"), ("BIP1", "ecg"), ("STI 014", "stim"))

# GDF 2.x physical-dimension codes (biosig units.csv: volt is 4256, the low 5 bits a decimal prefix).
GDF_UNIT_CODES = {"V": 4256, "mV": 4256 + 18, "uV": 4256 + 19, "nV": 4256 + 20, "": 0}
GDF_TYPES = {"int16": (3, "<i2"), "int32": (5, "<i4"), "float32": (16, "<f4"), "float64": (17, "<f8")}


def write_brainvision(
    folder: Path, stem: str, data_uv: np.ndarray, sfreq: float, names: Sequence[str]
) -> Path:
    """`<stem>.vhdr/.vmrk/.eeg` (float32, µV with resolution 0.1) by pybv; returns the .vhdr."""
    import pybv

    pybv.write_brainvision(
        data=np.asarray(data_uv) * 1e-6,  # pybv takes volts and writes them in `unit`
        sfreq=sfreq,
        ch_names=list(names),
        fname_base=stem,
        folder_out=str(folder),
        overwrite=True,
        unit="µV",
    )
    return Path(folder) / f"{stem}.vhdr"


def write_eeglab(
    path: Path,
    data_uv: np.ndarray,
    sfreq: float,
    names: Sequence[str],
    kinds: Sequence[str] | None = None,
    *,
    separate_fdt: bool = False,
    boundaries_s: Sequence[float] = (),
) -> Path:
    """An EEGLAB .set by eeglabio (data embedded), or with the data in `<stem>.fdt` beside it.

    The .fdt is what EEGLAB writes: float32, channels × samples in column-major order (one frame of
    every channel per sample), and the .set's `data` field names it. `boundaries_s` adds EEGLAB
    `boundary` events (a discontinuity: data were cut out there).
    """
    import scipy.io
    from eeglabio.raw import export_set

    path = Path(path)
    annotations = None
    if boundaries_s:
        onsets = np.asarray(boundaries_s, dtype=float)
        annotations = [["boundary"] * len(onsets), onsets, np.zeros(len(onsets))]
    types = [k.upper() for k in kinds] if kinds is not None else None
    export_set(
        str(path), np.asarray(data_uv) * 1e-6, sfreq, list(names), annotations=annotations, ch_types=types
    )
    if separate_fdt:
        fields = scipy.io.loadmat(str(path), appendmat=False)
        fields = {k: v for k, v in fields.items() if not k.startswith("__")}
        data = np.asarray(fields["data"], dtype="<f4")
        fdt = path.with_suffix(".fdt")
        data.T.tofile(fdt)  # sample-major frames
        fields["data"] = fdt.name
        scipy.io.savemat(str(path), fields, appendmat=False, oned_as="row")
    return path


def write_fif(
    path: Path, data_uv: np.ndarray, sfreq: float, names: Sequence[str], kinds: Sequence[str]
) -> Path:
    """A raw FIF file by MNE itself (float32 samples, channel types stored)."""
    import mne

    info = mne.create_info(list(names), sfreq, list(kinds), verbose=False)
    data = np.asarray(data_uv, dtype=np.float64).copy()
    volts = np.array([k != "stim" for k in kinds])
    data[volts] *= 1e-6
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.save(str(path), overwrite=True, verbose=False)
    return Path(path)


def write_gdf(
    path: Path,
    data: np.ndarray,
    sfreq: float,
    names: Sequence[str],
    *,
    unit: str = "uV",
    sample_type: str = "int16",
    record_s: float = 1.0,
    events: Sequence[tuple[int, int]] = (),
) -> Path:
    """A GDF 2.20 file of `data` (C × T, in `unit`), every channel at `sfreq`.

    int16/int32 samples are scaled digitally: each channel's physical range is its data's range (rounded
    out), mapped onto the type's full digital range, as acquisition software does; float samples store
    physical values (digital = physical). `events` are (sample, type code) pairs of the event table
    (mode 1). A last partial record is dropped, as GDF records are whole.
    """
    code, dtype = GDF_TYPES[sample_type]
    data = np.asarray(data, dtype=np.float64)
    n_channels = data.shape[0]
    per_record = round(sfreq * record_s)
    if abs(per_record - sfreq * record_s) > 1e-9:
        raise ValueError(f"record of {record_s} s holds no whole number of samples at {sfreq} Hz")
    n_records = data.shape[1] // per_record
    data = data[:, : n_records * per_record]
    if np.dtype(dtype).kind == "i":
        info = np.iinfo(dtype)
        dmin, dmax = np.full(n_channels, float(info.min)), np.full(n_channels, float(info.max))
        pmin = np.floor(data.min(axis=1, initial=0.0)) - 1.0
        pmax = np.ceil(data.max(axis=1, initial=0.0)) + 1.0
        gain = (pmax - pmin) / (dmax - dmin)
        digital = np.round((data - pmin[:, None]) / gain[:, None] + dmin[:, None]).astype(dtype)
    else:
        pmin = dmin = np.full(n_channels, -1e9)
        pmax = dmax = np.full(n_channels, 1e9)
        digital = data.astype(dtype)

    header = bytearray(256)
    header[0:8] = b"GDF 2.20"
    header[8:74] = b"X X".ljust(66)
    header[88:152] = b"eegfm fixture".ljust(64)
    days = (datetime(2020, 1, 1) - datetime(1, 1, 1)).days + 367  # GDF counts days from year 0
    struct.pack_into("<Q", header, 168, days << 32)
    struct.pack_into("<H", header, 184, 1 + n_channels)  # header length in 256-byte blocks
    struct.pack_into("<q", header, 236, n_records)
    numerator, denominator = _fraction(record_s)
    struct.pack_into("<II", header, 244, numerator, denominator)
    struct.pack_into("<H", header, 252, n_channels)

    def text(values: Sequence[str], width: int) -> bytes:
        return b"".join(v.encode("latin-1")[:width].ljust(width, b" ") for v in values)

    def array(values: Sequence[float] | np.ndarray, fmt: str) -> bytes:
        return np.asarray(values, dtype=fmt).tobytes()

    variable = b"".join(
        [
            text(names, 16),
            text(["EEG electrode"] * n_channels, 80),
            text([unit] * n_channels, 6),
            array([GDF_UNIT_CODES[unit]] * n_channels, "<u2"),
            array(pmin, "<f8"),
            array(pmax, "<f8"),
            array(dmin, "<f8"),
            array(dmax, "<f8"),
            bytes(68 * n_channels),  # obsolete prefiltering text
            array([0.0] * n_channels, "<f4"),  # low pass
            array([0.0] * n_channels, "<f4"),  # high pass
            array([0.0] * n_channels, "<f4"),  # notch
            array([per_record] * n_channels, "<i4"),
            array([code] * n_channels, "<i4"),
            bytes(12 * n_channels),  # sensor positions
            bytes(20 * n_channels),  # impedances and reserved
        ]
    )
    assert len(variable) == 256 * n_channels
    # A record holds each channel's samples in turn.
    records = digital.reshape(n_channels, n_records, per_record).transpose(1, 0, 2)
    event_table = b""
    if events:
        positions = np.array([p + 1 for p, _ in events], "<u4")  # 1-based sample positions
        types = np.array([t for _, t in events], "<u2")
        count = len(events)
        event_table = bytes([1, count & 255, (count >> 8) & 255, (count >> 16) & 255])
        event_table += struct.pack("<f", sfreq) + positions.tobytes() + types.tobytes()
    with open(path, "wb") as f:
        f.write(bytes(header))
        f.write(variable)
        f.write(np.ascontiguousarray(records).tobytes())
        f.write(event_table)
    return Path(path)


def _fraction(seconds: float) -> tuple[int, int]:
    for denominator in (1, 10, 100, 1000, 10000):
        numerator = seconds * denominator
        if abs(numerator - round(numerator)) < 1e-9:
            return round(numerator), denominator
    raise ValueError(f"record duration {seconds} s is not a short decimal")


def fixture_signals(
    sfreq: float, duration_s: float, seed: int = 0
) -> tuple[np.ndarray, list[str], list[str]]:
    """EEG-like µV signals of `FIXTURE_EEG` plus an EOG, an ECG-like and a trigger channel."""
    rng = np.random.default_rng(seed)
    eeg = simulate_eeg(FIXTURE_EEG, sfreq, duration_s, mains_hz=50.0, rng=rng)
    n = eeg.shape[1]
    t = np.arange(n) / sfreq
    eog = 80.0 * np.sin(2 * np.pi * 0.3 * t) + 5.0 * rng.standard_normal(n)
    ecg = 500.0 * (np.sin(2 * np.pi * 1.2 * t) ** 15)
    stim = np.zeros(n)
    stim[:: round(2 * sfreq)] = 1.0
    data = np.vstack([eeg, eog, ecg, stim])
    names = [*FIXTURE_EEG, *(label for label, _ in FIXTURE_EXTRAS)]
    kinds = ["eeg"] * len(FIXTURE_EEG) + [kind for _, kind in FIXTURE_EXTRAS]
    return data, names, kinds


def write_fixture(
    fmt: str, folder: Path, stem: str, duration_s: float = 30.0, sfreq: float = 250.0, seed: int = 0
) -> tuple[Path, np.ndarray, list[str]]:
    """One fixture recording in `fmt` (one of FORMATS): its path, the µV written (C × T) and channel names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data, names, kinds = fixture_signals(sfreq, duration_s, seed)
    if fmt == "brainvision":
        return write_brainvision(folder, stem, data, sfreq, names), data, names
    if fmt in ("eeglab", "eeglab-fdt"):
        path = folder / f"{stem}.set"
        return write_eeglab(path, data, sfreq, names, kinds, separate_fdt=fmt == "eeglab-fdt"), data, names
    if fmt == "fif":
        return write_fif(folder / f"{stem}_raw.fif", data, sfreq, names, kinds), data, names
    if fmt == "gdf":
        return write_gdf(folder / f"{stem}.gdf", data, sfreq, names), data, names
    raise ValueError(f"unknown fixture format {fmt!r}; one of {', '.join(FORMATS)}")


def write_long_brainvision(folder: Path, stem: str, duration_s: float, sfreq: float = 250.0) -> Path:
    """A long BrainVision recording made cheaply: one minute by pybv, its .eeg repeated (memory tests).

    The .eeg of a multiplexed float32 recording is whole sample frames, so repeating it is a longer
    recording of the same channels; MNE takes the length from the .eeg's size.
    """
    piece_s = 60.0
    vhdr = write_fixture("brainvision", folder, stem, duration_s=piece_s, sfreq=sfreq)[0]
    eeg = vhdr.with_suffix(".eeg")
    piece = eeg.read_bytes()
    repeats, rest = divmod(round(duration_s * sfreq), round(piece_s * sfreq))
    frame = len(piece) // round(piece_s * sfreq)
    with open(eeg, "wb") as f:
        for _ in range(repeats):
            f.write(piece)
        f.write(piece[: rest * frame])
    return vhdr
