"""Layout `bids`: a BIDS tree written by mne-bids (`ingest/bids_fixtures.py`) → shards through `eegfm shards
--dataset bids`, with ids from the entities, channels.tsv's types and bad marks, eeg.json's mains and
reference, and each subject's digitised electrode positions in MNE's head frame; the same tree in
BrainVision and EEGLAB (.set with and without .fdt) gives the same shards."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shardcheck import check_contract, read_shard

from eegfm.ingest import contract
from eegfm.ingest.bids import head_frame_positions, remote_view, with_sidecar
from eegfm.ingest.bids_fixtures import (
    BAD,
    BAD_DESCRIPTION,
    CHANNELS,
    EEG,
    EOG,
    MISC,
    OFFSET_M,
    BidsTruth,
    write_bids_tree,
)
from eegfm.ingest.channel_plan import plan_channels, unit_scale
from eegfm.ingest.dryrun import FilePrediction, dry_run, predict_file
from eegfm.ingest.formats import open_recording
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.recipe import Recipe, discover, load_recipe
from eegfm.ingest.signals import Signal

TEMPLATE = "standard_1005"  # configs/datasets/bids.yaml's positions


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> BidsTruth:
    return write_bids_tree(tmp_path_factory.mktemp("bids") / "ds")


@pytest.fixture(scope="module")
def ingested(tree: BidsTruth, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict]]:
    """`eegfm shards --dataset bids --root <tree>` (what `make shards DATASET=bids ROOT=…` runs): the
    manifest and every sample as (meta, positions, eeg)."""
    return shards_of(tree.root, tmp_path_factory.mktemp("bids-shards"))


def shards_of(root: Path | str, out: Path) -> tuple[dict[str, Any], list[dict]]:
    command = [sys.executable, "-m", "eegfm.cli", "shards", "--dataset", "bids", "--root", str(root)]
    done = subprocess.run([*command, "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = check_contract(out)
    samples = []
    for shard in manifest["shards"]:
        for members in read_shard(out / shard["url"]).values():
            samples.append(
                {
                    "meta": json.loads(members[contract.META_SUFFIX]),
                    "pos": np.load(io.BytesIO(members[contract.POS_SUFFIX])),
                    "eeg": np.load(io.BytesIO(members[contract.EEG_SUFFIX])).astype(np.float32),
                }
            )
    manifest["report"] = (out / contract.REPORT_NAME).read_text()
    return manifest, samples


@pytest.mark.s3
@pytest.mark.slow
def test_a_bids_dataset_in_object_storage_ingests_like_its_local_copy(
    tree: BidsTruth, ingested: tuple[dict, list[dict]], s3_env: Any, tmp_path: Path
) -> None:
    """OpenNeuro's datasets live in S3, as corpora at cluster scale do: the tree uploaded to the S3 server
    and ingested from s3:// (mne-bids walks a local view of its sidecars; the data are read remotely)
    gives the same files (subjects, splits, sizes, outcomes) and the same samples (ids, positions, µV) as
    the local tree. Until this, an s3:// BIDS root was refused with one line."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_env.storage_options, skip_instance_cache=True)
    fs.mkdir("bids-remote")
    fs.put(str(tree.root), "bids-remote/ds", recursive=True)
    fs.pipe_file("bids-remote/ds/derivatives/clean/sub-01/eeg/sub-01_eeg.json", b"{}")  # never a recording
    view = tmp_path / "view"
    sizes = remote_view("s3://bids-remote/ds", view)
    for rel, size in sizes.items():  # sidecars and headers copied byte for byte, data files empty
        local, copied = tree.root / rel, view / rel
        assert local.stat().st_size == size
        assert copied.read_bytes() == (
            local.read_bytes() if rel.endswith((".json", ".tsv", ".vhdr")) else b""
        )
    assert not (view / "derivatives").exists() and len(sizes) == sum(
        1 for p in tree.root.rglob("*") if p.is_file()
    )
    found = {f.path: f for f in discover(load_recipe("bids", root="s3://bids-remote/ds"))}
    for f in discover(load_recipe("bids", root=str(tree.root))):  # sizes (data + companions) from the listing
        assert (found[f.path].size, found[f.path].split, found[f.path].bids) == (f.size, f.split, f.bids)
    assert found[f.path].url == f"s3://bids-remote/ds/{f.path}" and len(found) == len(tree.recordings)
    manifest, samples = shards_of("s3://bids-remote/ds", tmp_path / "shards")
    local_manifest, local_samples = ingested
    outcomes = ("path", "status", "subject", "split", "samples", "channels", "notes")
    assert [[f[k] for k in outcomes] for f in manifest["files"]] == [
        [f[k] for k in outcomes] for f in local_manifest["files"]
    ]
    remote = {(s["meta"]["source_file"], s["meta"]["start_s"]): s for s in samples}
    local = {(s["meta"]["source_file"], s["meta"]["start_s"]): s for s in local_samples}
    assert remote.keys() == local.keys() and len(remote) == len(samples) > 0
    for key, sample in remote.items():
        assert sample["meta"] == local[key]["meta"], key
        np.testing.assert_array_equal(sample["pos"], local[key]["pos"])
        np.testing.assert_array_equal(sample["eeg"], local[key]["eeg"])


