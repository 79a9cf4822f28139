"""Task manifests → the dataset's `manifest.json` (every input file accounted for) and its totals."""

from __future__ import annotations

import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import eegfm
from eegfm.errors import DataError
from eegfm.ingest import contract
from eegfm.ingest.report import write_report
from eegfm.ingest.windows import HISTOGRAM_EDGES
from eegfm.storage import join_url, list_files, read_json, remove_stale_temporaries, write_json

FORMAT = "eegfm-shards/1"


def code_version() -> str:
    """Package version plus the git commit when running from a checkout: which code wrote these shards."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return eegfm.__version__
    return f"{eegfm.__version__}+g{commit}"


def reason_kind(reason: str) -> str:
    """A reason without its particulars, for counting: reasons keep those in parentheses or quotes, so
    `shorter than one window (5 s < 10 s)` and `(6 s < 10 s)` count as one kind."""
    text = re.sub(r"\s*\([^)]*\)", "", reason)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "…", text).strip()


def merge(out: str) -> dict[str, Any]:
    """Combine every task manifest under `out` into `out/manifest.json`; all tasks must have finished."""
    for name in (contract.MANIFEST_NAME, contract.REPORT_NAME):  # what a merge killed mid-write left
        remove_stale_temporaries(out, name)
    listed = list_files(join_url(out, contract.TASKS_DIR), "task-*-of-*.json")
    names = [n for n in listed if ".state" not in n]
    if not names:
        raise DataError(f"no finished ingest task under {out}/{contract.TASKS_DIR}: run `eegfm shards` first")
    num_tasks = int(re.search(r"-of-(\d+)\.json$", names[0]).group(1))
    missing = sorted(
        set(range(num_tasks)) - {int(n[5:9]) for n in names if n.endswith(f"-of-{num_tasks:04d}.json")}
    )
    if missing:
        raise DataError(
            f"cannot merge {out}: tasks {missing} of {num_tasks} have not finished: run them "
            "(eegfm shards --num-tasks … --task-index …), then merge again"
        )
    tasks = [
        read_json(join_url(out, contract.TASKS_DIR, contract.task_stem(i, num_tasks) + ".json"))
        for i in range(num_tasks)
    ]
    if len({t["run_hash"] for t in tasks}) != 1:
        raise DataError(
            f"cannot merge {out}: its task manifests come from runs with different configurations: "
            "run every task with one configuration into a fresh OUT"
        )
    manifest = build_manifest(tasks)
    write_json(join_url(out, contract.MANIFEST_NAME), manifest)
    write_report(manifest, out)
    return manifest


def build_manifest(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    first = tasks[0]
    files = sorted((f for t in tasks for f in t["files"]), key=lambda f: f["path"])
    shards = sorted((s for t in tasks for s in t["shards"]), key=lambda s: s["url"])
    histogram = [sum(col) for col in zip(*(t["histogram"] for t in tasks), strict=True)]
    montages = {tag: m for t in tasks for tag, m in t["montages"].items()}
    manifest = {
        "format": FORMAT,
        "dataset": first["dataset"],
        "code_version": code_version(),
        "preprocess_hash": first["preprocess_hash"],
        "config": first["config"],
        "shards": shards,
        "totals": totals(files, shards, histogram, montages),
        "files": files,
    }
    if "labels" in first:  # a task's labelled shards: contract.TASK_MANIFEST
        classes = first["labels"]["classes"]
        manifest |= {
            "task": first["labels"]["task"],
            "classes": classes,
            "class_counts": class_counts(files, classes),
        }
        manifest["totals"]["unlabelled_reasons"] = dict(
            sum((Counter(f.get("unlabelled", {})) for f in files), Counter()).most_common()
        )
    return manifest


def class_counts(files: list[dict[str, Any]], classes: list[str]) -> dict[str, dict[str, int]]:
    """{split: {class: windows written}} for every contract split and class, zeros included: a class
    missing from a split is itself a finding."""
    counts = {split: dict.fromkeys(classes, 0) for split in contract.SPLITS}
    for f in files:
        if f["status"] == "written":
            for name, n in f.get("class_counts", {}).items():
                counts.setdefault(f["split"], dict.fromkeys(classes, 0))[name] += n
    return counts


def totals(
    files: list[dict[str, Any]],
    shards: list[dict[str, Any]],
    histogram: list[int],
    montages: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Hours, samples and subjects per split and montage; every reason counted; coverage and positions."""
    written = [f for f in files if f["status"] == "written"]
    per_split: dict[str, dict[str, Any]] = {}
    names = [*contract.SPLITS, *sorted({f["split"] for f in written} - set(contract.SPLITS))]
    for split in names:  # a recipe may name its own splits beyond train/val/test
        mine = [f for f in written if f["split"] == split]
        if mine:
            per_split[split] = {
                "hours": round(sum(f["hours"] for f in mine), 6),
                "samples": sum(f["samples"] for f in mine),
                "subjects": len({f["subject"] for f in mine}),
                "files": len(mine),
                "shards": sum(1 for s in shards if s["split"] == split),
            }
    per_montage: dict[str, dict[str, Any]] = {}
    channel_hours: defaultdict[str, float] = defaultdict(float)
    for f in written:
        m = per_montage.setdefault(f["montage"], {**montages[f["montage"]], "hours": 0.0, "samples": 0})
        m["hours"] += f["hours"]
        m["samples"] += f["samples"]
        for name in f["channels"]:
            channel_hours[name] += f["hours"]
    positions = {}
    for m in per_montage.values():
        positions.update(
            {n: p for n, p in zip(m["channels"], m["positions"], strict=True) if n not in positions}
        )
    return {
        "hours": round(sum(f["hours"] for f in written), 6),
        "samples": sum(f["samples"] for f in written),
        "subjects": len({f["subject"] for f in written}),
        "files": {"written": len(written), "skipped": len(files) - len(written)},
        "per_split": per_split,
        "per_montage": {k: {**v, "hours": round(v["hours"], 6)} for k, v in sorted(per_montage.items())},
        "skip_reasons": dict(
            Counter(reason_kind(f["reason"]) for f in files if f["status"] == "skipped").most_common()
        ),
        "dropped_channel_reasons": dict(
            Counter(reason_kind(r) for f in files for r in f["dropped_channels"].values()).most_common()
        ),
        "dropped_window_reasons": dict(
            sum((Counter(f["dropped_windows"]) for f in files), Counter()).most_common()
        ),
        "channel_hours": {k: round(v, 6) for k, v in sorted(channel_hours.items(), key=lambda kv: -kv[1])},
        "positions": positions,
        "amplitude_histogram": {"edges_uv": HISTOGRAM_EDGES.tolist(), "counts": histogram},
    }
