"""Our EDF/BDF reader against MNE on the real files, and on the quirks real archives have."""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from eegfm.ingest.channel_plan import plan_channels, unit_scale
from eegfm.ingest.edf import (
    EdfError,
    EdfRecording,
    contiguous_segments,
    decode,
    read_header,
    read_records,
    record_onsets,
)
from eegfm.ingest.fixtures import Signal, write_edf
from eegfm.ingest.recipe import load_recipe
from eegfm.ingest.signals import Signal as ReaderSignal

REAL_FILES = sorted(
    p.relative_to(Path(__file__).resolve().parents[2] / "shared" / "data" / "real-edf").as_posix()
    for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "real-edf").rglob("*")
    if p.is_file()
)


def edf_signals(path: Path) -> list[ReaderSignal]:
    with open(path, "rb") as f:
        return EdfRecording(f, path.stat().st_size).signals


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


# Unit fields as real files write them (raw header bytes) and their factor to µV.
UNIT_SPELLINGS = [
    (b"uV", 1.0),
    (b"UV", 1.0),
    (b"\xb5V", 1.0),  # latin-1 micro sign
    (b"\xc2\xb5V", 1.0),  # the micro sign in UTF-8
    (b"\xce\xbcV", 1.0),  # Greek small mu in UTF-8
    (b"microV", 1.0),
    (b"microvol", 1.0),  # "microvolts" cut to the 8-byte field, as writers do
    (b"mV", 1e3),
    (b"V", 1e6),
    (b"nV", 1e-3),
]


@pytest.mark.parametrize(("unit", "factor"), UNIT_SPELLINGS, ids=lambda v: repr(v))
def test_every_voltage_spelling_is_read_at_its_scale(tmp_path: Path, unit: bytes, factor: float) -> None:
    """An EDF whose unit field holds these bytes, through the reader and the channel plan, gives µV."""
    uv = 40.0 * np.sin(np.linspace(0, 20 * np.pi, 2560))
    path = write_edf(
        tmp_path / "x.edf",
        [Signal("Cz", uv / factor, 256.0, physical_min=-100 / factor, physical_max=100 / factor)],
    )
    raw = bytearray(path.read_bytes())
    unit_field = 256 + 16 + 80  # one signal: after its label (16) and transducer (80) fields
    raw[unit_field : unit_field + 8] = unit.ljust(8)
    path.write_bytes(bytes(raw))
    with open(path, "rb") as f:
        reader = EdfRecording(f, path.stat().st_size)
        plan = plan_channels(reader.signals, load_recipe("generic", root=str(tmp_path)))
        assert [c.name for c in plan.channels] == ["Cz"], plan.dropped
        assert plan.scales.tolist() == [factor]
        values = reader.read(plan.signals, plan.scales, 0, len(uv))
    np.testing.assert_allclose(values[:, 0], uv, atol=0.01)


def test_reads_of_any_sample_range_equal_the_whole_recording_cut(tmp_path: Path) -> None:
    """The reader interface takes sample ranges that need not fall on EDF records (other formats' chunks)."""
    signal = np.arange(2560, dtype=np.float64) % 200 - 100
    path = write_edf(tmp_path / "x.edf", [Signal("Cz", signal, 256.0, physical_min=-200, physical_max=200)])
    with open(path, "rb") as f:
        reader = EdfRecording(f, path.stat().st_size)
        (cz,) = reader.signals
        assert reader.segments(256.0) == [(0, 2560, 0.0)] and reader.duration_s == 10.0
        whole = reader.read([cz], np.ones(1), 0, 2560)[:, 0]
        for start, stop in [(0, 1), (100, 357), (255, 257), (2000, 2560)]:
            np.testing.assert_array_equal(reader.read([cz], np.ones(1), start, stop)[:, 0], whole[start:stop])
    np.testing.assert_allclose(whole, signal, atol=0.01)


def test_non_voltage_units_are_still_dropped(tmp_path: Path) -> None:
    path = write_edf(
        tmp_path / "x.edf", [Signal("Cz", np.zeros(256), 256.0, unit="DegC", physical_min=-1, physical_max=1)]
    )
    plan = plan_channels(edf_signals(path), load_recipe("generic", root=str(tmp_path)))
    assert plan.channels == [] and plan.dropped == {"Cz": "unit 'DegC' is not a voltage"}
