"""Dataset recipes: `configs/datasets/<name>.yaml`, merged with `key=value` overrides by OmegaConf."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from omegaconf import OmegaConf

from eegfm.config import CONFIG_DIR, load_config, typed
from eegfm.errors import ConfigError
from eegfm.ingest.preprocess import PreprocessConfig
from eegfm.storage import join_url, storage_errors, strip_protocol

if TYPE_CHECKING:
    from eegfm.ingest.bids import BidsSidecar

DATASETS_DIR = CONFIG_DIR / "datasets"


class RecipeError(ConfigError):
    """A recipe that cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class MatLayout:
    """Where a MATLAB file (format mat) keeps its signals: .mat files have no standard layout, so the recipe
    says it. A v7.3 file (HDF5) is read slice by slice; a v5 file's variable is loaded whole when read."""

    data: Any = ""
    """Variable holding the signals or a struct path (`EEG.data`), or a list of them, each a segment of the
    recording in the listed order (windows never cross segments); inside each of `trials` if set."""
    trials: str = ""
    """Regex of variable names holding one trial each (SEED: `.*_eeg\\d+`): each is a segment of the file's
    recording, in the names' numeric order (windows never cross trials); empty: one variable, `data`."""
    orientation: str = "channels_first"
    """How the array lies as MATLAB shows it: channels_first (channels × samples) or samples_first."""
    sfreq: str = ""
    """Samples per second: a number (`200`) or the variable or struct path holding it (`EEG.srate`)."""
    channels: tuple[str, ...] = ()
    """The channel labels in order, when the file does not hold them (SEED's .mat files)."""
    channels_by_path: dict[str, list[str]] = field(default_factory=dict)
    """Regex on a file's relative path → the channel labels of the files it matches (first match), over
    `channels` (Brain Invaders 2014b: player 2's file holds its EEG in the second half of the columns)."""
    channels_variable: str = ""
    """Variable or struct path holding the labels (cell array of strings or char matrix), e.g. `EEG.chan`."""
    unit: str = "uV"
    """Physical unit of the values: uV, mV or V."""
    trial_axis: int | None = None
    """For 3-D variables: the axis (0, 1 or 2, as MATLAB shows it) holding trials, each one segment; the
    other two axes lie as `orientation` says. None: every variable is 2-D."""

    def __post_init__(self) -> None:
        data = self.data
        if isinstance(data, list | tuple) and all(isinstance(d, str) and d for d in data):
            object.__setattr__(self, "data", tuple(data))  # a YAML list: hashable and frozen like the rest
        elif not isinstance(data, str):
            raise RecipeError(f"mat.data must be a variable (struct path) or a list of them, got {data!r}")
        if self.trial_axis is not None and self.trial_axis not in (0, 1, 2):
            raise RecipeError(
                f"mat.trial_axis must be 0, 1 or 2 (an axis of a 3-D array), got {self.trial_axis}"
            )
        if self.orientation not in ("channels_first", "samples_first"):
            raise RecipeError(
                f"mat.orientation must be channels_first or samples_first, got {self.orientation!r}"
            )
        for key, pattern in [
            ("mat.trials", self.trials),
            *(("mat.channels_by_path", k) for k in self.channels_by_path),
        ]:
            try:
                re.compile(pattern)
            except re.error as e:
                raise RecipeError(f"{key} {pattern!r} does not compile as a regex: {e}") from None

    def labels_for(self, path: str) -> tuple[str, ...]:
        """The channel labels of the file at relative `path`: the first `channels_by_path` regex that
        matches it, else `channels`."""
        for pattern, labels in self.channels_by_path.items():
            if re.search(pattern, path):
                return tuple(labels)
        return self.channels

    @property
    def variables(self) -> tuple[str, ...]:
        """`data` as a tuple of paths (empty when unset)."""
        return (self.data,) if isinstance(self.data, str) and self.data else tuple(self.data or ())


