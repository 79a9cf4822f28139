"""Labelled shards: task recipes, label sources, window labelling, splits, and what the manifest counts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from shardcheck import check_contract, read_shard

from eegfm.errors import ConfigError, DataError
from eegfm.ingest import contract
from eegfm.ingest.labelling import label_windows
from eegfm.ingest.labels import Annotation
from eegfm.ingest.preprocess import PreprocessConfig
from eegfm.ingest.run import run_shards
from eegfm.ingest.task_fixtures import generate_task_corpus
from eegfm.ingest.tasks import Labeller, dataset_recipe, load_task
from eegfm.ingest.windows import Windower

A = Annotation
MAP = {"a": "a", "b": "b", "skip": None}
CLASSES = ("a", "b")


def _labels(mode: str, starts: list[float], window_s: float, annotations: list[Annotation]):
    result = label_windows(mode, np.array(starts, float), window_s, annotations, MAP, CLASSES, 0.0025)
    return result.labels.tolist(), result.reasons, result.missed_events


# --- how a window gets its label -------------------------------------------------------------------------


def test_covering_labels() -> None:
    annotations = [A(0, 10, "a"), A(10, 20, "b"), A(20, 25, "a"), A(30, 40, "zzz"), A(40, 50, "skip")]
    starts = [0, 5, 6, 10, 15, 20, 22, 30, 40, 48]
    labels, reasons, _ = _labels("covering", starts, 5.0, annotations)
    assert labels == [0, 0, -1, 1, 1, 0, -1, -1, -1, -1]
    assert reasons == [
        None,
        None,  # [5, 10) ends where the next label starts: touching is not overlapping
        "overlaps two labels",  # [6, 11)
        None,
        None,
        None,  # [20, 25): exactly the short annotation
        "partly outside every annotation",  # [22, 27): nothing covers 25-27
        "unknown label 'zzz'",
        "label ignored by the task 'skip'",
        "label ignored by the task 'skip'",  # [48, 53): the unknown beats 'not covered'
    ]


def test_covering_adjacent_annotations_of_one_class_cover_a_window_together() -> None:
    labels, reasons, _ = _labels("covering", [25, 28], 5.0, [A(20, 30, "b"), A(30, 40, "b"), A(40, 41, "a")])
    assert labels == [1, 1] and reasons == [None, None]


def test_recording_mode_gives_every_window_the_one_label_or_counts_why_not() -> None:
    assert _labels("recording", [0, 10, 20], 10.0, [A(0, np.inf, "b")])[:2] == ([1, 1, 1], [None] * 3)
    labels, reasons, _ = _labels("recording", [0, 10], 10.0, [A(0, np.inf, "normalish")])
    assert labels == [-1, -1] and reasons == ["unknown label 'normalish'"] * 2


def test_centred_windows_take_their_events_label_and_edge_events_are_counted() -> None:
    # 1-s events; 5-s windows centred on them start 2 s before. The first event (at 0 s) and the last
    # (at the recording's end) have no window: the windower could not cut one.
    events = [A(0, 1, "a"), A(10, 11, "a"), A(10, 11, "a"), A(20, 21, "b"), A(30, 31, "a"), A(30, 31, "b")]
    events.append(A(59, 60, "a"))
    labels, reasons, missed = _labels("centred", [8.0, 18.0, 28.0], 5.0, events)
    assert labels == [0, 1, -1] and reasons == [None, None, "overlaps two labels"]
    assert missed == Counter({"event too close to the recording's edge or a gap": 2})


# --- windows on a grid with a stride, or at requested starts -----------------------------------------------


class _Spool:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


def _cut(
    windower_kwargs: dict, segments: list[tuple[float, int]], chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Feed ramps (value = sample's time in the recording, s) through a Windower in chunks; return the
    windows' first values and starts."""
    config = PreprocessConfig(window_s=1.0, clip_uv=None, dtype="float32")
    spool = _Spool()
    w = Windower(config, 1, spool, **windower_kwargs)
    for onset, length in segments:
        w.start_segment(onset)
        ramp = (onset + np.arange(length) / 200.0).astype(np.float32)[None, :]
        for i in range(0, length, chunk):
            w.feed(ramp[:, i : i + chunk])
    data = np.frombuffer(b"".join(spool.chunks), np.float32).reshape(-1, 200)
    assert np.allclose(np.diff(data, axis=1), 1 / 200.0, atol=1e-4)  # every window is contiguous signal
    return data[:, 0], w.stats()[3]


