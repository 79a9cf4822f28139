"""A recipe's example corpus, written for real: each of its `example_paths` as a small file in the recipe's
own format, with its `example_channels` at its sampling rate, so that a dry run (or an ingest) of the recipe
meets the layout, names and format it will meet on the real corpus.

Why: a recipe is a claim about a corpus (where its files are, what they are called, how they are written,
what their channels are labelled). Matching its example paths against its regex checks the names only;
opening files in its format with its real reader and planning its channels checks the rest.

Files come from the formats' own writers (`fixtures.write_edf` for EDF/BDF, pybv, eeglabio, MNE's FIF
writer, `format_fixtures.write_gdf`, `wfdb.wrsamp`, `format_fixtures_other.write_cnt`, scipy/h5py for
MATLAB following the recipe's `mat:` layout) and, for layout bids, from `mne_bids.write_raw_bids`: one
subject's tree with the recipe's task names, as OpenNeuro datasets are written. The signals are noise: the
point is the files' structure, not their content.

When a recipe does not give its channel labels, `FALLBACK_CHANNELS` (a 10-20 set) stands in and the tree
says so (`ExampleTree.real_labels`); when it does not state its rate, 256 Hz does (`sfreq_source`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eegfm.ingest.channels import non_eeg_reason
from eegfm.ingest.recipe import DATASETS_DIR, Recipe

FALLBACK_CHANNELS = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz")
FALLBACK_SFREQ = 256.0
DURATION_S = 12.0  # one 10-s window at the default preprocessing, with room for a rate's rounding
# mne-bids' names for the BIDS EEG data formats, by the recipe's format or the example's extension.
_BIDS_FORMATS = {"edf": "EDF", "bdf": "BDF", "brainvision": "BrainVision", "vhdr": "BrainVision"}
_BIDS_FORMATS |= {"eeglab": "EEGLAB", "set": "EEGLAB"}
_RATE_PATTERNS = (
    r"Sampling rate: (\d+(?:\.\d+)?) Hz",  # the catalogue's header line
    r"SamplingFrequency (\d+(?:\.\d+)?) Hz",  # read from a BIDS dataset's eeg.json sidecars
    r"\b(\d{3,4}(?:\.\d+)?) Hz\b",  # a rate in the header's prose (3-4 digits: not the mains)
)


@dataclass(frozen=True)
class ExampleTree:
    """What was written for a recipe, and where its facts came from."""

    root: Path
    paths: tuple[str, ...]
    """The example paths written, relative to root (the recording files a dry run must find)."""
    channels: tuple[str, ...]
    """The labels written into every file."""
    real_labels: bool
    """True when `channels` are the corpus's own labels (the recipe's example_channels or mat.channels)."""
    sfreq: float
    sfreq_source: str
    """Where the rate came from: the recipe line that states it, or that none does."""


def header_text(recipe_name: str) -> str:
    """A recipe's comments (everything its YAML says outside the values), where its sources speak."""
    path = DATASETS_DIR / f"{recipe_name}.yaml"
    if not path.exists():
        return ""
    return "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))


def recipe_sfreq(recipe: Recipe) -> tuple[float, str]:
    """The corpus's sampling rate as its recipe states it (a mat layout's number, the header's rate line,
    the sidecars' SamplingFrequency, a rate in its prose), else FALLBACK_SFREQ."""
    if recipe.format == "mat" and re.fullmatch(r"\d+(?:\.\d+)?", recipe.mat.sfreq):
        return float(recipe.mat.sfreq), f"mat.sfreq {recipe.mat.sfreq}"
    text = header_text(recipe.name)
    for pattern in _RATE_PATTERNS:
        match = re.search(pattern, text)
        if match:
            return float(match.group(1)), match.group(0)
    return FALLBACK_SFREQ, f"no rate stated: {FALLBACK_SFREQ:g} Hz"


def channel_kind(label: str) -> str:
    """The MNE channel type a file that stores types would give `label`: EEG unless a label rule says
    otherwise (what a real channels.tsv or EEGLAB chanlocs types EOG/ECG/EMG/trigger channels as)."""
    reason = non_eeg_reason(label)
    if reason is None:
        return "eeg"
    for kind in ("eog", "ecg", "emg", "stim"):
        if kind in reason.lower():
            return kind
    return "stim" if "trigger" in reason.lower() or "status" in reason.lower() else "misc"


