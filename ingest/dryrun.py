"""`eegfm shards --dry-run`: what an ingest of a corpus would write, known from the files' headers alone.

Why: a 60,000-hour ingest is days of compute; a recipe whose include glob misses half the corpus, a label
spelling no rule knows, or a unit that would drop every channel should show up in seconds, before it runs.

The dry run makes the run's own decisions, not copies of them: files come from `recipe.discover` (any
layout), each is opened with `formats.open_recording` (any format), and its channels go through
`channel_plan.plan_channels`, exactly as `recording.ingest_file` does. It reads each file's header only: no
data record is read, so what depends on the samples is not predicted (flat channels, windows dropped by
QC, clipping) and an EDF+D file's gaps are not known (its record onsets live in its annotation records):
its hours are counted as if it were contiguous, an upper bound. The report's `caveats` list these.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eegfm.errors import StorageError
from eegfm.ingest import bids
from eegfm.ingest.channel_plan import ChannelPlan, plan_channels
from eegfm.ingest.formats import format_of, open_recording
from eegfm.ingest.manifest import reason_kind
from eegfm.ingest.recipe import Recipe, RecipeError, SourceFile, discover
from eegfm.ingest.signals import ReadError, Signal
from eegfm.storage import storage_errors, strip_protocol

if TYPE_CHECKING:
    from eegfm.ingest.tasks import TaskRecipe

EXAMPLES = 5  # example paths shown per group
# Read-ahead block for object storage during a dry run: an EDF header of up to 255 signals in one request,
# where s3fs would otherwise fetch 50 MiB (most recordings whole) to read a 256-byte header.
HEADER_BLOCK = 64 * 1024
# Drop reasons (from `channels.canonical_channel` / `plan_channels`) that mean "no rule or electrode
# knows this label": what a recipe's `rename:` is for.
UNRECOGNISED = ("no position in montage", "cap labels match no")
# Tar bytes of one sample beyond its EEG array: a 512-byte header per member, members padded to 512, the
# .npy headers (128 bytes each), positions (C×3 float32) and the JSON metadata, measured on written shards
# at about 800 + 30 bytes per channel (1,393 bytes for 21 channels).
_TAR_BLOCK = 512
_NPY_HEADER = 128
_META_BASE, _META_PER_CHANNEL = 800, 30
# Per shard: tar's end-of-archive blocks, and on average half of the 10,240-byte record it is padded to.
_SHARD_OVERHEAD = 2 * _TAR_BLOCK + 10240 // 2


@dataclass
class FilePrediction:
    """What the ingest would do with one file, from its header: the manifest's line, predicted."""

    path: str
    status: str  # "would_write" | "would_skip"
    reason: str | None
    split: str | None
    subject: str
    format: str | None = None
    channels: list[str] = field(default_factory=list)  # canonical names, as the manifest lists them
    labels: list[str] = field(default_factory=list)  # the kept signals' labels (duplicates numbered)
    dropped_channels: dict[str, str] = field(default_factory=dict)
    orig_sfreq: float | None = None
    duration_s: float | None = None
    windows: int = 0
    hours: float = 0.0
    discontinuous: bool = False  # EDF+D: its gaps are in the data records, not read
    notes: list[str] = field(default_factory=list)
    positions: list[list[float]] = field(default_factory=list)  # per kept channel, metres


def grid_windows(duration_s: float, recipe: Recipe, stride_s: float | None = None) -> int:
    """Windows the ingest cuts from one contiguous stretch of `duration_s` at the target rate."""
    config = recipe.preprocess
    n = config.window_samples
    stride = n if stride_s is None else round(stride_s * config.target_sfreq)
    samples = round(duration_s * config.target_sfreq)
    return 0 if samples < n else (samples - n) // stride + 1


def predict_file(
    source: SourceFile,
    recipe: Recipe,
    stride_s: float | None = None,
    plans: dict[tuple[Signal, ...], ChannelPlan] | None = None,
) -> FilePrediction:
    """The ingest's decisions for one file that need only its header, in `recording.ingest_file`'s order
    and with its reasons; `plans` caches channel plans by header (thousands of files share a few)."""
    prediction = FilePrediction(source.path, "would_skip", None, source.split, source.subject)
    if source.skip_reason:
        prediction.reason = source.skip_reason
        return prediction
    try:
        prediction.format = format_of(source.path, recipe.format)
        with open_recording(source, recipe) as reader:
            positions = None
            if source.bids is not None:  # as the ingest: channels.tsv over the signals, digitised positions
                reader = bids.with_sidecar(reader, source.bids)
                positions = bids.measured_positions(source.bids)
            _predict_open_file(prediction, reader, recipe, stride_s, plans, positions)
    except ReadError as e:
        prediction.reason = f"unreadable: {e}"
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"{source.url}: {e}") from e
        prediction.reason = f"I/O error: {e}"
    except Exception as e:  # as the ingest: one odd file is a skip with its error, not the end of the run
        prediction.reason = f"failed: {type(e).__name__}: {e}"
    if prediction.reason is not None:
        prediction.status, prediction.windows, prediction.hours = "would_skip", 0, 0.0
    return prediction


