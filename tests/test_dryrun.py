"""`eegfm shards --dry-run`: the header-only report agrees with what the real ingest writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fsspec
import numpy as np
import pytest
from infra.s3 import S3Server

from eegfm.cli import main
from eegfm.ingest.dryrun import dry_run, predict_file
from eegfm.ingest.fixtures import RECIPES, Signal, generate_corpus, simulate_eeg, write_edf
from eegfm.ingest.recipe import discover, load_recipe
from eegfm.ingest.run import run_shards
from eegfm.ingest.task_fixtures import generate_task_corpus
from eegfm.ingest.tasks import Labeller, dataset_recipe, load_task

SHARD_BYTES = 512 * 1024


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`eegfm shards …` through the command line's own entry point, in this process (no re-import)."""
    code = main(["shards", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """Every fixture corpus (TUEG's quirks, CHB-MIT's bipolar pairs, Sleep-EDF's hypnograms, BioSemi caps,
    the generic EDF+D and short file…) ingested for real, and dry-run: recipe → (manifest, report)."""
    base = tmp_path_factory.mktemp("dryrun")
    out = {}
    for recipe_name in RECIPES:
        root = base / recipe_name
        generate_corpus(recipe_name, root, seed=1, n_subjects=2, duration_s=30)
        recipe = load_recipe(recipe_name, root=str(root))
        manifest = run_shards(
            recipe, str(base / f"{recipe_name}-out"), shard_bytes=SHARD_BYTES, progress=False
        )
        out[recipe_name] = (manifest, dry_run(recipe, shard_bytes=SHARD_BYTES))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", RECIPES)
def test_dry_run_predicts_what_the_ingest_writes(corpora: dict, recipe_name: str) -> None:
    """Per file: written or skipped with the same reason, the same kept channels (the manifest's) and
    dropped channels with the same reasons, and as many windows; only an EDF+D file's windows may be
    over-counted (its gaps are in its annotation records, which a dry run does not read)."""
    manifest, report = corpora[recipe_name]
    predicted = {p["path"]: p for p in report["per_file"]}
    assert set(predicted) == {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        p = predicted[f["path"]]
        assert p["dropped_channels"] == f["dropped_channels"], f["path"]
        if f["status"] == "skipped":
            assert (p["status"], p["reason"]) == ("would_skip", f["reason"]), f["path"]
            continue
        assert p["status"] == "would_write" and p["channels"] == f["channels"], f["path"]
        assert p["split"] == f["split"] and p["orig_sfreq"] == f["orig_sfreq"]
        if p["discontinuous"]:
            assert p["windows"] >= f["samples"]
        else:
            assert p["windows"] == f["samples"], f["path"]

    totals, files = manifest["totals"], report["files"]
    assert files["would_write"] == totals["files"]["written"]
    # The manifest counts path/layout mismatches among its skips; the report lists them as not matched.
    layout_skips = sum(g["count"] for g in files["not_matched_reasons"].values())
    assert files["would_skip"] + layout_skips == totals["files"]["skipped"]
    assert report["dropped_reasons"] == totals["dropped_channel_reasons"]
    assert report["nothing_written"] is None
    # Stated margins: hours exact without EDF+D (no QC drop in these corpora), an upper bound within 12 %
    # with it; shard bytes within 3 % (12 % with EDF+D), shards counted exactly.
    discontinuous = any(p["discontinuous"] for p in report["per_file"])
    estimate, written_bytes = report["estimate"], sum(s["bytes"] for s in manifest["shards"])
    assert totals["hours"] <= estimate["hours"] <= totals["hours"] * (1.12 if discontinuous else 1.0) + 1e-6
    assert abs(estimate["bytes"] / written_bytes - 1) < (0.12 if discontinuous else 0.03)
    assert estimate["shards"] == len(manifest["shards"])
    kept_names = {c["canonical"] for c in report["channels"]}
    assert kept_names == {n for f in manifest["files"] for n in f["channels"]}
    if discontinuous:
        assert any("EDF+D" in c for c in report["caveats"])


def _good_and_odd_root(root: Path) -> None:
    """One readable EDF with a label no rule knows (`Xq7`), an ECG and a bipolar with an unknown part; an
    unreadable `.edf`; a README the recipe does not pick."""
    names = ["Fp1", "C3", "O2"]
    data = simulate_eeg(names, 250.0, 25.0, mains_hz=50.0, rng=np.random.default_rng(0))
    signals = [
        Signal(n, d, 250.0, physical_min=-3200.0, physical_max=3200.0)
        for n, d in zip(names, data, strict=True)
    ]
    for label in ("Xq7", "ECG", "C3-Qz9"):
        signals.append(Signal(label, data[0], 250.0, physical_min=-3200.0, physical_max=3200.0))
    write_edf(root / "good.edf", signals)
    (root / "broken.edf").write_bytes(b"not an edf at all" * 40)
    (root / "README.txt").write_text("a corpus\n")


def test_text_report_names_matches_drops_unknown_labels_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _good_and_odd_root(tmp_path)
    code, text, err = _cli(capsys, "--dataset", "generic", "--root", str(tmp_path), "--dry-run")
    assert code == 0, err
    assert "3 under root, 2 matched by the recipe, 1 not" in text
    assert "README.txt" in text and "would write 1 files, skip 1" in text
    unknown = text.split("unrecognised labels")[1].split("sampling rates")[0]
    assert "Xq7" in unknown and "C3-Qz9" in unknown and "ECG" not in unknown
    assert "ECG" in text.split("dropped labels")[1] and "non-EEG: ECG" in text
    assert "unreadable: 1 files" in text and "broken.edf" in text and "not an EDF/BDF file" in text
    assert "Fp1" in text.split("channels kept")[1] and "25 s" in text  # the duration
    assert "2 windows of 10 s" in text


def test_json_report_parses_and_has_the_fields(tmp_path: Path) -> None:
    """The real command line, end to end: its stdout is one JSON object."""
    _good_and_odd_root(tmp_path)
    command = [sys.executable, "-m", "eegfm.cli", "shards", "--dataset", "generic", "--root", str(tmp_path)]
    done = subprocess.run([*command, "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    f = report["files"]
    assert (f["under_root"], f["matched"], f["not_matched"], f["would_write"], f["unreadable"]) == (
        3,
        2,
        1,
        1,
        1,
    )
    assert f["not_matched_extensions"] == {".txt": 1}
    assert {c["canonical"] for c in report["channels"]} == {"Fp1", "C3", "O2"}
    assert {r["label"] for r in report["unrecognised"]} == {"Xq7", "C3-Qz9"}
    assert report["sampling_rates"] == {"250": 1}
    assert report["durations"]["max_s"] == 25.0
    assert report["estimate"]["windows"] == 2 and report["estimate"]["basis"]["dtype"] == "float16"
    assert {"caveats", "seconds", "cpu_seconds", "per_file", "dropped_reasons", "notes"} <= set(report)
    assert report["distinct_channel_layouts"] == 1


def test_exit_code_when_nothing_would_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "notes.txt").write_text("no EEG here\n")
    code, out, err = _cli(capsys, "--dataset", "generic", "--root", str(nothing), "--dry-run")
    assert code == 1
    assert "notes.txt" in out  # what is there, to fix the include glob or ROOT
    (line,) = err.strip().splitlines()
    assert "nothing would be written" in line and "no files matching" in line

    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for name in ("a.edf", "b.bdf"):
        (unreadable / name).write_bytes(b"garbage" * 100)
    code, out, err = _cli(capsys, "--dataset", "generic", "--root", str(unreadable), "--dry-run", "--json")
    assert code == 1 and json.loads(out)["files"]["unreadable"] == 2
    (line,) = err.strip().splitlines()
    assert "all 2 matched files would be skipped (most: unreadable: not an EDF/BDF file" in line

    code, out, err = _cli(capsys, "--dataset", "generic", "--root", str(tmp_path / "missing"), "--dry-run")
    assert code == 2 and "does not exist" in err and out == ""


def _io_read_bytes() -> int:
    """Bytes this process has read through read() calls so far (the kernel's count, /proc/self/io)."""
    text = Path("/proc/self/io").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


def test_dry_run_reads_headers_only(tmp_path: Path) -> None:
    """A file declaring 200 MB of data records: the dry run reads a few KiB of it."""
    names = ["Fp1", "Fp2", "C3", "C4"]
    data = simulate_eeg(names, 256.0, 10.0, mains_hz=50.0, rng=np.random.default_rng(0))
    path = write_edf(
        tmp_path / "long.edf",
        [
            Signal(n, d, 256.0, physical_min=-3200.0, physical_max=3200.0)
            for n, d in zip(names, data, strict=True)
        ],
    )
    records = 200 * 1024 * 1024 // (4 * 256 * 2)
    with open(path, "r+b") as f:
        f.seek(236)
        f.write(f"{records:<8d}".encode())
        f.truncate(256 * 5 + records * 4 * 256 * 2)  # sparse: the kernel still counts every byte read
    recipe = load_recipe("generic", root=str(tmp_path))
    (source,) = discover(recipe)
    predict_file(source, recipe)  # warm-up: imports, montage positions
    before = _io_read_bytes()
    prediction = predict_file(source, recipe)
    read = _io_read_bytes() - before
    assert prediction.status == "would_write" and prediction.duration_s == records
    assert read < 64 * 1024, f"the dry run read {read} bytes of a {path.stat().st_size}-byte file"


def test_task_dry_run_predicts_the_labelled_ingest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--task: the task's own splits (official train/eval, val carved per subject) and windows."""
    task = load_task("tuab")
    generate_task_corpus("tuab", tmp_path / "c", seed=0, n_subjects=4, duration_s=30.0)
    recipe = dataset_recipe(task, root=str(tmp_path / "c"))
    labeller = Labeller.prepare(task, recipe.root)
    manifest = run_shards(recipe, str(tmp_path / "o"), progress=False, labeller=labeller)
    report = dry_run(recipe, task=task)
    predicted = {p["path"]: p for p in report["per_file"]}
    for f in manifest["files"]:
        p = predicted[f["path"]]
        assert (p["split"], p["channels"], p["windows"]) == (f["split"], f["channels"], f["samples"])
    assert report["task"] == "tuab" and any("labels are not read" in c for c in report["caveats"])
    code, out, _ = _cli(capsys, "--task", "tuab", "--root", str(tmp_path / "c"), "--dry-run")
    assert code == 0 and "dry run of task tuab over tuab" in out


def _bytes_sent(server: S3Server, bucket: str) -> float:
    """What the S3 server has sent from `bucket` so far (SeaweedFS's traffic counter)."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^SeaweedFS_s3_bucket_traffic_sent_bytes_total\{{bucket="{bucket}"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.s3
@pytest.mark.slow
def test_dry_run_on_object_storage_fetches_headers_not_files(s3_env: S3Server, tmp_path: Path) -> None:
    """s3fs reads ahead 50 MiB by default: a 256-byte header read would fetch whole recordings. The dry
    run asks for header-sized blocks, so 3 files of 1.1 MB cost about 3 × 64 KiB of traffic."""
    import s3fs

    generate_corpus("generic", tmp_path / "c", seed=0, n_subjects=2, duration_s=120.0)
    fs = s3fs.S3FileSystem()
    fs.mkdir("dryrun")
    sizes = 0
    for path in sorted((tmp_path / "c").glob("*.*df")):
        fs.put_file(str(path), f"dryrun/c/{path.name}")
        sizes += path.stat().st_size
    recipe = load_recipe("generic", root="s3://dryrun/c")
    before = _bytes_sent(s3_env, "dryrun")
    report = dry_run(recipe)
    time.sleep(0.5)  # SeaweedFS counts just after each response
    sent = _bytes_sent(s3_env, "dryrun") - before
    assert report["files"]["would_write"] == 3 and report["files"]["matched"] == 4
    assert sent <= 4 * 64 * 1024, f"the dry run fetched {sent:.0f} of {sizes} bytes"
    # The setting is the dry run's alone: the process's other s3fs use keeps its defaults.
    assert "default_block_size" not in fsspec.config.conf.get("s3", {})


def test_dry_run_agrees_with_the_ingest_on_real_files(real_edf_dir: Path, tmp_path: Path) -> None:
    """The real EDF/BDF files (odd headers, a Nihon Kohden export, annotation-only and 5-s files): every
    file's decision, kept and dropped channels and windows are the ingest's."""
    recipe = load_recipe("generic", root=str(real_edf_dir))
    manifest = run_shards(recipe, str(tmp_path / "out"), progress=False)
    report = dry_run(recipe)
    predicted = {p["path"]: p for p in report["per_file"]}
    assert len(predicted) == len(manifest["files"]) > 10
    for f in manifest["files"]:
        p = predicted[f["path"]]
        assert (p["reason"], p["channels"], p["dropped_channels"], p["windows"]) == (
            f["reason"],
            f["channels"],
            f["dropped_channels"],
            f["samples"],
        ), f["path"]
    assert report["estimate"]["hours"] == manifest["totals"]["hours"]
