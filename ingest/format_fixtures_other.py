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

# SEED's 62 electrodes as its .cnt files label them (upper case; CB1/CB2 are cerebellar sites, no 10-05 name).
SEED_CHANNELS = (
    "FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "FT7", "FC5",
    "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3", "C1", "CZ", "C2", "C4", "C6", "T8",
    "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "P7", "P5", "P3", "P1", "PZ", "P2", "P4",
    "P6", "P8", "PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8", "CB1", "O1", "OZ", "O2", "CB2",
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


# Neuroscan CNT 4.x ("SETUP" header, then one "ELECTLOC" record per channel, then the samples multiplexed,
# then the event table). Byte offsets of the fields written (the published SETUP/ELECTLOC structures).
CNT_SETUP_BYTES = 900
CNT_ELECTRODE_BYTES = 75
_CNT_N_CHANNELS, _CNT_RATE, _CNT_N_SAMPLES, _CNT_EVENT_TABLE = 370, 376, 864, 886
_CNT_CONTINUOUS_SECONDS, _CNT_CHANNEL_OFFSET = 890, 894
# Within an ELECTLOC record: label[10], bad flag, x/y screen position, baseline, sensitivity, calibration.
_EL_LABEL, _EL_BAD, _EL_XY, _EL_BASELINE, _EL_SENSITIVITY, _EL_CALIB = 0, 14, 19, 47, 59, 71


def write_cnt(
    path: Path,
    data_uv: np.ndarray,
    labels: Sequence[str],
    sfreq: int,
    *,
    sample_bytes: int = 4,
    bad: Sequence[str] = (),
) -> np.ndarray:
    """A Neuroscan CNT file of `data_uv` (C×T, µV) with int16 or int32 samples (`sample_bytes` 2 or 4).

    Neuroscan's scaling: µV = (sample − baseline) × sensitivity × calib / 204.8, so each channel's
    sensitivity is chosen for a step of max|x| / 30000 (int16) or 0.001 µV (int32), calib 1, baseline 0.
    Returns the µV the file holds after quantisation (what a correct reader gives back).
    """
    n_channels, n_samples = data_uv.shape
    if sample_bytes == 2:
        step = (np.maximum(np.abs(data_uv).max(axis=1), 1e-3) / 30000.0).astype(np.float32)
    else:
        step = np.full(n_channels, 0.001, dtype=np.float32)
    sensitivity = (step.astype(np.float64) * 204.8).astype(np.float32)
    digital = np.round(data_uv / (sensitivity[:, None].astype(np.float64) / 204.8))
    dtype = "<i2" if sample_bytes == 2 else "<i4"
    setup = bytearray(CNT_SETUP_BYTES)
    setup[0:12] = b"Version 3.0\x00"
    setup[205:225] = b"fixture".ljust(20, b"\x00")
    setup[225:235] = b"01/02/20\x00\x00"
    setup[235:247] = b"12:00:00\x00\x00\x00\x00"
    setup[_CNT_N_CHANNELS : _CNT_N_CHANNELS + 2] = np.uint16(n_channels).tobytes()
    setup[_CNT_RATE : _CNT_RATE + 2] = np.uint16(sfreq).tobytes()
    setup[_CNT_N_SAMPLES : _CNT_N_SAMPLES + 4] = np.int32(n_samples).tobytes()
    data_start = CNT_SETUP_BYTES + CNT_ELECTRODE_BYTES * n_channels
    event_table = data_start + n_samples * n_channels * sample_bytes
    setup[_CNT_EVENT_TABLE : _CNT_EVENT_TABLE + 4] = np.int32(event_table).tobytes()
    setup[_CNT_CONTINUOUS_SECONDS : _CNT_CONTINUOUS_SECONDS + 4] = np.float32(n_samples / sfreq).tobytes()
    setup[_CNT_CHANNEL_OFFSET : _CNT_CHANNEL_OFFSET + 4] = np.int32(sample_bytes).tobytes()  # 1 sample/block
    electrodes = bytearray()
    for i, label in enumerate(labels):
        record = bytearray(CNT_ELECTRODE_BYTES)
        record[_EL_LABEL : _EL_LABEL + 10] = label.encode("ascii")[:9].ljust(10, b"\x00")
        record[_EL_BAD] = 1 if label in bad else 0
        record[_EL_XY : _EL_XY + 8] = np.array([i * 10.0, 50.0], dtype="<f4").tobytes()
        record[_EL_BASELINE : _EL_BASELINE + 2] = np.int16(0).tobytes()
        record[_EL_SENSITIVITY : _EL_SENSITIVITY + 4] = np.float32(sensitivity[i]).tobytes()
        record[_EL_CALIB : _EL_CALIB + 4] = np.float32(1.0).tobytes()
        electrodes += record
    # The event table: TEEG (event type 2, total length 0, offset 0), no events.
    teeg = np.uint8(2).tobytes() + np.int32(0).tobytes() + np.int32(0).tobytes()
    with path.open("wb") as f:
        f.write(bytes(setup) + bytes(electrodes))
        f.write(np.ascontiguousarray(digital.T).astype(dtype).tobytes())  # sample-multiplexed
        f.write(teeg)
    return digital * (sensitivity[:, None].astype(np.float64) / 204.8)


def write_mat_v5(path: Path, variables: dict[str, object]) -> None:
    """A MATLAB v5 file by `scipy.io.savemat` (compressed, as MATLAB's default `save`): arrays as given
    (MATLAB's view), dicts as structs, lists of strings as cell arrays."""
    import scipy.io

    def matlab(value: object) -> object:
        if isinstance(value, dict):
            return {k: matlab(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            cell = np.empty((1, len(value)), dtype=object)
            cell[0, :] = list(value)
            return cell
        return value

    scipy.io.savemat(path, {k: matlab(v) for k, v in variables.items()}, do_compression=True)


# MATLAB's v7.3 header: 116 bytes of text, 8 bytes of subsystem offset, version 0x0200, endian "IM"; the
# HDF5 file starts after a 512-byte user block (what `matfile_version` and pymatreader recognise).
_MAT73_TEXT = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
)


def write_mat_v73(path: Path, variables: dict[str, object]) -> None:
    """A MATLAB v7.3 file (HDF5, as `save -v7.3` writes it) by h5py: arrays transposed (MATLAB is
    column-major), a `MATLAB_class` on each, structs as groups, cell arrays as references into `#refs#`."""
    import h5py

    def put(group: h5py.Group, name: str, value: object, refs: h5py.Group) -> h5py.HLObject:
        if isinstance(value, dict):
            node = group.create_group(name)
            node.attrs["MATLAB_class"] = np.bytes_("struct")
            for key, item in value.items():
                put(node, key, item, refs)
            return node
        if isinstance(value, str):
            node = group.create_dataset(name, data=np.array([[ord(c) for c in value]], dtype=np.uint16).T)
            node.attrs["MATLAB_class"] = np.bytes_("char")
            node.attrs["MATLAB_int_decode"] = np.int32(2)
            return node
        if isinstance(value, list | tuple):
            items = [put(refs, f"{name}_{len(refs)}_{i}", item, refs).ref for i, item in enumerate(value)]
            node = group.create_dataset(name, data=np.array(items, dtype=h5py.ref_dtype).reshape(-1, 1))
            node.attrs["MATLAB_class"] = np.bytes_("cell")
            return node
        array = np.atleast_2d(np.asarray(value, dtype=np.float64))
        node = group.create_dataset(name, data=array.T)
        node.attrs["MATLAB_class"] = np.bytes_("double")
        return node

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for name, value in variables.items():
            put(f, name, value, refs)
    header = _MAT73_TEXT.ljust(116, b" ") + bytes(8) + np.uint16(0x0200).tobytes() + b"IM"
    with path.open("r+b") as f:
        f.write(header)
