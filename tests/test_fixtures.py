"""The fixture corpora: faithful layouts, deterministic bytes, EEG-like signals, readable by MNE."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.signal

from eegfm.ingest.fixtures import RECIPES, Signal, generate_corpus, simulate_eeg, write_edf


def _mne(path: Path) -> mne.io.BaseRaw:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mne.io.read_raw(path, preload=True, verbose=False)


def test_writer_round_trips_through_mne(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for bdf, span in ((False, 3200.0), (True, 262144.0)):
        data = 50 * rng.standard_normal((2, 2560))
        path = write_edf(
            tmp_path / f"x.{'bdf' if bdf else 'edf'}",
            [
                Signal(n, d, 256.0, physical_min=-span, physical_max=span)
                for n, d in zip(("Cz", "Pz"), data, strict=True)
            ],
            bdf=bdf,
            edf_plus="C",
            annotations=[(1.0, 0.5, "stimulus é ü")],
        )
        raw = _mne(path)
        assert raw.ch_names == ["Cz", "Pz"] and raw.info["sfreq"] == 256.0
        step = 2 * span / (2**24 if bdf else 2**16)
        np.testing.assert_allclose(raw.get_data() * 1e6, data, atol=step)
        assert list(raw.annotations.description) == ["stimulus é ü"]


def test_quirks_change_the_header_bytes_they_claim(tmp_path: Path) -> None:
    signal = [Signal("Cz", np.zeros(2560), 256.0, physical_min=-1.0, physical_max=1.0)]
    plain = write_edf(tmp_path / "plain.edf", signal).read_bytes()
    minus = write_edf(tmp_path / "m.edf", signal, quirks=["records_minus_one"]).read_bytes()
    assert minus[236:244].strip() == b"-1" and plain[236:244].strip() == b"10"
    cut = write_edf(tmp_path / "t.edf", signal, quirks=["truncated_last_record"]).read_bytes()
    assert len(cut) == len(plain) - 256  # half of one 512-byte record
    latin = write_edf(tmp_path / "n.edf", signal, quirks=["non_ascii_header"]).read_bytes()
    assert b"\xe9" in latin[8:88] and latin[256 + 96 : 256 + 104].startswith(b"\xb5V")
    with pytest.raises(ValueError, match="unknown quirks"):
        write_edf(tmp_path / "z.edf", signal, quirks=["nope"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_corpus_is_deterministic(recipe: str, tmp_path: Path) -> None:
    a = generate_corpus(recipe, tmp_path / "a", seed=3, n_subjects=2, duration_s=30)
    b = generate_corpus(recipe, tmp_path / "b", seed=3, n_subjects=2, duration_s=30)
    assert a == b and a
    for rel in a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_layouts_carry_their_corpus_quirks(tmp_path: Path) -> None:
    tueg = generate_corpus("tueg", tmp_path / "tueg", n_subjects=2, duration_s=20)
    sessions = {p.split("/")[3] for p in tueg}
    assert any(len(s.split("_")) == 4 for s in sessions) and any(len(s.split("_")) == 2 for s in sessions)
    assert {p.split("/")[4] for p in tueg} == {"01_tcp_ar", "02_tcp_le", "03_tcp_ar_a", "04_tcp_le_a"}
    chb = generate_corpus("chbmit", tmp_path / "chb", n_subjects=1, duration_s=20)
    labels = _mne(tmp_path / "chb" / next(p for p, q in chb.items() if q)).ch_names
    assert sum(label.startswith("T8-P8") for label in labels) == 2 and any(
        label.startswith("-") for label in labels
    )
    mmi = generate_corpus("eegmmidb", tmp_path / "mmi", n_subjects=2, duration_s=20)
    assert sorted(_mne(tmp_path / "mmi" / p).info["sfreq"] for p in mmi) == [128.0, 160.0]
    sleep = generate_corpus("sleep-edf", tmp_path / "sleep", n_subjects=1, duration_s=60)
    assert sum(p.endswith("-Hypnogram.edf") for p in sleep) == 1


def test_signals_look_like_eeg_not_white_noise() -> None:
    names = ["Fp1", "Fp2", "O1", "O2", "Cz"]
    x = simulate_eeg(names, 256.0, 60.0, mains_hz=50.0, rng=np.random.default_rng(0))
    freqs, power = scipy.signal.welch(x, fs=256.0, nperseg=1024)

    def band(lo: float, hi: float) -> np.ndarray:
        return power[:, (freqs >= lo) & (freqs < hi)].mean(axis=1)

    alpha = band(8, 12)
    assert min(alpha[2], alpha[3]) > 3 * max(alpha[0], alpha[1])  # posterior alpha
    assert np.all(band(2, 6) > 5 * band(25, 40))  # power falls with frequency
    assert np.all(band(49, 51) > 3 * band(44, 47))  # mains hum
    assert 5 < np.median(x.std(axis=1)) < 100  # µV, scalp-EEG amplitudes
