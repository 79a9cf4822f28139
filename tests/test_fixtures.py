"""The fixture writer and corpora: files other readers accept, quirks exactly where claimed, faithful layouts,
deterministic bytes, and signals that look like EEG rather than white noise."""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import mne
import numpy as np
import pyedflib
import pytest
import scipy.ndimage
import scipy.signal

from eegfm.ingest.fixtures import (
    CHBMIT_LABELS,
    EEGMMIDB_LABELS,
    QUIRKS,
    RECIPES,
    SIENA_EEG,
    TUH_EEG,
    Signal,
    generate_corpus,
    simulate_eeg,
    write_edf,
)
from eegfm.ingest.positions import montage_positions

# Main-header fields of the EDF specification: name → (offset, width).
MAIN = {
    "version": (0, 8),
    "patient": (8, 80),
    "recording": (88, 80),
    "startdate": (168, 8),
    "starttime": (176, 8),
    "header_bytes": (184, 8),
    "reserved": (192, 44),
    "records": (236, 8),
    "duration": (244, 8),
    "signals": (252, 4),
}
# Signal-header fields, each a column of ns entries: name → width, in file order.
COLUMNS = {
    "label": 16,
    "transducer": 80,
    "unit": 8,
    "pmin": 8,
    "pmax": 8,
    "dmin": 8,
    "dmax": 8,
    "prefilter": 80,
    "spr": 8,
    "sreserved": 32,
}


def _field_at(raw: bytes, position: int) -> str:
    """The name of the header field that holds byte `position`."""
    for name, (offset, width) in MAIN.items():
        if offset <= position < offset + width:
            return name
    ns = int(raw[252:256])
    offset = 256
    for name, width in COLUMNS.items():
        if offset <= position < offset + ns * width:
            return name
        offset += ns * width
    return "data"


def _header(path: Path) -> dict:
    """Every header field as text (latin-1), signal fields as lists, plus sizes."""
    raw = path.read_bytes()
    out: dict = {k: raw[o : o + w].decode("latin-1").strip() for k, (o, w) in MAIN.items()}
    ns = int(out["signals"])
    offset = 256
    for name, width in COLUMNS.items():
        out[name] = [
            raw[offset + i * width : offset + (i + 1) * width].decode("latin-1").strip() for i in range(ns)
        ]
        offset += ns * width
    sample_bytes = 3 if raw[:8] == b"\xffBIOSEMI" else 2
    out["record_bytes"] = sum(int(n) for n in out["spr"]) * sample_bytes
    out["file_bytes"] = len(raw)
    out["sfreq"] = [int(n) / float(out["duration"]) if float(out["duration"]) else 0.0 for n in out["spr"]]
    return out


def _annotation_blocks(path: Path) -> list[bytes]:
    """The bytes of the annotation signal in each data record."""
    h = _header(path)
    raw = path.read_bytes()
    sample_bytes = 3 if raw[:1] == b"\xff" else 2
    i = h["label"].index("EDF Annotations")
    start = sum(int(n) for n in h["spr"][:i]) * sample_bytes
    width = int(h["spr"][i]) * sample_bytes
    body = raw[int(h["header_bytes"]) :]
    return [
        body[r * h["record_bytes"] + start : r * h["record_bytes"] + start + width]
        for r in range(int(h["records"]))
    ]


def _mne(path: Path) -> mne.io.BaseRaw:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mne.io.read_raw(path, preload=True, verbose=False)


def _signals(rng: np.random.Generator, span: float | None) -> list[Signal]:
    """Two 256-Hz EEG channels, one with a given range and one with the default, and a 32-Hz signal."""
    eeg = simulate_eeg(["Cz", "Pz"], 256.0, 10.0, mains_hz=50.0, rng=rng)
    return [
        Signal("Cz", eeg[0], 256.0, physical_min=None if span is None else -span, physical_max=span),
        Signal("Pz", eeg[1], 256.0),
        Signal(
            "Resp", 100 * np.sin(np.arange(320) / 10), 32.0, unit="mV", physical_min=-200, physical_max=200
        ),
    ]


