"""TUEV (TUH EEG Events): a `.rec` file beside each EDF, one line per channel and event:
`channel,start_s,stop_s,code`, the channel an index into TUH's 22-channel TCP montage (0 = FP1-F7 …), the
code 1-6 = spsw (spike and sharp wave), gped (generalised periodic epileptiform discharge), pled
(periodic lateralised epileptiform discharge), eyem (eye movement), artf (artifact), bckg (background);
events last 1 s.

The labels are per channel, the windows are not: at one moment some channels may carry an event and the
others background. Background on some channels does not make the moment background, so for each event
interval the background rows are dropped when an event class is there too; two event classes at one
moment stay two annotations (the window is then counted as overlapping two labels). An unexpected code is
kept as `code N` (counted as an unknown label by the task); a line that is not four numbers makes the file
unreadable, and its recording is skipped naming the line.
"""

from __future__ import annotations

from eegfm.ingest.labels import (
    Annotation,
    LabelError,
    LabelsConfig,
    LabelSource,
    RecordingFile,
    beside,
    read_label_file,
)

CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}
BACKGROUND = "bckg"


def parse_rec(text: str) -> list[Annotation]:
    """One annotation per event interval and class, in time order; `LabelError` naming a bad line."""
    found: dict[tuple[float, float], set[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            if len(fields) != 4:
                raise ValueError
            _channel, start, stop, code = int(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
        except ValueError:
            raise LabelError(f"malformed .rec line {number} (expected channel,start,stop,code)") from None
        if stop <= start:
            raise LabelError(f"malformed .rec line {number} (stop {stop:g} s not after start {start:g} s)")
        found.setdefault((start, stop), set()).add(CODES.get(code, f"code {code}"))
    out = []
    for (start, stop), texts in sorted(found.items()):
        events = texts - {BACKGROUND}
        out += [Annotation(start, stop, text) for text in sorted(events or texts)]
    return out


def read(config: LabelsConfig, recording: RecordingFile, _state: object) -> list[Annotation]:
    suffix = config.suffix or ".rec"
    text = read_label_file(beside(recording, suffix), f"{suffix} label file").decode("utf-8", "replace")
    events = parse_rec(text)
    if not events:
        raise LabelError(f"no event in the {suffix} label file")
    return events


SOURCE = LabelSource(read)
