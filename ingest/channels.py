"""From a header's channel label to a canonical 10-05 name and a position, or a reason to drop it.

The rules are the ones every EEG archive needs (TUH's `EEG FP1-REF`, EEGMMIDB's `Fc5.`, CHB-MIT's bipolar
`FP1-F7`, Sleep-EDF's `EEG Fpz-Cz`); a recipe adds its own renames on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eegfm.ingest.positions import case_index, midpoint, montage_positions

# Old 10-20 names that the 10-05 system renamed.
OLD_1020 = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

_REFERENCE_SUFFIX = re.compile(r"[-_ ]?(REF|LE|AR|AVG|AV)$", re.IGNORECASE)
_EEG_PREFIX = re.compile(r"^(EEG|EEG-)\s*", re.IGNORECASE)

# Non-EEG channels, by rule, checked against the upper-cased label before and after the prefix is stripped.
# First match wins; the reason is counted in the manifest.
_NON_EEG: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))
    for reason, pattern in (
        ("non-EEG: ECG", r"^(EKG|ECG)"),
        ("non-EEG: EMG", r"^(EMG|CHIN|LEG)"),
        ("non-EEG: EOG", r"^(EOG|LOC|ROC|HEOG|VEOG)"),
        ("non-EEG: photic stimulation", r"^PHOTIC"),
        ("non-EEG: derived (IBI/bursts/suppression)", r"^(IBI|BURSTS|SUPPR)"),
        ("non-EEG: respiration", r"^(RESP|THOR|ABDO|AIRFLOW|NASAL|ORAL)"),
        ("non-EEG: pulse/SpO2/heart rate", r"^(PULSE|SPO2|SAO2|HR$|PLETH|PR$)"),
        ("non-EEG: DC channel", r"^DC\d*$"),
        ("non-EEG: stim/status/marker", r"^(STATUS|STI|STIM|TRIG|TRIGGER|EVENT|MK|MARKER|ANNOTATION)"),
        ("non-EEG: temperature", r"^TEMP"),
        ("non-EEG: external/auxiliary", r"^(EXG|AUX|VNS|GSR|ERG|X\d+$)"),
        ("numbered channel (no electrode name)", r"^\d+$"),
        ("dummy channel", r"^[-.\s]*$"),
    )
)


@dataclass(frozen=True)
class Channel:
    """A kept channel: canonical name, position in metres, and the two electrodes of a bipolar one."""

    name: str
    position: tuple[float, float, float]
    pair: tuple[str, str] | None = None


def cap_labels(n: int) -> list[str]:
    """BioSemi cap labels in cap order: A1…A32, B1…B32, … (n electrodes)."""
    return [f"{chr(ord('A') + i // 32)}{i % 32 + 1}" for i in range(n)]


def strip_label(label: str) -> str:
    """`EEG FP1-REF` → `FP1`, `Fc5.` → `Fc5`, `EEG Fpz-Cz` → `Fpz-Cz`."""
    text = _EEG_PREFIX.sub("", label.strip())
    text = text.rstrip(". ")
    text = _REFERENCE_SUFFIX.sub("", text) if "-" in text or "_" in text or " " in text else text
    return text.strip(" .")


def non_eeg_reason(label: str) -> str | None:
    """The rule that marks `label` as not EEG, or None."""
    candidates = {label.strip().upper(), strip_label(label).upper()}
    for reason, pattern in _NON_EEG:
        if any(pattern.search(c) for c in candidates):
            return reason
    return None


def electrode_name(token: str, montage: str) -> str | None:
    """One electrode token → the montage's spelling (old 10-20 names renamed), or None if unknown."""
    canonical = case_index(montage).get(token.strip(" .").upper())
    renamed = OLD_1020.get(canonical or "")
    return renamed if renamed in montage_positions(montage) else canonical


def canonical_channel(label: str, montage: str, rename: dict[str, str] | None = None) -> Channel | str:
    """Resolve a header label to a Channel, or return the reason it is dropped."""
    if rename and label.strip() in rename:
        label = rename[label.strip()]
    reason = non_eeg_reason(label)
    if reason is not None:
        return reason
    positions = montage_positions(montage)
    text = strip_label(label)
    single = electrode_name(text, montage)
    if single is not None:
        return Channel(single, positions[single])
    parts = text.split("-")
    if len(parts) == 2:
        a, b = (electrode_name(p, montage) for p in parts)
        if a is not None and b is not None:
            position = midpoint(positions[a], positions[b])
            return Channel(f"{a}-{b}", position, (a, b))
        unknown = [p for p, n in zip(parts, (a, b), strict=True) if n is None]
        return f"no position in montage {montage}: bipolar part {unknown[0]!r} unknown"
    return f"no position in montage {montage}"