def example_channels(recipe: Recipe) -> tuple[tuple[str, ...], bool]:
    """The labels to write: a mat layout's own columns, the recipe's example_channels, or the fallback."""
    if recipe.format == "mat" and recipe.mat.channels:
        return tuple(recipe.mat.channels), True
    if recipe.example_channels:
        return tuple(dict.fromkeys(recipe.example_channels)), True  # a label listed twice is written once
    return FALLBACK_CHANNELS, False


def write_recipe_examples(recipe: Recipe, root: Path, duration_s: float = DURATION_S) -> ExampleTree:
    """Write every example path of `recipe` under `root` in the recipe's format; see the module's doc."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sfreq, source = recipe_sfreq(recipe)
    channels, real = example_channels(recipe)
    if recipe.format == "cnt":
        sfreq = float(round(sfreq))  # CNT stores a whole-number rate
    rng = np.random.default_rng(0)
    n = round(duration_s * sfreq)
    data_uv = rng.normal(0.0, 20.0, (len(channels), n))
    if recipe.layout == "bids":
        _write_bids(recipe, root, data_uv, sfreq, channels)
    else:
        for rel in recipe.example_paths:
            _write_file(recipe, root / rel, data_uv, sfreq, channels, source)
    return ExampleTree(root, tuple(recipe.example_paths), channels, real, sfreq, source)


def _format(recipe: Recipe, rel: str) -> str:
    if recipe.format != "auto":
        return recipe.format
    from eegfm.ingest.formats import format_of

    return format_of(rel, "auto")


def _write_file(
    recipe: Recipe, path: Path, data_uv: np.ndarray, sfreq: float, channels: tuple[str, ...], source: str
) -> None:
    from eegfm.ingest import format_fixtures as mne_formats
    from eegfm.ingest import format_fixtures_other as other_formats
    from eegfm.ingest.fixtures import Signal, write_edf

    fmt = _format(recipe, path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = [channel_kind(c) for c in channels]
    if fmt in ("edf", "bdf"):
        signals = [Signal(label, row, sfreq) for label, row in zip(channels, data_uv, strict=True)]
        record_s = 1.0 if float(sfreq).is_integer() else 10.0
        write_edf(path, signals, bdf=fmt == "bdf", record_duration=record_s)
    elif fmt == "gdf":
        mne_formats.write_gdf(path, data_uv, sfreq, channels)
    elif fmt == "fif":
        mne_formats.write_fif(path, data_uv, sfreq, channels, kinds)
    elif fmt == "brainvision":
        mne_formats.write_brainvision(path.parent, path.stem, data_uv, sfreq, channels)
    elif fmt == "eeglab":
        mne_formats.write_eeglab(path, data_uv, sfreq, channels, kinds)
    elif fmt == "cnt":
        other_formats.write_cnt(path, data_uv, channels, round(sfreq))
    elif fmt == "wfdb":
        other_formats.write_wfdb(path.parent, path.stem, data_uv, channels, sfreq)
    elif fmt == "mat":
        _write_mat(recipe, path, data_uv, sfreq, channels, source)
    else:
        raise ValueError(f"recipe {recipe.name}: no example writer for format {fmt!r}")


def _write_mat(
    recipe: Recipe, path: Path, data_uv: np.ndarray, sfreq: float, channels: tuple[str, ...], source: str
) -> None:
    """A .mat laid out as the recipe's `mat:` says: the data at its (struct) path in its orientation and
    unit, the rate where `mat.sfreq` names a variable, the labels where `mat.channels_variable` does. MATLAB
    v5 (what MATLAB's `save` and the corpora's loaders, scipy's loadmat, read) unless the recipe says v7.3."""
    from eegfm.ingest import format_fixtures_other as other_formats

    layout = recipe.mat
    if layout.trials:
        raise ValueError(f"recipe {recipe.name}: mat.trials layouts name variables by regex; not generated")
    scale = {"uV": 1.0, "mV": 1e-3, "V": 1e-6}[layout.unit]
    array = data_uv * scale
    variables: dict[str, object] = {}
    for variable, part in zip(
        layout.variables, np.array_split(array, len(layout.variables), axis=1), strict=True
    ):
        _put(variables, variable, _mat_array(part, layout.orientation, layout.trial_axis))
    if not re.fullmatch(r"\d+(?:\.\d+)?", layout.sfreq):
        _put(variables, layout.sfreq, np.array([[sfreq]]))
    if layout.channels_variable:
        _put(variables, layout.channels_variable, list(channels))
    v73 = "v7.3" in header_text(recipe.name)
    (other_formats.write_mat_v73 if v73 else other_formats.write_mat_v5)(path, variables)


def _mat_array(channels_by_samples: np.ndarray, orientation: str, trial_axis: int | None) -> np.ndarray:
    """The array as MATLAB would show it: in `orientation`, and with `trial_axis` set, cut into 3 trials
    stacked along that axis (Weibo2014's channels × samples × trials)."""
    if trial_axis is None:
        return channels_by_samples if orientation == "channels_first" else channels_by_samples.T
    length = channels_by_samples.shape[1] // 3
    trials = [channels_by_samples[:, k * length : (k + 1) * length] for k in range(3)]
    return np.stack([_mat_array(t, orientation, None) for t in trials], axis=trial_axis)


def _put(variables: dict[str, object], dotted: str, value: object) -> None:
    """Set `a.b.c` in nested dicts (structs)."""
    *parents, last = dotted.split(".")
    node = variables
    for part in parents:
        node = node.setdefault(part, {})  # type: ignore[assignment]
    node[last] = value


def _write_bids(
    recipe: Recipe, root: Path, data_uv: np.ndarray, sfreq: float, channels: tuple[str, ...]
) -> None:
    """Each example path by `mne_bids.write_raw_bids` from its own entities (subject, session, task, run…),
    in the recipe's format (by the example's extension when the recipe says auto)."""
    import mne
    import mne_bids

    kinds = [channel_kind(c) for c in channels]
    for rel in recipe.example_paths:
        fmt = recipe.format if recipe.format != "auto" else rel.rsplit(".", 1)[-1].lower()
        entities = mne_bids.get_entities_from_fname(rel.rsplit("/", 1)[-1], on_error="raise")
        entities = {k: v for k, v in entities.items() if v is not None}
        info = mne.create_info(list(channels), sfreq, kinds, verbose=False)
        volts = np.where(np.array(kinds)[:, None] == "stim", 0.0, data_uv * 1e-6)
        raw = mne.io.RawArray(volts, info, verbose=False)
        raw.info["line_freq"] = recipe.mains_hz
        path = mne_bids.BIDSPath(root=root, datatype="eeg", **entities)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne_bids.write_raw_bids(
                raw, path, format=_BIDS_FORMATS[fmt], allow_preload=True, overwrite=True, verbose=False
            )
        written = Path(path.fpath).relative_to(root).as_posix()
        if written != rel:
            raise ValueError(f"recipe {recipe.name}: mne-bids wrote {written} for the example {rel}")
        single_type = _one_type_for_all(recipe, len(channels))
        if single_type is not None:
            _retype_channels_tsv(Path(path.fpath), single_type)


def channels_tsv_types(recipe: Recipe) -> dict[str, int]:
    """The non-EEG types a recipe records from its corpus's channels.tsv files (`quirks`: "non-EEG channels
    in channels.tsv (EOG: 2, MISC: 1)"), type → channel count."""
    for quirk in recipe.quirks:
        match = re.search(r"non-EEG channels in channels\.tsv \(([^)]*)\)", quirk)
        if match:
            pairs = (item.rsplit(":", 1) for item in match.group(1).split(","))
            return {kind.strip(): int(count) for kind, count in pairs}
    return {}


def _one_type_for_all(recipe: Recipe, n_channels: int) -> str | None:
    """The type the corpus's channels.tsv gives every channel, when the recipe's counts say one type covers
    them all (ds002680: MISC for all 31); otherwise the types come from the labels (`channel_kind`)."""
    types = channels_tsv_types(recipe)
    if len(types) == 1 and next(iter(types.values())) == n_channels:
        return next(iter(types))
    return None


def _retype_channels_tsv(data_file: Path, kind: str) -> None:
    """Set every row's `type` in the recording's channels.tsv (mne-bids writes MNE's types; a corpus may
    write others, e.g. n/a)."""
    stem = data_file.name.rsplit("_eeg", 1)[0]
    tsv = data_file.with_name(f"{stem}_channels.tsv")
    lines = tsv.read_text(encoding="utf-8").splitlines()
    column = lines[0].split("\t").index("type")
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[column] = kind
    tsv.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n", encoding="utf-8")
