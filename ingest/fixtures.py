"""Small corpora with each recipe's layout, labels and real-archive quirks, and EEG-like signals.

Tests and the README's demo need data nobody has to download. Libraries refuse to write malformed files,
so the EDF/BDF bytes are written here directly (the format is a fixed header and fixed-size records), with
the quirks real archives carry switched on per file. Signals are not white noise: 1/f background shared
between neighbouring electrodes, posterior alpha, mains hum, blinks, muscle bursts and an electrode pop.
"""

from __future__ import annotations

import math
import re
import string
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from eegfm.errors import ConfigError
from eegfm.ingest.channels import cap_labels, electrode_name
from eegfm.ingest.positions import montage_positions

RECIPES = ("tueg", "tuab", "tusz", "chbmit", "siena", "eegmmidb", "sleep-edf", "biosemi", "generic")
QUIRKS = ("records_minus_one", "truncated_last_record", "non_ascii_header", "blank_units", "date_1899")

_EDF_DIGITAL = (-32768, 32767)
_BDF_DIGITAL = (-8388608, 8388607)
_STARTDATE = re.compile(r"Startdate \S+")
# MNE 1.13 renamed standard_1005 to colin27_1005; montage_positions accepts either name on any MNE.
_MONTAGE = "colin27_1005"


@dataclass
class Signal:
    """One ordinary signal of an EDF/BDF file, in physical units."""

    label: str
    data: np.ndarray  # physical values, length = records × samples per record
    sfreq: float
    unit: str = "uV"
    physical_min: float | None = None  # default: symmetric around the data, with margin
    physical_max: float | None = None
    transducer: str = ""
    prefilter: str = ""


# --- Writer --------------------------------------------------------------------------------------------


def _field(text: str, width: int) -> bytes:
    return text.encode("latin-1")[:width].ljust(width)


def _number(x: float, width: int = 8) -> bytes:
    """A number in a header field, as precise as fits."""
    for digits in range(width, 0, -1):
        text = f"{x:.{digits}g}"
        if len(text) <= width:
            return _field(text, width)
    raise ValueError(f"{x} does not fit in {width} characters")


def _seconds(x: float, sign: str = "") -> str:
    """Seconds as plain decimals (TALs allow no exponent): 30 → '30', 0.5 → '0.5'."""
    return f"{x:{sign}.6f}".rstrip("0").rstrip(".")


def _with_suffix(text: str, suffix: str, width: int = 80) -> str:
    """`text` ending in `suffix`, shortened so the suffix survives the field width."""
    return text[: width - len(suffix)] + suffix


def _round_up(x: float) -> float:
    """x rounded up to two significant digits: a physical range a person would pick."""
    if x <= 0:
        return 1.0
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(x / step) * step


def _physical_range(s: Signal) -> tuple[bytes, bytes]:
    peak = _round_up(1.2 * float(np.max(np.abs(s.data)))) if len(s.data) else 1.0
    lo = -peak if s.physical_min is None else s.physical_min
    hi = peak if s.physical_max is None else s.physical_max
    return _number(lo), _number(hi)


def _digital(data: np.ndarray, lo: float, hi: float, dmin: int, dmax: int) -> np.ndarray:
    if hi == lo:  # a degenerate range (TUH's IBI/BURSTS/SUPPR): nothing to quantise
        return np.zeros(len(data), np.int64)
    scaled = (np.asarray(data, np.float64) - lo) / (hi - lo) * (dmax - dmin) + dmin
    return np.clip(np.round(scaled), dmin, dmax).astype(np.int64)


def _pack(values: np.ndarray, sample_bytes: int) -> np.ndarray:
    """Little-endian two's-complement bytes of `values`, 2 or 3 per sample, as uint8."""
    if sample_bytes == 2:
        return values.astype("<i2").view(np.uint8)
    return values.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].reshape(-1)


def _tals(onsets: Sequence[float], annotations: Sequence[tuple[float, float | None, str]]) -> list[bytes]:
    """Each record's annotation bytes: its time-keeping TAL, then the annotations that start in it."""
    tals = [_seconds(onset, "+").encode() + b"\x14\x14\x00" for onset in onsets]
    for onset, duration, text in annotations:
        tal = _seconds(onset, "+") + ("" if duration is None else "\x15" + _seconds(duration))
        record = max(0, bisect_right(onsets, onset) - 1)
        tals[record] += tal.encode() + b"\x14" + text.encode("utf-8") + b"\x14\x00"
    return tals


