"""One input file → windows ready for the shards, or a reason it was skipped.

The file is streamed chunk by chunk (memory independent of its length): `channel_plan` picks and scales
its signals, `windows` cuts and spools the filtered stream. Windows wait in a local spool file because
each sample's metadata carries the whole recording's per-channel statistics, which are known only at the
end; here the recording-level QC and metadata are decided and the spool is read back in order.
"""

from __future__ import annotations

import errno
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eegfm.errors import StorageError
from eegfm.ingest import bids, contract
from eegfm.ingest.channel_plan import ChannelPlan, plan_channels
from eegfm.ingest.formats import open_recording
from eegfm.ingest.labels import LabelError
from eegfm.ingest.preprocess import preprocess_hash
from eegfm.ingest.recipe import Recipe, SourceFile
from eegfm.ingest.signals import ReadError, RecordingReader
from eegfm.ingest.windows import Sample, Windower, read_spool, stream_windows

if TYPE_CHECKING:
    from eegfm.ingest.tasks import Labeller

log = logging.getLogger(__name__)


@dataclass
class FileOutcome:
    """The manifest's line for one input file: written (with what) or skipped (with why)."""

    path: str
    status: str  # "written" | "skipped"
    reason: str | None
    split: str | None
    subject: str
    session: str
    recording: str
    samples: int = 0
    hours: float = 0.0
    montage: str | None = None
    montage_name: str | None = None
    channels: list[str] = field(default_factory=list)
    orig_sfreq: float | None = None
    dropped_channels: dict[str, str] = field(default_factory=dict)
    dropped_windows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Task (labelled) ingest only, and only then in the manifest's lines:
    class_counts: dict[str, int] = field(default_factory=dict)  # windows written per class
    unlabelled: dict[str, int] = field(default_factory=dict)  # windows (and events) left unlabelled, by why
    # Kept out of the manifest's per-file lines (summed or tabulated per task instead):
    histogram: list[int] = field(default_factory=list)  # amplitude counts over HISTOGRAM_EDGES
    positions: list[list[float]] = field(default_factory=list)  # per channel, metres
    # Layout bids only (and only then in the manifest's lines): digitized | template:<montage> | both
    positions_source: str | None = None

    def as_record(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k not in ("histogram", "positions")}
        if not (self.class_counts or self.unlabelled):  # a pretraining ingest: its lines as they always were
            del record["class_counts"], record["unlabelled"]
        if self.positions_source is None:
            del record["positions_source"]
        return record


@dataclass
class IngestedFile:
    outcome: FileOutcome
    samples: Iterator[Sample]  # empty unless written; lazily read from the spool


def skipped(source: SourceFile, reason: str, **details: Any) -> IngestedFile:
    outcome = FileOutcome(
        source.path,
        "skipped",
        reason,
        source.split,
        source.subject,
        source.session,
        source.recording,
        **details,
    )
    return IngestedFile(outcome, iter(()))


def ingest_file(
    source: SourceFile, recipe: Recipe, spool_dir: str | None = None, labeller: Labeller | None = None
) -> IngestedFile:
    """Read, select, preprocess and window one file (and label its windows, for a task's `labeller`).
    Never raises for bad input: it returns a skip."""
    if source.skip_reason:
        return skipped(source, source.skip_reason)
    try:
        with open_recording(source, recipe) as reader:
            if source.bids is not None:  # channels.tsv's types and bad marks over the file's signals
                reader = bids.with_sidecar(reader, source.bids)
            return _ingest_open_file(reader, source, recipe, spool_dir, labeller)
    except ReadError as e:
        return skipped(source, f"unreadable: {e}")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the machine's disk, not the file: no skip can help
            spool = spool_dir or tempfile.gettempdir()
            raise StorageError(
                f"{spool}: no space left on device while spooling {source.path}: free space there, "
                "or point TMPDIR at a larger disk"
            ) from e
        return skipped(source, f"I/O error: {e}")
    except Exception as e:  # one odd file must not end a many-hour run: listed with the error, and logged
        log.warning("ingest of %s failed", source.url, exc_info=True)
        return skipped(source, f"failed: {type(e).__name__}: {e}")


def _ingest_open_file(
    reader: RecordingReader,
    source: SourceFile,
    recipe: Recipe,
    spool_dir: str | None,
    labeller: Labeller | None,
) -> IngestedFile:
    config = recipe.preprocess
    notes = list(reader.notes)
    if not reader.signals:
        return skipped(source, "annotation-only file (no signal channels)", notes=notes)
    if reader.duration_s <= 0:
        return skipped(source, "no complete data record", notes=notes)
    labels = None
    if labeller is not None:
        try:
            annotations = labeller.annotations(source, reader)
        except LabelError as e:
            return skipped(source, str(e), notes=notes)
        labels = (labeller, annotations)
    plan = plan_channels(reader.signals, recipe, bids.measured_positions(source.bids))
    notes += plan.notes
    details = {"dropped_channels": plan.dropped, "notes": notes}
    if len(plan.channels) < config.min_channels:
        return skipped(source, "no EEG channel with a known position", **details)
    segments = reader.segments(plan.orig_sfreq)
    if len(segments) > 1:
        notes.append(f"discontinuous (EDF+D or gaps): {len(segments)} contiguous segments")
    duration = reader.duration_s
    window = config.window_s * plan.orig_sfreq
    if all(b - a < window for a, b, _ in segments):
        return skipped(source, f"shorter than one window ({duration:g} s < {config.window_s:g} s)", **details)

    placement: dict[str, Any] = {}
    if labels is not None:
        placement = {"stride_s": labeller.stride_s, "starts_s": labeller.window_starts(labels[1])}
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - closed by the sample stream or below
    try:
        mains_hz = bids.mains_hz(source, recipe)
        if mains_hz != recipe.mains_hz:
            notes.append(
                f"mains {mains_hz:g} Hz from eeg.json PowerLineFrequency (recipe: {recipe.mains_hz:g} Hz)"
            )
        windower = stream_windows(reader, plan, segments, config, mains_hz, spool, **placement)
        return _finish(source, recipe, plan, windower, spool, details, labels)
    except BaseException:
        spool.close()
        raise