def by_subject(samples: list[dict]) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for s in samples:
        grouped[s["meta"]["subject"]].append(s)
    return grouped


@pytest.mark.slow
def test_recordings_and_ids_come_from_the_bids_entities(tree: BidsTruth) -> None:
    files = discover(load_recipe("bids", root=str(tree.root)))
    assert {f.path: f.subject for f in files} == tree.recordings
    sessions = {f.path: f.session for f in files}
    assert sessions["sub-01/ses-2/eeg/sub-01_ses-2_task-rest_eeg.edf"] == "2"
    assert sessions["sub-02/eeg/sub-02_task-rest_run-2_eeg.edf"] == ""
    recordings = {f.recording for f in files}
    assert len(recordings) == len(files)  # runs and sessions stay apart
    assert {f.bids.entities.get("run") for f in files if f.subject == "02"} == {"1", "2"}
    splits = defaultdict(set)
    for f in files:
        splits[f.subject].add(f.split)
    assert all(len(s) == 1 for s in splits.values()), splits
    # bids_tasks filters by the task entity; exclude_subjects takes BIDS's sub- ids too.
    rest = discover(
        load_recipe("bids", ["bids_tasks=[rest]", "exclude_subjects=[sub-04]"], root=str(tree.root))
    )
    assert {f.bids.entities["task"] for f in rest} == {"rest"} and len(rest) == len(files) - 1
    assert [f.skip_reason for f in rest if f.subject == "04"] == ["subject excluded by the recipe (04)"]


@pytest.mark.slow
def test_digitised_positions_reach_the_shards_in_the_head_frame(
    tree: BidsTruth, ingested: tuple[dict, list[dict]]
) -> None:
    """Subject 01 (CapTrak, mm) and 02 (a rotated, shifted native frame with landmarks): every shard's
    positions are the subject's measured cap within 1 mm; the template is ≥ 4 mm off (negative control)."""
    _, samples = ingested
    template = montage_positions(TEMPLATE)
    grouped = by_subject(samples)
    for subject, cap in tree.digitised.items():
        assert grouped[subject], f"no shards of sub-{subject}"
        for sample in grouped[subject]:
            meta = sample["meta"]
            assert meta["positions_source"] == "digitized"
            truth = np.array([cap[name] for name in meta["channels"]])
            error_mm = np.linalg.norm(sample["pos"] - truth, axis=1) * 1000
            assert error_mm.max() < 1.0, dict(zip(meta["channels"], error_mm.round(2), strict=True))
            off_template_mm = np.linalg.norm(
                truth - np.array([template[n] for n in meta["channels"]]), axis=1
            )
            assert off_template_mm.min() * 1000 > 0.8 * OFFSET_M * 1000 > 1.0


@pytest.mark.slow
def test_recordings_without_usable_positions_get_the_template_with_a_note(
    tree: BidsTruth, ingested: tuple[dict, list[dict]]
) -> None:
    manifest, samples = ingested
    template = montage_positions(TEMPLATE)
    grouped = by_subject(samples)
    for subject in tree.template_fallback:
        for sample in grouped[subject]:
            assert sample["meta"]["positions_source"] == f"template:{TEMPLATE}"
            expected = np.array([template[n] for n in sample["meta"]["channels"]], dtype=np.float32)
            np.testing.assert_array_equal(sample["pos"], expected)
    notes = {f["subject"]: f["notes"] for f in manifest["files"]}
    assert any("'Other' without anatomical landmarks" in n for n in notes["04"]), notes["04"]
    assert not any("digitised" in n for n in notes["03"])  # no electrodes.tsv: nothing to say
    assert "5 of 7 recordings written have digitised positions" in manifest["report"]


