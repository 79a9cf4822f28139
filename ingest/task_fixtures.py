"""Labelled corpora for the task recipes: each corpus's layout and label files, with class-dependent
physiology rather than label noise.

A fixture whose classes differed only in their label would test the bookkeeping and nothing else; here
each class changes the signal the way it does in real recordings (see each maker's docstring), so a probe
trained on these shards has something to find, and a label attached to the wrong window would show. The
label files are written in the format the corpus really ships, by the same rules the parsers read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from eegfm.errors import ConfigError
from eegfm.ingest.fixtures import (
    CHBMIT_LABELS,
    EEGMMIDB_LABELS,
    GENERIC_EEG,
    TUH_EEG,
    Made,
    Signal,
    _band_noise,
    _directions,
    _other,
    _pink,
    simulate_eeg,
    tuh_subject,
    write_edf,
)

_MONTAGE = "colin27_1005"


# --- class-dependent physiology ------------------------------------------------------------------------


def polymorphic_delta(
    names: Sequence[str], n: int, sfreq: float, rng: np.random.Generator, *, focal: bool
) -> np.ndarray:
    """Irregular 0.5-3 Hz activity of 30-60 µV, over the whole head or (focal) one region of it: the
    commonest finding of an abnormal EEG (cerebral dysfunction, diffuse or focal)."""
    d = np.nan_to_num(_directions(names, _MONTAGE))
    if focal:
        centre = rng.standard_normal(3)
        centre[2] = abs(centre[2])
        centre /= np.linalg.norm(centre)
        weight = np.exp(-((np.arccos(np.clip(d @ centre, -1, 1)) / 0.6) ** 2))
    else:
        weight = np.full(len(names), 0.8)
    sources = np.stack([_band_noise(rng, n, sfreq, 0.5, 3.0) for _ in range(3)])
    mixing = rng.uniform(0.3, 1.0, (len(names), 3))
    return rng.uniform(30, 60) * weight[:, None] * (mixing @ sources) / np.sqrt(3)


def posterior_alpha(
    names: Sequence[str], n: int, sfreq: float, rng: np.random.Generator, gain: np.ndarray
) -> np.ndarray:
    """A ~10 Hz posterior rhythm whose amplitude follows `gain` (per sample, 0-1): eyes closed vs open."""
    d = np.nan_to_num(_directions(names, _MONTAGE))
    posterior = np.clip((-d[:, 1] - 0.1) / 0.6, 0, 1) + 0.05
    t = np.arange(n) / sfreq
    return 30 * posterior[:, None] * gain[None, :] * np.sin(2 * np.pi * rng.uniform(9.5, 10.5) * t)


def sensorimotor_rhythms(
    names: Sequence[str],
    n: int,
    sfreq: float,
    rng: np.random.Generator,
    left_gain: np.ndarray,
    right_gain: np.ndarray,
) -> np.ndarray:
    """Mu (~10 Hz) and beta (~20 Hz) rhythms over each hemisphere's sensorimotor cortex (around C3 and C4),
    with amplitudes following `left_gain` / `right_gain` (per sample): moving or imagining moving a hand
    desynchronises (suppresses) them over the opposite hemisphere."""
    d = np.nan_to_num(_directions(names, _MONTAGE))
    c3, c4 = (np.nan_to_num(_directions([e], _MONTAGE))[0] for e in ("C3", "C4"))
    near = [np.exp(-((np.arccos(np.clip(d @ c, -1, 1)) / 0.35) ** 2)) for c in (c3, c4)]
    t = np.arange(n) / sfreq
    out = np.zeros((len(names), n))
    for weight, gain in zip(near, (left_gain, right_gain), strict=True):
        mu = np.sin(2 * np.pi * rng.uniform(9.5, 11.5) * t + rng.uniform(0, 2 * np.pi))
        beta = np.sin(2 * np.pi * rng.uniform(18, 24) * t + rng.uniform(0, 2 * np.pi))
        out += weight[:, None] * (gain * (25 * mu + 10 * beta))[None, :]
    return out


def evolving_seizure(
    names: Sequence[str], n: int, sfreq: float, rng: np.random.Generator, start_s: float, stop_s: float
) -> np.ndarray:
    """A seizure: rhythmic discharges that start focal at ~8 Hz and evolve, slowing to ~3 Hz, growing
    (to ~150 µV) and spreading over the head, then stop abruptly."""
    d = np.nan_to_num(_directions(names, _MONTAGE))
    focus = d[int(rng.integers(len(names)))]
    distance = np.arccos(np.clip(d @ focus, -1, 1))
    t = np.arange(n) / sfreq
    during = (t >= start_s) & (t < stop_s)
    progress = np.clip((t - start_s) / max(stop_s - start_s, 1e-9), 0, 1)
    frequency = 8.0 - 5.0 * progress  # Hz, slowing
    phase = 2 * np.pi * np.cumsum(frequency) / sfreq
    spread = np.exp(-((distance[:, None] / (0.4 + 1.6 * progress[None, :])) ** 2))
    wave = np.sign(np.sin(phase)) * np.abs(np.sin(phase)) ** 0.5  # sharp, spiky rhythm
    return 150 * (0.3 + 0.7 * progress)[None, :] * spread * wave[None, :] * during[None, :]


SLEEP_STAGES = ("W", "1", "2", "3", "4", "R", "?", "M")  # hypnogram codes; M = movement time


def sleep_epoch(stage: str, n: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Fpz-Cz and Pz-Oz (2×n, µV) of one epoch scored `stage`, over a low-voltage 1/f background:
    W: posterior alpha (~10 Hz, strongest on Pz-Oz) and some beta; N1: alpha gone, theta (4-7 Hz);
    N2: sleep spindles (12-14 Hz bursts of 0.5-1.5 s) and K-complexes (a sharp negative wave, then a slower
    positive one, frontal); N3 (R&K 3 and 4): high-amplitude delta (0.5-2 Hz, more of it in 4);
    REM: low-voltage mixed activity with trains of sawtooth waves (2-3 Hz, vertex); movement time:
    large slow and muscle artifact; `?`: the background alone."""
    t = np.arange(n) / sfreq
    x = 8 * _pink(rng, 2, n, sfreq)
    frontal, posterior = np.array([1.0, 0.6]), np.array([0.35, 1.0])
    if stage == "W":
        alpha = np.sin(2 * np.pi * rng.uniform(9.5, 10.5) * t + rng.uniform(0, 2 * np.pi))
        x += 25 * posterior[:, None] * alpha[None, :] + 4 * _band_noise(rng, n, sfreq, 18, 25)[None, :]
    elif stage == "1":
        x += 22 * np.stack([_band_noise(rng, n, sfreq, 4, 7) for _ in range(2)])
    elif stage == "2":
        x += 10 * np.stack([_band_noise(rng, n, sfreq, 4, 7) for _ in range(2)])
        for _ in range(int(rng.integers(3, 5))):  # spindles
            length = rng.uniform(0.5, 1.5)
            at = rng.uniform(0, n / sfreq - length)
            inside = (t >= at) & (t < at + length)
            envelope = np.sin(np.pi * (t[inside] - at) / length) ** 2
            wave = np.sin(2 * np.pi * rng.uniform(12.0, 14.0) * t[inside])
            x[:, inside] += 40 * np.array([1.0, 0.7])[:, None] * (envelope * wave)[None, :]
        for _ in range(int(rng.integers(1, 3))):  # K-complexes
            at = rng.uniform(1, n / sfreq - 2)
            k = -90 * np.exp(-0.5 * ((t - at) / 0.08) ** 2) + 50 * np.exp(-0.5 * ((t - at - 0.35) / 0.2) ** 2)
            x += frontal[:, None] * k[None, :]
    elif stage in ("3", "4"):
        amplitude = 40.0 if stage == "3" else 55.0
        x += amplitude * frontal[:, None] * np.stack([_band_noise(rng, n, sfreq, 0.5, 2.0) for _ in range(2)])
    elif stage == "R":
        x += 5 * np.stack([_band_noise(rng, n, sfreq, 4, 7) for _ in range(2)])
        for _ in range(2):  # sawtooth trains
            length, hz = rng.uniform(2, 4), rng.uniform(2.0, 3.0)
            at = rng.uniform(0, n / sfreq - length)
            inside = (t >= at) & (t < at + length)
            saw = 2 * ((t[inside] - at) * hz % 1.0) - 1
            x[:, inside] += 20 * np.array([1.0, 0.5])[:, None] * saw[None, :]
    elif stage == "M":
        x += 60 * _band_noise(rng, n, sfreq, 0.3, 2.0)[None, :] + 30 * np.stack(
            [_band_noise(rng, n, sfreq, 20, sfreq / 2) for _ in range(2)]
        )
    return x


