"""EEGMMIDB (PhysioNet EEG Motor Movement/Imagery): `T0`/`T1`/`T2` EDF+ annotations in each run, whose
meaning depends on the run (the dataset's description):

- runs 1 and 2: baselines, eyes open and eyes closed (`T0` only);
- runs 3, 7, 11 (executed) and 4, 8, 12 (imagined): T1 = left fist, T2 = right fist;
- runs 5, 9, 13 (executed) and 6, 10, 14 (imagined): T1 = both fists, T2 = both feet;
- T0 is rest in every task run.

So the parser needs the run number (from the file name, `S001R04.edf`) and gives texts that say what the
subject did; the task recipe maps them onto its classes.
"""

from __future__ import annotations

import re

from eegfm.ingest.labels import Annotation, LabelError, LabelsConfig, LabelSource, RecordingFile
from eegfm.ingest.labels.edfplus import read_annotations

FIST_RUNS = (3, 4, 7, 8, 11, 12)
BOTH_RUNS = (5, 6, 9, 10, 13, 14)
_RUN = re.compile(r"R(\d{2})\.(?:edf|EDF)$")


def event_text(run: int, code: str) -> str:
    """What an annotation `code` (T0, T1, T2) means in run `run`; an unexpected code is kept as it is."""
    if run == 1:
        return {"T0": "baseline eyes open"}.get(code, code)
    if run == 2:
        return {"T0": "baseline eyes closed"}.get(code, code)
    if run in FIST_RUNS:
        return {"T0": "rest", "T1": "left fist", "T2": "right fist"}.get(code, code)
    if run in BOTH_RUNS:
        return {"T0": "rest", "T1": "both fists", "T2": "both feet"}.get(code, code)
    return code


def run_number(path: str) -> int:
    match = _RUN.search(path)
    if match is None:
        raise LabelError("no run number in the file name (EEGMMIDB names runs SxxxRyy.edf)")
    return int(match.group(1))


def read(config: LabelsConfig, recording: RecordingFile, _state: object) -> list[Annotation]:
    run = run_number(recording.source.path)
    events = read_annotations(*recording.edf())
    if not events:
        raise LabelError("no T0/T1/T2 annotation in the run")
    return [Annotation(a.start_s, a.stop_s, event_text(run, a.text)) for a in events]


SOURCE = LabelSource(read)