@pytest.mark.slow
def test_channels_tsv_types_and_bad_marks_drop_channels_with_reasons(
    ingested: tuple[dict, list[dict]],
) -> None:
    """Fpz (EOG) and Iz (MISC) have scalp names: only channels.tsv says they are not EEG."""
    manifest, samples = ingested
    for f in manifest["files"]:
        assert f["status"] == "written", f
        assert f["dropped_channels"][BAD] == f"marked bad: status bad in channels.tsv ({BAD_DESCRIPTION})"
        assert f["dropped_channels"][EOG].startswith("channel type eog (not EEG)")
        assert f["dropped_channels"][MISC].startswith("channel type misc (not EEG)")
    assert manifest["totals"]["dropped_channel_reasons"]["marked bad: status bad in channels.tsv"] == 7
    assert not any({BAD, EOG, MISC} & set(s["meta"]["channels"]) for s in samples)


@pytest.mark.slow
def test_no_subject_in_two_splits(ingested: tuple[dict, list[dict]]) -> None:
    _, samples = ingested
    splits = defaultdict(set)
    for s in samples:
        splits[s["meta"]["subject"]].add(s["meta"]["split"])
    assert set(splits) == {"01", "02", "03", "04"}
    assert all(len(v) == 1 for v in splits.values()), splits


@pytest.mark.slow
def test_sidecar_facts_reach_the_metadata(tree: BidsTruth, ingested: tuple[dict, list[dict]]) -> None:
    manifest, samples = ingested
    grouped = by_subject(samples)
    for subject, rows in grouped.items():
        meta = rows[0]["meta"]
        participant = tree.participants[f"sub-{subject}"]
        assert meta["participant"] == {k: (None if v == "n/a" else v) for k, v in participant.items()}
        assert meta["mains_hz"] == tree.mains_hz[subject]
        assert meta["bids"]["subject"] == subject and meta["bids"]["task"] in ("rest", "oddball")
    references = {s["meta"]["subject"]: s["meta"]["reference"] for s in samples}
    assert references == {"01": "ar", "02": "cz", "03": "unknown", "04": "unknown"}
    events = {s["meta"]["source_file"]: s["meta"]["events"] for s in grouped["01"]}
    assert all(e.endswith("_events.tsv") and (tree.root / e).is_file() for e in events.values()), events
    notes = {f["subject"]: f["notes"] for f in manifest["files"]}
    assert "mains 60 Hz from eeg.json PowerLineFrequency (recipe: 50 Hz)" in notes["03"]
    assert "channels.tsv lists channels the file lacks: EXTRA1" in notes["04"]
    assert "channels.tsv does not list the file's channels: O2 (type from the file)" in notes["04"]
    assert any(n.startswith("eeg.json SamplingFrequency 500 Hz") for n in notes["04"]), notes["04"]


@pytest.mark.slow
def test_the_notch_is_the_recordings_power_line_frequency(ingested: tuple[dict, list[dict]]) -> None:
    """sub-03 hums at 60 Hz and says so in eeg.json; the recipe says 50 Hz. Its shards have the 60 Hz line
    notched out (a 50 Hz notch would leave it standing far above its neighbours, as in the raw file)."""
    _, samples = ingested
    eeg = np.concatenate([s["eeg"] for s in by_subject(samples)["03"]], axis=1)
    spectrum = np.abs(np.fft.rfft(eeg, axis=1)).mean(axis=0)
    freqs = np.fft.rfftfreq(eeg.shape[1], 1 / 200.0)
    line = spectrum[np.abs(freqs - 60.0) < 0.3].max()
    around = np.median(spectrum[(np.abs(freqs - 60.0) > 2) & (np.abs(freqs - 60.0) < 6)])
    assert line < 3 * around, f"60 Hz line {line:.3g} vs {around:.3g} around it"


