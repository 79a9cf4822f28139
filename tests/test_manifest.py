"""Reasons are counted by kind: the particulars (in parentheses or quotes) do not split a count."""

from __future__ import annotations

import pytest

from eegfm.ingest.manifest import reason_kind


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("shorter than one window (5 s < 10 s)", "shorter than one window"),
        ("flat/dead (std 0.012 µV)", "flat/dead"),
        ("duplicate label (T8-P8 already kept)", "duplicate label"),
        (
            "sampling rate differs from the recording's EEG rate (1 Hz vs 100 Hz)",
            "sampling rate differs from the recording's EEG rate",
        ),
        ("unit 'DegC' is not a voltage", "unit … is not a voltage"),
        ("non-EEG: ECG", "non-EEG: ECG"),
        ("numbered channel (no electrode name)", "numbered channel"),
    ],
)
def test_reason_kind(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind
