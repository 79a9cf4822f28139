"""Small real-format files for the WFDB, MATLAB and Neuroscan CNT readers' tests.

Each file is written by the format's own writer where one exists (`wfdb.wrsamp`, `scipy.io.savemat`,
h5py with MATLAB's 512-byte v7.3 header) or, for Neuroscan CNT (no Python writer exists), by our own
writer following the format's layout; the tests then read each one with an independent reader (wfdb,
pymatreader, MNE) so that a writer and a reader sharing one mistake cannot pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# I-CARE's EEG records (PhysioNet): 19 electrodes of the 10-20 system with the old T3/T4/T5/T6 names, in µV.
ICARE_CHANNELS = (
    "Fp1", "Fp2", "F7", "F8", "F3", "F4", "T3", "T4", "C3", "C4",
    "T5", "T6", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz",
)  # fmt: skip


def write_wfdb(
    folder: Path,
    record: str,
    data: np.ndarray,
    names: Sequence[str],
    sfreq: float,
    units: Sequence[str] | None = None,
) -> Path:
    """A WFDB record `record`.hea + `record`.dat (format 16) of `data` (C×T, in `units`, µV by default),
    written by `wfdb.wrsamp`; each signal's gain uses most of the 16-bit range. Returns the header's path."""
    import wfdb

    units = list(units or ["uV"] * len(names))
    largest = np.maximum(np.abs(data).max(axis=1), 1e-6)
    gains = [float(f"{g:.4g}") for g in 30000.0 / largest]  # headers keep a few significant digits
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        record,
        fs=sfreq,
        units=units,
        sig_name=list(names),
        p_signal=np.ascontiguousarray(data.T, dtype=np.float64),
        fmt=["16"] * len(names),
        adc_gain=gains,
        baseline=[0] * len(names),
        write_dir=str(folder),
    )
    return folder / f"{record}.hea"