def sleep_eog(stage: str, n: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Horizontal EOG of one epoch: blinks and saccades awake, slow rolling movements in N1, rapid eye
    movements (steep steps) in REM, quiet in N2/N3."""
    t = np.arange(n) / sfreq
    x = 10 * _pink(rng, 1, n, sfreq)[0]
    if stage in ("W", "R"):
        for _ in range(int(rng.integers(3, 8))):
            at = rng.uniform(0, n / sfreq)
            x += rng.choice([-1, 1]) * rng.uniform(80, 200) * (t >= at) * np.exp(-(t - at).clip(0) / 0.5)
    elif stage == "1":
        x += 80 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t)
    return x


TUEV_CLASSES = ("spsw", "gped", "pled", "eyem", "artf", "bckg")  # .rec codes 1-6
# TUH's TCP (double banana) montage: what a .rec file's channel numbers index.
# fmt: off
TCP_PAIRS = [
    ("FP1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"), ("FP2", "F8"), ("F8", "T4"), ("T4", "T6"),
    ("T6", "O2"), ("A1", "T3"), ("T3", "C3"), ("C3", "CZ"), ("CZ", "C4"), ("C4", "T4"), ("T4", "A2"),
    ("FP1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"), ("FP2", "F4"), ("F4", "C4"), ("C4", "P4"),
    ("P4", "O2"),
]
# fmt: on


def _transient(t: np.ndarray, at: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - at) / width) ** 2)


def tuev_event(
    kind: str, names: Sequence[str], t: np.ndarray, sfreq: float, rng: np.random.Generator, centre: float
) -> tuple[np.ndarray, np.ndarray]:
    """(C×len(t) µV, per-electrode involvement 0-1) of one TUEV episode around `centre` (s):
    spsw: a focal spike (a 20-70 ms sharp wave) with its after-going slow wave, twice; gped: sharp
    discharges every ~1 s over the whole head; pled: the same, periodic, over one hemisphere; eyem: a large
    slow deflection on the frontopolar electrodes (opposite on F7/F8: a lateral eye movement); artf: a burst
    of high-frequency muscle activity, temporal and frontal; bckg: nothing."""
    d = np.nan_to_num(_directions(names, _MONTAGE))
    x = np.zeros((len(names), len(t)))
    weight = np.zeros(len(names))
    if kind == "spsw":
        focus = d[int(rng.integers(len(names)))]
        weight = np.exp(-((np.arccos(np.clip(d @ focus, -1, 1)) / 0.5) ** 2))
        wave = np.zeros(len(t))
        for at in (centre, centre + rng.uniform(0.8, 1.5)):
            wave += -160 * _transient(t, at, 0.015) + 50 * _transient(t, at + 0.18, 0.09)
        x += weight[:, None] * wave[None, :]
    elif kind in ("gped", "pled"):
        if kind == "gped":
            weight = np.full(len(names), 0.9)
        else:
            side = rng.choice([-1.0, 1.0])
            weight = np.clip(side * d[:, 0] / 0.5, 0, 1)
        period = rng.uniform(0.8, 1.2)
        wave = np.zeros(len(t))
        for at in np.arange(centre - 3.0, centre + 3.0, period):
            wave += -120 * _transient(t, at, 0.04) + 40 * _transient(t, at + 0.15, 0.06)
        x += weight[:, None] * wave[None, :]
    elif kind == "eyem":
        weight = np.clip((d[:, 1] - 0.6) / 0.3, 0, 1) ** 2
        lateral = np.clip((np.abs(d[:, 0]) - 0.5) / 0.3, 0, 1) * (d[:, 1] > 0.3) * np.sign(d[:, 0])
        slow = 200 * _transient(t, centre, 0.3)
        x += (weight + 0.6 * lateral)[:, None] * slow[None, :]
        weight = np.maximum(weight, np.abs(lateral))
    elif kind == "artf":
        weight = np.clip((np.abs(d[:, 0]) - 0.5) / 0.3, 0, 1) * (d[:, 2] < 0.5) + 0.3
        inside = np.abs(t - centre) < rng.uniform(1.0, 1.5)
        burst = np.stack([_band_noise(rng, int(inside.sum()), sfreq, 25, 70) for _ in names])
        x[:, inside] += 70 * weight[:, None] * burst * np.hanning(int(inside.sum()))[None, :]
    return x, weight


# --- corpora -------------------------------------------------------------------------------------------


def _tuab(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """TUAB: `edf/<train|eval>/<normal|abnormal>/01_tcp_ar/<subject>_s001_t000.edf`. Abnormal recordings
    carry polymorphic delta (diffuse or focal, in turn) and a slower (7-8 Hz), weaker posterior rhythm;
    normal ones a 9-11 Hz alpha. Subjects alternate normal/abnormal, and train/eval in pairs, so both
    official splits hold both classes from four subjects up; no subject is in both (as in TUAB)."""
    made: Made = {}
    for i in range(max(n_subjects, 4)):
        subject = tuh_subject(200 + i)
        abnormal = i % 2 == 1
        official = ("train", "eval")[i // 2 % 2]
        label = ("normal", "abnormal")[abnormal]
        sfreq = (250.0, 256.0)[i % 2]
        slow = {"alpha_hz": (7.0, 8.0), "alpha_gain": 0.45} if abnormal else {}
        x = simulate_eeg(TUH_EEG, sfreq, duration_s, mains_hz=60.0, rng=rng, **slow)
        if abnormal:
            # Diffuse and focal alternate within each official split (i // 4), not between them (i % 4 would
            # make every train abnormal diffuse and every eval abnormal focal: a probe learns the wrong one).
            x += polymorphic_delta(TUH_EEG, x.shape[1], sfreq, rng, focal=i // 4 % 2 == 1)
        signals = [
            Signal(f"EEG {e}-REF", v, sfreq, physical_min=-4999.84, physical_max=4999.84)
            for e, v in zip(TUH_EEG, x, strict=True)
        ]
        rel = f"edf/{official}/{label}/01_tcp_ar/{subject}_s001_t000.edf"
        write_edf(
            root / rel,
            signals,
            patient=f"{subject} M 01-JAN-1900 {subject} Age:{int(rng.integers(18, 90))}",
            recording=f"Startdate 01-JAN-2000 {subject}_s001 TUH X",
            start=datetime(2000, 1, 1, 10, 20, 30),
        )
        made[rel] = (official, label)
    return made


def _blocks(
    rng: np.random.Generator, duration_s: float, labels: Sequence[str]
) -> list[tuple[float, float, str]]:
    """Back-to-back blocks of 8-16 s (whole seconds) cycling through `labels`, the last cut at the end."""
    out, t, k = [], 0.0, 0
    while t < duration_s:
        length = min(float(rng.integers(8, 17)), duration_s - t)
        out.append((t, length, labels[k % len(labels)]))
        t, k = t + length, k + 1
    return out


def _generic_csv(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """A flat folder of EDFs and `labels.csv` (path,start_s,duration_s,label): eyes-open and eyes-closed
    blocks, and one `artifact` block per file that the task does not know (counted as unknown). Eyes
    closed: a strong posterior alpha; eyes open: alpha blocked to a fifth (the Berger effect)."""
    made: Made = {}
    rows: list[tuple[str, float, float, str]] = []
    for i in range(max(n_subjects, 2)):
        rel = f"rec{i:02d}.edf"
        sfreq = (256.0, 200.0, 500.0)[i % 3]
        blocks = _blocks(rng, duration_s, ("eyes_open", "eyes_closed"))
        artifact = len(blocks) // 2
        blocks[artifact] = (*blocks[artifact][:2], "artifact")
        x = simulate_eeg(GENERIC_EEG, sfreq, duration_s, mains_hz=50.0, rng=rng, alpha_gain=0.0)
        t = np.arange(x.shape[1]) / sfreq
        gain = np.full(x.shape[1], 0.2)
        for start, length, label in blocks:
            if label == "eyes_closed":
                gain[(t >= start) & (t < start + length)] = 1.0
        x += posterior_alpha(GENERIC_EEG, x.shape[1], sfreq, rng, gain)
        signals = [
            Signal(e, v, sfreq, physical_min=-3200.0, physical_max=3200.0)
            for e, v in zip(GENERIC_EEG, x, strict=True)
        ]
        write_edf(root / rel, signals)
        rows += [(rel, start, length, label) for start, length, label in blocks]
        made[rel] = ()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "start_s", "duration_s", "label"])
    writer.writerows((p, f"{s:g}", f"{d:g}", label) for p, s, d, label in rows)
    (root / "labels.csv").write_text(text.getvalue())
    made["labels.csv"] = ("labels",)
    return made


def _eegmmidb(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """EEGMMIDB: `SNNN/SNNNRNN.edf`, EDF+C with the 64 dot-padded channels at 160 Hz and T0/T1/T2
    annotations as the real runs have them (rest 4.2 s, then a 4.1-s trial, in turn). Runs 4 (imagined
    left/right fist) and 5 (executed both fists/feet); during a left-fist trial the mu/beta rhythm over the
    right hemisphere (C4) drops to a fifth, during a right-fist trial over the left (C3); both-fists
    trials suppress both."""
    made: Made = {}
    names = [label.rstrip(".") for label in EEGMMIDB_LABELS]
    for i in range(max(n_subjects, 2)):
        for run in (4, 5):
            sfreq = 160.0
            n = round(sfreq * duration_s)
            t = np.arange(n) / sfreq
            events, onset, k = [], 0.0, 0
            while onset + 4.2 <= duration_s:
                code = ("T0", "T1", "T0", "T2")[k % 4]
                length = 4.2 if code == "T0" else 4.1
                events.append((round(onset, 4), length, code))
                onset, k = onset + length, k + 1
            left, right = np.ones(n), np.ones(n)
            for start, length, code in events:
                during = (t >= start) & (t < start + length)
                if code == "T1":  # left fist (run 4) or both fists (run 5)
                    right[during] = 0.2
                    if run == 5:
                        left[during] = 0.2
                elif code == "T2" and run == 4:  # right fist
                    left[during] = 0.2
            x = simulate_eeg(names, sfreq, duration_s, mains_hz=60.0, rng=rng, alpha_gain=0.5)
            x += sensorimotor_rhythms(names, n, sfreq, rng, left, right)
            signals = [
                Signal(label, v, sfreq, physical_min=-8092.0, physical_max=8092.0)
                for label, v in zip(EEGMMIDB_LABELS, x, strict=True)
            ]
            rel = f"S{i + 1:03d}/S{i + 1:03d}R{run:02d}.edf"
            write_edf(
                root / rel,
                signals,
                edf_plus="C",
                annotations=events,
                recording="Startdate 12-AUG-2009 X X BCI2000",
                start=datetime(2009, 8, 12, 16, 15, 0),
            )
            made[rel] = (f"run_{run}",)
    return made


def _tusz(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """TUSZ: `edf/<train|dev|eval>/<subject>/sNNN_YYYY/01_tcp_ar/<subject>_sNNN_t000.edf` with its
    `.csv_bi` (TERM rows, bckg/seiz). One evolving seizure in each recording but every third; one low-
    confidence (0.3) seizure row that the task ignores, and the last row's stop time rounded past the
    end, as TUH files have them."""
    made: Made = {}
    for i in range(max(n_subjects, 3)):
        subject = tuh_subject(300 + i)
        official = ("train", "dev", "eval")[i % 3]
        sfreq = (256.0, 250.0)[i % 2]
        rel = f"edf/{official}/{subject}/s001_2015/01_tcp_ar/{subject}_s001_t000.edf"
        x = simulate_eeg(TUH_EEG, sfreq, duration_s, mains_hz=60.0, rng=rng)
        rows = []
        if i % 3 != 2:
            start = float(round(rng.uniform(0.2, 0.4) * duration_s, 4))
            stop = float(round(start + rng.uniform(0.25, 0.4) * duration_s, 4))
            x += evolving_seizure(TUH_EEG, x.shape[1], sfreq, rng, start, stop)
            rows = [
                (0.0, start, "bckg", 1.0),
                (start, stop, "seiz", 1.0),
                (stop, duration_s + 0.5, "bckg", 1.0),
            ]
        else:
            rows = [(0.0, duration_s / 2, "bckg", 1.0), (duration_s / 2, duration_s + 0.5, "bckg", 1.0)]
            rows.insert(1, (duration_s / 4, duration_s / 4 + 3.0, "seiz", 0.3))
        signals = [
            Signal(f"EEG {e}-REF", v, sfreq, physical_min=-4999.84, physical_max=4999.84)
            for e, v in zip(TUH_EEG, x, strict=True)
        ]
        write_edf(
            root / rel,
            signals,
            patient=f"{subject} F 01-JAN-1900 {subject} Age:{int(rng.integers(18, 90))}",
            recording=f"Startdate 01-JAN-2015 {subject}_s001 TUH X",
            start=datetime(2015, 1, 1, 9, 0, 0),
        )
        text = [
            "# version = csv_v1.0.0",
            f"# bname = {subject}_s001_t000",
            f"# duration = {duration_s:.2f} secs",
            "# montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt",
            "#",
            "channel,start_time,stop_time,label,confidence",
            *(f"TERM,{a:.4f},{b:.4f},{label},{c:.4f}" for a, b, label, c in rows),
        ]
        (root / rel).with_suffix(".csv_bi").write_text("\n".join(text) + "\n")
        made[rel] = (official,)
        made[rel.removesuffix(".edf") + ".csv_bi"] = ("labels",)
    return made


def _sleep_night(i: int, night: int) -> list[str]:
    """A short night's hypnogram (one code per 30-s epoch): every stage, R&K 3 and 4, a movement time and
    an unscored (`?`) epoch, runs of one stage longer than an epoch; shifted per subject and night."""
    night_plan = ["W", "W", "1", "2", "2", "3", "4", "4", "3", "2", "R", "R", "M", "2", "?", "1", "W"]
    k = (2 * i + night) % 5
    return night_plan[k:] + night_plan[:k]


def _sleep_edf(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """Sleep-EDF Expanded, sleep cassette: `sleep-cassette/SC4ssNE0-PSG.edf` (EEG Fpz-Cz and Pz-Oz and
    horizontal EOG at 100 Hz, respiration, EMG, temperature and event marker at 1 Hz, 30-s records) and
    `SC4ssNEx-Hypnogram.edf` (EDF+C, annotations only, one record of duration 0, the scorer's letter x),
    the stages as runs (one annotation per run of equal stages, as the corpus has them). Subject 0 has two
    nights. Each epoch's EEG follows its stage (`sleep_epoch`); `duration_s` is not used: a night is the
    hypnogram's 17 epochs."""
    made: Made = {}
    for i in range(max(n_subjects, 3)):
        for night in (1, 2) if i == 0 else (1,):
            codes = _sleep_night(i, night)
            sfreq, epoch_n = 100.0, 3000
            eeg = np.concatenate([sleep_epoch(c, epoch_n, sfreq, rng) for c in codes], axis=1)
            eog = np.concatenate([sleep_eog(c, epoch_n, sfreq, rng) for c in codes])
            total_s = 30.0 * len(codes)
            slow = _other("slow", 1.0, total_s, rng)
            sex, age = ("F", "M")[i % 2], int(rng.integers(25, 35))
            header = {
                "patient": f"X {sex} X {('Female', 'Male')[i % 2]}_{age}yr",
                "recording": "Startdate 24-APR-1989 X X X",
                "start": datetime(1989, 4, 24, 16, 13),
            }
            signals = [
                Signal("EEG Fpz-Cz", eeg[0], sfreq, physical_min=-192.0, physical_max=192.0),
                Signal("EEG Pz-Oz", eeg[1], sfreq, physical_min=-197.0, physical_max=196.0),
                Signal("EOG horizontal", eog, sfreq, physical_min=-1009.0, physical_max=1009.0),
                Signal("Resp oro-nasal", slow, 1.0, unit="", physical_min=-2048.0, physical_max=2047.0),
                Signal("EMG submental", np.abs(slow) / 50, 1.0, physical_min=-5.0, physical_max=5.0),
                Signal("Temp rectal", 36.8 + slow / 250, 1.0, unit="DegC", physical_min=34.0,
                       physical_max=40.0),
                Signal("Event marker", np.zeros(round(total_s)), 1.0, unit="", physical_min=-2048.0,
                       physical_max=2047.0),
            ]  # fmt: skip
            base = f"SC4{i:02d}{night}E"
            psg = f"sleep-cassette/{base}0-PSG.edf"
            write_edf(root / psg, signals, record_duration=30.0, **header)
            made[psg] = (f"night_{night}",)
            runs: list[tuple[float, float, str]] = []
            for k, code in enumerate(codes):
                text = "Movement time" if code == "M" else f"Sleep stage {code}"
                if runs and runs[-1][2] == text:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 30.0, text)
                else:
                    runs.append((30.0 * k, 30.0, text))
            hypnogram = f"sleep-cassette/{base}{'CHJ'[(i + night) % 3]}-Hypnogram.edf"
            write_edf(root / hypnogram, [], record_duration=0.0, edf_plus="C", annotations=runs, **header)
            made[hypnogram] = ("labels",)
    return made


def _tuev(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """TUEV v2.0.1: `edf/train/<subject>/<subject>_<NNNNNNNN>.edf` (8-letter TUH subject ids) and
    `edf/eval/<NNN>/<class>_<NNN>_a_<run>.edf` (anonymised eval names), TUH `EEG XX-REF` channels, 250/256 Hz,
    with its `.rec` (channel,start,stop,code per TCP channel and 1-s event). The recording is a series of
    6-s episodes, each of one class (`tuev_event`), its middle second annotated: the event's code on the
    TCP channels it involves, bckg (6) on the others, as TUEV files have them. The first episode's event
    is at 1 s (its 5-s window would start before the recording) and the last ends at the recording's end;
    one episode has a spike on some channels and a PLED on others (two event classes at one moment).
    Subject 0 has two recordings; subjects alternate official train and eval in pairs."""
    made: Made = {}
    duration_s = max(6.0 * round(duration_s / 6.0), 42.0)
    for i in range(max(n_subjects, 4)):
        official = ("train", "eval")[i // 2 % 2]
        subject = tuh_subject(2275 + 37 * i) if official == "train" else f"{37 * i:03d}"
        for session in (1, 2) if i == 0 else (1,):
            sfreq = (250.0, 256.0)[(i + session) % 2]
            n = round(sfreq * duration_s)
            t = np.arange(n) / sfreq
            x = 12 * _pink(rng, len(TUH_EEG), n, sfreq)
            x += posterior_alpha(TUH_EEG, n, sfreq, rng, np.full(n, 0.6))
            x += 3 * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi, (len(TUH_EEG), 1)))
            rows: list[tuple[int, float, float, int]] = []
            episodes = int(duration_s // 6)
            for k in range(episodes):
                kind = TUEV_CLASSES[(k + 2 * i + session) % 6]
                centre = 1.0 if k == 0 else duration_s - 0.5 if k == episodes - 1 else 6.0 * k + 3.0
                signal, weight = tuev_event(kind, TUH_EEG, t, sfreq, rng, centre)
                x += signal
                involved = dict(zip(TUH_EEG, weight, strict=True))
                code = TUEV_CLASSES.index(kind) + 1
                conflict = k == 3 and session == 1
                for channel, (a, b) in enumerate(TCP_PAIRS):
                    mine = kind != "bckg" and max(involved[a], involved[b]) > 0.5
                    row_code = code if mine else 6
                    if conflict and not mine:
                        row_code = 3 if kind != "pled" else 1
                    rows.append((channel, centre - 0.5, centre + 0.5, row_code))
            signals = [
                Signal(f"EEG {e}-REF", v, sfreq, physical_min=-4999.84, physical_max=4999.84)
                for e, v in zip(TUH_EEG, x, strict=True)
            ]
            if official == "train":
                rel = f"edf/train/{subject}/{subject}_{session:08d}.edf"
            else:  # eval files are named by a class, the number and a run suffix (empty for the first)
                rel = f"edf/eval/{subject}/{TUEV_CLASSES[i % 6]}_{subject}_a_{session - 1 or ''}.edf"
            write_edf(
                root / rel,
                signals,
                patient=f"{subject} M 01-JAN-1900 {subject} Age:{int(rng.integers(18, 90))}",
                recording=f"Startdate 01-JAN-2010 {subject}_{session:08d} TUH X",
                start=datetime(2010, 1, 1, 8, 30, 0),
            )
            rec = "".join(f"{c},{a:.1f},{b:.1f},{code}\n" for c, a, b, code in rows)
            (root / rel).with_suffix(".rec").write_text(rec)
            made[rel] = (official,)
            made[rel.removesuffix(".edf") + ".rec"] = ("labels",)
    return made


def _chbmit(root: Path, rng: np.random.Generator, n_subjects: int, duration_s: float) -> Made:
    """CHB-MIT: `chbNN/chbNN_RR.edf` (23 bipolar double-banana channels at 256 Hz, differences of
    simulated electrodes) and `chbNN/chbNN-summary.txt` as the database writes it: sampling rate, the
    channel list, a block per file (clock times, seizure count, seizure start/end in seconds), and a
    `Channels changed:` list before a later file. Three recordings per subject: one seizure (`Seizure Start
    Time:`), two seizures numbered (`Seizure 1 Start Time:`, as later subjects have them), none. A seizure
    is an evolving rhythmic 3-8 Hz discharge (`evolving_seizure`)."""
    made: Made = {}
    electrodes = sorted({e for label in CHBMIT_LABELS for e in label.split("-")})
    for i in range(max(n_subjects, 3)):
        subject = f"chb{i + 1:02d}"
        lines = ["Data Sampling Rate: 256 Hz", "*************************", "", "Channels in EDF Files:"]
        lines += [
            "**********************",
            *(f"Channel {k + 1}: {c}" for k, c in enumerate(CHBMIT_LABELS)),
            "",
        ]
        for run, n_seizures in ((1, 1), (2, 2), (3, 0)):
            sfreq = 256.0
            x = simulate_eeg(electrodes, sfreq, duration_s, mains_hz=60.0, rng=rng)
            seizures: list[tuple[int, int]] = []
            if n_seizures:
                edges = np.linspace(0, duration_s, n_seizures + 1)
                for a, b in ((edges[k], edges[k + 1]) for k in range(n_seizures)):
                    start = int(a + rng.uniform(0.15, 0.35) * (b - a))
                    stop = int(start + rng.uniform(0.35, 0.5) * (b - a))
                    seizures.append((start, stop))
                    x += evolving_seizure(electrodes, x.shape[1], sfreq, rng, float(start), float(stop))
            at = dict(zip(electrodes, x, strict=True))
            signals = [
                Signal(label, at[a] - at[b], sfreq, physical_min=-6400.0, physical_max=6400.0)
                for label, (a, b) in ((label, label.split("-")) for label in CHBMIT_LABELS)
            ]
            rel = f"{subject}/{subject}_{run:02d}.edf"
            clock = datetime(2076, 11, 6, 11 + run, 42, 54)
            write_edf(root / rel, signals, start=clock)
            made[rel] = (f"{n_seizures}_seizures",)
            if run == 3:
                lines += ["Channels changed:", "*****************"]
                lines += [*(f"Channel {k + 1}: {c}" for k, c in enumerate(CHBMIT_LABELS)), ""]
            end = clock + timedelta(seconds=duration_s)
            lines += [
                f"File Name: {subject}_{run:02d}.edf",
                f"File Start Time: {clock:%H:%M:%S}",
                f"File End Time: {end:%H:%M:%S}",
                f"Number of Seizures in File: {n_seizures}",
            ]
            for k, (start, stop) in enumerate(seizures, start=1):
                number = f" {k}" if n_seizures > 1 else ""
                lines += [
                    f"Seizure{number} Start Time: {start} seconds",
                    f"Seizure{number} End Time: {stop} seconds",
                ]
            lines.append("")
        (root / subject / f"{subject}-summary.txt").write_text("\n".join(lines) + "\n")
        made[f"{subject}/{subject}-summary.txt"] = ("labels",)
    return made


_MAKERS: dict[str, Callable[[Path, np.random.Generator, int, float], Made]] = {
    "tuab": _tuab,
    "generic-csv": _generic_csv,
    "eegmmidb": _eegmmidb,
    "tusz": _tusz,
    "sleep-edf": _sleep_edf,
    "tuev": _tuev,
    "chbmit": _chbmit,
}
TASKS = tuple(_MAKERS)


def generate_task_corpus(
    task: str, root: str | Path, *, seed: int = 0, n_subjects: int = 3, duration_s: float = 60.0
) -> Made:
    """Write a small labelled corpus for `task` (its dataset's layout and its label files) under `root`,
    the same bytes for the same arguments. Returns {path relative to root: tags}, sorted."""
    if task not in _MAKERS:
        raise ConfigError(f"no labelled fixture corpus for task {task!r}; known: {', '.join(TASKS)}")
    rng = np.random.default_rng([seed, 1000 + TASKS.index(task)])
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return dict(sorted(_MAKERS[task](root, rng, n_subjects, duration_s).items()))