def _finish(
    source: SourceFile,
    recipe: Recipe,
    plan: ChannelPlan,
    windower: Windower,
    spool: Any,
    details: dict[str, Any],
    labels: tuple[Labeller, list[Any]] | None = None,
) -> IngestedFile:
    """Recording-level QC (flat channels, bad windows), statistics, labels, and the lazy sample stream.

    The recording's statistics come from every window that passes QC, labelled or not: they describe the
    recording, whatever a task keeps of it.
    """
    config = recipe.preprocess
    std, total, total_sq, starts = windower.stats()
    dropped_windows: Counter[str] = Counter()
    if len(std) == 0:
        spool.close()
        return skipped(
            source, f"no contiguous segment as long as one window ({config.window_s:g} s)", **details
        )
    recording_std = np.sqrt((std**2).mean(axis=0))
    live = recording_std >= config.flat_std_uv
    for c in np.flatnonzero(~live):
        details["dropped_channels"][plan.labels[c]] = f"flat/dead (std {recording_std[c]:.3g} µV)"
    if live.sum() < config.min_channels:
        spool.close()
        return skipped(source, "every EEG channel is flat/dead", **details)
    good = (std[:, live] >= config.flat_std_uv) & (std[:, live] <= config.max_std_uv)
    keep = good.mean(axis=1) >= config.min_good_channel_fraction
    if (~keep).any():
        dropped_windows["too_few_good_channels"] = int((~keep).sum())
    details["dropped_windows"] = dict(dropped_windows)
    if not keep.any():
        spool.close()
        return skipped(source, "every window has too few good channels (flat or > max_std_uv)", **details)
    if windower.clipped:
        details["notes"].append(f"{windower.clipped} samples clipped at ±{config.clip_uv:g} µV")

    kept = np.flatnonzero(keep)
    count = len(kept) * config.window_samples
    mean = total[kept][:, live].sum(axis=0) / count
    var = np.maximum(total_sq[kept][:, live].sum(axis=0) / count - mean**2, 0.0)
    window_meta = None
    if labels is not None:
        labeller, annotations = labels
        labelled = labeller.label(starts, annotations, config.target_sfreq)
        details["unlabelled"] = dict(labelled.unlabelled(keep).most_common())
        keep &= labelled.labels >= 0
        if not keep.any():
            spool.close()
            why = next(iter(details["unlabelled"]), "no window")
            return skipped(source, f"no labelled window ({why})", **details)
        kept = np.flatnonzero(keep)
        window_meta = [labeller.meta(int(label)) for label in labelled.labels[kept]]
        details["class_counts"] = dict(Counter(m["label_name"] for m in window_meta))
    channels = [c for c, alive in zip(plan.channels, live, strict=True) if alive]
    names = [c.name for c in channels]
    positions_source = None
    if source.bids is not None:
        measured = [m for m, alive in zip(plan.measured or [False] * len(live), live, strict=True) if alive]
        positions_source = _positions_source(measured, recipe.positions, names, details["notes"])
    hours = len(kept) * config.window_s / 3600
    outcome = FileOutcome(
        path=source.path,
        status="written",
        reason=None,
        split=source.split,
        subject=source.subject,
        session=source.session,
        recording=source.recording,
        samples=len(kept),
        hours=hours,
        montage=contract.montage_tag(source.reference, names),
        montage_name=contract.montage_name(source.reference, names),
        channels=names,
        orig_sfreq=plan.orig_sfreq,
        histogram=windower.histogram.tolist(),
        positions=[[round(v, 6) for v in c.position] for c in channels],
        positions_source=positions_source,
        **details,
    )
    meta = {
        "dataset": recipe.name,
        "subject": source.subject,
        "session": source.session,
        "recording": source.recording,
        "source_file": source.path,
        "split": source.split,
        "channels": names,
        "channel_pairs": [list(c.pair) if c.pair else None for c in channels],
        "montage": outcome.montage,
        "montage_name": outcome.montage_name,
        "sfreq": config.target_sfreq,
        "orig_sfreq": plan.orig_sfreq,
        "duration_s": config.window_s,
        "reference": source.reference,
        "units": contract.UNITS,
        "preprocess_hash": preprocess_hash(config, recipe.mains_hz),
        "preprocess": {**asdict(config), "mains_hz": recipe.mains_hz},
        "channel_mean": [round(float(v), 4) for v in mean],
        "channel_std": [round(float(v), 4) for v in np.sqrt(var)],
    }
    if source.bids is not None:
        meta |= bids.sample_metadata(source.bids, positions_source, bids.mains_hz(source, recipe))
    positions = np.array([c.position for c in channels], dtype=np.float32)
    samples = read_spool(spool, kept, starts[kept], live, meta, positions, config, source.path, window_meta)
    return IngestedFile(outcome, samples)


def _positions_source(measured: list[bool], montage: str, names: list[str], notes: list[str]) -> str:
    """`digitized` when every kept channel has the recording's own position, `template:<montage>` when
    none has; both at once is named, and the channels on the template are noted."""
    if measured and all(measured):
        return "digitized"
    if not any(measured):
        return f"template:{montage}"
    on_template = [n for n, m in zip(names, measured, strict=True) if not m]
    notes.append(f"no digitised position in electrodes.tsv for {', '.join(on_template)}: template positions")
    return f"digitized+template:{montage}"
