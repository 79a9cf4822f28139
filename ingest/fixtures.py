"""Small corpora with each recipe's layout, labels and real-archive quirks, and EEG-like signals.

Tests and the README's demo need data nobody has to download. Libraries refuse to write malformed files,
so the EDF/BDF bytes are written here directly (the format is a fixed header and fixed-size records), with
the quirks real archives carry switched on per file. Signals are not white noise: 1/f background shared
between neighbouring electrodes, posterior alpha, mains hum, blinks, muscle bursts and an electrode pop.
"""

from __future__ import annotations

import math
import string
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from eegfm.ingest.channels import OLD_1020, cap_labels, electrode_name
from eegfm.ingest.positions import montage_positions

RECIPES = ("tueg", "tuab", "tusz", "chbmit", "siena", "eegmmidb", "sleep-edf", "biosemi", "generic")
QUIRKS = ("records_minus_one", "truncated_last_record", "non_ascii_header", "date_1899")

_EDF_DIGITAL = (-32768, 32767)
_BDF_DIGITAL = (-8388608, 8388607)


@dataclass
class Signal:
    label: str
    data: np.ndarray  # physical values, length = records × samples per record
    sfreq: float
    unit: str = "uV"
    physical_min: float | None = None  # default: symmetric around the data, with margin
    physical_max: float | None = None
    transducer: str = ""
    prefilter: str = ""


def _field(text: str, width: int) -> bytes:
    return text.encode("latin-1")[:width].ljust(width)


