"""The real EDF/BDF files from MNE's testing data, through the `generic` recipe: each written or skipped."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
from shardcheck import check_contract, read_shard

from eegfm.ingest.recipe import load_recipe
from eegfm.ingest.run import run_shards

EXPECTED = {
    "BDF/multiple_annotation_chans.bdf": "written",
    "BDF/test_bdf_stim_channel.bdf": "written",
    "BDF/test_generator_2.bdf": "no EEG channel with a known position",
    "EDF/SC4001EC-Hypnogram.edf": "annotation-only file (no signal channels)",
    "EDF/chtypes_edf.edf": "shorter than one window (5 s < 10 s)",
    "EDF/pyedflib_test_subsecond_inverted_physrange.edf": "written",
    "EDF/subsecond_starttime.edf": "shorter than one window (5 s < 10 s)",
    "EDF/test_edf_overlapping_annotations.edf": "written",
    "EDF/test_generator_2.edf": "no EEG channel with a known position",
    "EDF/test_reduced.edf": "shorter than one window (6 s < 10 s)",
    "EDF/test_utf8_annotations.edf": "no EEG channel with a known position",
    "NihonKohden/MB0400FU.EDF": "written",
}


@pytest.fixture(scope="module")
def real_shards(real_edf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real")
    recipe = load_recipe("generic", root=str(real_edf_dir))
    run_shards(recipe, str(out), progress=False)
    return out, check_contract(out)


def test_every_real_file_is_written_or_skipped_with_its_reason(real_shards: tuple[Path, dict]) -> None:
    _, manifest = real_shards
    outcome = {f["path"]: f["reason"] or f["status"] for f in manifest["files"]}
    assert outcome == EXPECTED


def test_channels_of_the_real_files(real_shards: tuple[Path, dict]) -> None:
    _, manifest = real_shards
    files = {f["path"]: f for f in manifest["files"]}
    stim = files["BDF/test_bdf_stim_channel.bdf"]
    assert stim["channels"] == ["C3", "C4", "Cz"]
    assert stim["dropped_channels"] == {"Status": "non-EEG: stim/status/marker"}
    eegmmidb = files["EDF/test_edf_overlapping_annotations.edf"]  # EEGMMIDB's dot-padded labels
    assert len(eegmmidb["channels"]) == 64 and eegmmidb["channels"][:4] == ["FC5", "FC3", "FC1", "FCz"]
    nk = files["NihonKohden/MB0400FU.EDF"]
    assert nk["channels"][:2] == ["Fp2", "Fp1"] and "T7" in nk["channels"]  # `EEG T3-Ref` renamed
    assert all("no position" in r for label, r in nk["dropped_channels"].items() if label.startswith("POL"))


def test_units_and_filtering_agree_with_an_mne_pipeline(
    real_shards: tuple[Path, dict], real_edf_dir: Path
) -> None:
    out, manifest = real_shards
    name = "EDF/test_edf_overlapping_annotations.edf"
    sample = next(
        s
        for shard in manifest["shards"]
        for s in read_shard(out / shard["url"]).values()
        if json.loads(s["json"])["source_file"] == name and json.loads(s["json"])["window_index"] == 5
    )
    ours = np.load(io.BytesIO(sample["eeg.npy"])).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_edf(real_edf_dir / name, preload=True, verbose=False)
    raw.resample(200.0, verbose=False).filter(0.1, 75.0, verbose=False).notch_filter(60.0, verbose=False)
    theirs = raw.get_data()[:, 5 * 2000 : 6 * 2000] * 1e6  # volts → µV
    correlation = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
    assert correlation > 0.99
    assert 0.95 < np.std(ours) / np.std(theirs) < 1.05  # a unit error would be a factor of 1000 or 10⁶


def test_emotiv_recording_reads_as_shipped(real_eeg_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe("generic", root=str(real_eeg_dir), overrides=["preprocess.dtype=float32"])
    manifest = run_shards(recipe, str(tmp_path), progress=False)
    (written,) = [f for f in manifest["files"] if f["status"] == "written"]
    channels = json.loads((real_eeg_dir / "emotiv14.json").read_text())["channels"]
    assert written["channels"] == channels and written["orig_sfreq"] == 128.0
    (shard,) = manifest["shards"]
    (sample,) = read_shard(tmp_path / shard["url"]).values()
    meta = json.loads(sample["json"])
    shipped = np.load(real_eeg_dir / "emotiv14_128hz_16s.npy")
    # The recording's per-channel means in the metadata are of the filtered signal (≈ 0), its stds of the
    # same order as the shipped signal's after high-pass: a ×10⁶ unit slip would show at once.
    shipped_std = (shipped - shipped.mean(axis=1, keepdims=True)).std(axis=1)
    ratio = np.array(meta["channel_std"]) / shipped_std
    assert np.all((ratio > 0.2) & (ratio < 1.5)), ratio