def test_coordinate_systems_that_cannot_reach_the_head_frame_are_refused(tmp_path: Path) -> None:
    electrodes = tmp_path / "electrodes.tsv"
    coordsystem = tmp_path / "coordsystem.json"
    template = montage_positions(TEMPLATE)
    rows = "".join(f"{n}\t{x}\t{y}\t{z}\n" for n, (x, y, z) in list(template.items())[:20])
    electrodes.write_text("name\tx\ty\tz\n" + rows)

    def system(**fields: Any) -> dict | str:
        coordsystem.write_text(json.dumps(fields))
        return head_frame_positions(electrodes, coordsystem)

    assert "units 'n/a'" in system(EEGCoordinateSystem="CapTrak", EEGCoordinateUnits="n/a")
    assert "without anatomical landmarks" in system(EEGCoordinateSystem="EEGLAB", EEGCoordinateUnits="m")
    # metres written but declared mm: 1000× too small for a head, whatever the frame says
    assert "units 'mm' or the landmarks are wrong" in system(
        EEGCoordinateSystem="CapTrak", EEGCoordinateUnits="mm"
    )
    positions, name = system(EEGCoordinateSystem="CapTrak", EEGCoordinateUnits="m")
    assert name == "CapTrak" and positions["Fp1"] == pytest.approx(template["Fp1"])


def test_plan_channels_takes_a_recordings_own_positions(tmp_path: Path) -> None:
    recipe = load_recipe("generic", root=str(tmp_path))
    signals = [Signal(i, label, "uV", 256.0) for i, label in enumerate(["EEG Fp1-REF", "Cz", "C3-P3"])]
    measured = {"EEG Fp1-REF": (0.01, 0.1, 0.02), "C3": (-0.06, 0.0, 0.1), "P3": (-0.05, -0.06, 0.1)}
    plan = plan_channels(signals, recipe, measured)
    positions = {c.name: c.position for c in plan.channels}
    assert positions["Fp1"] == (0.01, 0.1, 0.02)  # by file label
    assert positions["C3-P3"] == pytest.approx((-0.055, -0.03, 0.1))  # midpoint of measured electrodes
    assert positions["Cz"] == montage_positions(recipe.positions)["Cz"]  # not measured: template
    assert plan.measured == [True, False, True]
    assert plan_channels(signals, recipe).measured == []


def test_a_measured_electrode_without_a_10_05_name_is_kept_at_its_position(tmp_path: Path) -> None:
    """EGI/ANT caps and custom nets name electrodes outside 10-05 (`E17`, `LD3`): with electrodes.tsv
    giving their position, they are scalp EEG the models can place, so they are kept under their label."""
    recipe = load_recipe("generic", root=str(tmp_path))
    labels = ["Cz", "E17", "EEG LD3-REF", "HEOG", "E99"]
    signals = [Signal(i, label, "uV", 256.0) for i, label in enumerate(labels)]
    measured = {"E17": (0.03, 0.02, 0.1), "LD3": (-0.04, 0.05, 0.08), "HEOG": (0.07, 0.08, 0.0)}
    plan = plan_channels(signals, recipe, measured)
    assert {c.name: c.position for c in plan.channels} == {
        "Cz": montage_positions(recipe.positions)["Cz"],
        "E17": (0.03, 0.02, 0.1),
        "LD3": (-0.04, 0.05, 0.08),  # by its stripped label
    }
    assert plan.measured == [False, True, True]
    assert plan.dropped["HEOG"] == "non-EEG: EOG"  # measured, yet its label says it is not EEG
    assert plan.dropped["E99"].startswith("no position")  # not measured: no position to give it
    # Negative control: without the recording's positions, both are dropped as before.
    template_only = plan_channels(signals, recipe)
    assert [c.name for c in template_only.channels] == ["Cz"]
    assert template_only.dropped["E17"].startswith("no position")


# -- The same tree in BrainVision and EEGLAB ---------------------------------------------------------------

DATA_EXTENSIONS = {"BrainVision": ".vhdr", "EEGLAB": ".set"}


@pytest.fixture(scope="module", params=list(DATA_EXTENSIONS))
def other_format(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BidsTruth, dict[str, Any], list[dict]]:
    """The tree of `tree` with its data files in BrainVision or EEGLAB, ingested once per format."""
    fmt = request.param
    tree = write_bids_tree(tmp_path_factory.mktemp(f"bids-{fmt}") / "ds", data_format=fmt)
    return (tree, *shards_of(tree.root, tmp_path_factory.mktemp(f"bids-{fmt}-shards")))


