"""Layout `bids`: a BIDS tree written by mne-bids (`ingest/bids_fixtures.py`) → shards through `eegfm shards
--dataset bids`, with ids from the entities, channels.tsv's types and bad marks, eeg.json's mains and
reference, and each subject's digitised electrode positions in MNE's head frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from eegfm.ingest.channel_plan import plan_channels
from eegfm.ingest.positions import montage_positions
from eegfm.ingest.recipe import load_recipe
from eegfm.ingest.signals import Signal


def test_plan_channels_takes_a_recordings_own_positions(tmp_path: Path) -> None:
    recipe = load_recipe("generic", root=str(tmp_path))
    signals = [Signal(i, label, "uV", 256.0) for i, label in enumerate(["EEG Fp1-REF", "Cz", "C3-P3"])]
    measured = {"EEG Fp1-REF": (0.01, 0.1, 0.02), "C3": (-0.06, 0.0, 0.1), "P3": (-0.05, -0.06, 0.1)}
    plan = plan_channels(signals, recipe, measured)
    positions = {c.name: c.position for c in plan.channels}
    assert positions["Fp1"] == (0.01, 0.1, 0.02)  # by file label
    assert positions["C3-P3"] == pytest.approx((-0.055, -0.03, 0.1))  # midpoint of measured electrodes
    assert positions["Cz"] == montage_positions(recipe.positions)["Cz"]  # not measured: template
    assert plan.measured == [True, False, True]
    assert plan_channels(signals, recipe).measured == []