@dataclass(frozen=True)
class Recipe:
    """A corpus: where its files are, how their paths name subjects, and how to preprocess them."""

    name: str
    """Dataset name: the shards' file-name prefix and every sample's `dataset`."""
    root: str
    """The corpus's top folder, local or s3://… (ROOT / --root overrides it)."""
    positions: str
    """The MNE built-in montage that gives electrode positions."""
    reference: str
    """Montage label when the path does not give one (e.g. ar, le)."""
    mains_hz: float
    """Mains frequency of the recordings (the notch), 50 or 60."""
    splits: dict[str, float]
    """Split name → fraction of subjects; fractions sum to 1."""
    description: str = ""
    """One line about the corpus."""
    layout: str = "files"
    """How recordings and their ids are found: `files` (include + path_regex) or `bids` (BIDS entities)."""
    include: tuple[str, ...] = ()
    """Globs of the input files, relative to root (layout files)."""
    path_regex: str = ""
    """Regex on the relative path; named groups subject, session, recording, reference (layout files)."""
    format: str = "auto"
    """File format: auto (by extension), edf, bdf, brainvision, eeglab, gdf, cnt, fif, wfdb, mat."""
    bids_tasks: tuple[str, ...] = ()
    """Layout bids: only recordings of these BIDS `task` entities (empty: every task)."""
    bids_channel_types: dict[str, str] = field(default_factory=dict)
    """Layout bids: channels.tsv type → the type to use instead, where sidecars mistype (ds002680: MISC)."""
    exclude_from: tuple[str, ...] = ()
    """Recipes whose subjects are left out here (their manifest or file list), e.g. tuab inside tueg."""
    url: str = ""
    """Where the corpus is published."""
    licence: str = ""
    """The corpus's licence as published (e.g. CC0, CC-BY-4.0, TUH data use agreement)."""
    redistributable: bool | None = None
    """Whether the licence lets shards of it be shared (None: not stated)."""
    hours: float | None = None
    """Hours of EEG as published (None: not published)."""
    subjects: int | None = None
    """Subjects as published (None: not published)."""
    citation: str = ""
    """The paper or DOI to cite."""
    sources: tuple[str, ...] = ()
    """Where this recipe's facts come from (README, paper, sidecars), one per entry."""
    quirks: tuple[str, ...] = ()
    """Known oddities of the corpus that the recipe handles (or that users should know)."""
    example_paths: tuple[str, ...] = ()
    """Real relative paths of the corpus (from its docs), from which the tests generate its layout."""
    example_channels: tuple[str, ...] = ()
    """Channel labels as the corpus's files write them (from its docs), for the generated test tree."""
    exclude: tuple[str, ...] = ()
    """Globs of files to leave out even when include matches them."""
    rename: dict[str, str] = field(default_factory=dict)
    """Channel label → canonical 10-05 name, for labels the automatic rules miss."""
    cap: str | None = None
    """A BioSemi/EGI cap whose A1… labels name the montage's electrodes in order (`auto`: by count)."""
    eeg_channels: tuple[str, ...] = ()
    """If set, only these canonical channel names are kept."""
    exclude_subjects: tuple[str, ...] = ()
    """Subjects left out (e.g. another dataset's evaluation subjects)."""
    same_subject: dict[str, str] = field(default_factory=dict)
    """Ids that are one person: later id → first id (CHB-MIT: chb21 is chb01); splits use the first."""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """Resampling, filtering, windowing and QC of every recording."""
    mat: MatLayout = field(default_factory=MatLayout)
    """Format mat: which variables hold the signals, their orientation, rate, labels and unit."""

    def __post_init__(self) -> None:
        if self.layout not in ("files", "bids"):
            raise RecipeError(f"recipe {self.name}: layout must be files or bids, got {self.layout!r}")
        if self.layout == "files" and not (self.include and self.path_regex):
            raise RecipeError(f"recipe {self.name}: layout files needs `include` globs and a `path_regex`")
        if abs(sum(self.splits.values()) - 1.0) > 1e-6 or any(v < 0 for v in self.splits.values()):
            raise RecipeError(
                f"recipe {self.name}: split fractions must be ≥ 0 and sum to 1, got {self.splits}"
            )
        try:
            re.compile(self.path_regex)
        except re.error as e:
            raise RecipeError(f"recipe {self.name}: path_regex does not compile: {e}") from None
        blank = [k for k, v in self.bids_channel_types.items() if not str(k).strip() or not str(v).strip()]
        if blank:
            raise RecipeError(
                f"recipe {self.name}: bids_channel_types maps a channels.tsv type to another, e.g. "
                f"{{MISC: EEG}}; blank type in {blank}"
            )
        if self.format == "mat" and not ((self.mat.data or self.mat.trials) and self.mat.sfreq):
            raise RecipeError(
                f"recipe {self.name}: format mat needs `mat.data` or `mat.trials` (where the signals are) "
                "and `mat.sfreq` (a number or the variable holding it)"
            )


def available_recipes() -> list[str]:
    return sorted(p.stem for p in DATASETS_DIR.glob("*.yaml"))


def load_recipe(name: str, overrides: list[str] | None = None, **settings: Any) -> Recipe:
    """Load a recipe by name (or a YAML path), apply `key=value` overrides and keyword settings.

    Typed like every configuration (`eegfm.config.typed` on `Recipe`): an unknown key or a value of the
    wrong type (`preprocess.window_s=abc`) is a `RecipeError` naming the key.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else DATASETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise RecipeError(
            f"no dataset recipe {name!r}: expected {path}; known: {', '.join(available_recipes())}"
        )
    cfg = load_config(path, overrides)  # untyped here; typed() below names any bad key
    for key, value in settings.items():
        if value is not None:
            OmegaConf.update(cfg, key, str(value) if key == "root" else value)
    try:
        return typed(Recipe, cfg, source=f"recipe {name} ({path})")
    except RecipeError:
        raise
    except ConfigError as e:
        raise RecipeError(str(e)) from None


def recipe_as_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data, for manifests and the run's saved config."""
    out = {f.name: getattr(recipe, f.name) for f in fields(Recipe) if f.name not in ("preprocess", "mat")}
    if not recipe.bids_channel_types:  # other corpora's saved configs (and run hashes) stay as they were
        del out["bids_channel_types"]
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
    if (
        recipe.mat != MatLayout()
    ):  # only then: other corpora's saved configs (and run hashes) stay as they were
        out["mat"] = {f.name: getattr(recipe.mat, f.name) for f in fields(MatLayout)}
        out["mat"]["channels"] = list(recipe.mat.channels)
        if isinstance(recipe.mat.data, tuple):
            out["mat"]["data"] = list(recipe.mat.data)
        if not recipe.mat.channels_by_path:  # absent as before it existed, as trial_axis below
            del out["mat"]["channels_by_path"]
        else:
            out["mat"]["channels_by_path"] = {k: list(v) for k, v in recipe.mat.channels_by_path.items()}
        if recipe.mat.trial_axis is None:  # absent as before it existed: saved configs and run hashes stay
            del out["mat"]["trial_axis"]
    out["preprocess"] = {f.name: getattr(recipe.preprocess, f.name) for f in fields(PreprocessConfig)}
    return out