@pytest.mark.slow
def test_brainvision_and_eeglab_trees_reach_the_shards_like_the_edf_tree(
    other_format: tuple[BidsTruth, dict, list[dict]], ingested: tuple[dict, list[dict]]
) -> None:
    """Digitised positions within 1 mm, the same channels dropped for the same reasons, and the same µV:
    every window equals the EDF tree's within one float16 step (same simulated signals; EDF's 16-bit steps
    and float16 rounding are the only differences)."""
    tree, manifest, samples = other_format
    extension = {Path(rel).suffix for rel in tree.recordings}
    assert len(extension) == 1 and extension <= set(DATA_EXTENSIONS.values())
    for f in manifest["files"]:
        assert f["status"] == "written", f
        assert f["dropped_channels"][BAD] == f"marked bad: status bad in channels.tsv ({BAD_DESCRIPTION})"
        assert f["dropped_channels"][EOG].startswith("channel type eog (not EEG)")
        assert f["dropped_channels"][MISC].startswith("channel type misc (not EEG)")
    grouped = by_subject(samples)
    for subject, cap in tree.digitised.items():
        assert grouped[subject], f"no shards of sub-{subject}"
        for sample in grouped[subject]:
            assert sample["meta"]["positions_source"] == "digitized"
            truth = np.array([cap[name] for name in sample["meta"]["channels"]])
            assert np.linalg.norm(sample["pos"] - truth, axis=1).max() * 1000 < 1.0
    for subject in tree.template_fallback:
        assert {s["meta"]["positions_source"] for s in grouped[subject]} == {f"template:{TEMPLATE}"}

    edf_manifest, edf_samples = ingested
    edf_windows = {(s["meta"]["recording"], s["meta"]["window_index"]): s for s in edf_samples}
    assert len(samples) == len(edf_samples) == len(edf_windows)
    assert {f["recording"]: f["dropped_channels"] for f in manifest["files"]} == {
        f["recording"]: f["dropped_channels"] for f in edf_manifest["files"]
    }
    for sample in samples:
        edf = edf_windows[(sample["meta"]["recording"], sample["meta"]["window_index"])]
        assert sample["meta"]["channels"] == edf["meta"]["channels"]
        np.testing.assert_allclose(sample["pos"], edf["pos"], atol=1e-6)
        np.testing.assert_allclose(sample["eeg"], edf["eeg"], rtol=1e-3, atol=0.02)  # one float16 step


@pytest.mark.slow
def test_brainvision_and_eeglab_readers_give_back_the_written_microvolts(
    other_format: tuple[BidsTruth, dict, list[dict]],
) -> None:
    """What the ingest reads (format reader + channels.tsv, each signal in µV by its unit) is the µV
    written into the file, to float32 precision; discovery's size counts the companions the reader opens."""
    tree = other_format[0]
    recipe = load_recipe("bids", root=str(tree.root))
    sources = discover(recipe)
    assert {s.path for s in sources} == set(tree.recordings)
    for source in sources:
        data_file = tree.root / source.path
        companions = {".vhdr": (".vmrk", ".eeg"), ".set": (".fdt",)}[data_file.suffix]
        expected = [data_file, *(p for e in companions if (p := data_file.with_suffix(e)).exists())]
        assert source.size == sum(p.stat().st_size for p in expected), source.path
        with open_recording(source, recipe) as opened:
            reader = with_sidecar(opened, source.bids)
            assert [s.label for s in reader.signals] == list(CHANNELS)
            volts = [
                (i, s, scale[0])
                for i, s in enumerate(reader.signals)
                if isinstance(scale := unit_scale(s), tuple)
            ]
            assert len(volts) >= len(CHANNELS) - 1  # MISC may have no unit: dropped as such
            n = round(reader.duration_s * reader.signals[0].sfreq)
            read = reader.read([s for _, s, _ in volts], [scale for _, _, scale in volts], 0, n)
        written = tree.written_uv[source.path][[i for i, _, _ in volts]]
        np.testing.assert_allclose(read.T, written, rtol=1e-5, atol=1e-3)
    fdt_files = list(tree.root.rglob("*.fdt"))  # sub-01's and sub-02's EEGLAB data (5 recordings)
    assert len(fdt_files) == (5 if data_file.suffix == ".set" else 0), fdt_files