@pytest.mark.parametrize("chunk", [37, 200, 1000])
def test_stride_windows_overlap_on_a_grid_from_each_segments_start(chunk: int) -> None:
    first, starts = _cut({"stride_s": 0.25}, [(0.0, 400), (10.0, 300)], chunk)
    expected = [0.0, 0.25, 0.5, 0.75, 1.0, 10.0, 10.25, 10.5]  # segments of 2 s and 1.5 s
    assert np.allclose(starts, expected) and np.allclose(first, expected, atol=1e-4)


@pytest.mark.parametrize("chunk", [37, 200, 1000])
def test_requested_windows_cut_where_they_fit_in_one_segment(chunk: int) -> None:
    # Segments [0, 2) and [10, 12) s; -0.5 starts before the recording, 1.5 runs into the gap, 9.9 starts
    # in it, 11.2 runs past the end: none of those can be cut.
    requested = np.array([-0.5, 0.0, 0.3, 0.35, 1.0, 1.5, 9.9, 10.0, 10.6, 11.0, 11.2])
    first, starts = _cut({"starts_s": requested}, [(0.0, 400), (10.0, 400)], chunk)
    expected = [0.0, 0.3, 0.35, 1.0, 10.0, 10.6, 11.0]
    assert np.allclose(starts, expected) and np.allclose(first, expected, atol=1e-4)


def test_a_stride_longer_than_the_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="stride"):
        Windower(PreprocessConfig(window_s=1.0), 1, _Spool(), stride_s=2.0)


# --- end to end: labelled shards ---------------------------------------------------------------------------


def _samples(out: Path) -> list[dict]:
    manifest = json.loads((out / contract.MANIFEST_NAME).read_text())
    metas = []
    for shard in manifest["shards"]:
        for members in read_shard(out / shard["url"]).values():
            metas.append(json.loads(members[contract.META_SUFFIX]))
    return metas


def _ingest(task_name: str, root: Path, out: Path, *overrides: str) -> dict:
    task = load_task(task_name, list(overrides))
    recipe = dataset_recipe(task, root=str(root))
    return run_shards(
        recipe, str(out), shard_bytes=256 * 1024, progress=False, labeller=Labeller.prepare(task, str(root))
    )


@pytest.fixture(scope="module")
def generic_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("generic-csv")
    generate_task_corpus("generic-csv", base / "corpus", seed=0, n_subjects=3, duration_s=60.0)
    manifest = _ingest("generic-csv", base / "corpus", base / "shards")
    return base / "corpus", base / "shards", manifest


def _csv_label(rows: list[dict], start: float, stop: float) -> str | None:
    """The test's own reading of the label table: the one label whose rows cover [start, stop)."""
    inside = [
        r
        for r in rows
        if float(r["start_s"]) < stop - 1e-6 and float(r["start_s"]) + float(r["duration_s"]) > start + 1e-6
    ]
    names = {r["label"] for r in inside}
    if len(names) != 1:
        return None
    covered = sum(
        min(stop, float(r["start_s"]) + float(r["duration_s"])) - max(start, float(r["start_s"]))
        for r in inside
    )
    return names.pop() if covered >= stop - start - 1e-6 else None


def test_every_window_carries_the_label_file_label_at_its_time(generic_csv: tuple[Path, Path, dict]) -> None:
    corpus, out, manifest = generic_csv
    check_contract(out, window_samples=800)
    table = defaultdict(list)
    with open(corpus / "labels.csv") as f:
        for row in csv.DictReader(f):
            table[row["path"]].append(row)
    metas = _samples(out)
    assert metas, "no labelled window written"
    for meta in metas:
        assert set(contract.TASK_META) <= set(meta)
        assert meta["task"] == "generic-csv" and meta["dataset"] == "generic-csv"
        expected = _csv_label(table[meta["source_file"]], meta["start_s"], meta["start_s"] + 4.0)
        assert meta["label_name"] == expected, meta
        assert manifest["classes"][meta["label"]] == meta["label_name"]
    # Every window of the 2-s grid that the table labels is written; the others are counted.
    for f in manifest["files"]:
        rows = table[f["path"]]
        grid = np.arange(0.0, 60.0 - 4.0 + 1e-9, 2.0)
        expected = Counter(_csv_label(rows, s, s + 4.0) for s in grid)
        labelled = {k: v for k, v in expected.items() if k in manifest["classes"]}
        assert f["class_counts"] == labelled
        assert sum(f["unlabelled"].values()) == len(grid) - sum(labelled.values())
        artifact_windows = sum(
            1
            for s in grid
            if any(
                r["label"] == "artifact"
                and float(r["start_s"]) < s + 4
                and float(r["start_s"]) + float(r["duration_s"]) > s
                for r in rows
            )
        )
        assert f["unlabelled"]["unknown label 'artifact'"] == artifact_windows > 0