@pytest.mark.parametrize("kind", ["edf", "edf+c", "bdf"])
def test_writer_round_trips_through_mne_and_pyedflib(kind: str, tmp_path: Path) -> None:
    bdf = kind == "bdf"
    signals = _signals(np.random.default_rng(0), 262144.0 if bdf else 3200.0)
    annotations = [(1.0, 0.5, "stimulus é ü"), (7.25, None, "Ωmega")] if kind == "edf+c" else []
    path = write_edf(
        tmp_path / f"x.{'bdf' if bdf else 'edf'}",
        signals,
        bdf=bdf,
        edf_plus="C" if kind == "edf+c" else None,
        annotations=annotations,
        start=datetime(2021, 3, 4, 5, 6, 7),
    )
    h = _header(path)
    assert h["reserved"] == {"edf": "", "edf+c": "EDF+C", "bdf": "24BIT"}[kind]
    steps = [
        (float(hi) - float(lo)) / (2**24 - 1 if bdf else 2**16 - 1)
        for lo, hi in zip(h["pmin"], h["pmax"], strict=False)
    ]

    reader = pyedflib.EdfReader(str(path))
    try:
        assert reader.getSignalLabels() == ["Cz", "Pz", "Resp"]
        assert list(reader.getSampleFrequencies()) == [256.0, 256.0, 32.0]
        assert reader.getStartdatetime() == datetime(2021, 3, 4, 5, 6, 7)
        for i, s in enumerate(signals):
            np.testing.assert_allclose(reader.readSignal(i), s.data, atol=steps[i] * 0.51)
        onsets, _, texts = reader.readAnnotations()
    finally:
        reader.close()
    assert [(float(o), t) for o, t in zip(onsets, texts, strict=True)] == [(a[0], a[2]) for a in annotations]

    raw = _mne(path)
    assert raw.ch_names == ["Cz", "Pz", "Resp"] and raw.info["sfreq"] == 256.0
    for i in range(2):  # MNE upsamples the 32-Hz signal; compare the 256-Hz ones
        np.testing.assert_allclose(raw.get_data(picks=[i])[0] * 1e6, signals[i].data, atol=steps[i] * 0.51)
    assert list(raw.annotations.description) == [a[2] for a in annotations]
    assert list(raw.annotations.onset) == [a[0] for a in annotations]


def test_quantisation_uses_the_range_as_written(tmp_path: Path) -> None:
    """A range that does not fit 8 characters is rounded in the header; samples follow the rounded one."""
    data = np.linspace(-100.0, 100.0, 256)
    path = write_edf(
        tmp_path / "r.edf", [Signal("Cz", data, 256.0, physical_min=-123.456789, physical_max=123.456789)]
    )
    h = _header(path)
    assert h["pmin"] == ["-123.457"] and h["pmax"] == ["123.4568"]
    reader = pyedflib.EdfReader(str(path))
    try:
        back = reader.readSignal(0)
    finally:
        reader.close()
    np.testing.assert_allclose(back, data, atol=0.51 * (123.4568 + 123.457) / 65535)


