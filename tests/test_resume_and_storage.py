"""Killed runs resume to the same bytes; partitions merge to the same dataset; S3 in and out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from ingestrun import shards_command
from shardcheck import check_contract, read_shard

from eegfm.ingest.recipe import load_recipe
from eegfm.ingest.run import run_shards


def _tree(out: Path) -> dict[str, bytes]:
    """Every committed file of an output folder, less the resume journal (a resumed run has more parts)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".state/" not in p.relative_to(out).as_posix() and ".tmp-" not in p.name
    }


@pytest.fixture(scope="module")
def uninterrupted(real_edf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(shards_command(real_edf_dir, out), check=True, capture_output=True)
    return out


def test_same_inputs_same_bytes(real_edf_dir: Path, uninterrupted: Path, tmp_path: Path) -> None:
    subprocess.run(shards_command(real_edf_dir, tmp_path), check=True, capture_output=True)
    assert _tree(tmp_path) == _tree(uninterrupted)
    check_contract(uninterrupted)


def test_rerun_of_a_finished_run_changes_nothing(real_edf_dir: Path, uninterrupted: Path) -> None:
    before = _tree(uninterrupted)
    subprocess.run(shards_command(real_edf_dir, uninterrupted), check=True, capture_output=True)
    assert _tree(uninterrupted) == before


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_commits", [1, 4])
def test_killed_run_resumes_to_the_same_shards(
    real_edf_dir: Path, uninterrupted: Path, tmp_path: Path, kill_after_commits: int
) -> None:
    process = subprocess.Popen(
        shards_command(real_edf_dir, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("*.tar"))) < kill_after_commits:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_with = len(list(tmp_path.glob("*.tar")))
    assert killed_with >= kill_after_commits, process.stderr.read().decode()
    assert not (tmp_path / "manifest.json").exists(), "the run finished before it could be killed"
    subprocess.run(shards_command(real_edf_dir, tmp_path), check=True, capture_output=True)
    assert _tree(tmp_path) == _tree(uninterrupted)


def test_a_different_configuration_is_refused(real_edf_dir: Path, uninterrupted: Path) -> None:
    done = subprocess.run(
        shards_command(real_edf_dir, uninterrupted, "preprocess.window_s=5"), capture_output=True, text=True
    )
    assert done.returncode == 2 and "different configuration" in done.stderr


def test_partitions_merge_to_the_single_task_dataset(
    real_edf_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    for i in range(3):
        subprocess.run(
            shards_command(real_edf_dir, tmp_path, "--num-tasks", "3", "--task-index", str(i)),
            check=True,
            capture_output=True,
        )
    assert not (tmp_path / "manifest.json").exists()
    subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "merge", "--out", str(tmp_path)], check=True, capture_output=True
    )
    merged = check_contract(tmp_path)
    single = json.loads((uninterrupted / "manifest.json").read_text())
    assert merged["files"] == single["files"]
    for key in ("hours", "samples", "subjects", "files", "per_montage", "skip_reasons", "channel_hours"):
        assert merged["totals"][key] == single["totals"][key], key

    def samples(out: Path, manifest: dict) -> dict[str, dict[str, bytes]]:
        return {k: v for s in manifest["shards"] for k, v in read_shard(out / s["url"]).items()}

    assert samples(tmp_path, merged) == samples(uninterrupted, single)


def test_merge_refuses_missing_tasks(real_edf_dir: Path, tmp_path: Path) -> None:
    subprocess.run(
        shards_command(real_edf_dir, tmp_path, "--num-tasks", "2", "--task-index", "1"),
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "merge", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "tasks [0] of 2 have not finished" in done.stderr


def test_workers_do_not_change_the_output(real_edf_dir: Path, uninterrupted: Path, tmp_path: Path) -> None:
    subprocess.run(shards_command(real_edf_dir, tmp_path, "--workers", "2"), check=True, capture_output=True)
    assert _tree(tmp_path) == _tree(uninterrupted)


def test_missing_corpus_names_recipe_root_and_override(tmp_path: Path) -> None:
    done = subprocess.run(
        shards_command(tmp_path / "nowhere", tmp_path / "out"), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "recipe 'generic'" in done.stderr and "nowhere" in done.stderr and "ROOT=" in done.stderr


@pytest.mark.s3
@pytest.mark.slow
def test_s3_in_and_out_with_a_kill(s3_env, real_edf_dir: Path, uninterrupted: Path, tmp_path: Path) -> None:
    fs = fsspec.filesystem("s3")
    fs.mkdir("corpus")
    fs.mkdir("shards")
    for path in sorted(real_edf_dir.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"corpus/real-edf/{path.relative_to(real_edf_dir).as_posix()}")
    env = {**os.environ}
    process = subprocess.Popen(
        shards_command("s3://corpus/real-edf", "s3://shards/generic"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(fs.glob("shards/generic/*.tar", refresh=True)) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not fs.exists("shards/generic/manifest.json")
    subprocess.run(
        shards_command("s3://corpus/real-edf", "s3://shards/generic"),
        env=env,
        check=True,
        capture_output=True,
    )
    fs.get("shards/generic/", str(tmp_path), recursive=True)
    from_s3, local = _tree(tmp_path), _tree(uninterrupted)
    assert {k: v for k, v in from_s3.items() if k.endswith(".tar")} == {
        k: v for k, v in local.items() if k.endswith(".tar")
    }
    ours, theirs = (json.loads(tree["manifest.json"]) for tree in (from_s3, local))
    assert ours["config"]["root"] == "s3://corpus/real-edf"  # the only difference: where the corpus was
    assert "report.html" in from_s3
    for key in ("files", "shards", "totals"):
        assert ours[key] == theirs[key], key


def test_s3_output_through_the_api(s3_env, real_eeg_dir: Path) -> None:
    fs = fsspec.filesystem("s3")
    fs.mkdir("api")
    recipe = load_recipe("generic", root=str(real_eeg_dir))
    manifest = run_shards(recipe, "s3://api/emotiv", progress=False)
    (shard,) = manifest["shards"]
    with fs.open(f"api/emotiv/{shard['url']}", "rb") as f:
        data = f.read()
    assert len(data) == shard["bytes"]
    assert json.loads(fs.cat("api/emotiv/manifest.json"))["totals"]["samples"] == 1


def test_changed_inputs_are_refused_not_mixed(real_eeg_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.edf").write_bytes((real_eeg_dir / "emotiv14_128hz_16s.edf").read_bytes())
    subprocess.run(shards_command(corpus, tmp_path / "out"), check=True, capture_output=True)
    (corpus / "b.edf").write_bytes((real_eeg_dir / "emotiv14_128hz_16s.edf").read_bytes())
    done = subprocess.run(shards_command(corpus, tmp_path / "out"), capture_output=True, text=True)
    assert done.returncode == 2 and "input files of this task changed" in done.stderr
