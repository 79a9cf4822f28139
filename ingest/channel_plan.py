"""Which signals of a recording (any format, `signals.Signal`) become which canonical channels, at which
scale to µV, and why every other signal is dropped."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import mne
import numpy as np

from eegfm.ingest.channels import Channel, canonical_channel, cap_labels, non_eeg_reason, strip_label
from eegfm.ingest.positions import midpoint, montage_positions
from eegfm.ingest.recipe import Recipe
from eegfm.ingest.signals import Signal

# Factor to µV of every spelling of a voltage unit real files write, after `_unit_key` (NFKC, which maps
# the micro sign µ to Greek mu μ, then lower case, no spaces): uV, UV, µV, μV, microvolt(s), mV, V, nV.
# The field is 8 bytes, so writers cut the long names ("microvol", "millivol").
_VOLT_SCALES = {
    "uv": 1.0,
    "μv": 1.0,
    "microv": 1.0,
    "microvol": 1.0,
    "microvolt": 1.0,
    "microvolts": 1.0,
    "mv": 1e3,
    "millivol": 1e3,
    "millivolt": 1e3,
    "millivolts": 1e3,
    "v": 1e6,
    "volt": 1e6,
    "volts": 1e6,
    "nv": 1e-3,
    "nanovolt": 1e-3,
    "nanovolts": 1e-3,
}


@dataclass
class ChannelPlan:
    signals: list[Signal]
    labels: list[str]  # as the manifest names them (duplicates get their signal number)
    channels: list[Channel]
    scales: np.ndarray
    orig_sfreq: float
    dropped: dict[str, str]
    notes: list[str]
    measured: list[bool] = field(default_factory=list)  # per kept channel: position from `positions`


def unit_scale(signal: Signal) -> tuple[float, str | None] | str:
    """Factor from the signal's physical unit to µV (and a note), or the reason it cannot be trusted.

    A blank unit field must never silently mean volts (a ×10⁶ error): it is read as µV only when the
    physical range could not be volts or millivolts for scalp EEG (|range| ≥ 10).
    """
    unit = _unit_key(signal.unit)
    if unit in _VOLT_SCALES:
        return _VOLT_SCALES[unit], None
    if unit == "":
        largest = signal.largest_physical
        if largest >= 10.0 and largest != float("inf"):
            return 1.0, f"{signal.label}: blank unit field, physical range ±{largest:g} read as µV"
        return f"blank unit field and a small physical range: cannot tell V, mV or µV apart (±{largest:g})"
    return f"unit {signal.unit!r} is not a voltage"


def _unit_key(unit: str) -> str:
    """A unit field as `_VOLT_SCALES` spells it, whatever encoding the file's writer used.

    The reader decodes header bytes as latin-1 (every byte decodes), so a µ written in UTF-8 (C2 B5, or
    Greek mu CE BC) arrives as two characters (`Âµ`, `Î¼`); those are re-decoded as the UTF-8 they were.
    NFKC then folds the micro sign (latin-1 B5) into Greek mu, so both micro letters compare equal.
    """
    text = unit.strip()
    # Not UTF-8 bytes: keep the latin-1 reading (a lone B5 is the latin-1 micro sign).
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("latin-1").decode("utf-8")
    return unicodedata.normalize("NFKC", text).lower().replace(" ", "")


# Channel types a file or sidecar may declare that are never scalp EEG.
_NOT_EEG_KINDS = frozenset(
    {"eog", "ecg", "emg", "stim", "trig", "misc", "resp", "bio", "gsr", "temp", "syst"}
    # BIDS channels.tsv types beyond those (its REF is the reference electrode's own channel)
    | {"veog", "heog", "eyegaze", "pupil", "ppg", "audio", "sysclock", "adc", "dac", "ref"}
)


def plan_channels(
    signals: list[Signal], recipe: Recipe, positions: Mapping[str, tuple[float, float, float]] | None = None
) -> ChannelPlan:
    """Which signals become which canonical channels, and why every other one is dropped.

    `positions` (file label or canonical name → xyz in metres, head frame) are this recording's own
    measured positions (BIDS electrodes.tsv); they replace the template's for the channels they name,
    and keep, under its own label, a scalp electrode that has no 10-05 name but a measured position.
    """
    measured_at = {k.strip().upper(): tuple(v) for k, v in (positions or {}).items()}
    measured_names: set[str] = set()
    dropped: dict[str, str] = {}
    notes: list[str] = []
    candidates: list[tuple[Signal, Channel, float]] = []
    rename = dict(recipe.rename)
    montage = recipe.positions
    unknown_cap = False
    if recipe.cap:
        cap_montage = _cap_montage(recipe.cap, [s.label for s in signals])
        unknown_cap = cap_montage is None
        if cap_montage is not None:
            montage = cap_montage
            cap_names = list(montage_positions(montage))
            rename.update({label: cap_names[i] for i, label in enumerate(cap_labels(len(cap_names)))})
    counts = Counter(s.label for s in signals)
    key = {s.index: s.label if counts[s.label] == 1 else f"{s.label} (signal {s.index})" for s in signals}
    for s in signals:
        label = key[s.index]
        if s.bad:
            dropped[label] = f"marked bad: {s.bad}"
            continue
        if s.kind.lower() in _NOT_EEG_KINDS:
            dropped[label] = f"channel type {s.kind} (not EEG) in the file's header or sidecar"
            continue
        if unknown_cap and _CAP_LABEL.match(s.label):
            dropped[label] = "cap labels match no BioSemi montage (32/64/128/160/256 electrodes)"
            continue
        channel = canonical_channel(s.label, montage, rename)
        if isinstance(channel, str) and measured_at:
            channel = _measured_electrode(s.label, rename, measured_at) or channel
        if isinstance(channel, str):
            dropped[label] = channel
            continue
        if recipe.eeg_channels and channel.name not in recipe.eeg_channels:
            dropped[label] = "not among the recipe's EEG channels"
            continue
        if not s.has_gain:
            dropped[label] = "physical or digital min equals max (no gain)"
            continue
        if s.sfreq <= 0:
            dropped[label] = "no samples"
            continue
        scale = unit_scale(s)
        if isinstance(scale, str):
            dropped[label] = scale
            continue
        if scale[1]:
            notes.append(scale[1])
        previous = next((c for _, c, _ in candidates if c.name == channel.name), None)
        if previous is not None:
            dropped[label] = f"duplicate label ({previous.name} already kept)"
            continue
        measured = _measured_position(s.label, channel, measured_at) if measured_at else None
        if measured is not None:
            channel = replace(channel, position=measured)
            measured_names.add(channel.name)
        candidates.append((s, channel, scale[0]))
    # One rate per recording: keep the rate most EEG channels share (the higher one on a tie).
    by_rate = Counter(s.sfreq for s, _, _ in candidates)
    rate = max(by_rate, key=lambda r: (by_rate[r], r)) if by_rate else 0.0
    kept = []
    for s, channel, scale in candidates:
        if s.sfreq != rate:
            dropped[key[s.index]] = (
                f"sampling rate differs from the recording's EEG rate ({s.sfreq:g} Hz vs {rate:g} Hz)"
            )
        else:
            kept.append((s, channel, scale))
    return ChannelPlan(
        signals=[s for s, _, _ in kept],
        labels=[key[s.index] for s, _, _ in kept],
        channels=[c for _, c, _ in kept],
        scales=np.array([k for _, _, k in kept], dtype=np.float64),
        orig_sfreq=rate,
        dropped=dropped,
        notes=notes,
        measured=[c.name in measured_names for _, c, _ in kept] if measured_at else [],
    )


def _measured_electrode(
    label: str, rename: dict[str, str], measured_at: dict[str, tuple[float, float, float]]
) -> Channel | None:
    """A scalp electrode with no 10-05 name whose position the recording measured (electrodes.tsv): kept
    under its own label, at that position, since positions (not names) place a channel for the models.
    None when it is not measured or a rule marks its label as not EEG."""
    label = rename.get(label.strip(), label)
    if non_eeg_reason(label) is not None:
        return None
    name = strip_label(label)
    for key in (label, name):
        if key.strip().upper() in measured_at:
            return Channel(name, measured_at[key.strip().upper()])
    return None


def _measured_position(
    label: str, channel: Channel, measured_at: dict[str, tuple[float, float, float]]
) -> tuple[float, float, float] | None:
    """The recording's own position of a channel: by its file label, else its canonical name; a bipolar
    channel's is the midpoint of its two measured electrodes (None unless both are measured)."""
    for key in (label, channel.name):
        if key.strip().upper() in measured_at:
            return measured_at[key.strip().upper()]
    if channel.pair is not None:
        a, b = (measured_at.get(name.upper()) for name in channel.pair)
        if a is not None and b is not None:
            return midpoint(a, b)
    return None


_CAP_LABEL = re.compile(r"^[A-H]([1-9]|[12]\d|3[0-2])$")


def _cap_montage(cap: str, labels: list[str]) -> str | None:
    """The montage whose electrode order the cap labels follow; `auto` picks BioSemi's by electrode count."""
    if cap != "auto":
        return cap
    name = f"biosemi{sum(1 for label in labels if _CAP_LABEL.match(label))}"
    return name if name in mne.channels.get_builtin_montages() else None