def test_manifest_counts_classes_per_split_and_the_report_shows_them(
    generic_csv: tuple[Path, Path, dict],
) -> None:
    _, out, manifest = generic_csv
    assert manifest["task"] == "generic-csv" and manifest["dataset"] == "generic-csv"
    assert manifest["classes"] == ["eyes_open", "eyes_closed"]
    counted = Counter((m["split"], m["label_name"]) for m in _samples(out))
    for split in contract.SPLITS:
        for name in manifest["classes"]:
            assert manifest["class_counts"][split][name] == counted[(split, name)]
    assert manifest["totals"]["unlabelled_reasons"]["unknown label 'artifact'"] > 0
    assert all(s["url"].startswith("generic-csv-") for s in manifest["shards"])
    report = (out / contract.REPORT_NAME).read_text()
    assert "Labels: task generic-csv" in report and "unknown label" in report and "1: eyes_closed" in report


def test_pretraining_loader_reads_labelled_shards(generic_csv: tuple[Path, Path, dict]) -> None:
    import torch

    from eegfm.pretrain.decode import decode_sample
    from eegfm.pretrain.table import DatasetSpec, load_table

    _, out, manifest = generic_csv
    table = load_table([DatasetSpec(str(out))], "train")
    assert len(table) == sum(manifest["class_counts"]["train"].values())
    for row in range(len(table)):
        with open(table.shard_urls[table.shard[row]], "rb") as f:
            f.seek(table.offset[row])
            blob = f.read(table.size[row])
        out_tensor = torch.empty(int(table.channels[row]), int(table.times[row]))
        decode_sample(blob, "test", 15.0, out_tensor)
        assert torch.isfinite(out_tensor).all()


