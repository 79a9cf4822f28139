"""Channel labels → canonical 10-05 names and positions, or a counted reason to drop them."""

from __future__ import annotations

import numpy as np
import pytest

from eegfm.ingest.channels import Channel, canonical_channel
from eegfm.ingest.positions import montage_positions, resolve_montage_name

MONTAGE = "standard_1005"


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("EEG FP1-REF", "Fp1"),  # TUH, average-referenced folders
        ("EEG FP2-LE", "Fp2"),  # TUH, linked-ears folders
        ("EEG T3-REF", "T7"),  # old 10-20 names
        ("EEG T4-LE", "T8"),
        ("EEG T5-REF", "P7"),
        ("EEG T6-REF", "P8"),
        ("EEG CZ-REF", "Cz"),
        ("Fc5.", "FC5"),  # EEGMMIDB's dot padding
        ("Fcz.", "FCz"),
        ("Iz..", "Iz"),
        ("T10.", "T10"),
        ("EEG Fc1", "FC1"),  # Siena
        ("EEG Fp1-Ref", "Fp1"),  # Nihon Kohden export
        ("AF3", "AF3"),  # Emotiv
        ("EEG A1-REF", "A1"),  # the ear electrode, in a 10-05 recipe
    ],
)
def test_referential_labels(label: str, name: str) -> None:
    channel = canonical_channel(label, MONTAGE)
    assert isinstance(channel, Channel) and channel.name == name and channel.pair is None


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("EEG EKG1-REF", "non-EEG: ECG"),
        ("EKG EKG", "non-EEG: ECG"),
        ("EMG-REF", "non-EEG: EMG"),
        ("EEG LOC-REF", "non-EEG: EOG"),
        ("EEG ROC-REF", "non-EEG: EOG"),
        ("EOG horizontal", "non-EEG: EOG"),
        ("PHOTIC-REF", "non-EEG: photic stimulation"),
        ("IBI", "non-EEG: derived (IBI/bursts/suppression)"),
        ("BURSTS", "non-EEG: derived (IBI/bursts/suppression)"),
        ("SUPPR", "non-EEG: derived (IBI/bursts/suppression)"),
        ("Resp oro-nasal", "non-EEG: respiration"),
        ("PULSE", "non-EEG: pulse/SpO2/heart rate"),
        ("SpO2", "non-EEG: pulse/SpO2/heart rate"),
        ("DC01", "non-EEG: DC channel"),
        ("Status", "non-EEG: stim/status/marker"),
        ("EEG 26-REF", "numbered channel (no electrode name)"),
        ("-", "dummy channel"),
        ("", "dummy channel"),
        ("EXG3", "non-EEG: external/auxiliary"),
        ("EEG T1-REF", "no position in montage standard_1005"),
    ],
)
def test_dropped_labels_carry_a_reason(label: str, reason: str) -> None:
    assert canonical_channel(label, MONTAGE) == reason


def test_bipolar_gets_the_midpoint_and_keeps_both_names() -> None:
    positions = montage_positions(MONTAGE)
    channel = canonical_channel("FP1-F7", MONTAGE)
    assert isinstance(channel, Channel)
    assert channel.name == "Fp1-F7" and channel.pair == ("Fp1", "F7")
    np.testing.assert_allclose(channel.position, (np.array(positions["Fp1"]) + positions["F7"]) / 2)
    assert canonical_channel("EEG Fpz-Cz", MONTAGE).pair == ("Fpz", "Cz")  # Sleep-EDF
    assert canonical_channel("T7-FT9", MONTAGE).pair == ("T7", "FT9")  # CHB-MIT
    assert "bipolar part 'X9' unknown" in canonical_channel("F7-X9", MONTAGE)


def test_positions_are_metres_in_the_head_frame() -> None:
    positions = montage_positions(MONTAGE)
    cz, t7, t8, fpz, oz = (np.array(positions[n]) for n in ("Cz", "T7", "T8", "Fpz", "Oz"))
    assert 0.07 < np.linalg.norm(cz) < 0.2  # a head is ~10 cm in radius: metres, not mm
    assert t7[0] < 0 < t8[0]  # x to the right
    assert fpz[1] > 0 > oz[1]  # y to the nose
    assert cz[2] > t7[2]  # z up


def test_recipe_renames_come_first() -> None:
    channel = canonical_channel("A1", "biosemi64", {"A1": "Fp1"})  # BioSemi cap A1 is Fp1, not an ear
    assert channel.name == "Fp1"
    np.testing.assert_allclose(channel.position, montage_positions("biosemi64")["Fp1"])


def test_renamed_standard_montage_resolves_both_ways() -> None:
    name = resolve_montage_name("standard_1005")
    assert name in ("standard_1005", "colin27_1005")
    assert resolve_montage_name(name) == name
    with pytest.raises(ValueError, match="unknown MNE montage"):
        resolve_montage_name("no_such_montage")
