"""The WFDB, MATLAB and Neuroscan CNT readers: each against an independent reader of the same file, chunked
reads against one whole read, and through the whole ingest to shards (damaged files: one manifest skip)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from shardcheck import check_contract

from eegfm.ingest.fixtures import simulate_eeg
from eegfm.ingest.format_fixtures_other import (
    ICARE_CHANNELS,
    SEED_CHANNELS,
    write_cnt,
    write_mat_v5,
    write_mat_v73,
    write_wfdb,
)
from eegfm.ingest.formats import format_of, open_recording
from eegfm.ingest.recipe import MatLayout, Recipe, SourceFile, load_recipe
from eegfm.ingest.run import run_shards
from eegfm.ingest.signals import ReadError, RecordingReader

WINDOW_S = 10.0  # the default preprocess window
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning:wfdb.io._header")


def _recipe(root: Path, fmt: str, include: str, **extra: Any) -> Recipe:
    return Recipe(
        name="fmt",
        root=str(root),
        positions="standard_1005",
        reference="ar",
        mains_hz=50,
        splits={"train": 1.0},
        include=(include,),
        path_regex=r"^(?P<subject>[^/.]+)",
        format=fmt,
        **extra,
    )


def _source(path: Path) -> SourceFile:
    return SourceFile(str(path.name), str(path), path.stat().st_size, "s", "", "r", "ar", "train")


def _whole(reader: RecordingReader, indices: list[int] | None = None) -> np.ndarray:
    signals = [reader.signals[i] for i in (indices if indices is not None else range(len(reader.signals)))]
    segments = reader.segments(signals[0].sfreq)
    return reader.read(signals, np.ones(len(signals)), segments[0][0], segments[-1][1])


def _check_ranges(reader: RecordingReader, indices: list[int]) -> None:
    """Any sample range of any channel subset (in any order) is the whole read's cut."""
    whole = _whole(reader)
    signals = [reader.signals[i] for i in indices]
    n = len(whole)
    for start, stop in [(0, 1), (3, 517), (n // 3, n // 3 + 999), (n - 7, n), (0, n)]:
        part = reader.read(signals, np.ones(len(signals)), start, stop)
        assert part.dtype == np.float32 and part.shape == (stop - start, len(signals))
        np.testing.assert_array_equal(part, whole[start:stop][:, indices])
    scaled = reader.read(signals[:1], np.array([1e3]), 10, 20)  # the scale multiplies
    np.testing.assert_allclose(scaled[:, 0], whole[10:20, indices[0]] * 1e3, rtol=1e-6)


def _recipe_fields(root: Path, include: str = "*") -> dict[str, Any]:
    return {
        "name": "fmt",
        "root": str(root),
        "positions": "standard_1005",
        "reference": "ar",
        "mains_hz": 50,
        "splits": {"train": 1.0},
        "include": [include],
        "path_regex": r"^(?P<subject>[^/.]+)",
    }


def _ingest(tmp_path: Path, root: Path, fmt: str, include: str, **extra: Any) -> dict[str, dict]:
    """`run_shards` with a recipe YAML whose `format:` is set; the manifest's files by path."""
    tmp_path.mkdir(exist_ok=True)
    recipe_yaml = tmp_path / "recipe.yaml"
    recipe_yaml.write_text(yaml.safe_dump({**_recipe_fields(root, include), "format": fmt, **extra}))
    out = tmp_path / "shards"
    run_shards(load_recipe(str(recipe_yaml)), str(out), shard_bytes=512 * 1024, progress=False)
    manifest = check_contract(out)
    return {f["path"]: f for f in manifest["files"]}


def _eeg(names: tuple[str, ...] | list[str], sfreq: float, duration_s: float, seed: int = 0) -> np.ndarray:
    return simulate_eeg(list(names), sfreq, duration_s, mains_hz=50, rng=np.random.default_rng(seed))


# --- WFDB ------------------------------------------------------------------------------------------------


def _icare(
    folder: Path, record: str = "0284_001_004_EEG", duration_s: float = 31.0
) -> tuple[Path, np.ndarray]:
    """An I-CARE-like record: 19 EEG channels in µV at 500 Hz and an ECG in mV."""
    eeg = _eeg(ICARE_CHANNELS, 500.0, duration_s)
    ecg = np.sin(np.arange(eeg.shape[1]) / 500.0 * 2 * np.pi * 1.2)[None] * 1.5  # mV
    data = np.concatenate([eeg, ecg])
    units = ["uV"] * len(ICARE_CHANNELS) + ["mV"]
    return write_wfdb(folder, record, data, [*ICARE_CHANNELS, "ECG"], 500.0, units), data


def test_wfdb_reads_what_wfdb_reads_in_any_range(tmp_path: Path) -> None:
    import wfdb

    header, written = _icare(tmp_path)
    assert format_of(header.name) == "wfdb"
    with open_recording(_source(header), _recipe(tmp_path, "auto", "*.hea")) as reader:
        assert [s.label for s in reader.signals] == [*ICARE_CHANNELS, "ECG"]
        assert [s.unit for s in reader.signals][-2:] == ["uV", "mV"] and reader.signals[0].sfreq == 500.0
        assert reader.duration_s == 31.0
        whole = _whole(reader)
        theirs = wfdb.rdrecord(str(header.with_suffix("")), physical=True).p_signal
        np.testing.assert_allclose(whole, theirs, rtol=1e-6, atol=1e-6)
        # and what was written, to within the 16-bit quantisation (a unit slip would be ×1000)
        step = np.abs(written).max(axis=1) / 30000.0
        assert (np.abs(whole - written.T) <= step + 1e-9).all()
        _check_ranges(reader, [19, 0, 7])


def test_wfdb_ingest_writes_shards_and_skips_damaged_records(tmp_path: Path) -> None:
    root = tmp_path / "icare"
    _icare(root, "0284_001_004_EEG")
    _icare(root, "0285_001_004_EEG")
    _icare(root, "0286_001_004_EEG")
    dat = root / "0285_001_004_EEG.dat"
    os.truncate(dat, dat.stat().st_size // 2)
    (root / "0286_001_004_EEG.dat").unlink()
    files = _ingest(tmp_path, root, "wfdb", "*.hea")
    good = files["0284_001_004_EEG.hea"]
    assert good["status"] == "written" and good["samples"] == 3  # 31 s: three 10 s windows
    assert len(good["channels"]) == 19 and {"T7", "P8", "Cz"} <= set(good["channels"])  # T3 → T7, T6 → P8
    assert "ECG" in good["dropped_channels"] and good["orig_sfreq"] == 500.0
    # Without the size check, wfdb fails at its first read ("Samples were not loaded correctly").
    assert files["0285_001_004_EEG.hea"]["reason"] == (
        "unreadable: truncated: 0285_001_004_EEG.dat holds 7750 of the header's 15500 samples per signal"
    )
    assert files["0286_001_004_EEG.hea"]["reason"] == (
        "unreadable: missing file 0286_001_004_EEG.dat (the header names it; expected beside the header)"
    )


# --- Neuroscan CNT -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_bytes", [2, 4])
def test_cnt_reads_what_mne_reads_in_any_range(tmp_path: Path, sample_bytes: int) -> None:
    import mne

    labels = ["FP1", "FPZ", "CB1", "HEOG-L", "O1"]
    path = tmp_path / "sub1.cnt"
    held = write_cnt(path, _eeg(labels, 250.0, 12.0), labels, 250, sample_bytes=sample_bytes, bad=["CB1"])
    assert format_of(path.name) == "cnt"
    with open_recording(_source(path), _recipe(tmp_path, "auto", "*.cnt")) as reader:
        assert [s.label for s in reader.signals] == labels and reader.duration_s == 12.0
        # The header's bad flag (byte 14) only: MNE's default header="auto" also calls HEOG-L bad (byte 4 of
        # its label is non-zero), which header="new" does not.
        assert [s.bad != "" for s in reader.signals] == [False, False, True, False, False]
        auto = mne.io.read_raw_cnt(path, preload=False, verbose="error")
        assert auto.info["bads"] == ["CB1", "HEOG-L"]
        whole = _whole(reader) * 1e6  # volts → µV
        np.testing.assert_allclose(whole, held.T, rtol=1e-5, atol=1e-4)  # the µV the writer put in
        np.testing.assert_allclose(whole, auto.get_data().T * 1e6, rtol=1e-5, atol=1e-4)
        _check_ranges(reader, [4, 0, 2])


def test_cnt_ingest_writes_shards_and_skips_a_truncated_file(tmp_path: Path) -> None:
    import mne

    root = tmp_path / "seed"
    root.mkdir()
    data = _eeg(SEED_CHANNELS, 1000.0, 21.0)
    write_cnt(root / "1_1.cnt", data, SEED_CHANNELS, 1000)
    write_cnt(root / "2_1.cnt", data[:, :5000], SEED_CHANNELS, 1000)
    truncated = root / "2_1.cnt"
    os.truncate(truncated, truncated.stat().st_size - 1000)
    with pytest.raises(RuntimeError, match="cannot automatically compute data format"):
        mne.io.read_raw_cnt(truncated, verbose="error")  # MNE alone does not say the file is cut short
    files = _ingest(tmp_path, root, "cnt", "*.cnt")
    good = files["1_1.cnt"]
    assert good["status"] == "written" and good["samples"] == 2 and good["orig_sfreq"] == 1000.0
    assert len(good["channels"]) == 60 and good["channels"][:3] == ["Fp1", "Fpz", "Fp2"]
    assert set(good["dropped_channels"]) == {"CB1", "CB2"}
    size = truncated.stat().st_size
    table = size + 1000 - 9  # the 9-byte event table header was the last thing written
    assert files["2_1.cnt"]["reason"] == (
        f"unreadable: truncated: the header puts the event table at byte {table}, the file has {size} bytes"
    )


# --- MATLAB -------------------------------------------------------------------------------------------------

MAT_WRITERS = {"v5": write_mat_v5, "v7.3": write_mat_v73}
# SEED's preprocessed files: one variable per trial (`djc_eeg1` …), channels × samples at 200 Hz, no labels.
SEED_LAYOUT = {"trials": r"djc_eeg\d+", "sfreq": "200", "channels": list(SEED_CHANNELS)}
# MOABB's Lee2019 (OpenBMI) files: a struct with x (samples × channels), fs and chan (a cell of labels).
OPENBMI_LAYOUT = {
    "data": "EEG_MI_train.x",
    "orientation": "samples_first",
    "sfreq": "EEG_MI_train.fs",
    "channels_variable": "EEG_MI_train.chan",
}
OPENBMI_CHANNELS = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "C3",
    "Cz",
    "C4",
    "P3",
    "Pz",
    "P4",
    "O1",
    "O2",
)


def _seed_mat(path: Path, version: str, trial_s: tuple[tuple[int, float], ...], n_channels: int = 62) -> None:
    """SEED's layout; trials shorter than a window are noise (the EEG simulation needs a few seconds)."""
    rng = np.random.default_rng(0)
    trials = {
        f"djc_eeg{i}": _eeg(SEED_CHANNELS[:n_channels], 200.0, s, seed=i)
        if s >= WINDOW_S
        else rng.normal(0, 20, (n_channels, round(200 * s)))
        for i, s in trial_s
    }
    MAT_WRITERS[version](path, {**trials, "notes": "not a trial"})


def _openbmi_mat(path: Path, version: str, duration_s: float) -> np.ndarray:
    x = _eeg(OPENBMI_CHANNELS, 250.0, duration_s).T  # samples × channels, as OpenBMI stores it
    MAT_WRITERS[version](path, {"EEG_MI_train": {"x": x, "fs": 250.0, "chan": list(OPENBMI_CHANNELS)}})
    return x


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_reads_what_pymatreader_reads_in_any_range(tmp_path: Path, version: str) -> None:
    import pymatreader

    seed = tmp_path / "1_20131027.mat"
    _seed_mat(seed, version, ((1, 3.0), (2, 2.5), (10, 4.0)), n_channels=8)
    theirs = pymatreader.read_mat(str(seed))
    seed_recipe = _recipe(
        tmp_path, "auto", "*.mat", mat=MatLayout(**{**SEED_LAYOUT, "channels": SEED_CHANNELS[:8]})
    )
    assert format_of(seed.name) == "mat"
    with open_recording(_source(seed), seed_recipe) as reader:
        assert [s.label for s in reader.signals] == list(SEED_CHANNELS[:8]) and reader.signals[0].unit == "uV"
        # One segment per trial, in numeric order (eeg10 after eeg2, where a plain sort puts it second).
        assert reader.segments(200.0) == [(0, 600, 0.0), (600, 1100, 3.0), (1100, 1900, 5.5)]
        expected = np.concatenate([theirs[f"djc_eeg{i}"] for i in (1, 2, 10)], axis=1).T
        np.testing.assert_array_equal(_whole(reader), expected.astype(np.float32))
        _check_ranges(reader, [7, 0, 3])  # ranges across the trials' borders too
    openbmi = tmp_path / "sess01_subj01_EEG_MI.mat"
    _openbmi_mat(openbmi, version, 6.0)
    theirs = pymatreader.read_mat(str(openbmi))["EEG_MI_train"]
    with open_recording(
        _source(openbmi), _recipe(tmp_path, "mat", "*.mat", mat=MatLayout(**OPENBMI_LAYOUT))
    ) as reader:
        assert [s.label for s in reader.signals] == theirs["chan"] and reader.signals[0].sfreq == theirs["fs"]
        np.testing.assert_array_equal(_whole(reader), theirs["x"].astype(np.float32))
        _check_ranges(reader, [14, 0, 5])


def test_mat_ingest_writes_shards_and_skips_damaged_files(tmp_path: Path) -> None:
    seed_root, openbmi_root = tmp_path / "seed", tmp_path / "openbmi"
    seed_root.mkdir(), openbmi_root.mkdir()
    _seed_mat(seed_root / "1_20131027.mat", "v5", ((1, 12.0), (2, 8.0), (3, 21.0)))
    _seed_mat(seed_root / "2_20140404.mat", "v5", ((1, 12.0), (2, 12.0)))
    _openbmi_mat(openbmi_root / "sess01_subj01_EEG_MI.mat", "v7.3", 21.0)
    _openbmi_mat(openbmi_root / "sess01_subj02_EEG_MI.mat", "v7.3", 21.0)
    for damaged in (seed_root / "2_20140404.mat", openbmi_root / "sess01_subj02_EEG_MI.mat"):
        os.truncate(damaged, damaged.stat().st_size * 2 // 3)
    seed_files = _ingest(tmp_path / "a", seed_root, "mat", "*.mat", mat=SEED_LAYOUT)
    assert seed_files["2_20140404.mat"]["reason"] == (
        "unreadable: variable djc_eeg2 unreadable (damaged file?): OSError: could not read bytes"
    )
    seed = seed_files["1_20131027.mat"]
    # 12 s → 1 window, 8 s → none (windows never join two trials), 21 s → 2
    assert seed["status"] == "written" and seed["samples"] == 3 and seed["orig_sfreq"] == 200.0
    assert len(seed["channels"]) == 60 and set(seed["dropped_channels"]) == {"CB1", "CB2"}
    openbmi = _ingest(tmp_path / "b", openbmi_root, "mat", "*.mat", mat=OPENBMI_LAYOUT)
    assert openbmi["sess01_subj01_EEG_MI.mat"]["samples"] == 2
    assert openbmi["sess01_subj01_EEG_MI.mat"]["channels"] == list(OPENBMI_CHANNELS)
    assert openbmi["sess01_subj02_EEG_MI.mat"]["reason"].startswith("unreadable: MATLAB file unreadable: ")
    assert "truncated file" in openbmi["sess01_subj02_EEG_MI.mat"]["reason"]


def _openbmi_halves_mat(path: Path, version: str, train_s: float, test_s: float) -> None:
    """OpenBMI's two structs, EEG_MI_train and EEG_MI_test, each x (samples × channels), fs and chan."""
    halves = {
        name: {"x": _eeg(OPENBMI_CHANNELS, 250.0, s, seed=i).T, "fs": 250.0, "chan": list(OPENBMI_CHANNELS)}
        for i, (name, s) in enumerate((("EEG_MI_train", train_s), ("EEG_MI_test", test_s)))
    }
    MAT_WRITERS[version](path, halves)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_data_list_reads_each_variable_as_its_own_segment(tmp_path: Path, version: str) -> None:
    """`mat.data` as a list: the variables' samples one after the other (as pymatreader reads them), each
    its own segment, so a 10-s window never joins the end of train to the start of test."""
    import pymatreader

    path = tmp_path / "sess01_subj01_EEG_MI.mat"
    _openbmi_halves_mat(path, version, 15.0, 16.0)
    theirs = pymatreader.read_mat(str(path))
    layout = {**OPENBMI_LAYOUT, "data": ["EEG_MI_train.x", "EEG_MI_test.x"]}
    with open_recording(_source(path), _recipe(tmp_path, "mat", "*.mat", mat=MatLayout(**layout))) as reader:
        assert reader.segments(250.0) == [(0, 3750, 0.0), (3750, 7750, 15.0)]
        expected = np.concatenate([theirs["EEG_MI_train"]["x"], theirs["EEG_MI_test"]["x"]])
        np.testing.assert_array_equal(_whole(reader), expected.astype(np.float32))
        _check_ranges(reader, [14, 0, 5])  # ranges across the two variables' border too
    files = _ingest(tmp_path / "run", tmp_path, "mat", "*.mat", mat=layout)
    assert files[path.name]["samples"] == 2  # 15 s → 1 window, 16 s → 1; as one 31-s run it would be 3


WEIBO_CHANNELS = ("Fp1", "Fpz", "Fp2", "F7", "F3", "Fz", "F4", "F8", "C3", "Cz", "C4", "P3", "Pz", "P4", "O1")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
@pytest.mark.parametrize("orientation", ["channels_first", "samples_first"])
def test_mat_3d_variable_reads_each_trial_along_trial_axis(
    tmp_path: Path, version: str, orientation: str
) -> None:
    """Weibo2014's `data`, channels × samples × trials as MATLAB shows it (and other placements of the
    trial axis): each trial is a segment whose samples are pymatreader's slice along that axis."""
    import pymatreader

    rng = np.random.default_rng(0)
    trials = [rng.normal(0, 20, (len(WEIBO_CHANNELS), 600)) for _ in range(3)]  # channels × samples each
    if orientation == "samples_first":
        trials = [t.T for t in trials]
    for trial_axis in (2, 0, 1):
        path = tmp_path / f"subject_{trial_axis}.mat"
        MAT_WRITERS[version](path, {"data": np.stack(trials, axis=trial_axis)})
        theirs = pymatreader.read_mat(str(path))["data"]
        layout = MatLayout(
            data="data", orientation=orientation, sfreq="200", channels=WEIBO_CHANNELS, trial_axis=trial_axis
        )
        with open_recording(_source(path), _recipe(tmp_path, "mat", "*.mat", mat=layout)) as reader:
            assert reader.segments(200.0) == [(0, 600, 0.0), (600, 1200, 3.0), (1200, 1800, 6.0)]
            per_trial = [np.take(theirs, k, axis=trial_axis) for k in range(3)]
            expected = np.concatenate([t if orientation == "samples_first" else t.T for t in per_trial])
            np.testing.assert_array_equal(_whole(reader), expected.astype(np.float32))
            _check_ranges(reader, [14, 0, 5])


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_3d_variable_without_or_with_a_wrong_trial_axis_is_one_read_error(
    tmp_path: Path, version: str
) -> None:
    path = tmp_path / "subject_1.mat"
    MAT_WRITERS[version](path, {"data": np.zeros((15, 600, 3)), "flat": np.zeros((15, 600))})
    cases = {  # layout → the one line naming the variable, its shape and what to set
        ("data", None): r"^data has shape \(15, 600, 3\): expected channels × samples \(2-D\), or set "
        r"mat\.trial_axis to the axis holding trials of a 3-D variable$",
        ("data", 0): r"^15 channel labels for 600 channels in data \(15, 600, 3\) \(orientation "
        r"channels_first, mat\.trial_axis 0: is it the other way round\?\)$",
        ("flat", 2): r"^flat has shape \(15, 600\): mat\.trial_axis 2 needs a 3-D variable$",
    }
    for (data, trial_axis), message in cases.items():
        layout = MatLayout(data=data, sfreq="200", channels=WEIBO_CHANNELS, trial_axis=trial_axis)
        recipe = _recipe(tmp_path, "mat", "*.mat", mat=layout)
        with pytest.raises(ReadError, match=message), open_recording(_source(path), recipe):
            pass


def test_mat_layout_is_typed_documented_and_required_for_format_mat(tmp_path: Path) -> None:
    from dataclasses import fields

    from eegfm.config import field_docs
    from eegfm.ingest.recipe import RecipeError

    assert set(field_docs(MatLayout)) == {f.name for f in fields(MatLayout)}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**_recipe_fields(tmp_path), "format": "mat", "mat": SEED_LAYOUT}))
    assert load_recipe(str(path)).mat.sfreq == "200"
    assert load_recipe(str(path), ["mat.sfreq=250"]).mat.sfreq == "250"  # a YAML number is kept as text
    with pytest.raises(RecipeError, match=r"mat\.orientation must be channels_first or samples_first"):
        load_recipe(str(path), ["mat.orientation=sideways"])
    with pytest.raises(RecipeError, match=r"format mat needs `mat\.data` or `mat\.trials`"):
        load_recipe(str(path), ["mat.trials=''"])
    listed = load_recipe(str(path), ["mat.data=[a.x,b.x]", "mat.trial_axis=2"]).mat
    assert listed.variables == ("a.x", "b.x") and listed.trial_axis == 2
    assert load_recipe(str(path), ["mat.data=EEG.x"]).mat.variables == ("EEG.x",)  # one name still works
    with pytest.raises(RecipeError, match=r"mat\.trial_axis must be 0, 1 or 2 .*got 3"):
        load_recipe(str(path), ["mat.trial_axis=3"])
    with pytest.raises(RecipeError, match=r"mat\.data must be a variable \(struct path\) or a list"):
        load_recipe(str(path), ["mat.data=[a.x,'']"])


