"""BrainVision, EEGLAB, FIF and GDF through the reader interface: the same µV as MNE reads, whole or in
chunks, through the whole ingest to shards; non-EEG channels dropped with their reason; damaged files one
manifest skip (or a note) each; remote recordings copied with their sidecars and the copy removed."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
from shardcheck import check_contract, read_shard

from eegfm.ingest.channel_plan import plan_channels
from eegfm.ingest.format_fixtures import FIXTURE_EEG, fixture_signals, write_eeglab, write_fixture, write_gdf
from eegfm.ingest.formats import format_of, open_recording
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.recipe import Recipe, discover, load_recipe
from eegfm.ingest.run import run_shards

MNE_FORMATS = ("brainvision", "eeglab", "eeglab-fdt", "fif")
PATTERNS = {"brainvision": "*.vhdr", "eeglab": "*.set", "eeglab-fdt": "*.set", "fif": "*.fif", "gdf": "*.gdf"}


def recipe_for(root: Path | str, patterns: str | list[str], tmp_path: Path) -> Recipe:
    """A test recipe: every file matching `patterns` is its own subject, format by extension."""
    globs = [patterns] if isinstance(patterns, str) else patterns
    lines = [
        "name: formats",
        f"root: {root}",
        f"include: {json.dumps([*globs, *(f'**/{g}' for g in globs)])}",
        "path_regex: '^(?P<subject>(?:[^/]+/)*[^/.]+)'",
        "positions: standard_1005",
        "reference: unknown",
        "mains_hz: 50",
        "splits: {train: 1.0}",
    ]
    path = tmp_path / "formats-recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_recipe(str(path))


def mne_microvolts(path: Path) -> tuple[list[str], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=False, verbose="error")
    return raw.ch_names, raw.get_data() * 1e6


@pytest.mark.parametrize("fmt", MNE_FORMATS)
def test_reader_gives_the_microvolts_mne_reads_whole_or_in_chunks(fmt: str, tmp_path: Path) -> None:
    path, written_uv, _ = write_fixture(fmt, tmp_path / "corpus", "rec", duration_s=12.0)
    recipe = recipe_for(tmp_path / "corpus", PATTERNS[fmt], tmp_path)
    (source,) = discover(recipe)
    assert format_of(source.path) == fmt.removesuffix("-fdt")
    with open_recording(source, recipe) as reader:
        plan = plan_channels(reader.signals, recipe)
        assert [c.name for c in plan.channels] == list(FIXTURE_EEG)
        n = round(reader.duration_s * plan.orig_sfreq)
        whole = reader.read(plan.signals, plan.scales, 0, n)
        chunks = np.vstack(
            [reader.read(plan.signals, plan.scales, a, min(a + 777, n)) for a in range(0, n, 777)]
        )
    mne_names, theirs = mne_microvolts(path)
    picks = [mne_names.index(s.label) for s in plan.signals]
    np.testing.assert_array_equal(chunks, whole)
    # float32 output of float64 µV: equal to MNE's µV within float32 rounding; a missing volts→µV scale
    # (unit "V" not applied) would be off by 10⁶.
    np.testing.assert_allclose(whole.T, theirs[picks], rtol=1e-5, atol=1e-3)
    # And the µV written: BrainVision stores 0.1-µV steps, the others float32 volts.
    np.testing.assert_allclose(whole.T, written_uv[: len(FIXTURE_EEG)], atol=0.06)


@pytest.mark.parametrize("fmt", MNE_FORMATS)
def test_non_eeg_channels_are_dropped_with_their_reason(fmt: str, tmp_path: Path) -> None:
    write_fixture(fmt, tmp_path / "corpus", "rec", duration_s=12.0)
    recipe = recipe_for(tmp_path / "corpus", PATTERNS[fmt], tmp_path)
    (source,) = discover(recipe)
    with open_recording(source, recipe) as reader:
        plan = plan_channels(reader.signals, recipe)
    typed = "channel type {} (not EEG) in the file's header or sidecar"
    if fmt == "brainvision":  # a .vhdr stores no channel types: the labels tell (MNE calls STI 014 stim)
        expected = {
            "VEOG": "non-EEG: EOG",
            "BIP1": "no position in montage standard_1005",
            "STI 014": typed.format("stim"),
        }
    else:  # EEGLAB's chanlocs.type and FIF's channel kinds: BIP1 is dropped as ECG by its type alone
        expected = {"VEOG": typed.format("eog"), "BIP1": typed.format("ecg"), "STI 014": typed.format("stim")}
    assert {k: v[: len(expected[k])] for k, v in plan.dropped.items()} == expected


@pytest.mark.parametrize("fmt", MNE_FORMATS)
def test_ingest_to_shards(fmt: str, tmp_path: Path) -> None:
    _, written_uv, _ = write_fixture(fmt, tmp_path / "corpus", "rec", duration_s=30.0)
    recipe = recipe_for(tmp_path / "corpus", PATTERNS[fmt], tmp_path)
    run_shards(recipe, str(tmp_path / "out"), progress=False)
    manifest = check_contract(tmp_path / "out")
    (written,) = manifest["files"]
    assert written["status"] == "written", written
    assert written["channels"] == list(FIXTURE_EEG) and written["orig_sfreq"] == 250.0
    assert written["samples"] == 3  # 30 s in 10-s windows
    assert set(written["dropped_channels"]) == {"VEOG", "BIP1", "STI 014"}
    samples = [
        s for shard in manifest["shards"] for s in read_shard(tmp_path / "out" / shard["url"]).values()
    ]
    meta = json.loads(samples[0]["json"])
    positions = np.load(io.BytesIO(samples[0]["pos.npy"]))
    expected = montage_positions("standard_1005")
    np.testing.assert_allclose(positions, [expected[name] for name in FIXTURE_EEG], atol=1e-4)
    # The recording's per-channel std (of the filtered µV) is of the order of the µV written: a unit slip
    # would be a factor of 10³ or 10⁶.
    ratio = np.array(meta["channel_std"]) / written_uv[: len(FIXTURE_EEG)].std(axis=1)
    assert np.all((ratio > 0.3) & (ratio < 1.2)), ratio


def test_damaged_files_are_one_skip_or_note_each(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for stem in ("whole", "short_eeg", "no_vmrk", "empty_eeg"):
        write_fixture("brainvision", corpus / stem, stem, duration_s=20.0)
    eeg = corpus / "short_eeg" / "short_eeg.eeg"
    eeg.write_bytes(eeg.read_bytes()[:-6])  # cut inside the last sample frame
    (corpus / "no_vmrk" / "no_vmrk.vmrk").unlink()
    (corpus / "empty_eeg" / "empty_eeg.eeg").write_bytes(b"")
    for stem in ("no_fdt", "short_fdt"):
        write_fixture("eeglab-fdt", corpus / stem, stem, duration_s=20.0)
    (corpus / "no_fdt" / "no_fdt.fdt").unlink()
    fdt = corpus / "short_fdt" / "short_fdt.fdt"
    fdt.write_bytes(fdt.read_bytes()[: 16 * 4 * 3000 + 10])  # 3000 whole samples of 5000, and a bit
    recipe = recipe_for(corpus, ["*.vhdr", "*.set"], tmp_path)
    manifest = run_shards(recipe, str(tmp_path / "out"), progress=False)
    files = {f["path"].split("/")[0]: f for f in manifest["files"]}
    assert files["whole"]["status"] == "written" and files["whole"]["samples"] == 2
    assert files["short_eeg"]["status"] == "written"
    assert (
        "truncated: short_eeg.eeg ends inside a sample; its 4999 complete samples are read"
        in (files["short_eeg"]["notes"])
    )
    assert (
        files["no_vmrk"]["reason"] == "unreadable: marker file no_vmrk.vmrk named by no_vmrk.vhdr is missing"
    )
    assert (
        files["empty_eeg"]["reason"]
        == "unreadable: data file empty_eeg.eeg holds no complete sample (0 bytes)"
    )
    assert files["no_fdt"]["status"] == "skipped"
    assert files["no_fdt"]["reason"].startswith("unreadable: eeglab reader (MNE): FileNotFoundError")
    assert "no_fdt.fdt" in files["no_fdt"]["reason"]
    assert files["short_fdt"]["status"] == "written" and files["short_fdt"]["samples"] == 1
    assert (
        "truncated: short_fdt.fdt holds 3000 of the 5000 samples short_fdt.set declares"
        in (files["short_fdt"]["notes"])
    )


def test_eeglab_boundaries_split_the_recording(tmp_path: Path) -> None:

    data, names, kinds = fixture_signals(250.0, 30.0)
    write_eeglab(tmp_path / "cut.set", data, 250.0, names, kinds, separate_fdt=True, boundaries_s=[12.0])
    recipe = recipe_for(tmp_path, "*.set", tmp_path)
    (source,) = discover(recipe)
    with open_recording(source, recipe) as reader:
        # EEGLAB latencies are 1-based, "boundary" lies between samples: MNE puts it at sample 2999.5 → 3000
        assert reader.segments(250.0) == [(0, 3000, 0.0), (3000, 7500, 12.0)]
    manifest = run_shards(recipe, str(tmp_path / "out"), progress=False)
    (written,) = manifest["files"]
    assert written["samples"] == 2  # 12 s + 18 s: one window each, none across the cut (3 without it)


def test_embedded_eeglab_data_cost_is_noted(tmp_path: Path) -> None:
    write_fixture("eeglab", tmp_path, "embedded", duration_s=20.0)
    recipe = recipe_for(tmp_path, "*.set", tmp_path)
    (source,) = discover(recipe)
    with open_recording(source, recipe) as reader:
        assert (
            "EEGLAB data embedded in embedded.set: read whole into memory on the first read (0 MB as float32)"
            in (reader.notes)
        )


def test_remote_brainvision_is_copied_with_its_sidecars_and_removed(s3_env, tmp_path: Path) -> None:
    import fsspec

    write_fixture("brainvision", tmp_path / "local", "remote_rec", duration_s=20.0)
    fs = fsspec.filesystem("s3")
    fs.mkdir("fmta")
    for path in (tmp_path / "local").iterdir():
        fs.put_file(str(path), f"fmta/corpus/{path.name}")
    recipe = recipe_for("s3://fmta/corpus", "*.vhdr", tmp_path)
    (source,) = discover(recipe)
    before = set(Path(tempfile.gettempdir()).glob("eegfm-mne-*"))
    with open_recording(source, recipe) as reader:
        (copy,) = set(Path(tempfile.gettempdir()).glob("eegfm-mne-*")) - before
        assert sorted(p.name for p in copy.iterdir()) == [
            "remote_rec.eeg",
            "remote_rec.vhdr",
            "remote_rec.vmrk",
        ]
        plan = plan_channels(reader.signals, recipe)
        remote = reader.read(plan.signals, plan.scales, 0, 5000)
    assert not copy.exists()
    local_recipe = recipe_for(tmp_path / "local", "*.vhdr", tmp_path)
    (local_source,) = discover(local_recipe)
    with open_recording(local_source, local_recipe) as reader:
        np.testing.assert_array_equal(reader.read(plan.signals, plan.scales, 0, 5000), remote)
    shutil.rmtree(tmp_path / "local")


# -- GDF: our own reader (ingest/gdf.py), checked against MNE's independent one ------------------------


@pytest.mark.parametrize("sample_type", ["int16", "float32"])
def test_gdf_reads_what_mne_reads(sample_type: str, tmp_path: Path) -> None:
    data, names, _ = fixture_signals(250.0, 12.0)
    path = write_gdf(
        tmp_path / "rec.gdf", data, 250.0, names, sample_type=sample_type, events=[(100, 769), (1200, 770)]
    )
    recipe = recipe_for(tmp_path, "*.gdf", tmp_path)
    (source,) = discover(recipe)
    with open_recording(source, recipe) as reader:
        assert [s.unit for s in reader.signals] == ["uV"] * len(names)
        plan = plan_channels(reader.signals, recipe)
        whole = reader.read(plan.signals, plan.scales, 0, 3000)
        chunks = np.vstack(
            [reader.read(plan.signals, plan.scales, a, min(a + 333, 3000)) for a in range(0, 3000, 333)]
        )
    np.testing.assert_array_equal(chunks, whole)
    mne_names, theirs = mne_microvolts(path)
    picks = [mne_names.index(s.label) for s in plan.signals]
    np.testing.assert_allclose(whole.T, theirs[picks], rtol=1e-5, atol=1e-3)
    step = 0.01 if sample_type == "int16" else 1e-4  # int16: half a digital step of a ±300 µV range
    np.testing.assert_allclose(whole.T, data[: len(FIXTURE_EEG)], atol=step)


@pytest.mark.parametrize(("unit", "factor"), [("mV", 1e-3), ("nV", 1e3), ("V", 1e-6), ("", 1.0)])
def test_gdf_units_come_out_in_microvolts(unit: str, factor: float, tmp_path: Path) -> None:
    """MNE 1.13 reads the nV file 10⁹ and the unit-less one 10⁶ too large; here each is the µV written
    (the unit-less one by channel_plan's heuristic on its physical range)."""
    data, _, _ = fixture_signals(250.0, 4.0)
    eeg = data[: len(FIXTURE_EEG)]
    write_gdf(tmp_path / "rec.gdf", eeg * factor, 250.0, FIXTURE_EEG, unit=unit, sample_type="float32")
    recipe = recipe_for(tmp_path, "*.gdf", tmp_path)
    (source,) = discover(recipe)
    with open_recording(source, recipe) as reader:
        plan = plan_channels(reader.signals, recipe)
        ours = reader.read(plan.signals, plan.scales, 0, 1000)
    assert len(plan.signals) == len(FIXTURE_EEG), plan.dropped
    np.testing.assert_allclose(ours.T, eeg, rtol=1e-5, atol=1e-3)


def test_gdf_ingest_to_shards_and_its_damage(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_fixture("gdf", corpus, "whole", duration_s=30.0)
    short = write_fixture("gdf", corpus, "short", duration_s=30.0)[0]
    short.write_bytes(short.read_bytes()[: -16 * 2 * 250 * 5 - 7])  # 5 records and a bit cut off
    (corpus / "old.gdf").write_bytes(b"GDF 1.25" + bytes(400))
    recipe = recipe_for(corpus, "*.gdf", tmp_path)
    manifest = run_shards(recipe, str(tmp_path / "out"), progress=False)
    files = {f["path"]: f for f in manifest["files"]}
    whole = files["whole.gdf"]
    assert whole["status"] == "written" and whole["samples"] == 3 and whole["channels"] == list(FIXTURE_EEG)
    assert whole["dropped_channels"] == {
        "VEOG": "non-EEG: EOG",
        "BIP1": "no position in montage standard_1005",  # GDF stores no channel types: labels tell
        "STI 014": "non-EEG: stim/status/marker",
    }
    assert files["short.gdf"]["samples"] == 2
    assert "truncated: header says 30 records, file holds 24 complete ones" in files["short.gdf"]["notes"]
    assert files["old.gdf"]["reason"] == "unreadable: GDF 1.x (GDF 1.25) is not read: only GDF 2.x"


@pytest.mark.slow
def test_memory_does_not_grow_with_the_recording(tmp_path: Path) -> None:
    """Peak traced memory of ingesting a 2-h BrainVision file (16 channels, 250 Hz: 115 MB of float32 on
    disk, 230 MB as MNE's float64 if preloaded) is no more than of a 20-min one: MNE reads chunk by chunk."""
    from eegfm.ingest.format_fixtures import write_long_brainvision
    from eegfm.ingest.recording import ingest_file

    peaks = {}
    for minutes in (20, 120):
        folder = tmp_path / f"{minutes}min"
        write_long_brainvision(folder, "long", minutes * 60.0)
        recipe = recipe_for(folder, "*.vhdr", tmp_path)
        (source,) = discover(recipe)
        tracemalloc.start()
        ingested = ingest_file(source, recipe)
        windows = sum(1 for _ in ingested.samples)
        peaks[minutes] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        assert windows == minutes * 6, ingested.outcome
    # Measured: 25.5 MB (20 min, with first-use caches) and 20.6 MB (2 h).
    assert peaks[120] < 1.1 * peaks[20] and peaks[120] < 64, peaks