def test_a_recording_without_labels_is_skipped_with_why(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    generate_task_corpus("generic-csv", corpus, seed=1, n_subjects=2, duration_s=30.0)
    lines = (corpus / "labels.csv").read_text().splitlines()
    (corpus / "labels.csv").write_text(
        "\n".join(line for line in lines if not line.startswith("rec01")) + "\n"
    )
    manifest = _ingest("generic-csv", corpus, tmp_path / "out")
    (skipped,) = [f for f in manifest["files"] if f["status"] == "skipped"]
    assert skipped["path"] == "rec01.edf" and "no row for this recording" in skipped["reason"]
    assert manifest["totals"]["skip_reasons"] == {"no row for this recording in the label table": 1}


def test_a_malformed_label_table_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    generate_task_corpus("generic-csv", corpus, seed=1, n_subjects=2, duration_s=30.0)
    with open(corpus / "labels.csv", "a") as f:
        f.write("rec00.edf,12,abc,eyes_open\n")
    with pytest.raises(DataError, match=r"labels\.csv: line \d+: start_s and duration_s must be numbers"):
        Labeller.prepare(load_task("generic-csv"), str(corpus))
    result = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "shards", "--task", "generic-csv", "--root", str(corpus),
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "labels.csv: line" in result.stderr


# --- TUAB: labels from the path, official splits ----------------------------------------------------------


@pytest.fixture(scope="module")
def tuab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("tuab-task")
    made = generate_task_corpus("tuab", base / "corpus", seed=0, n_subjects=8, duration_s=30.0)
    manifest = _ingest("tuab", base / "corpus", base / "shards")
    return base / "shards", {"made": made, "manifest": manifest}


def test_tuab_labels_are_the_folder_and_official_splits_are_kept(tuab: tuple[Path, dict]) -> None:
    out, found = tuab
    manifest = found["manifest"]
    check_contract(out)
    metas = _samples(out)
    assert len(metas) == 8 * 3
    subjects_by_split = defaultdict(set)
    for meta in metas:
        official, label = found["made"][meta["source_file"]]
        assert meta["label_name"] == label and meta["label"] == ("normal", "abnormal").index(label)
        # TUAB's eval is the test split; official train is train, or val for a tenth of its subjects.
        assert meta["split"] == "test" if official == "eval" else meta["split"] in ("train", "val")
        subjects_by_split[meta["split"]].add(meta["subject"])
    assert not subjects_by_split["train"] & subjects_by_split["test"]
    assert not subjects_by_split["val"] & (subjects_by_split["train"] | subjects_by_split["test"])
    assert {"normal", "abnormal"} == {m["label_name"] for m in metas if m["split"] == "test"}
    assert sum(sum(c.values()) for c in manifest["class_counts"].values()) == len(metas)


def test_tuab_abnormal_recordings_carry_more_delta_than_normal(tuab: tuple[Path, dict]) -> None:
    """The fixture's classes differ in physiology: delta (1-3 Hz) power relative to alpha (8-12 Hz)."""
    import io

    out, _ = tuab
    manifest = json.loads((out / contract.MANIFEST_NAME).read_text())
    ratio = defaultdict(list)
    for shard in manifest["shards"]:
        for members in read_shard(out / shard["url"]).values():
            meta = json.loads(members[contract.META_SUFFIX])
            eeg = np.load(io.BytesIO(members[contract.EEG_SUFFIX])).astype(float)
            power = np.abs(np.fft.rfft(eeg, axis=1)) ** 2
            freqs = np.fft.rfftfreq(eeg.shape[1], 1 / 200.0)
            delta = power[:, (freqs >= 1) & (freqs < 3)].sum()
            alpha = power[:, (freqs >= 8) & (freqs < 12)].sum()
            ratio[meta["label_name"]].append(delta / alpha)
    assert min(ratio["abnormal"]) > max(ratio["normal"])


def test_eegfm_tasks_lists_the_tasks_with_classes_and_source() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "tasks"], capture_output=True, text=True, check=True
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "normal, abnormal" in lines["tuab"] and "labels path" in lines["tuab"]
    assert "labels generic_csv" in lines["generic-csv"]
    assert "W, N1, N2, N3, REM" in lines["sleep-edf"] and "labels sleep_edf" in lines["sleep-edf"]
    assert "spsw, gped, pled, eyem, artf, bckg" in lines["tuev"] and "(centred)" in lines["tuev"]
    assert "background, seizure" in lines["chbmit"] and "labels chbmit_summary" in lines["chbmit"]


def test_a_task_recipe_with_a_class_outside_its_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_map targets not in classes"):
        load_task("tuab", ["label_map.abnormal=weird"])
    with pytest.raises(ConfigError, match=r"did you mean windows\.length_s"):
        load_task("tuab", ["windows.lenght_s=5"])


def test_onset_windows_start_at_each_trial_and_trials_without_room_are_counted() -> None:
    trials = [A(0, 4.2, "a"), A(4.2, 8.3, "b"), A(8.3, 10.0, "a"), A(10.0, 14.1, "b")]
    # The windower cut windows at 0, 4.2 and 8.3; 10.0 + 4 ran past the recording's end.
    labels, reasons, missed = _labels("onset", [0.0, 4.2, 8.3], 4.0, trials)
    assert labels == [0, 1, -1] and reasons == [None, None, "overlaps two labels"]
    assert missed == Counter({"event too close to the recording's edge or a gap": 1})


# --- EEGMMIDB: EDF+ annotations read by run number ----------------------------------------------------------


def test_eegmmidb_run_numbers_give_t1_t2_their_meaning() -> None:
    from eegfm.ingest.labels.eegmmidb import event_text

    assert [event_text(r, "T1") for r in (3, 4, 7, 8, 11, 12)] == ["left fist"] * 6
    assert [event_text(r, "T2") for r in (3, 4, 7, 8, 11, 12)] == ["right fist"] * 6
    assert [event_text(r, "T1") for r in (5, 6, 9, 10, 13, 14)] == ["both fists"] * 6
    assert [event_text(r, "T2") for r in (5, 6, 9, 10, 13, 14)] == ["both feet"] * 6
    assert event_text(4, "T0") == event_text(13, "T0") == "rest"
    assert event_text(1, "T0") == "baseline eyes open" and event_text(2, "T0") == "baseline eyes closed"