def _record_count(signals: Sequence[Signal], per_record: list[int], onsets: Sequence[float] | None) -> int:
    counts = {len(s.data) / n for s, n in zip(signals, per_record, strict=True)}
    if len(counts) > 1 or any(c != int(c) for c in counts):
        raise ValueError("every signal must fill the same whole number of data records")
    n_records = int(counts.pop()) if counts else len(onsets or [0.0])
    if onsets is not None and len(onsets) != n_records:
        raise ValueError(f"{len(onsets)} record onsets for {n_records} data records")
    return n_records


def write_edf(
    path: str | Path,
    signals: Sequence[Signal],
    *,
    record_duration: float = 1.0,
    bdf: bool = False,
    edf_plus: str | None = None,
    record_onsets: Sequence[float] | None = None,
    annotations: Sequence[tuple[float, float | None, str]] = (),
    patient: str = "X X X X",
    recording: str = "Startdate X X X X",
    start: datetime = datetime(2020, 1, 1, 12, 0, 0),
    quirks: Collection[str] = (),
) -> Path:
    """Write an EDF or BDF file (EDF+/BDF+ "C" or "D" with `edf_plus`) with the named `quirks` switched on.

    Written byte by byte because pyEDFlib and edfio refuse to write the malformed headers real archives
    hold. Physical values are quantised against the range as written in the header, so any reader gets
    them back within one quantisation step. Annotations are (onset s, duration s or None, UTF-8 text).
    """
    unknown = set(quirks) - set(QUIRKS)
    if unknown:
        raise ValueError(f"unknown quirks {sorted(unknown)}; known: {QUIRKS}")
    if edf_plus not in (None, "C", "D"):
        raise ValueError(f"edf_plus must be None, 'C' or 'D', not {edf_plus!r}")
    if edf_plus is None and (record_onsets is not None or annotations):
        raise ValueError("record onsets and annotations need EDF+ (edf_plus='C' or 'D')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_bytes = 3 if bdf else 2
    dmin, dmax = _BDF_DIGITAL if bdf else _EDF_DIGITAL
    per_record = [round(s.sfreq * record_duration) for s in signals]
    for s, n in zip(signals, per_record, strict=True):
        if n < 1 or abs(n - s.sfreq * record_duration) > 1e-6:
            raise ValueError(
                f"{s.label}: {s.sfreq} Hz × {record_duration} s is not a whole number of samples"
            )
    n_records = _record_count(signals, per_record, record_onsets)
    onsets = (
        list(record_onsets) if record_onsets is not None else [i * record_duration for i in range(n_records)]
    )

    ranges = [_physical_range(s) for s in signals]
    units = [s.unit for s in signals]
    date = start.strftime("%d.%m.%y")
    if "non_ascii_header" in quirks:
        patient, recording = _with_suffix(patient, " Ren\xe9e"), _with_suffix(recording, " H\xf4pital")
        units = ["\xb5V" if u == "uV" else u for u in units]
    if "blank_units" in quirks:
        units = [""] * len(signals)
    if "date_1899" in quirks:
        date = "01.01.99"
        dated = _STARTDATE.sub("Startdate 01-JAN-1899", recording, count=1)
        recording = dated if dated != recording else f"Startdate 01-JAN-1899 {recording}"

    columns: list[list[bytes]] = [
        [_field(s.label, 16) for s in signals],
        [_field(s.transducer, 80) for s in signals],
        [_field(u, 8) for u in units],
        [lo for lo, _ in ranges],
        [hi for _, hi in ranges],
        [_number(dmin)] * len(signals),
        [_number(dmax)] * len(signals),
        [_field(s.prefilter, 80) for s in signals],
        [_field(str(n), 8) for n in per_record],
        [_field("", 32)] * len(signals),
    ]
    tals = _tals(onsets, annotations) if edf_plus else []
    annotation_samples = -(-max(map(len, tals), default=0) // sample_bytes)
    if edf_plus:
        label = "BDF Annotations" if bdf else "EDF Annotations"
        extra = [label, "", "", -1, 1, dmin, dmax, "", annotation_samples, ""]
        for column, value, width in zip(columns, extra, (16, 80, 8, 8, 8, 8, 8, 80, 8, 32), strict=True):
            column.append(_number(value) if isinstance(value, int) else _field(value, width))
    n_signals = len(columns[0])

    plain = "24BIT" if bdf else ""
    reserved = f"{'BDF' if bdf else 'EDF'}+{edf_plus}" if edf_plus else plain
    header = b"".join(
        [
            b"\xffBIOSEMI" if bdf else _field("0", 8),
            _field(patient, 80),
            _field(recording, 80),
            _field(date, 8),
            _field(start.strftime("%H.%M.%S"), 8),
            _field(str(256 * (n_signals + 1)), 8),
            _field(reserved, 44),
            _field("-1" if "records_minus_one" in quirks else str(n_records), 8),
            _number(record_duration),
            _field(str(n_signals), 4),
            *(b"".join(column) for column in columns),
        ]
    )

    blocks = [  # quantised against the range as written: float() reads the header's bytes
        _pack(_digital(s.data, float(lo), float(hi), dmin, dmax), sample_bytes).reshape(n_records, -1)
        for s, (lo, hi) in zip(signals, ranges, strict=True)
    ]
    if edf_plus:
        width = annotation_samples * sample_bytes
        blocks.append(
            np.frombuffer(b"".join(t.ljust(width, b"\x00") for t in tals), np.uint8).reshape(n_records, -1)
        )
    body = np.concatenate(blocks, axis=1).tobytes() if blocks else b""
    if "truncated_last_record" in quirks:
        body = body[: len(body) - len(body) // n_records // 2]  # cut halfway through the last record
    path.write_bytes(header + body)
    return path


# --- Signals -------------------------------------------------------------------------------------------


def _pink(rng: np.random.Generator, k: int, n: int, sfreq: float, slope: float = 1.6) -> np.ndarray:
    """k independent unit-variance noises whose power falls as 1/f^slope (flat below 1 Hz, no DC)."""
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    shape = np.maximum(freqs, 1.0) ** (-slope / 2)
    shape[0] = 0.0
    spectrum = (rng.standard_normal((k, len(freqs))) + 1j * rng.standard_normal((k, len(freqs)))) * shape
    x = np.fft.irfft(spectrum, n)
    return x / x.std(axis=1, keepdims=True)


def _band_noise(rng: np.random.Generator, n: int, sfreq: float, lo: float, hi: float) -> np.ndarray:
    """Unit-variance noise with power only between lo and hi Hz."""
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) * (
        (freqs >= lo) & (freqs <= hi)
    )
    x = np.fft.irfft(spectrum, n)
    return x / max(float(x.std()), 1e-12)


def _directions(names: Sequence[str], montage: str) -> np.ndarray:
    """Unit vector from the head's centre to each electrode (x right, y front, z up); NaN where unknown."""
    table = montage_positions(montage)
    everything = np.array(list(table.values()))
    centre = (everything.max(axis=0) + everything.min(axis=0)) / 2
    out = np.full((len(names), 3), np.nan)
    for i, name in enumerate(names):
        canonical = electrode_name(name, montage)
        if canonical in table:
            v = np.array(table[canonical]) - centre
            out[i] = v / np.linalg.norm(v)
    return out


def simulate_eeg(
    names: Sequence[str],
    sfreq: float,
    duration_s: float,
    *,
    mains_hz: float,
    rng: np.random.Generator,
    montage: str = _MONTAGE,
    alpha_hz: tuple[float, float] = (9.0, 11.0),
    alpha_gain: float = 1.0,
) -> np.ndarray:
    """Scalp-EEG-like signals (µV, C×T) for electrodes `names` of `montage`, deterministic from `rng`.

    1/f background mixed from sources over the head (neighbours correlate), ~10 Hz alpha over occipital and
    parietal electrodes, mains hum below Nyquist, blinks on frontal electrodes, a high-frequency muscle
    burst over temporal ones and one electrode pop. Names the montage lacks get the background only.
    `alpha_hz` (the range the posterior rhythm's frequency is drawn from) and `alpha_gain` let labelled
    fixtures slow or weaken it (an abnormal EEG) or take it out to add their own (`task_fixtures`).
    """
    n = round(sfreq * duration_s)
    t = np.arange(n) / sfreq
    d = _directions(names, montage)
    known = ~np.isnan(d[:, 0])
    c = len(names)
    # Background: pink sources on the upper head, each electrode sees the ones within ~30° of it.
    sources = rng.standard_normal((24, 3))
    sources[:, 2] = np.abs(sources[:, 2])
    sources /= np.linalg.norm(sources, axis=1, keepdims=True)
    mixing = np.exp(-((np.arccos(np.clip(np.nan_to_num(d) @ sources.T, -1, 1)) / 0.5) ** 2)) + 1e-6
    mixing /= np.linalg.norm(mixing, axis=1, keepdims=True)
    x = 14 * (mixing @ _pink(rng, 24, n, sfreq)) + 6 * _pink(rng, c, n, sfreq)
    if not known.all():
        x[~known] = 15 * _pink(rng, int((~known).sum()), n, sfreq)
    d = np.nan_to_num(d)
    # Alpha: ~10 Hz, waxing and waning over seconds, strongest at the back of the head.
    posterior = np.clip((-d[:, 1] - 0.1) / 0.6, 0, 1) + 0.08 * known
    envelope = _band_noise(rng, n, sfreq, 0.02, 0.3)
    envelope = 0.25 + 0.75 * (envelope - envelope.min()) / np.ptp(envelope)
    lag = rng.uniform(-0.3, 0.3, (c, 1))
    alpha = np.sin(2 * np.pi * rng.uniform(*alpha_hz) * t + rng.uniform(0, 2 * np.pi) + lag) * envelope
    x += alpha_gain * rng.uniform(18, 26) * posterior[:, None] * alpha
    # Mains hum, a few µV with its own phase on every electrode (an anti-alias filter removes it at Nyquist).
    if mains_hz < sfreq / 2:
        amplitude = rng.uniform(1.5, 5.0, (c, 1)) * known[:, None]
        x += amplitude * np.sin(2 * np.pi * mains_hz * t + rng.uniform(0, 2 * np.pi, (c, 1)))
    # Blinks every few seconds, large on Fp/AF electrodes and fading towards the vertex.
    frontal = np.clip((d[:, 1] - 0.6) / 0.3, 0, 1) ** 2 * np.clip(1 - d[:, 2], 0, 1)
    blinks = np.zeros(n)
    onset = rng.uniform(0.5, 4.0)
    while onset < duration_s:
        near = np.abs(t - onset) < 0.6
        width = rng.uniform(0.06, 0.1)
        blinks[near] += rng.uniform(80, 160) * np.exp(-0.5 * ((t[near] - onset) / width) ** 2)
        onset += rng.uniform(2.0, 8.0)
    x += frontal[:, None] * blinks
    # Muscle: bursts of 20 Hz+ noise over temporal electrodes, about one per 30 s.
    temporal = np.clip((np.abs(d[:, 0]) - 0.7) / 0.25, 0, 1) * (d[:, 2] < 0.3)
    for _ in range(max(1, round(duration_s / 30))):
        length = min(n, round(rng.uniform(1.0, 2.5) * sfreq))
        first = int(rng.integers(0, n - length + 1))
        burst = np.stack([_band_noise(rng, length, sfreq, 20.0, sfreq / 2) for _ in range(c)])
        x[:, first : first + length] += rng.uniform(20, 40) * temporal[:, None] * burst * np.hanning(length)
    # One electrode pop: a step that decays as the electrode's gel settles.
    if known.any():
        popped = rng.choice(np.flatnonzero(known))
        at = rng.uniform(0.2, 0.8) * duration_s
        after = t >= at
        x[popped, after] += (
            rng.choice([-1, 1]) * rng.uniform(100, 300) * np.exp(-(t[after] - at) / rng.uniform(0.3, 1.0))
        )
    return x


def _other(kind: str, sfreq: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Plausible non-EEG channels: ECG beats, slow respiration-like waves, a flat line, or noise."""
    n = round(sfreq * duration_s)
    t = np.arange(n) / sfreq
    if kind == "ecg":
        period = 60 / rng.uniform(55, 85)
        return (
            800 * np.exp(-0.5 * (((t % period) - period / 2) / 0.012) ** 2) + 15 * _pink(rng, 1, n, sfreq)[0]
        )
    if kind == "slow":
        return 50 * np.sin(2 * np.pi * rng.uniform(0.2, 0.3) * t) + rng.standard_normal(n)
    if kind == "flat":
        return np.zeros(n)
    return 30 * _pink(rng, 1, n, sfreq, slope=0.5)[0]


# --- Corpora -------------------------------------------------------------------------------------------

# Channel tables, laid out in rows as the archives list them.
# fmt: off
TUH_EEG = [
    "FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5", "T6",
    "A1", "A2", "FZ", "CZ", "PZ",
]
TUH_EXTRAS = (
    "EEG EKG1-REF", "EEG ROC-REF", "EEG LOC-REF", "EMG-REF", "PHOTIC-REF", "EEG 26-REF", "EEG 27-REF", "IBI",
    "BURSTS", "SUPPR", "EEG T1-REF", "EEG T2-REF", "EEG SP1-REF",
)
TUH_MONTAGES = ("01_tcp_ar", "02_tcp_le", "03_tcp_ar_a", "04_tcp_le_a")
CHBMIT_LABELS = [
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4",
    "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2", "FZ-CZ", "CZ-PZ", "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8",
    "T8-P8",
]
SIENA_EEG = [
    "Fp1", "F3", "C3", "P3", "O1", "F7", "T3", "T5", "Fc1", "Fc5", "Cp1", "Cp5", "F9", "Fz", "Cz", "Pz",
    "Fp2", "F4", "C4", "P4", "O2", "F8", "T4", "T6", "Fc2", "Fc6", "Cp2", "Cp6", "F10",
]
EEGMMIDB_LABELS = [
    "Fc5.", "Fc3.", "Fc1.", "Fcz.", "Fc2.", "Fc4.", "Fc6.", "C5..", "C3..", "C1..", "Cz..", "C2..", "C4..",
    "C6..", "Cp5.", "Cp3.", "Cp1.", "Cpz.", "Cp2.", "Cp4.", "Cp6.", "Fp1.", "Fpz.", "Fp2.", "Af7.", "Af3.",
    "Afz.", "Af4.", "Af8.", "F7..", "F5..", "F3..", "F1..", "Fz..", "F2..", "F4..", "F6..", "F8..", "Ft7.",
    "Ft8.", "T7..", "T8..", "T9..", "T10.", "Tp7.", "Tp8.", "P7..", "P5..", "P3..", "P1..", "Pz..", "P2..",
    "P4..", "P6..", "P8..", "Po7.", "Po3.", "Poz.", "Po4.", "Po8.", "O1..", "Oz..", "O2..", "Iz..",
]
GENERIC_EEG = [
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8",
    "O1", "O2",
]
_GENERIC_1010 = [
    *GENERIC_EEG, "AF3", "AF4", "FC5", "FC1", "FC2", "FC6", "CP5", "CP1", "CP2", "CP6", "PO3", "PO4", "Oz",
]
# fmt: on

Made = dict[str, tuple[str, ...]]  # a corpus: relative path → tags naming what is special about the file


def tuh_subject(i: int) -> str:
    """TUH-style 8-letter subject id: 0 → aaaaaaaa, 1 → aaaaaaab, …"""
    letters = []
    for _ in range(8):
        i, r = divmod(i, 26)
        letters.append(string.ascii_lowercase[r])
    return "".join(reversed(letters))


def _eeg_signals(
    labels: Sequence[str],
    names: Sequence[str],
    sfreq: float,
    duration_s: float,
    mains_hz: float,
    rng: np.random.Generator,
    span: float,
    montage: str = _MONTAGE,
) -> list[Signal]:
    """Simulated EEG for electrodes `names`, written under `labels`, with a physical range of ±span µV."""
    data = simulate_eeg(names, sfreq, duration_s, mains_hz=mains_hz, rng=rng, montage=montage)
    return [
        Signal(label, x, sfreq, physical_min=-span, physical_max=span)
        for label, x in zip(labels, data, strict=True)
    ]


def _tuh_signals(
    montage: str,
    sfreq: float,
    duration_s: float,
    rng: np.random.Generator,
    extras: Sequence[str],
    *,
    blank: bool,
) -> list[Signal]:
    """TUH channels: 21 (19 in the _a montages) `EEG XX-REF`/`-LE` electrodes, then `extras`."""
    suffix = "-LE" if "_le" in montage else "-REF"
    eeg = [e for e in TUH_EEG if not (montage.endswith("_a") and e in ("A1", "A2"))]
    signals = _eeg_signals([f"EEG {e}{suffix}" for e in eeg], eeg, sfreq, duration_s, 60.0, rng, 4999.84)
    for label in extras:
        if label in ("IBI", "BURSTS", "SUPPR"):  # derived channels whose physical min equals max
            signals.append(Signal(label, np.zeros(round(sfreq * duration_s)), sfreq, "", 0.0, 0.0))
            continue
        kind = (
            "ecg"
            if "EKG" in label
            else "slow"
            if "OC-" in label
            else "flat"
            if "PHOTIC" in label
            else "noise"
        )
        data = _other(kind, sfreq, duration_s, rng)
        signals.append(
            Signal(label.replace("-REF", suffix), data, sfreq, "" if blank else "uV", -4999.84, 4999.84)
        )
    return signals


def _tuh_write(
    path: Path, subject: str, session: str, signals: list[Signal], age: str, quirks: tuple[str, ...]
) -> None:
    write_edf(
        path,
        signals,
        patient=f"{subject} M 01-JAN-1900 {subject} Age:{age}",
        recording=f"Startdate 01-JAN-2000 {subject}_{session} TUH X",
        start=datetime(2000, 1, 1, 10, 20, 30),
        quirks=quirks,
    )


def _tueg(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """Two sessions per subject (`sNNN_YYYY_MM_DD` and `sNNN_YYYY`), the montage folders in turn, and the
    first six files each carrying one of TUH's quirks, so that every quirk is there from three subjects up."""
    made: Made = {}
    file_quirks: list[tuple[str, ...]] = [
        ("records_minus_one", "flat_derived_channels"),
        ("truncated_last_record",),
        ("non_ascii_header",),
        ("date_1899",),
        ("blank_units_non_eeg",),
        ("duplicate_label",),
    ]
    for i in range(max(n_subjects, 3)):
        subject = tuh_subject(i + 1)
        age = "0.0109" if i == 0 else str(int(rng.integers(18, 90)))
        for s, session in enumerate((f"s001_{2010 + i}_{1 + i % 12:02d}_{10 + i % 18}", f"s002_{2011 + i}")):
            k = 2 * i + s
            tags = file_quirks[k] if k < len(file_quirks) else ()
            montage = TUH_MONTAGES[k % 4]
            sfreq = (250.0, 256.0, 512.0)[k % 3]
            n_eeg = 19 if montage.endswith("_a") else 21
            room = min(33 - n_eeg - ("duplicate_label" in tags), len(TUH_EXTRAS))  # 21 to 33 channels
            if "flat_derived_channels" in tags:
                extras = ["EEG EKG1-REF", "PHOTIC-REF", "IBI", "BURSTS", "SUPPR", "EEG 26-REF"]
            else:
                count = int(rng.integers(max(0, 21 - n_eeg), room + 1))
                chosen = rng.choice(len(TUH_EXTRAS), count, replace=False)
                extras = [TUH_EXTRAS[j] for j in sorted(chosen)]
                if "blank_units_non_eeg" in tags and "PHOTIC-REF" not in extras:
                    extras = ["PHOTIC-REF", *extras[: room - 1]]
            signals = _tuh_signals(
                montage, sfreq, duration_s, rng, extras, blank="blank_units_non_eeg" in tags
            )
            if "duplicate_label" in tags:
                fz = next(x for x in signals if x.label.startswith("EEG FZ"))
                signals.append(
                    Signal(
                        fz.label,
                        fz.data + 3 * _pink(rng, 1, len(fz.data), sfreq)[0],
                        sfreq,
                        "uV",
                        -4999.84,
                        4999.84,
                    )
                )
            number = session[:4]
            rel = f"edf/000/{subject}/{session}/{montage}/{subject}_{number}_t000.edf"
            writer_quirks = tuple(q for q in tags if q in QUIRKS)
            _tuh_write(root / rel, subject, number, signals, age, writer_quirks)
            made[rel] = tags
    return made


def _tuab(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """The TUEG fixture's subject ids: every TUAB subject is also in TUEG (pretraining must exclude them)."""
    made: Made = {}
    for i in range(n_subjects):
        subject = tuh_subject(i + 1)
        folder = f"edf/{('train', 'eval')[i // 2 % 2]}/{('normal', 'abnormal')[i % 2]}/01_tcp_ar"
        rel = f"{folder}/{subject}_s001_t000.edf"
        extras = [TUH_EXTRAS[j] for j in sorted(rng.choice(7, int(rng.integers(0, 8)), replace=False))]
        signals = _tuh_signals("01_tcp_ar", (250.0, 256.0)[i % 2], duration_s, rng, extras, blank=False)
        _tuh_write(root / rel, subject, "s001", signals, str(int(rng.integers(18, 90))), ())
        made[rel] = ()
    return made


def _tusz(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    made: Made = {}
    for i in range(n_subjects):
        subject = tuh_subject(100 + i)
        montage = TUH_MONTAGES[i % 3]
        session = f"s{1 + i % 2:03d}"
        folder = f"edf/{('train', 'dev', 'eval')[i % 3]}/{subject}/{session}_{2003 + i}/{montage}"
        rel = f"{folder}/{subject}_{session}_t000.edf"
        extras = ["EEG EKG1-REF", "EEG 26-REF"] if montage.endswith("_a") else ["EEG EKG1-REF"]
        signals = _tuh_signals(montage, (256.0, 250.0)[i % 2], duration_s, rng, extras, blank=False)
        _tuh_write(root / rel, subject, session, signals, str(int(rng.integers(18, 90))), ())
        made[rel] = ()
    return made


def _chbmit(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """Bipolar channels as differences of simulated referential electrodes; dummies `-` in second runs."""
    made: Made = {}
    electrodes = sorted({e for label in CHBMIT_LABELS for e in label.split("-")})
    for i in range(n_subjects):
        for run in (1, 2):
            rel = f"chb{i + 1:02d}/chb{i + 1:02d}_{run:02d}.edf"
            referential = simulate_eeg(electrodes, 256.0, duration_s, mains_hz=60.0, rng=rng)
            at = {e: x for e, x in zip(electrodes, referential, strict=True)}
            data = [at[a] - at[b] for a, b in (label.split("-") for label in CHBMIT_LABELS)]
            extras = ["-", "ECG", "VNS", "-"] if run == 2 else ["LOC-ROC"] if i % 2 else []
            for label in extras:
                kind = {"-": "flat", "ECG": "ecg", "LOC-ROC": "slow"}.get(label, "noise")
                data.append(_other(kind, 256.0, duration_s, rng))
            labels = [*CHBMIT_LABELS, *extras]
            signals = [
                Signal(label, x, 256.0, physical_min=-6400.0, physical_max=6400.0)
                for label, x in zip(labels, data, strict=True)
            ]
            write_edf(root / rel, signals, start=datetime(2076, 11, 6, 11, 42, 54))
            made[rel] = ("duplicate_label", "dummy_channels") if run == 2 else ("duplicate_label",)
    return made


def _siena(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    made: Made = {}
    for i in range(n_subjects):
        for run in (1, 2) if i == 0 else (1,):
            rel = f"PN{i:02d}/PN{i:02d}-{run}.edf"
            signals = _eeg_signals(
                [f"EEG {e}" for e in SIENA_EEG], SIENA_EEG, 512.0, duration_s, 50.0, rng, 3200.0
            )
            for label, kind in (("EKG EKG", "ecg"), ("SPO2", "slow"), ("HR", "slow"), ("MK", "flat")):
                signals.append(
                    Signal(label, _other(kind, 512.0, duration_s, rng), 512.0, "", -3200.0, 3200.0)
                )
            write_edf(root / rel, signals)
            made[rel] = ()
    return made


def _eegmmidb(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """EDF+C runs with T0/T1/T2 events; the last subject recorded at 128 Hz like S088, S092 and S100."""
    made: Made = {}
    names = [label.rstrip(".") for label in EEGMMIDB_LABELS]
    count = max(n_subjects, 2)
    for i in range(count):
        sfreq = 128.0 if i == count - 1 else 160.0
        for run in (1, 4) if i == 0 else (4,):
            rel = f"S{i + 1:03d}/S{i + 1:03d}R{run:02d}.edf"
            signals = _eeg_signals(EEGMMIDB_LABELS, names, sfreq, duration_s, 60.0, rng, 8092.0)
            if run == 1:  # baseline, eyes open: one rest event
                events = [(0.0, duration_s, "T0")]
            else:  # rest and left/right fist, in turn
                starts = np.arange(0.0, duration_s - 4.2, 4.2)
                events = [
                    (float(t), 4.2 if k % 2 == 0 else 4.1, ("T0", "T1", "T0", "T2")[k % 4])
                    for k, t in enumerate(starts)
                ]
            write_edf(
                root / rel,
                signals,
                edf_plus="C",
                annotations=events,
                recording="Startdate 12-AUG-2009 X X BCI2000",
                start=datetime(2009, 8, 12, 16, 15, 0),
            )
            made[rel] = ("128_hz",) if sfreq == 128.0 else ()
    return made


def _sleep_edf(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """PSG files with 100 Hz and 1 Hz signals in 30-s records, each with an annotation-only hypnogram."""
    made: Made = {}
    duration_s = math.ceil(duration_s / 30) * 30
    for i in range(n_subjects):
        base = f"SC4{i:02d}1"
        sex, age = ("F", "M")[i % 2], int(rng.integers(25, 35))
        header = {
            "patient": f"X {sex} X {('Female', 'Male')[i % 2]}_{age}yr",
            "recording": "Startdate 24-APR-1989 X X X",
            "start": datetime(1989, 4, 24, 16, 13),
        }
        ref = simulate_eeg(["Fpz", "Cz", "Pz", "Oz", "F7", "F8"], 100.0, duration_s, mains_hz=50.0, rng=rng)
        slow = _other("slow", 1.0, duration_s, rng)
        signals = [
            Signal("EEG Fpz-Cz", ref[0] - ref[1], 100.0, physical_min=-192.0, physical_max=192.0),
            Signal("EEG Pz-Oz", ref[2] - ref[3], 100.0, physical_min=-197.0, physical_max=196.0),
            Signal("EOG horizontal", ref[4] - ref[5], 100.0, physical_min=-1009.0, physical_max=1009.0),
            Signal("Resp oro-nasal", slow, 1.0, unit="", physical_min=-2048.0, physical_max=2047.0),
            Signal(
                "EMG submental",
                np.abs(_other("noise", 1.0, duration_s, rng)) / 10,
                1.0,
                physical_min=-5.0,
                physical_max=5.0,
            ),
            Signal("Temp rectal", 36.8 + slow / 250, 1.0, unit="DegC", physical_min=34.0, physical_max=40.0),
            Signal(
                "Event marker",
                _other("flat", 1.0, duration_s, rng),
                1.0,
                unit="",
                physical_min=-2048.0,
                physical_max=2047.0,
            ),
        ]
        psg = f"sleep-cassette/{base}E0-PSG.edf"
        write_edf(root / psg, signals, record_duration=30.0, **header)
        made[psg] = ("mixed_rates",)
        stages = [
            (float(t), 30.0, f"Sleep stage {('W', '1', '2', '3', '2', 'R')[k % 6]}")
            for k, t in enumerate(range(0, duration_s, 30))
        ]
        hypnogram = f"sleep-cassette/{base}E{'CHJ'[i % 3]}-Hypnogram.edf"
        write_edf(root / hypnogram, [], record_duration=0.0, edf_plus="C", annotations=stages, **header)
        made[hypnogram] = ("annotation_only",)
    return made


def _biosemi(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """64-electrode caps and a 128-electrode one for the last subject; signals placed in cap order."""
    made: Made = {}
    count = max(n_subjects, 2)
    for i in range(count):
        montage = "biosemi128" if i == count - 1 else "biosemi64"
        names = list(montage_positions(montage))  # cap order: these are the electrodes A1, A2, … sit at
        signals = _eeg_signals(cap_labels(len(names)), names, 512.0, duration_s, 50.0, rng, 262144.0, montage)
        for k in range(8):
            signals.append(
                Signal(
                    f"EXG{k + 1}", _other("noise", 512.0, duration_s, rng), 512.0, "uV", -262144.0, 262144.0
                )
            )
        status = np.zeros(round(512 * duration_s))
        for at in rng.uniform(0, duration_s - 1, 5):
            status[round(at * 512) : round(at * 512) + 10] = rng.integers(1, 256)
        signals.append(
            Signal("Status", status, 512.0, "Boolean", -8388608.0, 8388607.0, "Triggers and Status")
        )
        rel = f"sub-{i + 1:02d}/sub-{i + 1:02d}_task-rest.bdf"
        write_edf(root / rel, signals, bdf=True, patient=f"sub-{i + 1:02d}", recording="BioSemi ActiveTwo")
        made[rel] = (f"cap_{montage}",)
    return made


def _generic(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """Flat folder: EDF and BDF at several rates, an EDF+D with a 7.5-s gap, and a 6-s file."""
    made: Made = {}
    for i, sfreq in enumerate((128.0, 250.0, 500.0, 1000.0)[: max(n_subjects, 2)]):
        bdf = i % 2 == 1
        names = _GENERIC_1010 if i == 2 else GENERIC_EEG
        rel = f"rec{i:02d}.{'bdf' if bdf else 'edf'}"
        signals = _eeg_signals(names, names, sfreq, duration_s, 50.0, rng, 262144.0 if bdf else 3200.0)
        write_edf(root / rel, signals, bdf=bdf)
        made[rel] = ()
    # EDF+D: two contiguous stretches of at least two 10-s windows each, 7.5 s apart.
    half = max(25, int(duration_s // 2))
    signals = _eeg_signals(GENERIC_EEG, GENERIC_EEG, 200.0, 2 * half, 50.0, rng, 3200.0)
    onsets = [float(k) for k in range(half)] + [half + 7.5 + k for k in range(half)]
    write_edf(root / "discontinuous.edf", signals, edf_plus="D", record_onsets=onsets)
    made["discontinuous.edf"] = ("edf_plus_d",)
    write_edf(root / "short.edf", _eeg_signals(GENERIC_EEG, GENERIC_EEG, 256.0, 6.0, 50.0, rng, 3200.0))
    made["short.edf"] = ("short",)
    return made


_MAKERS: dict[str, Callable[[Path, np.random.Generator, int, float], Made]] = {
    "tueg": _tueg,
    "tuab": _tuab,
    "tusz": _tusz,
    "chbmit": _chbmit,
    "siena": _siena,
    "eegmmidb": _eegmmidb,
    "sleep-edf": _sleep_edf,
    "biosemi": _biosemi,
    "generic": _generic,
}


def generate_corpus(
    recipe: str, root: str | Path, *, seed: int = 0, n_subjects: int = 3, duration_s: float = 60.0
) -> Made:
    """Write a small corpus laid out like `recipe`'s under `root`, the same bytes for the same arguments.

    Returns {path relative to root: tags}, sorted by path. Tags name what a file has for the ingest to
    decide on: the writer's QUIRKS it was written with, and `flat_derived_channels`, `blank_units_non_eeg`,
    `duplicate_label`, `dummy_channels`, `128_hz`, `mixed_rates`, `annotation_only`, `cap_biosemi64`,
    `cap_biosemi128`, `edf_plus_d`, `short`.
    """
    if recipe not in _MAKERS:
        raise ConfigError(f"no fixture corpus for recipe {recipe!r}; known: {', '.join(RECIPES)}")
    rng = np.random.default_rng([seed, RECIPES.index(recipe)])
    return dict(sorted(_MAKERS[recipe](Path(root), rng, n_subjects, duration_s).items()))