def test_edf_plus_d_record_onsets_and_annotations_land_in_their_records(tmp_path: Path) -> None:
    data = simulate_eeg(["Cz"], 100.0, 6.0, mains_hz=50.0, rng=np.random.default_rng(1))[0]
    onsets = [0.0, 1.0, 2.0, 12.5, 13.5, 14.5]
    path = write_edf(
        tmp_path / "d.edf",
        [Signal("Cz", data, 100.0, physical_min=-500, physical_max=500)],
        edf_plus="D",
        record_onsets=onsets,
        annotations=[(0.5, 1.0, "first"), (13.0, None, "after the gap")],
    )
    assert _header(path)["reserved"] == "EDF+D"
    blocks = _annotation_blocks(path)
    keeping = [float(re.match(rb"([+-][\d.]+)\x14\x14\x00", b).group(1)) for b in blocks]
    assert keeping == onsets
    assert b"+0.5\x151\x14first\x14\x00" in blocks[0] and b"+13\x14after the gap\x14\x00" in blocks[3]
    assert _mne(path).ch_names == ["Cz"]  # MNE reads EDF+D, as if it were continuous
    annotations = mne.read_annotations(path)
    assert list(zip(annotations.onset, annotations.description, strict=True)) == [
        (0.5, "first"),
        (13.0, "after the gap"),
    ]


def test_annotation_only_file_like_a_sleep_edf_hypnogram(tmp_path: Path) -> None:
    stages = [(0.0, 30.0, "Sleep stage W"), (30.0, 60.0, "Sleep stage 1"), (90.0, 30.0, "Sleep stage 2")]
    path = write_edf(tmp_path / "h.edf", [], record_duration=0.0, edf_plus="C", annotations=stages)
    h = _header(path)
    assert h["label"] == ["EDF Annotations"] and h["records"] == "1" and float(h["duration"]) == 0.0
    annotations = mne.read_annotations(path)
    assert list(annotations.description) == [s[2] for s in stages]
    assert list(annotations.onset) == [s[0] for s in stages]
    assert list(annotations.duration) == [s[1] for s in stages]


def test_degenerate_range_and_duplicate_labels_are_written_as_asked(tmp_path: Path) -> None:
    n = 512
    path = write_edf(
        tmp_path / "q.edf",
        [
            Signal("EEG FZ-REF", np.zeros(n), 256.0),
            Signal("EEG FZ-REF", np.ones(n), 256.0),
            Signal("IBI", np.zeros(n), 256.0, unit="", physical_min=0.0, physical_max=0.0),
        ],
    )
    h = _header(path)
    assert h["label"] == ["EEG FZ-REF", "EEG FZ-REF", "IBI"]
    assert h["pmin"][2] == h["pmax"][2] == "0"
    assert h["file_bytes"] == 256 * 4 + 2 * h["record_bytes"]


# Each quirk, and the header fields it is meant to change (nothing else, data included).
CLAIMS = {
    "records_minus_one": {"records"},
    "non_ascii_header": {"patient", "recording", "unit"},
    "blank_units": {"unit"},
    "date_1899": {"startdate", "recording"},
    "truncated_last_record": set(),
}


@pytest.mark.parametrize("quirk", QUIRKS)
def test_each_quirk_changes_exactly_the_bytes_it_claims(quirk: str, tmp_path: Path) -> None:
    data = simulate_eeg(["Fp1", "O1"], 256.0, 10.0, mains_hz=50.0, rng=np.random.default_rng(2))
    signals = [
        Signal(n, x, 256.0, physical_min=-3200, physical_max=3200)
        for n, x in zip(("Fp1", "O1"), data, strict=True)
    ]
    signals.append(Signal("Temp", np.full(2560, 36.9), 256.0, unit="degC", physical_min=30, physical_max=45))
    kwargs = {"patient": "P001 M 01-JAN-1970 Smith", "recording": "Startdate 04-MAR-2021 E01 tech device"}
    plain = write_edf(tmp_path / "plain.edf", signals, **kwargs).read_bytes()
    odd = write_edf(tmp_path / f"{quirk}.edf", signals, quirks=[quirk], **kwargs).read_bytes()
    n = min(len(plain), len(odd))
    changed = {
        _field_at(plain, i)
        for i in np.flatnonzero(np.frombuffer(plain[:n], np.uint8) != np.frombuffer(odd[:n], np.uint8))
    }
    assert changed == CLAIMS[quirk]
    h = _header(tmp_path / f"{quirk}.edf")
    if quirk == "records_minus_one":
        assert h["records"] == "-1" and len(odd) == len(plain)
    elif quirk == "truncated_last_record":
        full = int(h["header_bytes"]) + int(h["records"]) * h["record_bytes"]
        assert full - h["record_bytes"] < len(odd) < full == len(plain)
    elif quirk == "non_ascii_header":
        assert "é" in h["patient"] and "ô" in h["recording"] and h["unit"] == ["µV", "µV", "degC"]
        assert b"\xb5V" in odd and re.search(rb"[\x80-\xff]", odd[8:168])
    elif quirk == "blank_units":
        assert h["unit"] == ["", "", ""]
    else:
        assert h["startdate"] == "01.01.99" and h["recording"].startswith("Startdate 01-JAN-1899 E01")


