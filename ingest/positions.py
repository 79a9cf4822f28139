"""Electrode positions from MNE's built-in montages, in metres, in MNE's head frame."""

from __future__ import annotations

import warnings
from functools import lru_cache

import mne
import numpy as np

from eegfm.errors import ConfigError

# MNE 1.13 renamed the template montages after their head model; the old names warn, then disappear.
_RENAMED = {
    "standard_1005": "colin27_1005",
    "standard_1020": "colin27_1020",
    "standard_alphabetic": "colin27_alphabetic",
    "standard_postfixed": "colin27_postfixed",
    "standard_prefixed": "colin27_prefixed",
    "standard_primed": "colin27_primed",
}


def resolve_montage_name(name: str) -> str:
    """The name this MNE knows for `name` (either side of the standard_* → colin27_* rename)."""
    builtin = mne.channels.get_builtin_montages()
    if name in builtin:
        return name
    for old, new in _RENAMED.items():
        if name == old and new in builtin:
            return new
        if name == new and old in builtin:
            return old
    raise ConfigError(f"unknown MNE montage {name!r}; known: {', '.join(builtin)}")


@lru_cache(maxsize=16)
def montage_positions(name: str) -> dict[str, tuple[float, float, float]]:
    """Every electrode of a built-in montage → (x, y, z) in metres, head frame, in the montage's order."""
    montage = mne.channels.make_standard_montage(resolve_montage_name(name))
    info = mne.create_info(montage.ch_names, 100.0, "eeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fiducial-free montages warn; positions are fine
        info.set_montage(montage, on_missing="ignore", verbose=False)
    return {ch["ch_name"]: tuple(float(v) for v in ch["loc"][:3]) for ch in info["chs"]}


@lru_cache(maxsize=16)
def case_index(name: str) -> dict[str, str]:
    """Upper-cased electrode name → the montage's own spelling (`FP1` → `Fp1`, `FCZ` → `FCz`)."""
    return {ch.upper(): ch for ch in montage_positions(name)}


def midpoint(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """Position given to a bipolar derivation: the midpoint of its two electrodes."""
    return tuple(float(v) for v in (np.asarray(a) + np.asarray(b)) / 2.0)