def _predict_open_file(
    p: FilePrediction,
    reader: Any,
    recipe: Recipe,
    stride_s: float | None,
    plans: dict[tuple[Signal, ...], ChannelPlan] | None,
    positions: Any = None,
) -> None:
    config = recipe.preprocess
    p.notes = list(reader.notes)
    if not reader.signals:
        p.reason = "annotation-only file (no signal channels)"
        return
    p.duration_s = float(reader.duration_s)
    if p.duration_s <= 0:
        p.reason = "no complete data record"
        return
    key = tuple(reader.signals)  # a recording's own positions make its plan its own: not cached
    plan = plans.get(key) if plans is not None and positions is None else None
    if plan is None:
        plan = plan_channels(reader.signals, recipe, positions)
        if plans is not None and positions is None:
            plans[key] = plan
    p.notes += plan.notes
    p.dropped_channels = dict(plan.dropped)
    p.orig_sfreq = plan.orig_sfreq
    if len(plan.channels) < config.min_channels:
        p.reason = "no EEG channel with a known position"
        return
    header = getattr(reader, "header", None)  # EDF/BDF: the gaps of an EDF+D need its annotation records
    p.discontinuous = bool(getattr(header, "is_discontinuous", False))
    if p.duration_s < config.window_s:
        p.reason = f"shorter than one window ({p.duration_s:g} s < {config.window_s:g} s)"
        return
    p.windows = grid_windows(p.duration_s, recipe, stride_s)
    if p.windows == 0:
        p.reason = f"no contiguous segment as long as one window ({config.window_s:g} s)"
        return
    p.status = "would_write"
    p.channels = [c.name for c in plan.channels]
    p.labels = list(plan.labels)
    p.positions = [[round(v, 6) for v in c.position] for c in plan.channels]
    p.hours = p.windows * config.window_s / 3600


def window_bytes(recipe: Recipe, channels: int) -> int:
    """Tar bytes of one sample of `channels` channels: EEG, positions and metadata members."""
    config = recipe.preprocess
    itemsize = 2 if config.dtype == "float16" else 4

    def member(size: int) -> int:
        return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK

    return (
        member(_NPY_HEADER + channels * config.window_samples * itemsize)
        + member(_NPY_HEADER + channels * 3 * 4)
        + member(_META_BASE + _META_PER_CHANNEL * channels)
    )


def list_root(recipe: Recipe) -> list[str]:
    """Every file under the recipe's root, relative to it (what the recipe could have matched)."""
    with storage_errors(recipe.root, "listing the corpus"):
        fs, root = fsspec.core.url_to_fs(recipe.root)
        if not fs.exists(root):
            return []
        found = fs.find(root)
    base = strip_protocol(root).rstrip("/")
    return sorted(strip_protocol(full)[len(base) :].lstrip("/") for full in found)


@contextlib.contextmanager
def header_sized_reads(fs: Any) -> Iterator[None]:
    """While open, files of `fs`'s protocol open with HEADER_BLOCK read-ahead (fsspec's per-protocol
    defaults), so a header read fetches the header, not the recording; the defaults return after.

    Only for filesystems that take `default_block_size` (s3fs, gcsfs…); local files read what is asked.
    """
    takes_block = "default_block_size" in inspect.signature(type(fs).__init__).parameters
    if isinstance(fs, LocalFileSystem) or not takes_block:
        yield
        return
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    saved = {p: dict(fsspec.config.conf[p]) if p in fsspec.config.conf else None for p in protocols}
    for p in protocols:
        fsspec.config.conf.setdefault(p, {})["default_block_size"] = HEADER_BLOCK
    try:
        yield
    finally:
        for p, conf in saved.items():
            if conf is None:
                fsspec.config.conf.pop(p, None)
            else:
                fsspec.config.conf[p] = conf