def test_writer_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    cz = Signal("Cz", np.zeros(256), 256.0)
    with pytest.raises(ValueError, match="unknown quirks"):
        write_edf(tmp_path / "a.edf", [cz], quirks=["nope"])
    with pytest.raises(ValueError, match="whole number of samples"):
        write_edf(tmp_path / "b.edf", [Signal("Cz", np.zeros(250), 250.5)])
    with pytest.raises(ValueError, match="same whole number"):
        write_edf(tmp_path / "c.edf", [cz, Signal("Pz", np.zeros(300), 256.0)])
    with pytest.raises(ValueError, match="need EDF\\+"):
        write_edf(tmp_path / "d.edf", [cz], annotations=[(0.0, None, "x")])
    with pytest.raises(ValueError, match="onsets for 1"):
        write_edf(tmp_path / "e.edf", [cz], edf_plus="D", record_onsets=[0.0, 5.0])


# --- Corpora -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, tuple[str, ...]]]]:
    out = {}
    for recipe in RECIPES:
        root = tmp_path_factory.mktemp(recipe)
        out[recipe] = (root, generate_corpus(recipe, root, seed=5, n_subjects=3, duration_s=20))
    return out


@pytest.mark.parametrize("recipe", RECIPES)
def test_corpus_is_deterministic_for_a_seed(recipe: str, corpora: dict, tmp_path: Path) -> None:
    root, made = corpora[recipe]
    again = generate_corpus(recipe, tmp_path / "again", seed=5, n_subjects=3, duration_s=20)
    assert again == made and list(made) == sorted(made)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == list(made)
    for rel in made:
        assert (tmp_path / "again" / rel).read_bytes() == (root / rel).read_bytes(), rel
    other = generate_corpus(recipe, tmp_path / "other", seed=6, n_subjects=3, duration_s=20)
    assert any((tmp_path / "other" / rel).read_bytes() != (root / rel).read_bytes() for rel in other)


