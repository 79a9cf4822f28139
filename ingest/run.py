"""One ingest task: its share of a corpus's files → shards, resumable after a kill.

Task i of N takes every N-th file of the sorted listing, so a SLURM array or an Indexed Job splits a
corpus with no coordination. Files are read in parallel by `workers` processes but their samples reach the
shard writers in file order, so the shards depend only on the inputs and the config.

Resume: whenever a shard is committed, the task's state file records which files have all their samples
in committed shards (or were skipped) and, for the one file per split that straddles the open shard, how
many of its samples are already committed. A re-run with the same arguments skips the former and the
committed samples of the latter, and so writes exactly the shards an uninterrupted run writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from eegfm.errors import ConfigError, DataError
from eegfm.ingest import contract
from eegfm.ingest.manifest import merge
from eegfm.ingest.preprocess import preprocess_hash
from eegfm.ingest.recipe import Recipe, SourceFile, discover, recipe_as_dict
from eegfm.ingest.recording import FileOutcome, ingest_file
from eegfm.ingest.shardwriter import ShardWriter
from eegfm.ingest.windows import HISTOGRAM_EDGES, Sample
from eegfm.storage import (
    exists,
    join_url,
    list_files,
    read_json,
    remove_stale_temporaries,
    require_folder,
    storage_errors,
    write_json,
)

if TYPE_CHECKING:
    from eegfm.ingest.tasks import Labeller

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
SPOOL_SUFFIX = ".spool"  # `_tasks/<task stem>.spool/run-*/`: the workers' spools of a live run
_SPOOL_LOCK = "lock"


def run_shards(recipe: Recipe, out: str, **options: Any) -> dict[str, Any]:
    """`run_task` with the same options; when the corpus is a single task, also `merge`: the dataset's
    manifest.json and report.html."""
    task = run_task(recipe, out, **options)
    return merge(out) if options.get("num_tasks", 1) == 1 else task


def run_task(
    recipe: Recipe,
    out: str,
    *,
    workers: int = 1,
    num_tasks: int = 1,
    task_index: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
    labeller: Labeller | None = None,
) -> dict[str, Any]:
    """Run (or resume) one task; returns its task manifest. A finished task is not run again.

    With a `labeller` (a task recipe, `ingest/tasks.py`) the shards are the task's labelled shards: named
    after the task, split by its policy, every window labelled or counted as unlabelled.
    """
    if not 0 <= task_index < num_tasks:
        raise ConfigError(
            f"--task-index must be in [0, {num_tasks}) for --num-tasks {num_tasks}, got {task_index}"
        )
    require_folder(out)
    config = {**recipe_as_dict(recipe), "num_tasks": num_tasks, "shard_bytes": shard_bytes}
    files = discover(recipe)[task_index::num_tasks]
    if labeller is not None:
        from eegfm.ingest.tasks import task_as_dict

        config["task"] = task_as_dict(labeller.task)
        files = labeller.assign_splits(files)
        recipe = replace(recipe, name=labeller.task.name)  # discovered as the dataset, written as the task
    # The configuration must match across tasks (merge checks it); a task's own inputs must not change
    # between a kill and its resume, or the resumed shards could not equal an uninterrupted run's.
    run_hash = _digest(config)
    inputs_hash = _digest([(f.path, f.size) for f in files])
    stem = join_url(out, contract.TASKS_DIR, contract.task_stem(task_index, num_tasks))
    _remove_debris(out, recipe, task_index, stem)
    if exists(stem + ".json"):
        finished = read_json(stem + ".json")
        _check_same_run(finished, run_hash, inputs_hash, out)
        return finished
    task = _Task(recipe, out, task_index, stem, (run_hash, inputs_hash), config, shard_bytes, labeller)
    task.run(files, workers, progress, _spool_parent(out, stem))
    return read_json(stem + ".json")


def _remove_debris(out: str, recipe: Recipe, task_index: int, stem: str) -> None:
    """What a killed run of this very task left: its shards' and journal's temporaries, and its spools.

    Only names that this task alone writes are touched (its shard names carry the task index), and only
    files no live writer holds (see `remove_stale_temporaries`), so a re-run cleans up after a kill while
    the other tasks of the same OUT run on.
    """
    for split in _split_names(recipe):
        shard_prefix = contract.shard_name(recipe.name, split, task_index, 0).removesuffix("000000.tar")
        remove_stale_temporaries(out, shard_prefix)
    remove_stale_temporaries(join_url(out, contract.TASKS_DIR), stem.rsplit("/", 1)[-1] + ".json")
    remove_stale_temporaries(stem + ".state", "")
    _remove_dead_spools(_spool_parent(out, stem))


def _split_names(recipe: Recipe) -> list[str]:
    """The recipe's splits and the contract's (a task's official splits map onto the contract's)."""
    return [*recipe.splits, *(s for s in contract.SPLITS if s not in recipe.splits)]


def _spool_parent(out: str, stem: str) -> str:
    """Where this task's workers spool: under OUT's task folder when OUT is local, so that a killed run's
    spools are found by its re-run (from any node); for object storage, a local folder named after the task.
    """
    fs, path = fsspec.core.url_to_fs(stem)
    if isinstance(fs, LocalFileSystem):
        return path + SPOOL_SUFFIX
    return os.path.join(tempfile.gettempdir(), f"eegfm-ingest-{hashlib.sha1(stem.encode()).hexdigest()[:12]}")


def _remove_dead_spools(parent: str) -> None:
    """Remove every run folder under `parent` whose run is dead (its lock file is free, or it has none)."""
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        folder = os.path.join(parent, name)
        try:
            fd = os.open(os.path.join(folder, _SPOOL_LOCK), os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        except NotADirectoryError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live run of this task (or no locks here: cannot tell, so keep it)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if fd is not None:
                os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(parent)  # only if empty


@contextlib.contextmanager
def _spool_folder(parent: str) -> Iterator[str]:
    """A folder for one run's spools, locked (flock on its lock file) while the run lives, removed after."""
    with storage_errors(parent, "making the workers' spool folder"):
        os.makedirs(parent, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="run-", dir=parent)
        fd = os.open(os.path.join(folder, _SPOOL_LOCK), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield folder
    finally:
        os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _check_same_run(previous: dict[str, Any], run_hash: str, inputs_hash: str, out: str) -> None:
    if previous["run_hash"] != run_hash:
        raise ConfigError(
            f"{out} holds an ingest run with a different configuration (run {previous['run_hash']}, this one "
            f"{run_hash}): choose a fresh OUT, or delete it to start over"
        )
    if previous["inputs_hash"] != inputs_hash:
        raise DataError(
            f"the input files of this task changed since {out} was written (files added, removed or resized "
            f"under ROOT): choose a fresh OUT, or delete it to start over"
        )


class _Task:
    def __init__(
        self,
        recipe: Recipe,
        out: str,
        index: int,
        stem: str,
        hashes: tuple[str, str],
        config: dict[str, Any],
        shard_bytes: int,
        labeller: Labeller | None = None,
    ):
        self.recipe, self.out, self.index, self.stem = recipe, out, index, stem
        self.labeller = labeller
        (self.run_hash, self.inputs_hash), self.config = hashes, config
        state = _load_journal(stem + ".state", hashes, out)
        self.done: list[dict[str, Any]] = state["done"]
        self.committed: dict[str, int] = state["committed"]  # straddling file → samples already in shards
        self.shards: list[dict[str, Any]] = state["shards"]
        self.histogram: list[int] = state["histogram"] or [0] * (len(HISTOGRAM_EDGES) - 1)
        self.montages: dict[str, Any] = state["montages"]
        self._journaled = (len(self.done), len(self.shards), state["parts"])  # what the journal already holds
        self.writers = {
            split: ShardWriter(
                out,
                recipe.name,
                split,
                index,
                shard_bytes,
                first_index=sum(1 for s in self.shards if s["split"] == split),
            )
            for split in _split_names(recipe)
        }
        # Per split, the files with samples in its open (uncommitted) shard, in order.
        self.open_files: dict[str, list[FileOutcome]] = {split: [] for split in _split_names(recipe)}

    def run(self, files: list[SourceFile], workers: int, progress: bool, spool_parent: str) -> None:
        done = {f["path"] for f in self.done}
        pending = [f for f in files if f.path not in done]
        bar = tqdm(
            total=len(files),
            initial=len(files) - len(pending),
            unit="file",
            disable=not progress,
            desc=f"{self.recipe.name} task {self.index}",
            dynamic_ncols=True,
        )
        started, hours = time.monotonic(), 0.0
        for outcome, samples in _ingested(pending, self.recipe, workers, spool_parent, self.labeller):
            self._write(outcome, samples)
            hours += outcome.hours
            bar.update()
            bar.set_postfix_str(f"{hours:.1f} h EEG, {hours / max(time.monotonic() - started, 1e-9):.2f} h/s")
        bar.close()
        for writer in self.writers.values():
            record = writer.close()
            if record is not None:
                self.shards.append(asdict(record))
        for outcomes in self.open_files.values():
            self._finish(outcomes)
        write_json(self.stem + ".json", self._document(files=sorted(self.done, key=lambda f: f["path"])))

    def _write(self, outcome: FileOutcome, samples: Iterator[Sample]) -> None:
        if outcome.status != "written":
            self._finish([outcome])
            return
        self.montages.setdefault(
            outcome.montage,
            {
                "montage_name": outcome.montage_name,
                "channels": outcome.channels,
                "positions": outcome.positions,
            },
        )
        writer = self.writers[outcome.split]
        open_files = self.open_files[outcome.split]
        open_files.append(outcome)
        added = self.committed.get(outcome.path, 0)
        for i, sample in enumerate(samples):
            if i < added:
                continue  # committed before the previous run was killed
            record = writer.add(sample)
            added += 1
            if record is None:
                continue
            self.shards.append(asdict(record))
            straddles = added < outcome.samples
            self._finish(open_files[:-1] if straddles else open_files[:])
            open_files[:] = open_files[-1:] if straddles else []
            if straddles:
                self.committed[outcome.path] = added
            self._save_state()

    def _finish(self, outcomes: list[FileOutcome]) -> None:
        """These files are fully accounted for: skipped, or every sample in a committed shard."""
        for o in outcomes:
            self.done.append(o.as_record())
            self.committed.pop(o.path, None)
            if o.histogram:
                self.histogram = [a + b for a, b in zip(self.histogram, o.histogram, strict=True)]

    def _document(self, **extra: Any) -> dict[str, Any]:
        if self.labeller is not None:  # `task` here is this partition's index; the merged manifest names it
            extra["labels"] = {"task": self.labeller.task.name, "classes": list(self.labeller.task.classes)}
        return {
            "dataset": self.recipe.name,
            "task": self.index,
            "run_hash": self.run_hash,
            "inputs_hash": self.inputs_hash,
            "preprocess_hash": preprocess_hash(self.recipe.preprocess, self.recipe.mains_hz),
            "config": self.config,
            "shards": self.shards,
            "histogram": self.histogram,
            "montages": self.montages,
            **extra,
        }

    def _save_state(self) -> None:
        """Append one part to the resume journal: what became final since the last part.

        Parts hold only what is new, so a task over tens of thousands of files does not rewrite its whole
        file list at every shard; a part appears atomically, so a kill leaves the journal consistent.
        """
        n_done, n_shards, part = self._journaled
        write_json(
            join_url(self.stem + ".state", f"{part:06d}.json"),
            {
                "run_hash": self.run_hash,
                "inputs_hash": self.inputs_hash,
                "done": self.done[n_done:],
                "shards": self.shards[n_shards:],
                "committed": self.committed,
                "histogram": self.histogram,
                "montages": self.montages,
            },
        )
        self._journaled = (len(self.done), len(self.shards), part + 1)


def _load_journal(folder: str, hashes: tuple[str, str], out: str) -> dict[str, Any]:
    """The task's state so far: every journal part's new records, and the last part's running totals."""
    state: dict[str, Any] = {
        "done": [],
        "shards": [],
        "committed": {},
        "histogram": None,
        "montages": {},
        "parts": 0,
    }
    for name in list_files(folder, "*.json"):
        part = read_json(join_url(folder, name))
        _check_same_run(part, *hashes, out)
        state["done"] += part["done"]
        state["shards"] += part["shards"]
        state.update(committed=part["committed"], histogram=part["histogram"], montages=part["montages"])
        state["parts"] += 1
    return state


def _ingested(
    files: list[SourceFile], recipe: Recipe, workers: int, spool_parent: str, labeller: Labeller | None
) -> Iterator[tuple[FileOutcome, Iterator[Sample]]]:
    """(outcome, samples) per file, in file order; with workers > 1 the files are read in parallel."""
    if workers <= 1:
        for source in files:
            result = ingest_file(source, recipe, labeller=labeller)
            yield result.outcome, result.samples
        return
    with (
        _spool_folder(spool_parent) as spool_dir,
        ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool,
    ):
        queue: deque[Future] = deque()
        todo = iter(files)
        for source in todo:
            queue.append(pool.submit(_ingest_to_spool, source, recipe, spool_dir, labeller))
            if len(queue) >= 2 * workers:
                break
        while queue:
            outcome, path = queue.popleft().result()
            source = next(todo, None)
            if source is not None:
                queue.append(pool.submit(_ingest_to_spool, source, recipe, spool_dir, labeller))
            yield outcome, _read_spool(path)


# A worker hands its samples to the writer through a local file: [header length][JSON header][members…].
def _ingest_to_spool(
    source: SourceFile, recipe: Recipe, spool_dir: str, labeller: Labeller | None
) -> tuple[FileOutcome, str | None]:
    result = ingest_file(source, recipe, labeller=labeller)
    if result.outcome.status != "written":
        return result.outcome, None
    fd, path = tempfile.mkstemp(dir=spool_dir, suffix=".spool")
    with os.fdopen(fd, "wb") as f:
        for sample in result.samples:
            head = json.dumps(
                {
                    "key": sample.key,
                    "hours": sample.hours,
                    "shape": sample.shape,
                    "sizes": {k: len(v) for k, v in sample.members.items()},
                }
            ).encode()
            f.write(struct.pack("<I", len(head)) + head)
            for value in sample.members.values():
                f.write(value)
    return result.outcome, path


def _read_spool(path: str | None) -> Iterator[Sample]:
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            while size := f.read(4):
                head = json.loads(f.read(struct.unpack("<I", size)[0]))
                members = {k: f.read(n) for k, n in head["sizes"].items()}
                yield Sample(head["key"], members, head["hours"], tuple(head["shape"]))
    finally:
        os.unlink(path)
