"""MATLAB .mat files (SEED's preprocessed EEG, MOABB's downloads) as a `RecordingReader`, laid out as the
recipe's `mat:` says (`recipe.MatLayout`): .mat has no standard layout for EEG.

Two file versions, told apart by the header (`scipy.io.matlab.matfile_version`):
- v7.3 is HDF5 (after MATLAB's 512-byte header): h5py opens it, from any fsspec file, and each read is one
  slice of the dataset, so memory is one chunk whatever the file's size. MATLAB writes arrays
  column-major, so h5py sees every array transposed: a channels × samples variable is a (samples,
  channels) dataset, and a chunk is a run of rows.
- v4/v5 (scipy.io.loadmat): a variable can only be loaded whole (v5 compresses each variable as one zlib
  stream, so there is nothing to memory-map). Memory is therefore one variable: one trial of SEED (62 ×
  ~50 000 float64 ≈ 25 MB), or the whole struct of a one-variable file. Only the variable being read is
  kept (`variable_names=`), and it is let go when the next one is needed.

Several trials in one file become segments of one recording, so windows never straddle two trials, and
subject/session keep coming from the file's path like every other format (one file is one recording
everywhere in ingest). Trials can be variables matched by `mat.trials` (SEED: `djc_eeg1` … `djc_eeg15`, in
the names' numeric order), variables listed in `mat.data` (Lee2019: `EEG_MI_train.x`, `EEG_MI_test.x`, in the
listed order), or the slices of a 3-D variable along `mat.trial_axis` (Weibo2014: channels × samples ×
trials). A v5 3-D variable is loaded whole once, then sliced per trial; a v7.3 one is read slice by slice.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec
import numpy as np

from eegfm.ingest.signals import ReadError, RecordingReader, Signal

if TYPE_CHECKING:
    from eegfm.ingest.recipe import MatLayout, Recipe, SourceFile


def _natural(name: str) -> list[Any]:
    """Sort key putting `eeg2` before `eeg10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _strings(obj: Any) -> list[str]:
    """The strings of a loaded cell array, char matrix or string (v5), in order."""
    if isinstance(obj, str):
        return [obj.strip()]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "U":
        return [str(s).strip() for s in obj.ravel()]
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return [s for item in obj.ravel(order="F") for s in _strings(item)]
    raise ReadError(f"expected strings (a cell array or char matrix), found {type(obj).__name__}")


class _V5File:
    """A v4/v5 file through scipy.io: variables listed without loading, loaded one at a time."""

    def __init__(self, f: BinaryIO):
        import scipy.io

        self._f, self._io = f, scipy.io
        f.seek(0)
        self.shapes = {name: shape for name, shape, _ in scipy.io.whosmat(f)}
        self._loaded: tuple[str, Any] | None = None

    def names(self) -> list[str]:
        return list(self.shapes)

    def _value(self, path: str) -> Any:
        top, *fields = path.split(".")
        if top not in self.shapes:
            raise ReadError(f"no variable {top!r} in the file (it has {', '.join(self.shapes) or 'none'})")
        if self._loaded is None or self._loaded[0] != top:
            self._loaded = None  # let the previous variable go before the next is loaded
            self._f.seek(0)
            try:
                loaded = self._io.loadmat(
                    self._f, variable_names=[top], struct_as_record=False, squeeze_me=True
                )
            except Exception as e:  # zlib / struct errors of a truncated or damaged file
                raise ReadError(
                    f"variable {top} unreadable (damaged file?): {type(e).__name__}: {e}"
                ) from None
            self._loaded = (top, loaded[top])
        value = self._loaded[1]
        for i, name in enumerate(fields):
            if not hasattr(value, name):
                raise ReadError(f"no field {'.'.join([top, *fields[: i + 1]])!r} in the file")
            value = getattr(value, name)
        return value

    def shape(self, path: str) -> tuple[int, ...]:
        return tuple(self.shapes[path]) if "." not in path else np.shape(self._value(path))

    def samples(
        self, path: str, channels_first: bool, start: int, stop: int, trial: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Rows `start:stop` of samples × channels; `trial` (axis, index) picks one slice of a 3-D array."""
        array = np.asarray(self._value(path))
        if trial is not None:  # reshape restores a trial axis of length 1 that squeeze_me dropped
            array = np.take(array.reshape(self.shape(path)), trial[1], axis=trial[0])
        array = array.reshape(1, -1) if array.ndim == 1 and channels_first else array.reshape(len(array), -1)
        return array[:, start:stop].T if channels_first else array[start:stop]

    def number(self, path: str) -> float:
        return float(np.asarray(self._value(path)).ravel()[0])

    def strings(self, path: str) -> list[str]:
        return _strings(self._value(path))


class _V73File:
    """A v7.3 (HDF5) file through h5py: every array is read as a slice."""

    def __init__(self, f: BinaryIO):
        import h5py

        self._h5 = h5py.File(f, "r")
        self._ref = h5py.Reference

    def close(self) -> None:
        self._h5.close()

    def names(self) -> list[str]:
        return [name for name in self._h5 if not name.startswith("#")]

    def _node(self, path: str) -> Any:
        node = self._h5
        for i, name in enumerate(path.split(".")):
            if not hasattr(node, "keys") or name not in node:
                raise ReadError(f"no variable or field {'.'.join(path.split('.')[: i + 1])!r} in the file")
            node = node[name]
        return node

    def shape(self, path: str) -> tuple[int, ...]:
        return tuple(reversed(self._node(path).shape))  # h5py sees MATLAB's arrays transposed

    def samples(
        self, path: str, channels_first: bool, start: int, stop: int, trial: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Rows `start:stop` of samples × channels; `trial` (axis, index) picks one slice of a 3-D array,
        the axis counted as MATLAB shows it (h5py's axes are reversed: MATLAB's axis a is h5py's 2 - a)."""
        dataset = self._node(path)
        index: list[Any] = (
            [slice(start, stop), slice(None)] if channels_first else [slice(None), slice(start, stop)]
        )
        if trial is not None:
            index.insert(2 - trial[0], trial[1])
        values = dataset[tuple(index)]
        return values if channels_first else values.T

    def number(self, path: str) -> float:
        return float(np.asarray(self._node(path)[()]).ravel()[0])

    def strings(self, path: str) -> list[str]:
        return self._strings(self._node(path))

    def _strings(self, dataset: Any) -> list[str]:
        values = dataset[()]
        if values.dtype == object:  # a cell array: references to char arrays
            return [s for ref in values.ravel() for s in self._strings(self._h5[ref])]
        kind = dataset.attrs.get("MATLAB_class", b"")
        if (kind.decode() if isinstance(kind, bytes) else str(kind)) != "char":
            raise ReadError(f"{dataset.name} is not text (MATLAB class {kind!r})")
        rows = np.atleast_2d(values).T  # MATLAB's rows of the char matrix
        return ["".join(map(chr, row)).rstrip("\x00 ") for row in rows]


class MatRecording:
    """The signals a `MatLayout` points at, each matched trial one segment of the recording."""

    def __init__(self, f: BinaryIO, layout: MatLayout, path: str = ""):
        from scipy.io.matlab import matfile_version

        self.layout, self.path, self.notes = layout, path, []
        try:
            f.seek(0)
            major, _minor = matfile_version(f)
        except Exception as e:  # scipy raises MatReadError / ValueError for a non-MAT file
            raise ReadError(f"not a MATLAB file: {e}") from None
        try:
            self.file: _V5File | _V73File = _V73File(f) if major == 2 else _V5File(f)
        except ReadError:
            raise
        except Exception as e:  # zlib/HDF5 errors of a damaged file
            raise ReadError(f"MATLAB file unreadable: {type(e).__name__}: {e}") from None
        self._channels_first = layout.orientation == "channels_first"
        # One segment per 2-D variable, or per trial of a 3-D one: (path, (trial axis, index) or None).
        self.pieces: list[tuple[str, tuple[int, int] | None]] = []
        lengths, counts = [], {}
        for path in self._signal_paths():
            shape = self.file.shape(path)
            for trial, matrix in self._trials(path, shape):
                matrix = (1, *matrix) if len(matrix) == 1 else matrix
                self.pieces.append((path, trial))
                lengths.append(matrix[1] if self._channels_first else matrix[0])
                counts.setdefault(matrix[0] if self._channels_first else matrix[1], f"{path} {shape}")
        if len(counts) > 1:
            raise ReadError(f"the trials have different channel counts ({', '.join(counts.values())})")
        n_channels, first = next(iter(counts.items()))
        self.bounds = np.cumsum([0, *lengths]).tolist()
        self.sfreq = self._sfreq()
        labels = self._labels()
        if len(labels) != n_channels:
            axis = "" if layout.trial_axis is None else f", mat.trial_axis {layout.trial_axis}"
            raise ReadError(
                f"{len(labels)} channel labels for {n_channels} channels in {first} "
                f"(orientation {layout.orientation}{axis}: is it the other way round?)"
            )
        self.signals = [
            Signal(index=i, label=label, unit=layout.unit, sfreq=self.sfreq) for i, label in enumerate(labels)
        ]

    def _signal_paths(self) -> list[str]:
        variables = self.layout.variables
        if not self.layout.trials:
            return list(variables)
        pattern = re.compile(self.layout.trials)
        names = sorted((n for n in self.file.names() if pattern.fullmatch(n)), key=_natural)
        if not names:
            raise ReadError(f"no variable matches mat.trials {self.layout.trials!r}")
        return [f"{name}.{data}" for name in names for data in variables] if variables else names

    def _trials(
        self, path: str, shape: tuple[int, ...]
    ) -> list[tuple[tuple[int, int] | None, tuple[int, ...]]]:
        """The 2-D matrices of a variable: itself, or each slice along mat.trial_axis of a 3-D one."""
        axis = self.layout.trial_axis
        if axis is None and len(shape) <= 2:
            return [(None, shape)]
        if axis is not None and len(shape) == 3:
            matrix = tuple(n for i, n in enumerate(shape) if i != axis)
            return [((axis, k), matrix) for k in range(shape[axis])]
        if axis is None:
            raise ReadError(
                f"{path} has shape {shape}: expected channels × samples (2-D), or set mat.trial_axis "
                "to the axis holding trials of a 3-D variable"
            )
        raise ReadError(f"{path} has shape {shape}: mat.trial_axis {axis} needs a 3-D variable")

    def _sfreq(self) -> float:
        text = self.layout.sfreq
        try:
            sfreq = float(text)
        except ValueError:
            sfreq = self.file.number(text)
        if not sfreq > 0:
            raise ReadError(f"sampling rate {sfreq} (mat.sfreq {text!r})")
        return sfreq

    def _labels(self) -> list[str]:
        labels = self.layout.labels_for(self.path)
        if labels:
            return list(labels)
        if self.layout.channels_variable:
            return self.file.strings(self.layout.channels_variable)
        raise ReadError("no channel labels: set the recipe's mat.channels or mat.channels_variable")

    @property
    def duration_s(self) -> float:
        return self.bounds[-1] / self.sfreq

    def segments(self, sfreq: float) -> list[tuple[int, int, float]]:
        return [(a, b, a / self.sfreq) for a, b in pairwise(self.bounds) if b > a]

    def chunk_samples(self, sfreq: float, chunk_s: float) -> int:
        return max(1, round(chunk_s * sfreq))

    def read(self, signals: list[Signal], scales: Any, start: int, stop: int) -> np.ndarray:
        pieces = []
        for (path, trial), (first, end) in zip(self.pieces, pairwise(self.bounds), strict=True):
            if end <= start or first >= stop:
                continue
            values = self.file.samples(
                path, self._channels_first, max(start, first) - first, min(stop, end) - first, trial
            )
            pieces.append(np.asarray(values, dtype=np.float64)[:, [s.index for s in signals]])
        values = np.concatenate(pieces) if pieces else np.empty((0, len(signals)))
        return (values * np.asarray(scales, dtype=np.float64)).astype(np.float32)


@contextlib.contextmanager
def open_mat(source: SourceFile, recipe: Recipe) -> Iterator[RecordingReader]:
    """Open a `.mat` file (v5 or v7.3) from any fsspec URL, laid out as `recipe.mat` says."""
    if not ((recipe.mat.data or recipe.mat.trials) and recipe.mat.sfreq):
        raise ReadError(
            "a .mat file needs the recipe's `mat:` layout (mat.data or mat.trials, and mat.sfreq) "
            "to say where its signals are"
        )
    with fsspec.open(source.url, "rb") as f:
        recording = MatRecording(f, recipe.mat, source.path)
        try:
            yield recording
        finally:
            if isinstance(recording.file, _V73File):
                recording.file.close()