def test_tueg_layout_labels_and_quirks(corpora: dict) -> None:
    root, made = corpora["tueg"]
    pattern = re.compile(
        r"edf/000/(?P<s>[a-z]{8})/(?P<session>s\d{3}_\d{4}(?:_\d{2}_\d{2})?)/(?P<m>\d{2}_tcp_\w+)/"
        r"(?P=s)_s\d{3}_t\d{3}\.edf"
    )
    parts = [pattern.fullmatch(p) for p in made]
    assert all(parts)
    sessions = {m["session"] for m in parts}
    assert any(len(s.split("_")) == 4 for s in sessions) and any(len(s.split("_")) == 2 for s in sessions)
    assert {m["m"] for m in parts} == {"01_tcp_ar", "02_tcp_le", "03_tcp_ar_a", "04_tcp_le_a"}
    rates, by_tag = set(), {}
    for rel, match in zip(made, parts, strict=True):
        h = _header(root / rel)
        suffix = "-LE" if "_le" in match["m"] else "-REF"
        eeg = [e for e in TUH_EEG if not (match["m"].endswith("_a") and e in ("A1", "A2"))]
        assert h["label"][: len(eeg)] == [f"EEG {e}{suffix}" for e in eeg]
        assert 21 <= len(h["label"]) <= 33
        assert re.fullmatch(r"[a-z]{8} M 01-JAN-1900 [a-z]{8} Age:[\d.]+.*", h["patient"])
        rates |= set(h["sfreq"])
        for label, lo, hi in zip(h["label"], h["pmin"], h["pmax"], strict=True):
            if label in ("IBI", "BURSTS", "SUPPR"):
                assert lo == hi
        for tag in made[rel]:
            by_tag[tag] = h
    assert rates == {250.0, 256.0, 512.0}
    assert by_tag["records_minus_one"]["records"] == "-1"
    truncated = by_tag["truncated_last_record"]
    assert (
        truncated["file_bytes"]
        < int(truncated["header_bytes"]) + int(truncated["records"]) * truncated["record_bytes"]
    )
    assert "é" in by_tag["non_ascii_header"]["patient"] and "µV" in by_tag["non_ascii_header"]["unit"]
    assert by_tag["date_1899"]["startdate"] == "01.01.99" and "1899" in by_tag["date_1899"]["recording"]
    assert {"IBI", "BURSTS", "SUPPR"} <= set(by_tag["flat_derived_channels"]["label"])
    blank = by_tag["blank_units_non_eeg"]
    units = dict(zip(blank["label"], blank["unit"], strict=True))
    electrodes = {label: label.startswith("EEG ") and label[4:].split("-")[0] in TUH_EEG for label in units}
    assert units["PHOTIC-REF"] == "" and sum(electrodes.values()) == 21
    assert all(unit == ("uV" if electrodes[label] else "") for label, unit in units.items())
    labels = by_tag["duplicate_label"]["label"]
    assert len(labels) - len(set(labels)) == 1


def test_tuab_and_tusz_layouts(corpora: dict) -> None:
    tueg_subjects = {p.split("/")[2] for p in corpora["tueg"][1]}
    tuab = corpora["tuab"][1]
    assert all(
        re.fullmatch(r"edf/(train|eval)/(normal|abnormal)/01_tcp_ar/[a-z]{8}_s\d{3}_t\d{3}\.edf", p)
        for p in tuab
    )
    assert {p.split("/")[-1][:8] for p in tuab} & tueg_subjects  # TUAB subjects are TUEG subjects too
    root, tusz = corpora["tusz"]
    pattern = r"edf/(train|dev|eval)/([a-z]{8})/s\d{3}_\d{4}/(01_tcp_ar|02_tcp_le|03_tcp_ar_a)/"
    pattern += r"\2_s\d{3}_t\d{3}\.edf"
    assert all(re.fullmatch(pattern, p) for p in tusz)
    assert all(_header(root / p)["label"][0].startswith("EEG FP1-") for p in tusz)


def test_chbmit_bipolar_labels_with_their_duplicate_and_dummies(corpora: dict) -> None:
    root, made = corpora["chbmit"]
    assert all(re.fullmatch(r"(chb\d{2})/\1_\d{2}\.edf", p) for p in made)
    dummies = 0
    for rel in made:
        h = _header(root / rel)
        assert h["label"][:23] == CHBMIT_LABELS and h["label"].count("T8-P8") == 2
        assert set(h["sfreq"]) == {256.0}
        dummies += "-" in h["label"]
    assert dummies and any("LOC-ROC" in _header(root / rel)["label"] for rel in made)
    raw = _mne(root / next(p for p, tags in made.items() if "dummy_channels" in tags))
    assert {"T8-P8-0", "T8-P8-1"} <= set(raw.ch_names)


