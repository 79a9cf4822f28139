"""Labelled shards from the label files of Sleep-EDF (hypnograms), TUEV (.rec) and CHB-MIT (summaries):
every window's label against the label file read here independently, the edges, what is counted, the
splits, and that the fixtures' classes differ in physiology."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from shardcheck import check_contract, read_shard

from eegfm.ingest import contract
from eegfm.ingest.run import run_shards
from eegfm.ingest.task_fixtures import generate_task_corpus
from eegfm.ingest.tasks import Labeller, dataset_recipe, load_task


def _ingest(task_name: str, root: Path, out: Path, *overrides: str) -> dict:
    task = load_task(task_name, list(overrides))
    recipe = dataset_recipe(task, root=str(root))
    return run_shards(
        recipe, str(out), shard_bytes=1 << 20, progress=False, labeller=Labeller.prepare(task, str(root))
    )


def _windows(out: Path) -> list[tuple[dict, np.ndarray]]:
    """(metadata, C×T signal) of every sample in the shards under `out`."""
    manifest = json.loads((out / contract.MANIFEST_NAME).read_text())
    found = []
    for shard in manifest["shards"]:
        for members in read_shard(out / shard["url"]).values():
            meta = json.loads(members[contract.META_SUFFIX])
            found.append((meta, np.load(io.BytesIO(members[contract.EEG_SUFFIX])).astype(float)))
    return found


def _relative_power(eeg: np.ndarray, lo: float, hi: float, channel: int | None = None) -> float:
    spectrum = np.abs(np.fft.rfft(eeg, axis=1)) ** 2
    freqs = np.fft.rfftfreq(eeg.shape[1], 1 / 200.0)
    rows = spectrum if channel is None else spectrum[channel : channel + 1]
    band = rows[:, (freqs >= lo) & (freqs < hi)].sum()
    return float(band / rows[:, (freqs >= 0.5) & (freqs < 40)].sum())


def _subjects_by_split(metas: list[dict]) -> dict[str, set[str]]:
    by_split = defaultdict(set)
    for meta in metas:
        by_split[meta["split"]].add(meta["subject"])
    splits = list(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not by_split[a] & by_split[b], f"a subject in {a} and {b}"
    return by_split


# --- Sleep-EDF: hypnograms paired with their PSGs -------------------------------------------------------

STAGE_CLASS = {
    "Sleep stage W": "W",
    "Sleep stage 1": "N1",
    "Sleep stage 2": "N2",
    "Sleep stage 3": "N3",
    "Sleep stage 4": "N3",
    "Sleep stage R": "REM",
}


def _hypnogram_epochs(path: Path, shift_s: float = 0.0) -> dict[float, str]:
    """The test's own reading of a hypnogram, with MNE: {epoch start on the PSG's clock: stage text}."""
    import mne

    found = mne.read_annotations(path)
    epochs = {}
    for onset, duration, text in zip(found.onset, found.duration, found.description, strict=True):
        for k in range(round(duration / 30)):
            epochs[round(float(onset) + shift_s + 30 * k, 6)] = str(text)
    return epochs


def _hypnogram_of(corpus: Path, psg: str) -> Path:
    (hypnogram,) = (corpus / psg).parent.glob(Path(psg).name[:7] + "*-Hypnogram.edf")
    return hypnogram


@pytest.fixture(scope="module")
def sleep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("sleep-edf")
    generate_task_corpus("sleep-edf", base / "corpus", seed=0, n_subjects=3)
    manifest = _ingest("sleep-edf", base / "corpus", base / "shards")
    return base / "corpus", base / "shards", manifest


def test_sleep_windows_are_the_hypnogram_epochs_with_their_stages(sleep: tuple[Path, Path, dict]) -> None:
    corpus, out, manifest = sleep
    check_contract(out, window_samples=6000)
    windows = _windows(out)
    assert manifest["classes"] == ["W", "N1", "N2", "N3", "REM"]
    for meta, eeg in windows:
        epochs = _hypnogram_epochs(_hypnogram_of(corpus, meta["source_file"]))
        assert meta["start_s"] in epochs, f"window at {meta['start_s']} s is not a hypnogram epoch"
        assert meta["label_name"] == STAGE_CLASS[epochs[meta["start_s"]]]
        assert meta["channels"] == ["Fpz-Cz", "Pz-Oz"] and eeg.shape == (2, 6000)  # EOG, EMG: not EEG
    written = [f for f in manifest["files"] if f["status"] == "written"]
    assert len(written) == 4
    for f in written:  # every scored epoch is a window; `?` and movement time are counted, not written
        stages = Counter(_hypnogram_epochs(_hypnogram_of(corpus, f["path"])).values())
        labelled = Counter()
        for stage, n in stages.items():
            if stage in STAGE_CLASS:
                labelled[STAGE_CLASS[stage]] += n
        assert f["class_counts"] == dict(labelled)
        assert f["unlabelled"] == {
            "label ignored by the task 'Movement time'": stages["Movement time"],
            "label ignored by the task 'Sleep stage ?'": stages["Sleep stage ?"],
        }
    # Stages 3 and 4 both count as N3.
    stages = Counter(
        _hypnogram_epochs(_hypnogram_of(corpus, m["source_file"]))[m["start_s"]]
        for m, _ in windows
        if m["label_name"] == "N3"
    )
    assert stages["Sleep stage 3"] > 0 and stages["Sleep stage 4"] > 0
    skipped = {f["path"]: f["reason"] for f in manifest["files"] if f["status"] == "skipped"}
    assert all(p.endswith("-Hypnogram.edf") for p in skipped) and len(skipped) == 4


def test_sleep_splits_are_per_subject_and_both_nights_go_together(sleep: tuple[Path, Path, dict]) -> None:
    _, out, _ = sleep
    metas = [meta for meta, _ in _windows(out)]
    for meta in metas:  # SC4ssN: subject ss (the recipe's subject is 4ss), night N
        assert meta["subject"] == "4" + Path(meta["source_file"]).name[3:5]
    by_split = _subjects_by_split(metas)
    assert sum(len(s) for s in by_split.values()) == 3
    nights = {m["split"] for m in metas if m["subject"] == "400"}
    assert len({m["source_file"] for m in metas if m["subject"] == "400"}) == 2 and len(nights) == 1


def test_sleep_stages_differ_in_physiology(sleep: tuple[Path, Path, dict]) -> None:
    """N3: most delta; N2: most spindle (12-14 Hz) power; W: most alpha on Pz-Oz; N1: most theta."""
    _, out, _ = sleep
    power = defaultdict(lambda: defaultdict(list))
    for meta, eeg in _windows(out):
        stage = meta["label_name"]
        power["delta"][stage].append(_relative_power(eeg, 0.5, 2.0))
        power["sigma"][stage].append(_relative_power(eeg, 12.0, 14.0))
        power["alpha"][stage].append(_relative_power(eeg, 8.0, 12.0, channel=1))
        power["theta"][stage].append(_relative_power(eeg, 4.0, 7.0))
    others = lambda band, stage: [v for s, vs in power[band].items() if s != stage for v in vs]  # noqa: E731
    assert min(power["delta"]["N3"]) > max(others("delta", "N3"))
    assert min(power["alpha"]["W"]) > max(others("alpha", "W"))
    for band, stage in (("sigma", "N2"), ("theta", "N1")):
        means = {s: np.mean(v) for s, v in power[band].items()}
        assert max(means, key=means.get) == stage, (band, means)


def test_sleep_hypnogram_pairing_missing_ambiguous_and_a_later_start(tmp_path: Path) -> None:
    from eegfm.ingest.fixtures import write_edf
    from eegfm.ingest.labels import Annotation
    from eegfm.ingest.labels.sleep_edf import epochs, hypnograms_by_key

    assert hypnograms_by_key(
        ["a/SC4001E0-PSG.edf", "a/SC4001EC-Hypnogram.edf", "b/SC4001EH-Hypnogram.edf"]
    ) == {
        ("a", "SC4001E"): ["a/SC4001EC-Hypnogram.edf"],
        ("b", "SC4001E"): ["b/SC4001EH-Hypnogram.edf"],
    }
    assert epochs([Annotation(0, 90, "W"), Annotation(90, 100, "?")]) == [
        Annotation(0, 30, "W"), Annotation(30, 60, "W"), Annotation(60, 90, "W"), Annotation(90, 100, "?")
    ]  # fmt: skip

    corpus = tmp_path / "corpus"
    generate_task_corpus("sleep-edf", corpus, seed=1, n_subjects=3)
    folder = corpus / "sleep-cassette"
    (folder / "SC4021EC-Hypnogram.edf").unlink()  # missing
    shutil.copy(folder / "SC4002EJ-Hypnogram.edf", folder / "SC4002EV-Hypnogram.edf")  # ambiguous
    # SC4011's hypnogram re-exported to start 60 s after its PSG (onsets on its own clock).
    original = _hypnogram_epochs(folder / "SC4011EJ-Hypnogram.edf")
    later = sorted((t - 60.0, 30.0, text) for t, text in original.items() if t >= 60.0)
    write_edf(
        folder / "SC4011EJ-Hypnogram.edf",
        [],
        record_duration=0.0,
        edf_plus="C",
        annotations=later,
        recording="Startdate 24-APR-1989 X X X",
        start=datetime(1989, 4, 24, 16, 14),
    )
    manifest = _ingest("sleep-edf", corpus, tmp_path / "out")
    reasons = {f["path"]: f["reason"] for f in manifest["files"] if f["status"] == "skipped"}
    assert reasons["sleep-cassette/SC4021E0-PSG.edf"] == "no hypnogram (SC4021E*-Hypnogram.edf beside it)"
    assert reasons["sleep-cassette/SC4002E0-PSG.edf"] == (
        "ambiguous hypnogram (2 files start with SC4002E: SC4002EJ-Hypnogram.edf, SC4002EV-Hypnogram.edf)"
    )
    shifted = [m for m, _ in _windows(tmp_path / "out") if m["source_file"].endswith("SC4011E0-PSG.edf")]
    assert min(m["start_s"] for m in shifted) >= 60.0
    assert len(shifted) == sum(1 for t, s in original.items() if t >= 60.0 and s in STAGE_CLASS)
    for meta in shifted:
        assert meta["label_name"] == STAGE_CLASS[original[meta["start_s"]]]


# --- TUEV: a .rec beside each EDF, 5-s windows centred on events ---------------------------------------

TUEV_CODES = {"1": "spsw", "2": "gped", "3": "pled", "4": "eyem", "5": "artf", "6": "bckg"}


def _rec_events(rec: Path) -> dict[float, str | None]:
    """The test's own reading of a .rec: {event centre: its class, or None for two event classes}; per
    moment, background on some channels gives way to an event on the others."""
    codes = defaultdict(set)
    for line in rec.read_text().splitlines():
        _, start, stop, code = line.split(",")
        codes[(float(start) + float(stop)) / 2].add(TUEV_CODES[code])
    out = {}
    for centre, names in codes.items():
        events = names - {"bckg"} or names
        out[round(centre, 6)] = events.pop() if len(events) == 1 else None
    return out


def test_tuev_rec_parser_per_moment_labels_unknown_codes_and_bad_lines() -> None:
    from eegfm.ingest.labels import Annotation as A
    from eegfm.ingest.labels import LabelError
    from eegfm.ingest.labels.tuev_rec import parse_rec

    text = "0,10.0,11.0,6\n1,10.0,11.0,1\n2,10.0,11.0,6\n\n0,20.0,21.0,6\n1,20.0,21.0,6\n0,30.0,31.0,1\n"
    text += "1,30.0,31.0,3\n0,40.0,41.0,9\n"
    assert parse_rec(text) == [
        A(10.0, 11.0, "spsw"), A(20.0, 21.0, "bckg"), A(30.0, 31.0, "pled"), A(30.0, 31.0, "spsw"),
        A(40.0, 41.0, "code 9"),
    ]  # fmt: skip
    with pytest.raises(LabelError, match="line 2"):
        parse_rec("0,1.0,2.0,6\n0,1.0,two,6\n")
    with pytest.raises(LabelError, match=r"line 1 \(stop"):
        parse_rec("0,2.0,2.0,6\n")


def test_tuev_recipe_reads_the_layout(tmp_path: Path) -> None:
    from eegfm.ingest.recipe import discover, load_recipe

    """Paths as TUEV v2.0.1 has them (braindecode's TUH reader parses the same examples)."""
    paths = (
        "edf/train/aaaaaaar/aaaaaaar_00000001.edf",
        "edf/eval/000/bckg_000_a_.edf",
        "edf/eval/012/spsw_012_a_1.edf",
    )
    for rel in paths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = {
        f.path: (f.subject, f.recording, f.skip_reason)
        for f in discover(load_recipe("tuev", root=str(tmp_path)))
    }
    assert found == {
        "edf/train/aaaaaaar/aaaaaaar_00000001.edf": ("aaaaaaar", "aaaaaaar_00000001", None),
        "edf/eval/000/bckg_000_a_.edf": ("000", "bckg_000_a_", None),
        "edf/eval/012/spsw_012_a_1.edf": ("012", "spsw_012_a_1", None),
    }


@pytest.fixture(scope="module")
def tuev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    base = tmp_path_factory.mktemp("tuev")
    made = generate_task_corpus("tuev", base / "corpus", seed=0, n_subjects=4, duration_s=60.0)
    manifest = _ingest("tuev", base / "corpus", base / "shards")
    return base / "corpus", base / "shards", manifest, made


def test_tuev_windows_are_centred_on_rec_events_with_their_class(tuev: tuple[Path, Path, dict, dict]) -> None:
    corpus, out, manifest, _ = tuev
    check_contract(out, window_samples=1000)
    windows = _windows(out)
    for meta, _ in windows:
        events = _rec_events((corpus / meta["source_file"]).with_suffix(".rec"))
        centre = round(meta["start_s"] + 2.5, 6)
        assert centre in events and meta["label_name"] == events[centre] is not None, meta
    for f in manifest["files"]:
        assert f["status"] == "written"
        events = _rec_events((corpus / f["path"]).with_suffix(".rec"))
        fits = {c: name for c, name in events.items() if c - 2.5 >= 0 and c + 2.5 <= 60.0}
        assert f["class_counts"] == dict(Counter(name for name in fits.values() if name))
        unlabelled = Counter({"event too close to the recording's edge or a gap": len(events) - len(fits)})
        unlabelled["overlaps two labels"] = sum(1 for name in fits.values() if name is None)
        assert f["unlabelled"] == {k: v for k, v in unlabelled.items() if v}
    totals = manifest["totals"]["unlabelled_reasons"]
    assert (
        totals["event too close to the recording's edge or a gap"] == 2 * 5
        and totals["overlaps two labels"] > 0
    )
    assert all(sum(manifest["class_counts"][s].values()) for s in ("train", "test"))
    assert set(manifest["classes"]) == {m["label_name"] for m, _ in windows}


def test_tuev_official_splits_are_kept_and_no_subject_is_in_two(tuev: tuple[Path, Path, dict, dict]) -> None:
    _, out, manifest, made = tuev
    metas = [m for m, _ in _windows(out)]
    for meta in metas:
        official = made[meta["source_file"]][0]
        assert meta["split"] == "test" if official == "eval" else meta["split"] in ("train", "val")
        assert meta["subject"] == meta["source_file"].split("/")[2]
    _subjects_by_split(metas)
    assert {f["split"] for f in manifest["files"]} >= {"train", "test"}


def test_tuev_event_classes_differ_in_physiology(tuev: tuple[Path, Path, dict, dict]) -> None:
    """eyem: most frontal low-frequency power; artf: most high-frequency power; pled: most asymmetric
    between the hemispheres; the discharges (spsw, gped, pled) carry more power than background."""
    _, out, _, _ = tuev
    measures = defaultdict(lambda: defaultdict(list))
    for meta, eeg in _windows(out):
        name, channels = meta["label_name"], meta["channels"]
        frontal = [channels.index(c) for c in ("Fp1", "Fp2")]
        left = [channels.index(c) for c in ("F3", "C3", "P3", "F7", "T7", "P7")]
        right = [channels.index(c) for c in ("F4", "C4", "P4", "F8", "T8", "P8")]
        spectrum = np.abs(np.fft.rfft(eeg, axis=1)) ** 2
        freqs = np.fft.rfftfreq(eeg.shape[1], 1 / 200.0)
        low = (freqs >= 0.5) & (freqs < 3)
        measures["frontal_low"][name].append(spectrum[frontal][:, low].sum() / spectrum[:, low].sum())
        measures["high"][name].append(_relative_power(eeg, 25.0, 40.0))
        power = (eeg**2).mean(axis=1)
        measures["asymmetry"][name].append(abs(np.log(power[left].mean() / power[right].mean())))
        measures["power"][name].append(power.mean())
    for measure, winner in (("frontal_low", "eyem"), ("high", "artf"), ("asymmetry", "pled")):
        means = {k: np.mean(v) for k, v in measures[measure].items()}
        assert max(means, key=means.get) == winner, (measure, means)
    for name in ("spsw", "gped", "pled"):
        assert min(measures["power"][name]) > max(measures["power"]["bckg"]), name


# --- CHB-MIT: chbNN-summary.txt per subject -----------------------------------------------------------


def _summary_seizures(summary: Path) -> dict[str, list[tuple[float, float]]]:
    """The test's own reading of a summary: {file name: [(start, end)]} from its File Name and Seizure
    lines (numbered or not)."""
    import re

    out, current, start = {}, None, None
    for line in summary.read_text().splitlines():
        if line.startswith("File Name:"):
            current = line.split(":", 1)[1].strip()
            out[current] = []
        elif m := re.match(r"Seizure (?:\d+ )?(Start|End) Time: (\d+) seconds", line):
            if m.group(1) == "Start":
                start = float(m.group(2))
            else:
                out[current].append((start, float(m.group(2))))
    return out


def _chbmit_truth(seizures: list[tuple[float, float]], start: float, stop: float) -> str | None:
    inside = [a < stop and b > start for a, b in seizures]
    covered = [a <= start and b >= stop for a, b in seizures]
    if any(covered):
        return "seizure"
    return None if any(inside) else "background"


@pytest.fixture(scope="module")
def chbmit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("chbmit")
    generate_task_corpus("chbmit", base / "corpus", seed=0, n_subjects=4, duration_s=60.0)
    manifest = _ingest("chbmit", base / "corpus", base / "shards")
    return base / "corpus", base / "shards", manifest


def test_chbmit_windows_carry_the_summary_label_at_their_time(chbmit: tuple[Path, Path, dict]) -> None:
    corpus, out, manifest = chbmit
    check_contract(out, window_samples=2000)
    grid = np.arange(0.0, 50.0 + 1e-9, 5.0)
    seizure_theta, background_theta = [], []
    for meta, eeg in _windows(out):
        subject = meta["source_file"].split("/")[0]
        seizures = _summary_seizures(corpus / subject / f"{subject}-summary.txt")[
            Path(meta["source_file"]).name
        ]
        assert meta["label_name"] == _chbmit_truth(seizures, meta["start_s"], meta["start_s"] + 10.0), meta
        assert meta["subject"] == subject
        share = _relative_power(eeg, 3.0, 8.0)
        (seizure_theta if meta["label_name"] == "seizure" else background_theta).append(share)
    for f in manifest["files"]:
        subject = f["path"].split("/")[0]
        seizures = _summary_seizures(corpus / subject / f"{subject}-summary.txt")[Path(f["path"]).name]
        truth = Counter(_chbmit_truth(seizures, s, s + 10.0) for s in grid)
        assert f["class_counts"] == {k: v for k, v in truth.items() if k}
        assert f["unlabelled"] == ({"overlaps two labels": truth[None]} if truth[None] else {})
    _subjects_by_split([m for m, _ in _windows(out)])
    # Seizure windows: evolving rhythmic 3-8 Hz discharges dominate.
    assert len(seizure_theta) > 10 and min(seizure_theta) > max(background_theta)


def test_chbmit_summary_parser_reads_both_styles_and_names_a_bad_line() -> None:
    from eegfm.errors import DataError
    from eegfm.ingest.labels.chbmit_summary import intervals, parse_summary

    text = (
        "Data Sampling Rate: 256 Hz\n\nChannels in EDF Files:\nChannel 1: FP1-F7\n\n"
        "File Name: chb04_01.edf\nFile Start Time: 07:05:14\nNumber of Seizures in File: 0\n\n"
        "Channels changed:\nChannel 1: FP1-F7\n\n"
        "File Name: chb04_05.edf\nNumber of Seizures in File: 2\n"
        "Seizure 1 Start Time: 7804 seconds\nSeizure 1 End Time:  7853 seconds\n"
        "Seizure 2 Start Time: 9001 seconds\nSeizure 2 End Time: 9100 seconds\n\n"
        "File Name: chb01_03.edf\nNumber of Seizures in File: 1\n"
        "Seizure Start Time: 2996 seconds\nSeizure End Time: 3036 seconds\n"
    )
    assert parse_summary(text, "s.txt") == {
        "chb04_01.edf": [],
        "chb04_05.edf": [(7804.0, 7853.0), (9001.0, 9100.0)],
        "chb01_03.edf": [(2996.0, 3036.0)],
    }
    from eegfm.ingest.labels import Annotation as A

    assert intervals([(10.0, 20.0)], 30.0) == [
        A(0, 10, "background"),
        A(10, 20, "seizure"),
        A(20, 30, "background"),
    ]
    bad = {
        "File Name: a.edf\nNumber of Seizures in File: 2\nSeizure Start Time: 1 seconds\n"
        "Seizure End Time: 2 seconds\n": r"s\.txt: line 1: a\.edf says 2 seizures but lists 1",
        "File Name: a.edf\nNumber of Seizures in File: 1\nSeizure Start Time: 5 seconds\n": (
            r"line 3: seizure start"
        ),
        "Seizure Start Time: 5 seconds\n": r"line 1: seizure time outside",
        "File Name: a.edf\nNumber of Seizures in File: 1\nSeizure Start Time: 5 seconds\n"
        "Seizure End Time: 4 seconds\n": r"line 4: seizure end without a start",
        "File Name: a.edf\nNumber of Seizures in File: 1\nSeizure Start Time: five seconds\n": (
            r"line 3: .*not seconds"
        ),
    }
    for summary, message in bad.items():
        with pytest.raises(DataError, match=message):
            parse_summary(summary, "s.txt")


def test_chbmit_malformed_summary_is_one_line_and_an_unlisted_recording_is_skipped(tmp_path: Path) -> None:
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    generate_task_corpus("chbmit", corpus, seed=2, n_subjects=3, duration_s=30.0)
    summary = corpus / "chb02" / "chb02-summary.txt"
    original = summary.read_text()
    # chb02_03 left out of its summary: skipped with that reason.
    summary.write_text(original.split("File Name: chb02_03.edf")[0])
    manifest = _ingest("chbmit", corpus, tmp_path / "out")
    reasons = {f["path"]: f["reason"] for f in manifest["files"] if f["status"] == "skipped"}
    assert reasons["chb02/chb02_03.edf"] == "recording not listed in its -summary.txt (chb02_03.edf)"
    summary.write_text(original.replace("Number of Seizures in File: 2", "Number of Seizures in File: 3"))
    result = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "shards", "--task", "chbmit", "--root", str(corpus),
         "--out", str(tmp_path / "out2"), "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "chb02-summary.txt: line" in result.stderr and "says 3 seizures but lists 2" in result.stderr