def dry_run(
    recipe: Recipe,
    *,
    task: TaskRecipe | None = None,
    shard_bytes: int = 256 * 1024 * 1024,
    threads: int | None = None,
) -> dict[str, Any]:
    """The dry-run report of ingesting `recipe` (for `task`'s labelled shards when given) as plain data.

    `nothing_written` is None when some file would be written, else one line saying why none would.
    `threads` (default: 1 for a local root, 16 for object storage) overlaps the header reads' latency.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    under_root = list_root(recipe)
    try:
        sources = discover(recipe)  # raises for a missing root, as the run does
        discover_error = None
    except RecipeError as e:
        if not under_root:
            raise
        sources, discover_error = [], str(e)
    stride_s = None
    caveats = [
        "headers only: flat/dead channels, windows dropped by QC and clipping depend on the samples and "
        "are not predicted, so hours and bytes are upper bounds",
    ]
    if task is not None:
        from eegfm.ingest.tasks import Labeller

        sources = Labeller(task, recipe.root).assign_splits(sources)  # the task's splits; labels not read
        stride_s = task.windows.stride_s
        caveats.append(
            f"task {task.name}: labels are not read (files without labels, unlabelled windows and class "
            f"counts need the real ingest); windows counted on the {task.windows.length_s:g}-s grid"
            + ("" if task.windows.mode == "covering" else f", not on the events ({task.windows.mode} mode)")
        )
    fs = fsspec.core.url_to_fs(recipe.root)[0]
    if threads is None:
        threads = 1 if isinstance(fs, LocalFileSystem) else 16
    plans: dict[tuple[Signal, ...], ChannelPlan] = {}
    with header_sized_reads(fs):
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                predictions = list(pool.map(lambda s: predict_file(s, recipe, stride_s, plans), sources))
        else:
            predictions = [predict_file(s, recipe, stride_s, plans) for s in sources]
    report = summarise(recipe, under_root, sources, predictions, shard_bytes, caveats)
    report["task"] = None if task is None else task.name
    if discover_error is not None:
        report["nothing_written"] = discover_error
    report["distinct_channel_layouts"] = len(plans)
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["cpu_seconds"] = round(time.process_time() - cpu_started, 3)
    return report


def _group(items: list[tuple[str, str]], kind: bool = True) -> dict[str, dict[str, Any]]:
    """(reason, path) pairs → {reason kind: {count, examples}}, most common first."""
    groups: dict[str, dict[str, Any]] = {}
    for reason, path in items:
        g = groups.setdefault(reason_kind(reason) if kind else reason, {"count": 0, "examples": []})
        g["count"] += 1
        if len(g["examples"]) < EXAMPLES:
            g["examples"].append(path)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]["count"]))


def summarise(
    recipe: Recipe,
    under_root: list[str],
    sources: list[SourceFile],
    predictions: list[FilePrediction],
    shard_bytes: int,
    caveats: list[str],
) -> dict[str, Any]:
    """The report's sections from the per-file predictions."""
    discovered = {s.path for s in sources}
    not_included = [p for p in under_root if p not in discovered]
    layout = f"include {list(recipe.include)}" if recipe.layout == "files" else "the bids layout"
    unmatched = [(f"not picked by {layout}", p) for p in not_included]
    unmatched += [(s.skip_reason, s.path) for s in sources if s.skip_reason]
    matched = [s.path for s in sources if not s.skip_reason]
    extensions = Counter(_extension(p) for p in not_included)
    written = [p for p in predictions if p.status == "would_write"]
    matched_paths = set(matched)
    skipped = [p for p in predictions if p.status == "would_skip" and p.path in matched_paths]
    unreadable = [p for p in skipped if p.reason.startswith(("unreadable", "I/O error", "failed"))]

    kept: Counter[tuple[str, str, tuple[float, ...]]] = Counter()
    for p in written:
        for label, name, position in zip(p.labels, p.channels, p.positions, strict=True):
            kept[(label, name, tuple(position))] += 1
    dropped: Counter[tuple[str, str]] = Counter()
    for p in predictions:
        for label, reason in p.dropped_channels.items():
            dropped[(label, reason)] += 1
    rows = [{"label": k[0], "reason": k[1], "files": n} for k, n in dropped.most_common()]

    readable = [p for p in predictions if p.duration_s is not None]
    durations = sorted(p.duration_s for p in readable)
    per_split: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": 0, "windows": 0, "bytes": 0})
    for p in written:
        split = per_split[p.split]
        split["files"] += 1
        split["windows"] += p.windows
        split["bytes"] += p.windows * window_bytes(recipe, len(p.channels))
    for split in per_split.values():
        split["hours"] = round(split["windows"] * recipe.preprocess.window_s / 3600, 6)
        # A shard is committed once it reaches shard_bytes: every shard but the last holds that many or more.
        per_shard = math.ceil(shard_bytes / (split["bytes"] / split["windows"])) if split["windows"] else 1
        split["shards"] = math.ceil(split["windows"] / per_shard)
        split["bytes"] += split["shards"] * _SHARD_OVERHEAD
    discontinuous = [p.path for p in written if p.discontinuous]
    if discontinuous:
        caveats.append(
            f"{len(discontinuous)} EDF+D files (e.g. {discontinuous[0]}): their gaps are in the annotation "
            "records, which a dry run does not read; their windows are counted as if contiguous"
        )
    windows = sum(p.windows for p in written)
    config = recipe.preprocess
    report: dict[str, Any] = {
        "dataset": recipe.name,
        "root": recipe.root,
        "layout": recipe.layout,
        "files": {
            "under_root": len(under_root),
            "matched": len(matched),
            "matched_examples": matched[:EXAMPLES],
            "not_matched": len(unmatched),
            "not_matched_reasons": _group(unmatched),
            "not_matched_extensions": dict(extensions.most_common()),
            "would_write": len(written),
            "would_skip": len(skipped),
            "skip_reasons": _group([(p.reason, p.path) for p in skipped]),
            "unreadable": len(unreadable),
            "unreadable_reasons": _group([(p.reason, p.path) for p in unreadable], kind=False),
        },
        "channels": [
            {"label": k[0], "canonical": k[1], "position": list(k[2]), "files": n}
            for k, n in kept.most_common()
        ],
        "dropped": rows,
        "dropped_reasons": dict(
            sum((Counter({reason_kind(r["reason"]): r["files"]}) for r in rows), Counter()).most_common()
        ),
        "unrecognised": [r for r in rows if r["reason"].startswith(UNRECOGNISED)],
        "sampling_rates": {
            f"{rate:g}": n
            for rate, n in sorted(Counter(p.orig_sfreq for p in readable if p.orig_sfreq).items())
        },
        "durations": _durations(durations),
        "notes": {
            k: g["count"] for k, g in _group([(n, p.path) for p in predictions for n in p.notes]).items()
        },
        "estimate": {
            "windows": windows,
            "hours": round(windows * config.window_s / 3600, 6),
            "bytes": sum(s["bytes"] for s in per_split.values()),
            "shards": sum(s["shards"] for s in per_split.values()),
            "per_split": dict(sorted(per_split.items(), key=lambda kv: str(kv[0]))),
            "basis": {
                "target_sfreq": config.target_sfreq,
                "window_s": config.window_s,
                "dtype": config.dtype,
                "shard_bytes": shard_bytes,
                "mean_channels": round(sum(p.windows * len(p.channels) for p in written) / windows, 2)
                if windows
                else 0.0,
            },
        },
        "caveats": caveats,
        "nothing_written": _nothing_written(recipe, under_root, matched, skipped, written),
        "per_file": [_file_record(p) for p in predictions],
    }
    return report


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else "(none)"