@pytest.mark.s3
def test_remote_wfdb_and_cnt_are_copied_beside_each_other_and_read_alike(s3_env, tmp_path: Path) -> None:
    """wfdb and MNE open paths only: from s3 the .hea and the .dat it names (or the .cnt) are copied to a
    temporary folder, which is gone once the reader closes; a .dat missing remotely is named."""
    import fsspec

    header, _ = _icare(tmp_path, duration_s=4.0)
    cnt = tmp_path / "1_1.cnt"
    write_cnt(cnt, _eeg(ICARE_CHANNELS, 200.0, 4.0), ICARE_CHANNELS, 200)
    fs = fsspec.filesystem("s3")
    fs.mkdir("formats")
    for path in (header, header.with_suffix(".dat"), cnt):
        fs.put(str(path), f"formats/{path.name}")
    fs.pipe("formats/broken.hea", header.read_bytes().replace(b"0284_001_004_EEG", b"broken"))
    recipe = _recipe(tmp_path, "auto", "*")
    for path in (header, cnt):
        remote = SourceFile(
            path.name, f"s3://formats/{path.name}", path.stat().st_size, "s", "", "r", "ar", "train"
        )
        with open_recording(_source(path), recipe) as local, open_recording(remote, recipe) as copied:
            np.testing.assert_array_equal(_whole(copied), _whole(local))
            folder = Path(getattr(copied, "record_name", None) or copied.raw.filenames[0]).parent
            assert folder.name.startswith("eegfm-copy-")
        assert not folder.exists()
    broken = SourceFile("broken.hea", "s3://formats/broken.hea", 1, "s", "", "r", "ar", "train")
    with pytest.raises(ReadError, match=r"missing file broken\.dat \(the header names it"):
        open_recording(broken, recipe).__enter__()


