"""Our EDF/BDF reader against MNE on the real files, and on the quirks real archives have."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.ingest.edf import EdfError, contiguous_segments, decode, read_header, read_records, record_onsets
from eegfm.ingest.recording import unit_scale

REAL_FILES = sorted(
    p.relative_to(Path(__file__).resolve().parents[2] / "shared" / "data" / "real-edf").as_posix()
    for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "real-edf").rglob("*")
    if p.is_file()
)


def _read_all(path: Path):
    with open(path, "rb") as f:
        header = read_header(f, path.stat().st_size)
        records = read_records(f, header, 0, header.n_records)
    return header, records


@pytest.mark.parametrize("name", REAL_FILES)
def test_reader_matches_mne_on_real_files(real_edf_dir: Path, name: str) -> None:
    path = real_edf_dir / name
    header, records = _read_all(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=True, verbose=False)
    data = header.data_signals
    assert [s.label for s in data][: len(raw.ch_names)] == raw.ch_names[: len(data)] or len(raw.ch_names) == 0
    if not data:
        assert len(raw.ch_names) == 0
        return
    top = max(s.samples_per_record for s in data)
    compared = 0
    for s in data:
        scale = unit_scale(s)
        if s.samples_per_record != top or isinstance(scale, str) or s.label not in raw.ch_names:
            continue
        if raw.get_channel_types([s.label])[0] not in ("eeg", "ecg", "eog", "emg", "misc", "seeg", "bio"):
            continue
        ours = decode(records, header, [s], np.array([scale[0]]))[:, 0]
        theirs = raw.get_data(picks=[s.label])[0] * 1e6
        n = min(len(ours), len(theirs))
        step = abs((s.physical_max - s.physical_min) / (s.digital_max - s.digital_min)) * scale[0]
        np.testing.assert_allclose(ours[:n], theirs[:n], atol=step * 1e-3 + 1e-6 * np.abs(theirs).max())
        compared += 1
    assert compared > 0, "no signal of this file was compared with MNE"


def test_bdf_is_24_bit(real_edf_dir: Path) -> None:
    header, _ = _read_all(real_edf_dir / "BDF" / "test_generator_2.bdf")
    assert header.is_bdf and header.sample_bytes == 3
    assert header.n_records == header.declared_records  # 24-bit records counted right (edfio 0.4.18 does not)
    assert not header.notes


def test_annotation_only_file(real_edf_dir: Path) -> None:
    header, _ = _read_all(real_edf_dir / "EDF" / "SC4001EC-Hypnogram.edf")
    assert header.data_signals == [] and header.annotation_signal is not None


def test_inverted_physical_range_reads_the_right_sign(real_edf_dir: Path) -> None:
    header, records = _read_all(real_edf_dir / "EDF" / "pyedflib_test_subsecond_inverted_physrange.edf")
    (s,) = header.data_signals
    assert s.physical_max < s.physical_min
    digital = records.view("<i2")[:, : s.samples_per_record].reshape(-1)[:1000].astype(float)
    physical = decode(records, header, [s], np.array([1.0]))[:1000, 0]
    assert np.corrcoef(digital, physical)[0, 1] < -0.999  # gain is negative: higher digital, lower µV


def test_nihon_kohden_edf_plus_d_onsets(real_edf_dir: Path) -> None:
    path = real_edf_dir / "NihonKohden" / "MB0400FU.EDF"
    with open(path, "rb") as f:
        header = read_header(f, path.stat().st_size)
        assert header.is_discontinuous
        onsets = record_onsets(f, header)
    assert len(onsets) == header.n_records
    assert np.all(np.diff(onsets) > 0)
    segments = contiguous_segments(onsets, header.record_duration)
    assert sum(b - a for a, b in segments) == header.n_records


def test_contiguous_segments_split_at_gaps() -> None:
    onsets = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 30.0])
    assert contiguous_segments(onsets, 1.0) == [(0, 3), (3, 5), (5, 6)]


def test_not_an_edf_is_a_named_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.edf"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 400)
    with open(bad, "rb") as f, pytest.raises(EdfError, match="not an EDF/BDF"):
        read_header(f, bad.stat().st_size)
    short = tmp_path / "y.edf"
    short.write_bytes(b"0       ")
    with open(short, "rb") as f, pytest.raises(EdfError, match="shorter than an EDF header"):
        read_header(f, short.stat().st_size)