def _file_record(p: FilePrediction) -> dict[str, Any]:
    record = asdict(p)
    record.pop("positions")
    return record


def _durations(durations: list[float]) -> dict[str, Any]:
    """Readable recordings' lengths: extremes, median, total, and counts per order of magnitude."""
    if not durations:
        return {"files": 0}
    edges = [
        (60, "< 1 min"),
        (600, "1-10 min"),
        (3600, "10-60 min"),
        (4 * 3600, "1-4 h"),
        (24 * 3600, "4-24 h"),
    ]
    bins: Counter[str] = Counter()
    for d in durations:
        bins[next((name for edge, name in edges if d < edge), "≥ 24 h")] += 1
    order = [name for _, name in edges] + ["≥ 24 h"]
    return {
        "files": len(durations),
        "min_s": durations[0],
        "median_s": statistics.median(durations),
        "max_s": durations[-1],
        "total_hours": round(sum(durations) / 3600, 6),
        "histogram": {name: bins[name] for name in order if bins[name]},
    }


def _nothing_written(
    recipe: Recipe,
    under_root: list[str],
    matched: list[str],
    skipped: list[FilePrediction],
    written: list[FilePrediction],
) -> str | None:
    if written:
        return None
    if not under_root:
        return f"no file under root {recipe.root!r}"
    if not matched:
        return (
            f"none of the {len(under_root)} files under root {recipe.root!r} is a recording the recipe picks"
        )
    top, count = Counter(reason_kind(p.reason) for p in skipped).most_common(1)[0]
    return f"all {len(matched)} matched files would be skipped (most: {top}, {count} files)"