def test_siena_and_eegmmidb_labels_and_rates(corpora: dict) -> None:
    root, made = corpora["siena"]
    for rel in made:
        assert re.fullmatch(r"(PN\d{2})/\1-\d\.edf", rel)
        h = _header(root / rel)
        assert h["label"] == [f"EEG {e}" for e in SIENA_EEG] + ["EKG EKG", "SPO2", "HR", "MK"]
        assert set(h["sfreq"]) == {512.0}
    root, made = corpora["eegmmidb"]
    rates = set()
    for rel in made:
        assert re.fullmatch(r"(S\d{3})/\1R\d{2}\.edf", rel)
        h = _header(root / rel)
        assert h["label"] == [*EEGMMIDB_LABELS, "EDF Annotations"] and h["reserved"] == "EDF+C"
        rates |= set(h["sfreq"][:-1])
        assert set(mne.read_annotations(root / rel).description) <= {"T0", "T1", "T2"}
    assert rates == {128.0, 160.0}
    assert {"T0", "T1", "T2"} == set(mne.read_annotations(root / "S001/S001R04.edf").description)


def test_sleep_edf_mixed_rates_and_hypnograms(corpora: dict) -> None:
    root, made = corpora["sleep-edf"]
    psg = [p for p in made if p.endswith("-PSG.edf")]
    hypnograms = [p for p in made if p.endswith("-Hypnogram.edf")]
    assert psg and len(hypnograms) == len(psg)
    assert all(re.fullmatch(r"sleep-cassette/SC4\d{3}E0-PSG\.edf", p) for p in psg)
    assert all(re.fullmatch(r"sleep-cassette/SC4\d{3}E[A-Z]-Hypnogram\.edf", p) for p in hypnograms)
    h = _header(root / psg[0])
    assert h["label"][:3] == ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"] and "Temp rectal" in h["label"]
    assert float(h["duration"]) == 30.0 and set(h["sfreq"]) == {100.0, 1.0}
    for rel in hypnograms:
        assert _header(root / rel)["label"] == ["EDF Annotations"]
        assert mne.read_annotations(root / rel).description[0] == "Sleep stage W"


def test_biosemi_cap_labels_and_signals_placed_in_cap_order(corpora: dict) -> None:
    root, made = corpora["biosemi"]
    sizes = {}
    for rel in made:
        assert re.fullmatch(r"(sub-\d{2})/\1_task-rest\.bdf", rel)
        raw = (root / rel).read_bytes()
        h = _header(root / rel)
        assert raw[:8] == b"\xffBIOSEMI" and h["reserved"] == "24BIT"
        cap = [label for label in h["label"] if re.fullmatch(r"[A-H]\d+", label)]
        assert h["label"] == [*cap, *(f"EXG{k}" for k in range(1, 9)), "Status"]
        sizes[len(cap)] = rel
    assert set(sizes) == {64, 128}
    assert _header(root / sizes[128])["label"][127] == "D32"
    # The cap's A1 is Fp1 in a 64-electrode cap: alpha belongs where biosemi64 puts Oz, blinks at A1.
    names = list(montage_positions("biosemi64"))
    raw = mne.io.read_raw_bdf(root / sizes[64], preload=True, verbose=False)
    oz = raw.get_data(picks=[f"{'AB'[names.index('Oz') // 32]}{names.index('Oz') % 32 + 1}"])[0] * 1e6
    fp1 = raw.get_data(picks=["A1"])[0] * 1e6
    freqs, power = scipy.signal.welch(np.stack([oz, fp1]), fs=512.0, nperseg=1024)
    alpha = power[:, (freqs >= 8) & (freqs <= 12)].mean(axis=1)
    assert alpha[0] > 3 * alpha[1]