@pytest.mark.slow
def test_a_brainvision_recording_counts_the_data_file_its_header_names(tmp_path: Path) -> None:
    """A renamed recording whose header still names the old .eeg (the reader follows the header): its size
    counts that file, so a change to it changes the run's inputs."""
    tree = write_bids_tree(tmp_path / "ds", duration_s=12.0, data_format="BrainVision")
    rel = next(r for r, subject in tree.recordings.items() if subject == "03")
    vhdr = tree.root / rel
    vhdr.with_suffix(".eeg").rename(vhdr.with_name("recorded.eeg"))
    vhdr.write_text(vhdr.read_text().replace(f"DataFile={vhdr.stem}.eeg", "DataFile=recorded.eeg"))
    recipe = load_recipe("bids", root=str(tree.root))
    (source,) = [s for s in discover(recipe) if s.path == rel]
    files = [vhdr, vhdr.with_suffix(".vmrk"), vhdr.with_name("recorded.eeg")]
    assert source.size == sum(p.stat().st_size for p in files)
    with open_recording(source, recipe) as reader:
        assert reader.duration_s == pytest.approx(12.0)


@pytest.mark.slow
def test_the_dry_run_predicts_the_bids_ingest(tree: BidsTruth, ingested: tuple[dict, list[dict]]) -> None:
    """The dry run applies channels.tsv and the digitised positions as the ingest does: its kept and
    dropped channels and its positions equal the manifest's (without the sidecars it predicted the bad C4
    and the EOG Fpz as kept)."""
    manifest, _ = ingested
    report = dry_run(load_recipe("bids", root=str(tree.root)))
    predicted = {f["path"]: f for f in report["per_file"]}
    for line in manifest["files"]:
        guess = predicted[line["path"]]
        assert guess["status"] == "would_write" and line["status"] == "written"
        assert guess["channels"] == line["channels"], line["path"]
        assert guess["dropped_channels"] == {
            k: v for k, v in line["dropped_channels"].items() if not v.startswith("flat/dead")
        }, line["path"]


def _type_scalp_channels_misc(root: Path) -> None:
    """Every channels.tsv row typed EEG retyped MISC, as OpenNeuro's ds002680 types its scalp electrodes."""
    for tsv in root.rglob("*_channels.tsv"):
        lines = tsv.read_text(encoding="utf-8").splitlines()
        column = lines[0].split("\t").index("type")
        rows = [line.split("\t") for line in lines]
        for row in rows[1:]:
            row[column] = "MISC" if row[column] == "EEG" else row[column]
        tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def test_bids_channel_types_reads_mistyped_scalp_channels_as_eeg(tmp_path: Path) -> None:
    """A corpus whose channels.tsv types its scalp electrodes MISC: as given, the dry run (the ingest's
    own channel plan, through `with_sidecar`) drops them as non-EEG; with `bids_channel_types` {misc: EEG}
    (any case) they are kept with their digitised positions, the EOG stays dropped, and a note counts the
    retyped channels (Iz, written by mne-bids as misc, has no unit in the file: it is dropped for that)."""
    tree = write_bids_tree(tmp_path / "ds", duration_s=12.0)
    _type_scalp_channels_misc(tree.root)
    scalp = [n for n in EEG if n != BAD]
    as_given = _predictions(load_recipe("bids", root=str(tree.root)))
    for path, f in as_given.items():
        listed = [n for n in scalp if not (tree.recordings[path] == "04" and n == "O2")]  # 04's tsv omits O2
        assert all("channel type misc (not EEG)" in f.dropped_channels[n] for n in [*listed, MISC]), path
        assert f.channels == ([] if tree.recordings[path] != "04" else ["O2"]), path

    recipe = load_recipe("bids", root=str(tree.root), bids_channel_types={"misc": "EEG"})
    retyped = _predictions(recipe)
    for path, f in retyped.items():
        subject = tree.recordings[path]
        assert f.status == "would_write", (path, f.reason)
        assert f.channels == scalp, (path, f.dropped_channels)
        assert "channel type eog" in f.dropped_channels[EOG] and BAD in f.dropped_channels, path
        assert "channel type" not in f.dropped_channels[MISC], path  # now EEG; mne-bids wrote it unitless
        n = len(EEG) + 1  # every row typed MISC: the scalp ones (C4 too; 04: EXTRA1 for O2) and Iz
        assert f"channels.tsv type MISC read as EEG (recipe bids_channel_types): {n} channels" in f.notes
        if subject in tree.digitised:
            measured = [tree.digitised[subject][name] for name in scalp]
            np.testing.assert_allclose(f.positions[: len(scalp)], measured, atol=1e-5)


def _predictions(recipe: Recipe) -> dict[str, FilePrediction]:
    """The dry run's prediction of each recording (with its kept channels' positions), by path."""
    return {source.path: predict_file(source, recipe) for source in discover(recipe)}