@dataclass(frozen=True)
class SourceFile:
    """One discovered input file and the ids its path gives."""

    path: str  # relative to the recipe's root, '/'-separated
    url: str
    size: int
    subject: str
    session: str
    recording: str
    reference: str
    split: str | None  # None when the path did not match the layout or the subject is excluded
    skip_reason: str | None = None
    bids: BidsSidecar | None = field(default=None, hash=False)  # layout bids: the recording's sidecar facts


def discover(recipe: Recipe) -> list[SourceFile]:
    """Every file under the root that the recipe includes, sorted by relative path, with its ids."""
    with storage_errors(recipe.root, "listing the corpus"):
        fs, root = fsspec.core.url_to_fs(recipe.root)
        root_exists = fs.exists(root)
    if not root_exists:
        raise RecipeError(
            f"recipe {recipe.name!r}: root {recipe.root!r} does not exist. Point it at the corpus with "
            f"ROOT=<path or s3://…> (make) or --root (eegfm shards), or set `root:` in "
            f"configs/datasets/{recipe.name}.yaml"
        )
    if recipe.layout == "bids":
        from eegfm.ingest.bids import discover_bids  # mne-bids is imported only for BIDS corpora

        return discover_bids(recipe)
    base = strip_protocol(root).rstrip("/")
    with storage_errors(recipe.root, "listing the corpus"):
        found = fs.find(root, detail=True)
    files: list[SourceFile] = []
    pattern = re.compile(recipe.path_regex)
    shared = _subjects_of_other_corpora(recipe)
    for full, info in sorted(found.items()):
        rel = strip_protocol(full)[len(base) :].lstrip("/")
        if not any(fnmatchcase(rel, g) for g in recipe.include) or any(
            fnmatchcase(rel, g) for g in recipe.exclude
        ):
            continue
        size = int(info.get("size") or 0)
        files.append(_identify(recipe, pattern, rel, join_url(recipe.root, rel), size, shared))
    if not files:
        raise RecipeError(
            f"recipe {recipe.name!r}: no files matching {list(recipe.include)} under root {recipe.root!r}. "
            f"Is ROOT (--root) the corpus's top folder?"
        )
    return files


def _subjects_of_other_corpora(recipe: Recipe) -> dict[str, str]:
    """Subject → corpus, for the recipes named in `exclude_from` (see `catalogue.excluded_subjects`)."""
    if not recipe.exclude_from:
        return {}
    from eegfm.ingest.catalogue import excluded_subjects  # imports this module

    return excluded_subjects(recipe)


def _identify(
    recipe: Recipe,
    pattern: re.Pattern[str],
    rel: str,
    url: str,
    size: int,
    shared: dict[str, str] | None = None,
) -> SourceFile:
    match = pattern.search(rel)
    stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if match is None:
        return SourceFile(
            path=rel,
            url=url,
            size=size,
            subject="",
            session="",
            recording=stem,
            reference=recipe.reference,
            split=None,
            skip_reason=f"path does not match the recipe's layout (path_regex {recipe.path_regex!r})",
        )
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    subject = groups.get("subject", stem)
    subject = recipe.same_subject.get(subject, subject)
    reason = f"subject excluded by the recipe ({subject})" if subject in recipe.exclude_subjects else None
    if reason is None and shared and subject in shared:
        reason = f"subject also in {shared[subject]}, excluded by exclude_from ({subject})"
    return SourceFile(
        path=rel,
        url=url,
        size=size,
        subject=subject,
        session=groups.get("session", ""),
        recording=groups.get("recording", stem),
        reference=groups.get("reference", recipe.reference),
        split=None if reason else assign_split(recipe.name, subject, recipe.splits),
        skip_reason=reason,
    )


def assign_split(dataset: str, subject: str, fractions: dict[str, float]) -> str:
    """Deterministic split of a subject: a hash of dataset + subject, so no subject is in two splits."""
    u = int(hashlib.sha256(f"{dataset}/{subject}".encode()).hexdigest()[:15], 16) / 16**15
    cumulative = 0.0
    for split, fraction in fractions.items():
        cumulative += fraction
        if u < cumulative:
            return split
    return next(s for s, f in reversed(fractions.items()) if f > 0)