def _eegmmidb_expected(path: Path, run: int) -> list[tuple[float, float, str]]:
    """The test's own reading of a run's annotations, with MNE: (onset, duration, class or None)."""
    import mne

    names = (
        {"T0": "rest", "T1": "left_fist", "T2": "right_fist"}
        if run in (3, 4, 7, 8, 11, 12)
        else {"T0": "rest"}
    )
    found = mne.read_annotations(path)
    return [
        (float(o), float(d), names.get(t))
        for o, d, t in zip(found.onset, found.duration, found.description, strict=True)
    ]


def test_real_eegmmidb_run_through_the_eegmmidb_task(real_edf_dir: Path, tmp_path: Path) -> None:
    """The real 64-channel run (T0/T1/T2) under its EEGMMIDB name by a symbolic link (not a copy)."""
    real = real_edf_dir / "EDF" / "test_edf_overlapping_annotations.edf"
    (tmp_path / "corpus" / "S001").mkdir(parents=True)
    (tmp_path / "corpus" / "S001" / "S001R04.edf").symlink_to(real.resolve())
    manifest = _ingest("eegmmidb", tmp_path / "corpus", tmp_path / "out")
    check_contract(tmp_path / "out", window_samples=800)
    (f,) = manifest["files"]
    assert f["status"] == "written" and len(f["channels"]) == 64
    expected = _eegmmidb_expected(real, 4)
    metas = _samples(tmp_path / "out")
    for meta in metas:  # each window is a trial from its onset, and lies within it
        (onset, duration, name) = min(expected, key=lambda e: abs(e[0] - meta["start_s"]))
        assert abs(onset - meta["start_s"]) < 0.005 and duration >= 4.0
        assert meta["label_name"] == name and meta["task"] == "eegmmidb"
    fits = [e for e in expected if e[0] + 4.0 <= 124.0]
    labelled = [e for e in fits if e[1] >= 4.0]
    assert len(metas) == len(labelled) > 0
    assert {m["label_name"] for m in metas} == {"left_fist", "right_fist"}
    # Rest periods here last 1.375 s: their 4-s windows run into the next trial, and are counted.
    assert f["unlabelled"]["overlaps two labels"] == len(fits) - len(labelled) > 0
    assert sum(f["unlabelled"].values()) + len(metas) == len({e[0] for e in expected})


def test_eegmmidb_fixture_labels_and_contralateral_desynchronisation(tmp_path: Path) -> None:
    made = generate_task_corpus("eegmmidb", tmp_path / "corpus", seed=0, n_subjects=2, duration_s=40.0)
    manifest = _ingest("eegmmidb", tmp_path / "corpus", tmp_path / "out")
    assert manifest["totals"]["unlabelled_reasons"] == {
        "label ignored by the task 'both fists'": 4,
        "label ignored by the task 'both feet'": 4,
    }
    power = defaultdict(list)
    for shard in manifest["shards"]:
        for members in read_shard(tmp_path / "out" / shard["url"]).values():
            meta = json.loads(members[contract.META_SUFFIX])
            run = int(meta["source_file"][-6:-4])
            expected = _eegmmidb_expected(tmp_path / "corpus" / meta["source_file"], run)
            (onset, _, name) = min(expected, key=lambda e: abs(e[0] - meta["start_s"]))
            assert abs(onset - meta["start_s"]) < 0.005 and meta["label_name"] == name
            import io

            eeg = np.load(io.BytesIO(members[contract.EEG_SUFFIX])).astype(float)
            spectrum = np.abs(np.fft.rfft(eeg, axis=1)) ** 2
            mu = (np.fft.rfftfreq(eeg.shape[1], 1 / 200.0) >= 8) & (
                np.fft.rfftfreq(eeg.shape[1], 1 / 200.0) <= 13
            )
            c3, c4 = (meta["channels"].index(c) for c in ("C3", "C4"))
            power[meta["label_name"]].append(spectrum[c3, mu].sum() / spectrum[c4, mu].sum())
    assert made and len(power["left_fist"]) == len(power["right_fist"]) == 4
    # Left fist: C4 (right hemisphere) desynchronised, so C3/C4 mu power is high; right fist: low.
    assert min(power["left_fist"]) > 2 > 0.5 > max(power["right_fist"])


# --- TUSZ: .csv_bi beside each EDF ----------------------------------------------------------------------


