"""Labels in the path: TUAB files sit under `normal/` or `abnormal/` (one label per recording).

Why a regex: the folder that carries the label differs per corpus (TUAB: `edf/<train|eval>/<label>/…`),
and a named group `label` states exactly which part of the path is the label, nothing else.
"""

from __future__ import annotations

import math
import re

from eegfm.ingest.labels import Annotation, LabelError, LabelsConfig, LabelSource, RecordingFile


def label_from_path(path: str, pattern: str) -> str | None:
    """The `label` group of `pattern` searched in the relative `path`, or None if it does not match."""
    match = re.search(pattern, path)
    return match.group("label") if match else None


def read(config: LabelsConfig, recording: RecordingFile, _state: object) -> list[Annotation]:
    label = label_from_path(recording.source.path, config.pattern)
    if label is None:
        raise LabelError(f"no label in the path (labels.pattern {config.pattern!r} does not match)")
    return [Annotation(0.0, math.inf, label)]


SOURCE = LabelSource(read)
