"""Every recipe end to end on its fixture corpus: the contract holds and each quirk gets its decision."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from shardcheck import check_contract, read_shard

from eegfm.ingest.fixtures import RECIPES, Signal, generate_corpus, simulate_eeg, write_edf
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.recipe import load_recipe
from eegfm.ingest.run import run_shards


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict, dict]]:
    done = {}
    for recipe in RECIPES:
        base = tmp_path_factory.mktemp(recipe)
        made = generate_corpus(recipe, base / "corpus", seed=1, n_subjects=3, duration_s=40)
        run_shards(load_recipe(recipe, root=str(base / "corpus")), str(base / "out"), progress=False)
        done[recipe] = (base / "out", check_contract(base / "out"), made)
    return done


def _files(ingested: dict, recipe: str) -> dict[str, dict]:
    return {f["path"]: f for f in ingested[recipe][1]["files"]}


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_file_accounted_and_the_contract_holds(ingested: dict, recipe: str) -> None:
    out, manifest, made = ingested[recipe]
    assert sorted(f["path"] for f in manifest["files"]) == sorted(made)
    assert manifest["totals"]["samples"] > 0
    urls = [str(out / s["url"]) for s in manifest["shards"]]
    plain = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False))  # plain webdataset reads them too
    assert plain == manifest["totals"]["samples"]
    subjects_by_split: dict[str, set[str]] = {}
    for f in manifest["files"]:
        if f["status"] == "written":
            subjects_by_split.setdefault(f["split"], set()).add(f["subject"])
    splits = list(subjects_by_split.values())
    assert all(a.isdisjoint(b) for i, a in enumerate(splits) for b in splits[i + 1 :])


def test_tueg_quirks(ingested: dict) -> None:
    files = _files(ingested, "tueg")
    made = ingested["tueg"][2]
    by_quirk = {q: files[p] for p, quirks in made.items() for q in quirks}
    assert "record count -1" in by_quirk["records_minus_one"]["notes"][0]
    assert "truncated" in by_quirk["truncated_last_record"]["notes"][0]
    for quirk in ("records_minus_one", "truncated_last_record", "non_ascii_header", "date_1899"):
        assert by_quirk[quirk]["status"] == "written", quirk
    assert "duplicate label (Fz already kept)" in by_quirk["duplicate_label"]["dropped_channels"].values()
    for f in files.values():
        assert "T7" in f["channels"] and "T3" not in f["channels"]
        reasons = f["dropped_channels"]
        for label in ("IBI", "BURSTS", "SUPPR"):
            if label in reasons:
                assert reasons[label] == "non-EEG: derived (IBI/bursts/suppression)"
        assert all(not label.startswith("EEG 2") or "numbered" in r for label, r in reasons.items())
        assert f["montage_name"].split("/")[0] in ("tcp_ar", "tcp_le", "tcp_ar_a", "tcp_le_a")
    names = {f["montage_name"] for f in files.values()}
    assert {"tcp_ar/21", "tcp_le/21", "tcp_ar_a/19", "tcp_le_a/19"} <= names


def test_chbmit_bipolar_midpoints_and_dummies(ingested: dict) -> None:
    out, manifest, _ = ingested["chbmit"]
    f = next(f for f in manifest["files"] if f["status"] == "written")
    assert f["channels"][0] == "Fp1-F7" and len(f["channels"]) == 22  # 23 labels, T8-P8 twice
    sample = next(iter(read_shard(out / manifest["shards"][0]["url"]).values()))
    meta = json.loads(sample["json"])
    pos = np.load(io.BytesIO(sample["pos.npy"]))
    table = montage_positions("standard_1005")
    i = meta["channels"].index("Fp1-F7")
    assert meta["channel_pairs"][i] == ["Fp1", "F7"]
    np.testing.assert_allclose(pos[i], (np.array(table["Fp1"]) + table["F7"]) / 2, atol=1e-6)
    dummies = [f for f in manifest["files"] if "dummy channel" in f["dropped_channels"].values()]
    assert dummies


def test_eegmmidb_dot_labels_and_both_rates(ingested: dict) -> None:
    files = _files(ingested, "eegmmidb")
    assert {f["orig_sfreq"] for f in files.values()} == {128.0, 160.0}
    f = next(iter(files.values()))
    assert f["channels"][:4] == ["FC5", "FC3", "FC1", "FCz"] and "Iz" in f["channels"]


def test_sleep_edf_keeps_its_two_eeg_derivations(ingested: dict) -> None:
    for path, f in _files(ingested, "sleep-edf").items():
        if path.endswith("Hypnogram.edf"):
            assert f["status"] == "skipped" and f["reason"].startswith("annotation-only")
        else:
            assert f["channels"] == ["Fpz-Cz", "Pz-Oz"] and f["orig_sfreq"] == 100.0
            assert f["dropped_channels"]["Temp rectal"] == "non-EEG: temperature"


def test_biosemi_cap_labels_are_cap_electrodes_not_ears(ingested: dict) -> None:
    _, manifest, _ = ingested["biosemi"]
    files = list(manifest["files"])
    by_count = {len(f["channels"]): f for f in files}
    assert set(by_count) == {64, 128}
    assert by_count[64]["channels"][:3] == ["Fp1", "AF7", "AF3"]  # A1, A2, A3 of a 64-electrode cap
    assert by_count[128]["channels"][:2] == ["A1", "A2"]  # biosemi128's own names
    ear = np.array(montage_positions("standard_1005")["A1"])
    cap = np.array(montage_positions("biosemi128")["A1"])
    positions = manifest["totals"]["positions"]
    np.testing.assert_allclose(positions["A1"], cap, atol=1e-6)
    assert np.linalg.norm(cap - ear) > 0.05
    assert all(
        r == "non-EEG: external/auxiliary" for k, r in by_count[64]["dropped_channels"].items() if "EXG" in k
    )


def test_generic_edf_plus_d_windows_never_cross_the_gap(ingested: dict) -> None:
    out, manifest, _ = ingested["generic"]
    starts = []
    for shard in manifest["shards"]:
        for sample in read_shard(out / shard["url"]).values():
            meta = json.loads(sample["json"])
            if meta["source_file"] == "discontinuous.edf":
                starts.append(meta["start_s"])
    half = 25.0  # the fixture's segments: [0, 25) and [32.5, 57.5) seconds
    assert sorted(starts) == [0.0, 10.0, half + 7.5, half + 17.5]
    assert all(s + 10 <= half or s >= half + 7.5 for s in starts)


def test_blank_units_never_scale_silently(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["Fp1", "Fp2", "Cz", "Pz", "O1", "O2"]
    data = simulate_eeg(names, 200.0, 30.0, mains_hz=50.0, rng=rng)
    corpus = tmp_path / "c"
    write_edf(
        corpus / "uv.edf",
        [
            Signal(n, d, 200.0, unit="", physical_min=-3200.0, physical_max=3200.0)
            for n, d in zip(names, data, strict=True)
        ],
    )
    write_edf(
        corpus / "volts.edf",
        [
            Signal(n, d * 1e-6, 200.0, unit="", physical_min=-0.0032, physical_max=0.0032)
            for n, d in zip(names, data, strict=True)
        ],
    )
    write_edf(
        corpus / "mv.edf",
        [
            Signal(n, d * 1e-3, 200.0, unit="mV", physical_min=-3.2, physical_max=3.2)
            for n, d in zip(names, data, strict=True)
        ],
    )
    manifest = run_shards(load_recipe("generic", root=str(corpus)), str(tmp_path / "out"), progress=False)
    files = {f["path"]: f for f in manifest["files"]}
    assert files["uv.edf"]["status"] == "written" and "read as µV" in files["uv.edf"]["notes"][0]
    assert files["volts.edf"]["status"] == "skipped"
    assert all("cannot tell V, mV or µV apart" in r for r in files["volts.edf"]["dropped_channels"].values())
    assert files["mv.edf"]["status"] == "written"
    std_uv = np.array(files and _channel_std(tmp_path / "out", manifest, "uv.edf"))
    std_mv = np.array(_channel_std(tmp_path / "out", manifest, "mv.edf"))
    np.testing.assert_allclose(std_mv, std_uv, rtol=0.01)  # mV scaled ×1000 to the same µV


def _channel_std(out: Path, manifest: dict, source: str) -> list[float]:
    for shard in manifest["shards"]:
        for sample in read_shard(out / shard["url"]).values():
            meta = json.loads(sample["json"])
            if meta["source_file"] == source:
                return meta["channel_std"]
    raise AssertionError(source)


def test_flat_channels_and_bad_windows_are_dropped_with_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["Fp1", "Fp2", "C3", "C4", "O1", "O2"]
    data = simulate_eeg(names, 250.0, 60.0, mains_hz=50.0, rng=rng)
    data[1] = 0.0  # a dead channel
    data[2:, 250 * 15 : 250 * 45] = 0.0  # 4 of 6 channels flat for 30 s: the two windows inside it
    write_edf(
        tmp_path / "c" / "x.edf",
        [
            Signal(n, d, 250.0, physical_min=-3200.0, physical_max=3200.0)
            for n, d in zip(names, data, strict=True)
        ],
    )
    manifest = run_shards(
        load_recipe("generic", root=str(tmp_path / "c")), str(tmp_path / "o"), progress=False
    )
    (f,) = manifest["files"]
    assert f["status"] == "written" and "Fp2" not in f["channels"] and len(f["channels"]) == 5
    assert f["dropped_channels"]["Fp2"].startswith("flat/dead")
    assert f["dropped_windows"] == {"too_few_good_channels": 2}
    assert f["samples"] == 4
    assert manifest["totals"]["dropped_window_reasons"] == {"too_few_good_channels": 2}