def test_tuh_csv_bi_parser_ignores_low_confidence_and_clips_to_the_recording() -> None:
    from eegfm.ingest.labels import LabelError
    from eegfm.ingest.labels.tuh_csv import parse_tuh_csv

    text = (
        "# version = csv_v1.0.0\n# duration = 60.00 secs\n#\nchannel,start_time,stop_time,label,confidence\n"
        "TERM,0.0000,20.0000,bckg,1.0000\nTERM,20.0000,35.5000,seiz,0.9000\nTERM,25.0000,27.0000,seiz,0.4999\n"
        "TERM,35.5000,60.7500,bckg,1.0000\nTERM,61.0000,62.0000,seiz,1.0000\n"
    )
    assert parse_tuh_csv(text, 60.0) == [A(0.0, 20.0, "bckg"), A(20.0, 35.5, "seiz"), A(35.5, 60.0, "bckg")]
    with pytest.raises(LabelError, match="header"):
        parse_tuh_csv("start,stop,label\n1,2,seiz\n", 60.0)
    with pytest.raises(LabelError, match="row 3"):
        parse_tuh_csv(
            "channel,start_time,stop_time,label,confidence\nTERM,0,1,bckg,1\nTERM,x,2,seiz,1\n", 60.0
        )


def _tusz_truth(csv_bi: Path, duration_s: float, start: float, stop: float) -> str | None:
    """The test's own reading of a .csv_bi: the class of the confident rows covering [start, stop)."""
    rows = []
    for line in csv_bi.read_text().splitlines():
        if line.startswith("TERM,"):
            _, a, b, label, confidence = line.split(",")
            if float(confidence) >= 0.5:
                rows.append((float(a), min(float(b), duration_s), label))
    inside = [(a, b, label) for a, b, label in rows if a < stop and b > start]
    labels = {label for _, _, label in inside}
    covered = sum(min(b, stop) - max(a, start) for a, b, _ in inside)
    if len(labels) != 1 or covered < stop - start - 1e-6:
        return None
    return {"bckg": "background", "seiz": "seizure"}[labels.pop()]


def test_tusz_windows_match_csv_bi_and_official_splits_are_kept(tmp_path: Path) -> None:
    import io

    corpus = tmp_path / "corpus"
    made = generate_task_corpus("tusz", corpus, seed=0, n_subjects=3, duration_s=60.0)
    manifest = _ingest("tusz", corpus, tmp_path / "out")
    check_contract(tmp_path / "out")
    grid = np.arange(0.0, 50.0 + 1e-9, 5.0)
    theta = defaultdict(list)
    for f in manifest["files"]:
        csv_bi = (corpus / f["path"]).with_suffix(".csv_bi")
        truth = Counter(_tusz_truth(csv_bi, 60.0, s, s + 10.0) for s in grid)
        assert f["class_counts"] == {k: v for k, v in truth.items() if k}
        assert f["unlabelled"] == ({"overlaps two labels": truth[None]} if truth[None] else {})
        official = made[f["path"]][0]
        assert f["split"] == {"train": "train", "dev": "val", "eval": "test"}[official]
    for shard in manifest["shards"]:
        for members in read_shard(tmp_path / "out" / shard["url"]).values():
            meta = json.loads(members[contract.META_SUFFIX])
            csv_bi = (corpus / meta["source_file"]).with_suffix(".csv_bi")
            assert meta["label_name"] == _tusz_truth(csv_bi, 60.0, meta["start_s"], meta["start_s"] + 10.0)
            eeg = np.load(io.BytesIO(members[contract.EEG_SUFFIX])).astype(float)
            spectrum = np.abs(np.fft.rfft(eeg, axis=1)) ** 2
            freqs = np.fft.rfftfreq(eeg.shape[1], 1 / 200.0)
            theta[meta["label_name"]].append(spectrum[:, (freqs >= 3) & (freqs <= 8)].sum() / spectrum.sum())
    # The eval recording's only seizure row has confidence 0.3: no seizure window there.
    assert manifest["class_counts"]["test"]["seizure"] == 0 and manifest["class_counts"]["test"]["background"]
    # Seizure windows: rhythmic 3-8 Hz discharges dominate.
    assert min(theta["seizure"]) > max(theta["background"])


def test_a_recording_without_its_csv_bi_is_skipped_with_why(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    generate_task_corpus("tusz", corpus, seed=0, n_subjects=3, duration_s=30.0)
    victim = sorted(corpus.rglob("*.csv_bi"))[0]
    victim.unlink()
    manifest = _ingest("tusz", corpus, tmp_path / "out")
    skipped = [f for f in manifest["files"] if f["status"] == "skipped"]
    assert [f["reason"] for f in skipped] == ["no .csv_bi label file (" + victim.name + ")"]
