"""How a window gets its label: the one place that decides, for every task.

Four ways, named by a task recipe's `windows.mode`:
- `covering`: windows on a grid (length and stride); a window takes the class of the annotations that
  cover all of it, when they agree (sleep stages, seizure vs background, any interval labels);
- `onset`: one window from each annotation's onset, labelled as `covering` (cue-locked motor imagery:
  the window is the trial, and it must lie within it);
- `centred`: one window centred on each event, labelled by the event (TUEV's 1-s events in 5-s windows);
- `recording`: windows on a grid, every one with the recording's single label (TUAB normal/abnormal).

Every window that gets no label is counted with its reason (an unknown annotation text, a label the task
ignores, two classes in one window, a stretch no annotation covers), and so is every event whose window
could not be cut (too close to the recording's edge or a gap): nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eegfm.ingest.labels import Annotation

MODES = ("covering", "onset", "centred", "recording")
_UNKNOWN, _IGNORED = -2, -1
_EPS = 1e-6  # seconds: overlaps and coverage shorter than this are rounding, not time


@dataclass
class WindowLabels:
    """Per window, the class index (-1: no label) and, for the unlabelled, why; events left without a
    window, counted by reason (they have no window to carry a reason)."""

    labels: np.ndarray
    reasons: list[str | None]
    missed_events: Counter[str]

    def unlabelled(self, considered: np.ndarray) -> Counter[str]:
        """Reasons of the unlabelled windows among `considered` (a mask), plus the missed events."""
        counts = Counter(r for r, c in zip(self.reasons, considered.tolist(), strict=True) if c and r)
        return counts + self.missed_events


def class_codes(
    annotations: Sequence[Annotation], label_map: Mapping[str, str | None], classes: Sequence[str]
) -> np.ndarray:
    """Each annotation's class index; -1 where the task ignores its text, -2 where it does not know it."""
    index = {name: i for i, name in enumerate(classes)}
    codes = []
    for a in annotations:
        if a.text not in label_map:
            codes.append(_UNKNOWN)
        else:
            target = label_map[a.text]
            codes.append(_IGNORED if target is None else index[target])
    return np.asarray(codes, dtype=np.int64)


def window_starts(mode: str, annotations: Sequence[Annotation], window_s: float) -> np.ndarray | None:
    """Where the windows of an event-placed mode start (seconds, sorted, distinct); None for grid modes."""
    if mode == "onset":
        return np.unique([a.start_s for a in annotations])
    if mode == "centred":
        return np.unique([(a.start_s + a.stop_s) / 2 - window_s / 2 for a in annotations])
    return None


def label_windows(
    mode: str,
    starts: np.ndarray,
    window_s: float,
    annotations: Sequence[Annotation],
    label_map: Mapping[str, str | None],
    classes: Sequence[str],
    tolerance_s: float,
) -> WindowLabels:
    """Label windows [start, start + window_s) from the recording's annotations as `mode` says.

    `tolerance_s` (half a sample of the windows' rate) is how far a cut window may sit from where its
    event asked it to start.
    """
    codes = class_codes(annotations, label_map, classes)
    texts = [a.text for a in annotations]
    if mode == "recording":  # every window as the recording's annotations (whole-recording labels) say
        label, reason = _agreed(codes, texts)
        return WindowLabels(np.full(len(starts), label, np.int64), [reason] * len(starts), Counter())
    labels = np.full(len(starts), -1, dtype=np.int64)
    reasons: list[str | None] = [None] * len(starts)
    missed: Counter[str] = Counter()
    if mode == "onset":  # a trial whose window could not be cut has no window to carry a reason
        onsets = np.unique([a.start_s for a in annotations])
        uncut = [o for o in onsets if not np.any(np.abs(np.asarray(starts) - o) <= tolerance_s + _EPS)]
        if uncut:
            missed["event too close to the recording's edge or a gap"] += len(uncut)
    a_start = np.array([a.start_s for a in annotations], dtype=np.float64)
    a_stop = np.array([a.stop_s for a in annotations], dtype=np.float64)
    if mode == "centred":
        centres = (a_start + a_stop) / 2
        cut = np.zeros(len(annotations), dtype=bool)
        for i, start in enumerate(starts):
            mine = np.abs(centres - (start + window_s / 2)) <= tolerance_s + _EPS
            cut |= mine
            labels[i], reasons[i] = _agreed(codes[mine], [t for t, m in zip(texts, mine, strict=True) if m])
        uncut = {round(c, 6) for c in centres[~cut]}
        if uncut:
            missed["event too close to the recording's edge or a gap"] += len(uncut)
        return WindowLabels(labels, reasons, missed)
    for i, start in enumerate(starts):
        stop = start + window_s
        overlap = np.minimum(a_stop, stop) - np.maximum(a_start, start)
        mine = overlap > _EPS
        labels[i], reasons[i] = _agreed(codes[mine], [t for t, m in zip(texts, mine, strict=True) if m])
        if labels[i] >= 0 and not _covers(a_start[mine], a_stop[mine], start, stop):
            labels[i], reasons[i] = -1, "partly outside every annotation"
    return WindowLabels(labels, reasons, missed)


def _agreed(codes: np.ndarray, texts: list[str]) -> tuple[int, str | None]:
    """The one class these annotations agree on, or (-1, why not)."""
    if len(codes) == 0:
        return -1, "no annotation"
    unknown = sorted({t for t, c in zip(texts, codes, strict=True) if c == _UNKNOWN})
    if unknown:
        return -1, f"unknown label {unknown[0]!r}"
    ignored = sorted({t for t, c in zip(texts, codes, strict=True) if c == _IGNORED})
    if ignored:
        return -1, f"label ignored by the task {ignored[0]!r}"
    if len(set(codes.tolist())) > 1:
        return -1, "overlaps two labels"
    return int(codes[0]), None


def _covers(a_start: np.ndarray, a_stop: np.ndarray, start: float, stop: float) -> bool:
    """Whether the union of intervals [a_start, a_stop) covers [start, stop)."""
    reached = start
    for s, e in sorted(zip(a_start.tolist(), a_stop.tolist(), strict=True)):
        if s > reached + _EPS:
            return False
        reached = max(reached, e)
        if reached >= stop - _EPS:
            return True
    return reached >= stop - _EPS