def format_report(report: dict[str, Any], max_rows: int = 200) -> str:
    """The report as aligned text for a terminal."""
    f, est = report["files"], report["estimate"]
    what = f"task {report['task']} over " if report.get("task") else ""
    lines = [
        f"dry run of {what}{report['dataset']} at {report['root']}: headers only, "
        f"{report['seconds']:.2f} s for {f['matched']} matched files",
        f"files: {f['under_root']} under root, {f['matched']} matched by the recipe, {f['not_matched']} not",
    ]
    if f["matched_examples"]:
        lines.append(f"  matched, e.g. {', '.join(f['matched_examples'][:3])}")
    for reason, g in f["not_matched_reasons"].items():
        lines.append(f"  not matched {g['count']:6d}: {reason} (e.g. {', '.join(g['examples'][:3])})")
    if f["not_matched_extensions"]:
        ext = ", ".join(f"{e} {n}" for e, n in list(f["not_matched_extensions"].items())[:8])
        lines.append(f"  not picked, by extension: {ext}")
    lines.append(f"would write {f['would_write']} files, skip {f['would_skip']}")
    for reason, g in f["skip_reasons"].items():
        lines.append(f"  skip {g['count']:6d}: {reason} (e.g. {', '.join(g['examples'][:3])})")
    if f["unreadable"]:
        lines.append(f"unreadable: {f['unreadable']} files")
        for reason, g in list(f["unreadable_reasons"].items())[:10]:
            lines.append(f"  {g['count']:6d}: {reason} (e.g. {g['examples'][0]})")

    def table(title: str, rows: list[list[str]]) -> None:
        lines.append(title)
        if not rows:
            lines.append("  (none)")
            return
        widths = [max(len(r[i]) for r in rows[:max_rows]) for i in range(len(rows[0]))]
        for r in rows[:max_rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if len(rows) > max_rows:
            lines.append(f"  … {len(rows) - max_rows} more rows (--json has them all)")

    def mm(position: list[float]) -> str:
        return "(" + ", ".join(f"{1000 * v:.0f}" for v in position) + ")"

    table(
        "channels kept: label → canonical name → position (mm, head frame) → files",
        [[c["label"], "→ " + c["canonical"], mm(c["position"]), str(c["files"])] for c in report["channels"]],
    )
    table(
        "dropped labels: label → why → files",
        [[d["label"], d["reason"], str(d["files"])] for d in report["dropped"]],
    )
    table(
        "unrecognised labels (no rule or electrode knows them; a recipe's `rename:` can map them) → files",
        [[d["label"], str(d["files"]), d["reason"]] for d in report["unrecognised"]],
    )
    rates = ", ".join(f"{r} Hz: {n}" for r, n in report["sampling_rates"].items()) or "(none)"
    lines.append(f"sampling rates (files): {rates}")
    d = report["durations"]
    if d["files"]:
        hist = ", ".join(f"{k}: {n}" for k, n in d["histogram"].items())
        lines.append(
            f"durations: min {d['min_s']:g} s, median {d['median_s']:g} s, max {d['max_s']:g} s, "
            f"total {d['total_hours']:.2f} h ({hist})"
        )
    for note, n in list(report["notes"].items())[:10]:
        lines.append(f"  note {n:6d}: {note}")
    b = est["basis"]
    lines.append(
        f"estimate: {est['windows']} windows of {b['window_s']:g} s = {est['hours']:.2f} h at "
        f"{b['target_sfreq']:g} Hz; {_size(est['bytes'])} of {b['dtype']} shards "
        f"(mean {b['mean_channels']:g} channels), about {est['shards']} shards of {_size(b['shard_bytes'])}"
    )
    for split, s in est["per_split"].items():
        lines.append(f"  {split}: {s['files']} files, {s['hours']:.2f} h, {_size(s['bytes'])}")
    for caveat in report["caveats"]:
        lines.append(f"caveat: {caveat}")
    if report["nothing_written"]:
        lines.append(f"nothing would be written: {report['nothing_written']}")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"