def _number(x: float, width: int = 8) -> bytes:
    """A number in an 8-character header field, as precise as fits."""
    for digits in range(8, 0, -1):
        text = f"{x:.{digits}g}"
        if len(text) <= width:
            return _field(text, width)
    raise ValueError(f"{x} does not fit in {width} characters")


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
    """Write an EDF/BDF (EDF+C/D, BDF+ with `edf_plus`) file, with the named `quirks` switched on."""
    unknown = set(quirks) - set(QUIRKS)
    if unknown:
        raise ValueError(f"unknown quirks {sorted(unknown)}; known: {QUIRKS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_bytes = 3 if bdf else 2
    dmin, dmax = _BDF_DIGITAL if bdf else _EDF_DIGITAL
    per_record = [round(s.sfreq * record_duration) for s in signals]
    if any(abs(n - s.sfreq * record_duration) > 1e-9 for n, s in zip(per_record, signals, strict=True)):
        raise ValueError("every signal needs a whole number of samples per record")
    lengths = {len(s.data) / n for s, n in zip(signals, per_record, strict=True) if n}
    n_records = int(lengths.pop()) if lengths else max(1, len(record_onsets or [0]))
    if lengths:
        raise ValueError("signals cover different numbers of records")
    onsets = (
        list(record_onsets) if record_onsets is not None else [i * record_duration for i in range(n_records)]
    )

    tals = _tals(onsets, annotations) if edf_plus else []
    annot_samples = max((len(t) for t in tals), default=0) // sample_bytes + 1 if edf_plus else 0
    labels = [s.label for s in signals] + (
        ["BDF Annotations" if bdf else "EDF Annotations"] if edf_plus else []
    )
    ns = len(labels)

    header = bytearray()
    header += b"\xffBIOSEMI" if bdf else _field("0", 8)
    non_ascii = "non_ascii_header" in quirks
    header += _field(patient + (" Ren\xe9e" if non_ascii else ""), 80)
    date = "01.01.99" if "date_1899" in quirks else start.strftime("%d.%m.%y")
    header += _field(recording + (" Startdate 01-JAN-1899" if "date_1899" in quirks else ""), 80)
    header += _field(date, 8) + _field(start.strftime("%H.%M.%S"), 8)
    header += _field(str(256 * (ns + 1)), 8)
    reserved = ("BDF+" if bdf else "EDF+") + edf_plus if edf_plus else ("24BIT" if bdf else "")
    header += _field(reserved, 44)
    header += _field("-1" if "records_minus_one" in quirks else str(n_records), 8)
    header += _number(record_duration) + _field(str(ns), 4)

    ranges = []
    for s in signals:
        lo, hi = s.physical_min, s.physical_max
        if lo is None or hi is None:
            peak = float(np.max(np.abs(s.data))) * 1.25 + 1.0 if len(s.data) else 1.0
            lo, hi = -peak, peak
        ranges.append((lo, hi))
    units = [("\xb5V" if non_ascii and s.unit == "uV" else s.unit) for s in signals] + (
        [""] if edf_plus else []
    )
    columns = [
        [_field(label, 16) for label in labels],
        [_field(s.transducer, 80) for s in signals] + ([_field("", 80)] if edf_plus else []),
        [_field(u, 8) for u in units],
        [_number(lo) for lo, _ in ranges] + ([_number(-1)] if edf_plus else []),
        [_number(hi) for _, hi in ranges] + ([_number(1)] if edf_plus else []),
        [_number(dmin)] * ns,
        [_number(dmax)] * ns,
        [_field(s.prefilter, 80) for s in signals] + ([_field("", 80)] if edf_plus else []),
        [_field(str(n), 8) for n in per_record] + ([_field(str(annot_samples), 8)] if edf_plus else []),
        [_field("", 32)] * ns,
    ]
    for column in columns:
        header += b"".join(column)

    digital = []
    for s, (lo, hi) in zip(signals, ranges, strict=True):
        if hi == lo:
            digital.append(np.zeros(len(s.data), np.int64))
        else:
            d = np.round((np.asarray(s.data, np.float64) - lo) / (hi - lo) * (dmax - dmin) + dmin)
            digital.append(np.clip(d, dmin, dmax).astype(np.int64))
    body = bytearray()
    for r in range(n_records):
        for d, n in zip(digital, per_record, strict=True):
            body += _pack(d[r * n : (r + 1) * n], sample_bytes)
        if edf_plus:
            body += tals[r].ljust(annot_samples * sample_bytes, b"\x00")
    if "truncated_last_record" in quirks:
        record_bytes = (sum(per_record) + annot_samples) * sample_bytes
        body = body[: len(body) - record_bytes // 2]
    path.write_bytes(bytes(header) + bytes(body))
    return path


def _pack(values: np.ndarray, sample_bytes: int) -> bytes:
    if sample_bytes == 2:
        return values.astype("<i2").tobytes()
    v = values.astype("<i4").view(np.uint8).reshape(-1, 4)
    return v[:, :3].tobytes()


def _tals(onsets: Sequence[float], annotations: Sequence[tuple[float, float | None, str]]) -> list[bytes]:
    """Each record's annotation bytes: its time-keeping TAL; the first record carries every annotation."""
    tals = [f"{onset:+g}".encode() + b"\x14\x14\x00" for onset in onsets]
    for onset, duration, text in annotations:
        tal = f"{onset:+g}".encode() + (b"\x15" + f"{duration:g}".encode() if duration is not None else b"")
        tals[0] += tal + b"\x14" + text.encode("utf-8") + b"\x14\x00"
    return tals


# --- Signals -------------------------------------------------------------------------------------------


def _pink(rng: np.random.Generator, n: int, sfreq: float, k: int, exponent: float = 0.75) -> np.ndarray:
    """k independent 1/f^(2·exponent)-power noises of n samples, unit variance."""
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    shape = 1 / np.maximum(freqs, 0.5) ** exponent
    spectrum = (rng.standard_normal((k, len(freqs))) + 1j * rng.standard_normal((k, len(freqs)))) * shape
    x = np.fft.irfft(spectrum, n)
    return x / x.std(axis=1, keepdims=True)


def electrode_positions(names: Sequence[str], montage: str = "standard_1005") -> list[np.ndarray | None]:
    """Position of each name in `montage` (old 10-20 names and any case accepted), None where unknown."""
    table = montage_positions(montage)
    out: list[np.ndarray | None] = []
    for name in names:
        canonical = electrode_name(name, montage)
        canonical = (
            canonical if canonical in table else {v: k for k, v in OLD_1020.items()}.get(canonical or "")
        )
        out.append(np.array(table[canonical]) if canonical in table else None)
    return out


def simulate_eeg(
    names: Sequence[str],
    sfreq: float,
    duration_s: float,
    *,
    mains_hz: float,
    rng: np.random.Generator,
    montage: str = "standard_1005",
) -> np.ndarray:
    """Scalp-EEG-like signals (µV, C×T) for electrodes `names` of `montage`."""
    n = round(sfreq * duration_s)
    t = np.arange(n) / sfreq
    positions = electrode_positions(names, montage)
    known = np.array([p if p is not None else np.zeros(3) for p in positions])
    # Background: 12 pink sources spread over the head, mixed by distance, plus each channel's own noise.
    sources = rng.normal(size=(12, 3))
    sources = sources / np.linalg.norm(sources, axis=1, keepdims=True) * 0.09
    distance = np.linalg.norm(known[:, None, :] - sources[None], axis=2)
    mixing = np.exp(-((distance / 0.05) ** 2))
    signal = 12 * mixing @ _pink(rng, n, sfreq, 12) + 8 * _pink(rng, n, sfreq, len(names))
    # Alpha near 10 Hz, waxing and waning, strongest over occipital/parietal electrodes (y < 0).
    posterior = np.array([max(0.0, -p[1]) / 0.1 if p is not None else 0.0 for p in positions])
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
    alpha = np.sin(2 * np.pi * rng.uniform(9.5, 10.5) * t + rng.uniform(0, 2 * np.pi)) * envelope
    signal += 25 * posterior[:, None] * alpha
    # Mains hum, a few µV, different on every channel.
    phase = rng.uniform(0, 2 * np.pi, (len(names), 1))
    signal += rng.uniform(2, 6, (len(names), 1)) * np.sin(2 * np.pi * mains_hz * t + phase)
    # Blinks on frontal electrodes every few seconds.
    frontal = np.array([max(0.0, p[1] - 0.05) / 0.06 if p is not None else 0.0 for p in positions])
    for onset in np.arange(rng.uniform(1, 4), duration_s, rng.uniform(4, 7)):
        signal += 120 * frontal[:, None] * np.exp(-(((t - onset) / 0.08) ** 2))
    # A muscle burst over the temporal electrodes, and one electrode pop.
    temporal = np.array([abs(p[0]) / 0.09 if p is not None else 0.0 for p in positions])
    burst = (np.abs(t - duration_s * 0.6) < 0.5) * _pink(rng, n, sfreq, 1, exponent=0.0)[0]
    signal += 25 * temporal[:, None] ** 4 * burst
    popped = rng.integers(len(names))
    pop_at = duration_s * 0.3
    signal[popped] += 150 * (t >= pop_at) * np.exp(-np.maximum(t - pop_at, 0) / 0.4)
    return signal


# --- Corpora -------------------------------------------------------------------------------------------

TUH_EEG = [
    "FP1",
    "FP2",
    "F3",
    "F4",
    "C3",
    "C4",
    "P3",
    "P4",
    "O1",
    "O2",
    "F7",
    "F8",
    "T3",
    "T4",
    "T5",
    "T6",
    "A1",
    "A2",
    "FZ",
    "CZ",
    "PZ",
]
TUH_EXTRAS = [
    "EEG EKG1-REF",
    "EEG ROC-REF",
    "EEG LOC-REF",
    "EMG-REF",
    "PHOTIC-REF",
    "EEG 26-REF",
    "EEG 27-REF",
    "IBI",
    "BURSTS",
    "SUPPR",
    "EEG T1-REF",
    "EEG T2-REF",
    "EEG SP1-REF",
]
TUH_MONTAGES = ("01_tcp_ar", "02_tcp_le", "03_tcp_ar_a", "04_tcp_le_a")
CHBMIT_LABELS = [
    "FP1-F7",
    "F7-T7",
    "T7-P7",
    "P7-O1",
    "FP1-F3",
    "F3-C3",
    "C3-P3",
    "P3-O1",
    "FP2-F4",
    "F4-C4",
    "C4-P4",
    "P4-O2",
    "FP2-F8",
    "F8-T8",
    "T8-P8",
    "P8-O2",
    "FZ-CZ",
    "CZ-PZ",
    "P7-T7",
    "T7-FT9",
    "FT9-FT10",
    "FT10-T8",
    "T8-P8",
]
SIENA_EEG = [
    "Fp1",
    "F3",
    "C3",
    "P3",
    "O1",
    "F7",
    "T3",
    "T5",
    "Fc1",
    "Fc5",
    "Cp1",
    "Cp5",
    "F9",
    "Fz",
    "Cz",
    "Pz",
    "Fp2",
    "F4",
    "C4",
    "P4",
    "O2",
    "F8",
    "T4",
    "T6",
    "Fc2",
    "Fc6",
    "Cp2",
    "Cp6",
    "F10",
]
EEGMMIDB_LABELS = [
    "Fc5.",
    "Fc3.",
    "Fc1.",
    "Fcz.",
    "Fc2.",
    "Fc4.",
    "Fc6.",
    "C5..",
    "C3..",
    "C1..",
    "Cz..",
    "C2..",
    "C4..",
    "C6..",
    "Cp5.",
    "Cp3.",
    "Cp1.",
    "Cpz.",
    "Cp2.",
    "Cp4.",
    "Cp6.",
    "Fp1.",
    "Fpz.",
    "Fp2.",
    "Af7.",
    "Af3.",
    "Afz.",
    "Af4.",
    "Af8.",
    "F7..",
    "F5..",
    "F3..",
    "F1..",
    "Fz..",
    "F2..",
    "F4..",
    "F6..",
    "F8..",
    "Ft7.",
    "Ft8.",
    "T7..",
    "T8..",
    "T9..",
    "T10.",
    "Tp7.",
    "Tp8.",
    "P7..",
    "P5..",
    "P3..",
    "P1..",
    "Pz..",
    "P2..",
    "P4..",
    "P6..",
    "P8..",
    "Po7.",
    "Po3.",
    "Poz.",
    "Po4.",
    "Po8.",
    "O1..",
    "Oz..",
    "O2..",
    "Iz..",
]
GENERIC_EEG = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "O1",
    "O2",
]


def tuh_subject(i: int) -> str:
    """TUH-style 8-letter subject id: aaaaaaaa, aaaaaaab, …"""
    letters = []
    for _ in range(8):
        i, r = divmod(i, 26)
        letters.append(string.ascii_lowercase[r])
    return "".join(reversed(letters))


def _eeg(
    names: Sequence[str],
    sfreq: float,
    duration_s: float,
    mains: float,
    rng: np.random.Generator,
    montage: str = "standard_1005",
) -> list[np.ndarray]:
    return list(simulate_eeg(names, sfreq, duration_s, mains_hz=mains, rng=rng, montage=montage))


def _signals(
    labels: Sequence[str], data: Sequence[np.ndarray], sfreq: float, span: float, unit: str = "uV"
) -> list[Signal]:
    """Signals with a symmetric physical range of ±span."""
    return [
        Signal(label, d, sfreq, unit=unit, physical_min=-span, physical_max=span)
        for label, d in zip(labels, data, strict=True)
    ]


def _other(kind: str, sfreq: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Plausible non-EEG channels: ECG spikes, slow respiration, a constant, a marker, noise."""
    n = round(sfreq * duration_s)
    t = np.arange(n) / sfreq
    if kind == "ecg":
        return 800 * np.exp(-((((t % 0.85) - 0.4) / 0.015) ** 2)) + 20 * rng.standard_normal(n)
    if kind == "slow":
        return 50 * np.sin(2 * np.pi * 0.25 * t) + rng.standard_normal(n)
    if kind == "flat":
        return np.zeros(n)
    return 30 * rng.standard_normal(n)


def _tuh_file(
    path: Path,
    subject: str,
    montage: str,
    sfreq: float,
    duration_s: float,
    rng: np.random.Generator,
    quirks: tuple[str, ...],
    n_extras: int,
    blank_unit: bool,
    duplicate: bool,
) -> None:
    suffix = "-LE" if "_le" in montage else "-REF"
    eeg = [n for n in TUH_EEG if not (montage.endswith("_a") and n in ("A1", "A2"))]
    data = _eeg(eeg, sfreq, duration_s, 60.0, rng)
    signals = _signals([f"EEG {n}{suffix}" for n in eeg], data, sfreq, 3200.0)
    for label in TUH_EXTRAS[:n_extras]:
        if label in ("IBI", "BURSTS", "SUPPR"):  # TUH's derived channels: physical min == max
            signals.append(
                Signal(
                    label,
                    _other("flat", sfreq, duration_s, rng),
                    sfreq,
                    unit="",
                    physical_min=0.0,
                    physical_max=0.0,
                )
            )
        else:
            kind = "ecg" if "EKG" in label else "noise"
            unit = "" if blank_unit and label.startswith("PHOTIC") else "uV"
            signals.append(
                Signal(
                    label.replace("-REF", suffix),
                    _other(kind, sfreq, duration_s, rng),
                    sfreq,
                    unit=unit,
                    physical_min=-5000.0,
                    physical_max=5000.0,
                )
            )
    if duplicate:
        signals.append(
            Signal(
                signals[18].label, signals[18].data.copy(), sfreq, physical_min=-3200.0, physical_max=3200.0
            )
        )
    write_edf(
        path,
        signals,
        patient=f"{subject} M 01-JAN-1900 {subject} Age:0.0109",
        recording="Startdate 01-JAN-2000 Study 1 X X",
        start=datetime(2000, 1, 1),
        quirks=quirks,
    )


def _tueg(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made: dict[str, tuple[str, ...]] = {}
    specials = [("records_minus_one",), ("truncated_last_record",), ("non_ascii_header",), ("date_1899",)]
    k = 0
    for i in range(max(n_subjects, 2)):
        subject = tuh_subject(i + 1)
        for s, session in enumerate((f"s001_{2010 + i}_0{1 + i % 9}_1{i % 10}", f"s002_{2011 + i}")):
            montage = TUH_MONTAGES[(2 * i + s) % 4]
            rel = f"edf/{subject[:3]}/{subject}/{session}/{montage}/{subject}_{session[:4]}_t000.edf"
            quirks = specials[k] if k < len(specials) else ()
            _tuh_file(
                root / rel,
                subject,
                montage,
                (250.0, 256.0, 512.0)[k % 3],
                duration_s,
                rng,
                quirks,
                n_extras=(12, 4, 0, 9, 13)[k % 5],
                blank_unit=k == 4,
                duplicate=k == 5,
            )
            made[rel] = (
                quirks + (("blank_unit_photic",) if k == 4 else ()) + (("duplicate_label",) if k == 5 else ())
            )
            k += 1
    return made


def _tuab(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    for i in range(n_subjects):
        subject = tuh_subject(i + 1)  # the same ids as the tueg fixture: TUAB subjects are in TUEG too
        folder = f"edf/{('train', 'eval')[i % 2]}/{('normal', 'abnormal')[i % 2]}/01_tcp_ar"
        rel = f"{folder}/{subject}_s001_t000.edf"
        _tuh_file(
            root / rel, subject, "01_tcp_ar", (250.0, 256.0)[i % 2], duration_s, rng, (), 4, False, False
        )
        made[rel] = ()
    return made


def _tusz(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    for i in range(n_subjects):
        subject = tuh_subject(100 + i)
        montage = TUH_MONTAGES[i % 3]
        rel = f"edf/{('train', 'dev', 'eval')[i % 3]}/{subject}/s001_2003/{montage}/{subject}_s001_t000.edf"
        _tuh_file(root / rel, subject, montage, 256.0, duration_s, rng, (), 6, False, False)
        made[rel] = ()
    return made


def _chbmit(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    electrodes = sorted({e for label in CHBMIT_LABELS for e in label.split("-")})
    for i in range(n_subjects):
        for r in (1, 2):
            rel = f"chb{i + 1:02d}/chb{i + 1:02d}_{r:02d}.edf"
            referential = dict(zip(electrodes, _eeg(electrodes, 256.0, duration_s, 60.0, rng), strict=True))
            bipolar = [
                referential[a] - referential[b] for a, b in (label.split("-") for label in CHBMIT_LABELS)
            ]
            extras = ["-", "ECG", "VNS", "-"] if r == 2 else ["ECG"]
            kinds = ["ecg" if label == "ECG" else "flat" if label == "-" else "noise" for label in extras]
            others = [_other(kind, 256.0, duration_s, rng) for kind in kinds]
            write_edf(root / rel, _signals(CHBMIT_LABELS + extras, bipolar + others, 256.0, 6400.0))
            made[rel] = ("dummy_channels",) if r == 2 else ()
    return made


def _siena(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    for i in range(n_subjects):
        rel = f"PN{i:02d}/PN{i:02d}-1.edf"
        signals = _signals(
            [f"EEG {n}" for n in SIENA_EEG], _eeg(SIENA_EEG, 512.0, duration_s, 50.0, rng), 512.0, 3200.0
        )
        extras = (("EKG EKG", "ecg"), ("SPO2", "slow"), ("HR", "slow"), ("MK", "flat"))
        others = [_other(kind, 512.0, duration_s, rng) for _, kind in extras]
        signals += _signals([label for label, _ in extras], others, 512.0, 3200.0)
        write_edf(root / rel, signals)
        made[rel] = ()
    return made


def _eegmmidb(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    names = [label.rstrip(".") for label in EEGMMIDB_LABELS]
    for i in range(n_subjects):
        sfreq = 128.0 if i == n_subjects - 1 else 160.0
        rel = f"S{i + 1:03d}/S{i + 1:03d}R04.edf"
        data = _eeg(names, sfreq, duration_s, 60.0, rng)
        signals = _signals(EEGMMIDB_LABELS, data, sfreq, 8092.0)
        events = [
            (t, 4.1, ("T0", "T1", "T2")[k % 3]) for k, t in enumerate(np.arange(0, duration_s - 4, 4.2))
        ]
        write_edf(root / rel, signals, edf_plus="C", annotations=events)
        made[rel] = ("128_hz",) if sfreq == 128.0 else ()
    return made


def _sleep_edf(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    duration_s = math.ceil(duration_s / 30) * 30  # Sleep-EDF's records are 30 s long
    for i in range(n_subjects):
        base = f"SC4{i:02d}1"
        eeg = _eeg(["Fpz", "Cz", "Pz", "Oz"], 100.0, duration_s, 50.0, rng)
        signals = [
            Signal("EEG Fpz-Cz", eeg[0] - eeg[1], 100.0, physical_min=-192.0, physical_max=192.0),
            Signal("EEG Pz-Oz", eeg[2] - eeg[3], 100.0, physical_min=-197.0, physical_max=196.0),
            Signal(
                "EOG horizontal",
                _other("noise", 100.0, duration_s, rng),
                100.0,
                physical_min=-1000.0,
                physical_max=1000.0,
            ),
            Signal(
                "Resp oro-nasal",
                _other("slow", 1.0, duration_s, rng),
                1.0,
                unit="",
                physical_min=-2048.0,
                physical_max=2047.0,
            ),
            Signal(
                "EMG submental",
                _other("noise", 1.0, duration_s, rng),
                1.0,
                physical_min=-5.0,
                physical_max=5.0,
            ),
            Signal(
                "Temp rectal",
                37 + 0 * _other("flat", 1.0, duration_s, rng),
                1.0,
                unit="DegC",
                physical_min=34.0,
                physical_max=40.0,
            ),
            Signal(
                "Event marker",
                _other("flat", 1.0, duration_s, rng),
                1.0,
                physical_min=-2048.0,
                physical_max=2047.0,
            ),
        ]
        rel = f"sleep-cassette/{base}E0-PSG.edf"
        write_edf(root / rel, signals, record_duration=30.0)
        made[rel] = ("mixed_rates",)
        stages = [
            (t, 30.0, f"Sleep stage {('W', '1', '2')[k % 3]}")
            for k, t in enumerate(range(0, int(duration_s), 30))
        ]
        hypno = f"sleep-cassette/{base}EC-Hypnogram.edf"
        write_edf(
            root / hypno, [], record_duration=0.0, edf_plus="C", annotations=stages, record_onsets=[0.0]
        )
        made[hypno] = ("annotation_only",)
    return made


def _biosemi(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    for i in range(n_subjects):
        montage = "biosemi128" if i == n_subjects - 1 and n_subjects > 1 else "biosemi64"
        names = list(montage_positions(montage))  # in cap order: A1, A2, … name these electrodes
        cap = cap_labels(len(names))
        data = _eeg(names, 512.0, duration_s, 50.0, rng, montage=montage)
        external = [_other("noise", 512.0, duration_s, rng) for _ in range(8)]
        signals = _signals(cap + [f"EXG{k + 1}" for k in range(8)], data + external, 512.0, 262144.0)
        signals += _signals(
            ["Status"], [_other("flat", 512.0, duration_s, rng)], 512.0, 8388608.0, unit="Boolean"
        )
        rel = f"sub-{i + 1:02d}/sub-{i + 1:02d}_task-rest.bdf"
        write_edf(root / rel, signals, bdf=True)
        made[rel] = (f"cap_{montage}",)
    return made


def _generic(
    root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float
) -> dict[str, tuple[str, ...]]:
    made = {}
    for i, sfreq in enumerate((128.0, 250.0, 500.0, 1000.0)[: max(n_subjects, 2)]):
        bdf = i % 2 == 1
        rel = f"rec{i:02d}.{'bdf' if bdf else 'edf'}"
        data = _eeg(GENERIC_EEG, sfreq, duration_s, 50.0, rng)
        write_edf(root / rel, _signals(GENERIC_EEG, data, sfreq, 262144.0 if bdf else 3200.0), bdf=bdf)
        made[rel] = ()
    # EDF+D: two contiguous stretches of ≥ 2 windows each, 7.5 s apart.
    half = max(25, int(duration_s // 2))
    data = _eeg(GENERIC_EEG, 200.0, 2 * half, 50.0, rng)
    onsets = [float(k) for k in range(half)] + [half + 7.5 + k for k in range(half)]
    write_edf(
        root / "discontinuous.edf",
        _signals(GENERIC_EEG, data, 200.0, 3200.0),
        edf_plus="D",
        record_onsets=onsets,
    )
    made["discontinuous.edf"] = ("edf_plus_d",)
    short = _eeg(GENERIC_EEG, 256.0, 6.0, 50.0, rng)
    write_edf(
        root / "short.edf",
        _signals(GENERIC_EEG, short, 256.0, 3200.0),
    )
    made["short.edf"] = ("short",)
    return made


_MAKERS = {
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
) -> dict[str, tuple[str, ...]]:
    """Write a small corpus laid out like `recipe`'s; returns {relative path: the quirks that file has}."""
    if recipe not in _MAKERS:
        raise ValueError(f"no fixture corpus for recipe {recipe!r}; known: {', '.join(RECIPES)}")
    rng = np.random.default_rng([seed, RECIPES.index(recipe)])
    return dict(sorted(_MAKERS[recipe](Path(root), rng, n_subjects, duration_s).items()))