def test_generic_folder_has_rates_an_edf_plus_d_gap_and_a_short_file(corpora: dict) -> None:
    root, made = corpora["generic"]
    assert all("/" not in p for p in made)
    assert {p.rsplit(".", 1)[1] for p in made} == {"edf", "bdf"}
    rates = {
        r
        for p in made
        for r, label in zip(*(_header(root / p)[k] for k in ("sfreq", "label")), strict=True)
        if label != "EDF Annotations"
    }
    assert min(rates) == 128.0 and len(rates) >= 4
    gap = next(p for p, tags in made.items() if "edf_plus_d" in tags)
    onsets = [float(re.match(rb"([+-][\d.]+)\x14", b).group(1)) for b in _annotation_blocks(root / gap)]
    jumps = [i + 1 for i, (a, b) in enumerate(pairwise(onsets)) if b - a > 1.0]
    assert len(jumps) == 1 and jumps[0] >= 20 and len(onsets) - jumps[0] >= 20  # two 10-s windows each side
    short = _header(root / next(p for p, tags in made.items() if "short" in tags))
    assert int(short["records"]) * float(short["duration"]) < 10


def test_unknown_recipe_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no fixture corpus"):
        generate_corpus("nope", tmp_path)


# --- Signal model --------------------------------------------------------------------------------------


def test_signals_look_like_eeg_not_white_noise() -> None:
    names = ["Fp1", "Fp2", "C3", "CP3", "Cz", "T7", "O1", "O2", "T3", "NotAnElectrode"]  # T3 is T7's old name
    x = simulate_eeg(names, 256.0, 60.0, mains_hz=50.0, rng=np.random.default_rng(0))
    assert x.shape == (len(names), 256 * 60)
    np.testing.assert_array_equal(
        x, simulate_eeg(names, 256.0, 60.0, mains_hz=50.0, rng=np.random.default_rng(0))
    )
    at = {n: i for i, n in enumerate(names)}
    freqs, power = scipy.signal.welch(x, fs=256.0, nperseg=1024)

    def band(lo: float, hi: float) -> np.ndarray:
        return power[:, (freqs >= lo) & (freqs < hi)].mean(axis=1)

    alpha = band(8, 12)
    assert min(alpha[at["O1"]], alpha[at["O2"]]) > 3 * max(alpha[at["Fp1"]], alpha[at["Fp2"]])
    assert np.all(band(2, 6) > 5 * band(25, 40))  # power falls with frequency (1/f), unlike white noise
    keep = (freqs > 1) & (freqs < 40) & ~((freqs > 7) & (freqs < 13))
    slopes = [np.polyfit(np.log(freqs[keep]), np.log(p[keep]), 1)[0] for p in power]
    assert max(slopes) < -0.8
    assert np.all(band(49.5, 50.5)[:-1] > 3 * band(44, 47)[:-1])  # mains hum on the electrodes
    assert 5 < np.median(x.std(axis=1)) < 100  # µV, scalp-EEG amplitudes
    # Neighbours share background; distant electrodes much less.
    corr = np.corrcoef(
        scipy.signal.sosfiltfilt(scipy.signal.butter(4, [1, 7], "bandpass", fs=256, output="sos"), x)
    )
    assert corr[at["C3"], at["CP3"]] > corr[at["Fp1"], at["O2"]] + 0.3
    # Blinks: big slow frontal deflections; a muscle burst: high-frequency power over temporal electrodes.
    assert np.ptp(x[at["Fp1"]]) > 2 * np.ptp(x[at["Cz"]])
    fast = scipy.signal.sosfiltfilt(scipy.signal.butter(4, 30, "highpass", fs=256, output="sos"), x)
    burst = np.sqrt(scipy.ndimage.uniform_filter1d(fast**2, 256, axis=1)).max(axis=1)  # loudest second
    assert burst[at["T7"]] > 3 * burst[at["Cz"]] and burst[at["T7"]] > 3 * burst[at["O1"]]
    # Old 10-20 names sit where the new ones do; an unknown name gets the background only.
    assert corr[at["T3"], at["T7"]] > 0.7 and alpha[at["T3"]] < alpha[at["O1"]] / 3
    assert band(49.5, 50.5)[at["NotAnElectrode"]] < band(49.5, 50.5)[at["Cz"]] / 3
