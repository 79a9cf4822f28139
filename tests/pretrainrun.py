"""Running `eegfm pretrain` from the tests, and reading what a run leaves behind."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import fsspec

# Single-threaded processes: the tests run several on two cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pretrain_command(
    config: str, shards: Path, run_dir: str, keys: Path, *overrides: str, resume: str | None = None
) -> list[str]:
    """`eegfm pretrain` on fixture shards, recording sample keys, without TensorBoard, 100 channel-windows."""
    return [
        sys.executable,
        "-m",
        "eegfm.cli",
        "pretrain",
        "--config",
        config,
        *(["--resume", resume] if resume else []),
        f"data.shards=[{shards}]",
        f"run.dir={run_dir}",
        f"logging.sample_keys={keys}",
        "logging.tensorboard=false",
        "data.channel_budget=100",
        *overrides,
    ]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=kwargs.pop("env", ENV), capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(path: Path) -> list[tuple[int, int, int, list[str]]]:
    """(step, epoch, index, keys) of one rank's sample log, every micro-batch; a micro-batch logged twice
    (a killed attempt's rows not trimmed on resume) fails the test."""
    rows = []
    for line in path.read_text().splitlines():
        step, epoch, index, keys = line.split("\t")
        rows.append((int(step), int(epoch), int(index), keys.split(",")))
    seen = [(epoch, index) for _, epoch, index, _ in rows]
    assert len(seen) == len(set(seen)), f"{path}: micro-batches logged twice"
    return rows


def keys_by_step(folder: Path) -> dict[int, dict[int, list[str]]]:
    """{rank: {step: keys}} from the sample logs: each step's keys are those of all its micro-batches, in
    the order they were trained (with accumulation, every micro-batch counts, not only the last)."""
    steps: dict[int, dict[int, list[str]]] = defaultdict(dict)
    for path in sorted(folder.glob("rank-*.tsv")):
        rank = int(path.stem.split("-")[1])
        for step, _epoch, _index, keys in _rows(path):
            steps[rank].setdefault(step, []).extend(keys)
    return dict(steps)


def micro_batches(folder: Path) -> list[tuple[int, int, int, list[str]]]:
    """(step, epoch, index, keys) of every rank's micro-batches, sorted by epoch and index."""
    rows = [row for path in sorted(folder.glob("rank-*.tsv")) for row in _rows(path)]
    return sorted(rows, key=lambda row: (row[1], row[2]))


def losses(metrics: str) -> dict[int, float]:
    return logged(metrics, "loss")


def logged(metrics: str, column: str) -> dict[int, float]:
    """{step: value} of one column of a metrics.csv, for the rows that have one (a run without that
    column: {})."""
    with fsspec.open(metrics, "r") as f:
        return {int(r["step"]): float(r[column]) for r in csv.DictReader(f) if r.get(column)}


def with_resume(command: list[str]) -> list[str]:
    """The same `eegfm pretrain` command with `--resume auto`."""
    return [*command[:4], "--resume", "auto", *command[4:]]


def kill_once_saved(command: list[str], env: dict[str, str], checkpoint: str, timeout: float = 120) -> None:
    """Start a run, SIGKILL it as soon as `checkpoint` (a local path or URL) exists."""
    fs, path = fsspec.core.url_to_fs(checkpoint)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not fs.exists(path):
        fs.invalidate_cache()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    fs.invalidate_cache()
    assert fs.exists(path), f"{checkpoint} never appeared: {process.stderr.read().decode()[-3000:]}"


def assert_curve_continues(resumed: dict[int, float], whole: dict[int, float]) -> None:
    """A run stopped by a signal and resumed logs every step the uninterrupted run logs, with the same
    values, plus at most the step it stopped at (Lightning logs that one off the schedule)."""
    assert set(whole) <= set(resumed) and len(resumed) <= len(whole) + 1, (sorted(resumed), sorted(whole))
    assert {step: resumed[step] for step in whole} == whole


def fixed_batches(shards: Path, seed: int, transform: object = None, count: int = 7) -> list[dict]:
    """`count` micro-batches of one process's stream over `shards` (320 channel-windows each): the same
    windows, and masks from `transform`, whatever model is evaluated on them."""
    from eegfm.pretrain.plan import Cursor
    from eegfm.pretrain.stream import ShardStream
    from eegfm.pretrain.table import DatasetSpec, load_table

    table = load_table([DatasetSpec(str(shards))], "train")
    options = dict(seed=seed, budget=320, clip=15.0, start=Cursor(), rank=0, world=1, accumulation=1)
    stream = iter(ShardStream(table, [None], **options, transform=transform))
    return [next(stream) for _ in range(count)]


def assert_killed_run_resumes_exactly(
    command: list[str],
    env: dict[str, str],
    run_url: str,
    kill_at: int,
    last: int,
    keys: Path,
    whole: Path,
    between: Callable[[], None] = lambda: None,
) -> None:
    """SIGKILL the run `command` starts (run directory `run_url`, sample keys under `keys`) once its
    step-`kill_at` checkpoint exists, call `between`, resume it with --resume auto, and check it ends as
    the uninterrupted run in `whole` (its `run/` and `keys/`) did: the same windows per step, the same
    curve (and val_loss curve, if evaluated) to the bit, and the final checkpoint of step `last`."""
    fs, folder = fsspec.core.url_to_fs(run_url)[0], f"{run_url}/checkpoints"
    kill_once_saved(command, env, f"{folder}/step={kill_at:08d}.ckpt")
    assert not fs.exists(f"{folder}/step={last:08d}.ckpt"), "the run finished before the kill"
    between()
    run(with_resume(command), env=env)
    assert keys_by_step(keys) == keys_by_step(whole / "keys")
    assert losses(f"{run_url}/metrics.csv") == losses(str(whole / "run" / "metrics.csv"))  # to the bit
    # With evaluation on, the val curve too (both {} without it).
    assert logged(f"{run_url}/metrics.csv", "val_loss") == logged(
        str(whole / "run" / "metrics.csv"), "val_loss"
    )
    fs.invalidate_cache()
    assert fs.exists(f"{folder}/step={last:08d}.ckpt")