def test_brain_invaders_2014b_reads_each_players_columns_from_their_own_file(tmp_path: Path) -> None:
    """bi2014b's `samples` hold both players' 32 EEG columns (1–32, 33–64); moabb reads player 1 from
    group_NN_sujet_01.mat and player 2 from group_NN_sujet_02.mat. `mat.channels_by_path` picks them per
    file; the other player's columns are dropped, not kept as EEG (once, labelled `P2-Fp1`, they were
    kept as 32 bipolar channels)."""
    from eegfm.ingest.channel_plan import plan_channels

    recipe = load_recipe("bi2014b", root=str(tmp_path))
    columns = np.random.default_rng(3).normal(0, 20, (4 * 512, 66))  # time, 32 + 32 EEG, stimulation
    first_column = {"group_01/group_01_sujet_01.mat": 1, "group_01/group_01_sujet_02.mat": 33}
    for rel, first in first_column.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mat_v5(path, {"samples": columns})
        source = SourceFile(rel, str(path), path.stat().st_size, "s", "", "r", "unknown", "train")
        with open_recording(source, recipe) as reader:
            plan = plan_channels(reader.signals, recipe)
            assert [c.name for c in plan.channels] == list(recipe.example_channels), rel
            assert all(not c.pair for c in plan.channels)
            read = reader.read(plan.signals, plan.scales, 0, 4 * 512)
        np.testing.assert_allclose(read, columns[:, first : first + 32].astype(np.float32), rtol=1e-6)
