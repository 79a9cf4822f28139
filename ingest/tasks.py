"""Task recipes: `configs/tasks/<name>.yaml`, a dataset recipe plus labels, classes, windows and splits.

A task reuses its dataset recipe whole (reader, channels, positions, preprocessing; see
`configs/datasets/`), and adds what makes windows into labelled examples: the label source (in the format
the corpus ships, `ingest/labels/`), the classes and how the corpus's label texts map onto them, the
window length and stride (tasks have their own: TUEV 5 s, sleep 30 s, motor imagery 4 s), how a window
gets its label (`ingest/labelling.py`) and the split policy. Its shards keep the pretraining contract
(`ingest/contract.py`), with `task`, `label` and `label_name` in every sample's metadata.

Splits: a corpus's official split where it has one (read from the path), mapped onto the contract's
train/val/test, with val carved per subject from official train when the corpus has no val of its own;
otherwise per subject exactly as the dataset recipe splits it for pretraining (`recipe.assign_split`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, OmegaConf

from eegfm.config import CONFIG_DIR, load_config, typed
from eegfm.errors import ConfigError
from eegfm.ingest import contract
from eegfm.ingest.labelling import MODES, WindowLabels, label_windows, window_starts
from eegfm.ingest.labels import Annotation, LabelsConfig, RecordingFile, label_source
from eegfm.ingest.recipe import Recipe, SourceFile, assign_split, load_recipe
from eegfm.ingest.signals import RecordingReader

TASKS_DIR = CONFIG_DIR / "tasks"


@dataclass(frozen=True)
class WindowsConfig:
    """The task's windows: their length, their stride, and how each gets its label."""

    mode: str = MISSING
    """covering (annotations covering the window), onset (one window per annotation, from its onset),
    centred (one window centred on each event) or recording (the recording's single label)."""
    length_s: float = MISSING
    """Window length, seconds (replaces the dataset recipe's preprocess.window_s)."""
    stride_s: float | None = None
    """Grid modes: seconds between window starts, at most length_s (default: length_s, no overlap)."""

    def __post_init__(self) -> None:
        if self.mode == MISSING:  # the schema's placeholder, before the recipe fills it in
            return
        if self.mode not in MODES:
            raise ConfigError(f"windows.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.length_s <= 0:
            raise ConfigError(f"windows.length_s must be > 0, got {self.length_s}")
        if self.stride_s is not None and not 0 < self.stride_s <= self.length_s:
            raise ConfigError(f"windows.stride_s must be in (0, length_s], got {self.stride_s}")


@dataclass(frozen=True)
class SplitPolicy:
    """Which split each recording goes to."""

    official: str = ""
    """Regex on the relative path whose group `official` names the corpus's own split (e.g. train, eval);
    empty: no official split, subjects are split as the dataset recipe splits them."""
    mapping: dict[str, str] = field(default_factory=dict)
    """Official split name → train, val or test (e.g. eval: test)."""
    val_fraction: float = 0.0
    """Share of the subjects of the official split mapped to train that go to val instead (hashed per
    subject with the task's name: deterministic, no subject in two splits)."""

    def __post_init__(self) -> None:
        if self.official:
            try:
                groups = re.compile(self.official).groupindex
            except re.error as e:
                raise ConfigError(f"splits.official does not compile: {e}") from None
            if "official" not in groups:
                raise ConfigError("splits.official must have a named group (?P<official>…)")
        bad = {k: v for k, v in self.mapping.items() if v not in contract.SPLITS}
        if bad:
            raise ConfigError(f"splits.mapping values must be one of {contract.SPLITS}, got {bad}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"splits.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class TaskRecipe:
    """A labelled task over one corpus."""

    name: str
    """Task name: its shards' file-name prefix, every sample's `task` and the manifest's `dataset`."""
    dataset: str
    """The dataset recipe (configs/datasets/<name>.yaml) whose files, channels and preprocessing it uses."""
    classes: tuple[str, ...]
    """Class names in label order: `label` is the index of `label_name` here."""
    label_map: dict[str, str | None]
    """The corpus's label text → class name, or null for a text the task ignores (counted); any text not
    listed is an unknown label (counted)."""
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    """Where the labels come from and in what format."""
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    """Window length, stride and labelling mode."""
    splits: SplitPolicy = field(default_factory=SplitPolicy)
    """Official or per-subject splits."""
    description: str = ""
    """One line about the task."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """Overrides of the dataset recipe (e.g. {preprocess: {dtype: float32}}); root comes from --root."""

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"task {self.name}: classes must be distinct and not empty, got {self.classes}")
        unknown = {k: v for k, v in self.label_map.items() if v is not None and v not in self.classes}
        if unknown:
            raise ConfigError(
                f"task {self.name}: label_map targets not in classes {list(self.classes)}: {unknown}"
            )
        if self.labels.source == "path":
            try:
                groups = re.compile(self.labels.pattern).groupindex
            except re.error as e:
                raise ConfigError(f"task {self.name}: labels.pattern does not compile: {e}") from None
            if "label" not in groups:
                raise ConfigError(f"task {self.name}: labels.pattern must have a named group (?P<label>…)")


def available_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def load_task(name: str, overrides: list[str] | None = None) -> TaskRecipe:
    """A task recipe by name (or a YAML path), with `key=value` overrides, typed (unknown keys and wrong
    types are `ConfigError`s naming the key)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else TASKS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no task recipe {name!r}: expected {path}; known: {', '.join(available_tasks())}")
    return typed(TaskRecipe, load_config(path, overrides), source=f"task {name} ({path})")


def task_as_dict(task: TaskRecipe) -> dict[str, Any]:
    """The resolved task recipe as plain data, for manifests (and the run's configuration hash)."""
    return OmegaConf.to_container(OmegaConf.structured(task), resolve=True)


def dataset_recipe(task: TaskRecipe, root: str | None = None) -> Recipe:
    """The task's dataset recipe, with the task's overrides and window length, under the dataset's name
    (discovery and per-subject splits are the dataset's, as in pretraining)."""
    flat = OmegaConf.to_container(OmegaConf.create(task.recipe), resolve=True)
    overrides = [f"{k}={v}" for k, v in _dotted(flat)] + [f"preprocess.window_s={task.windows.length_s}"]
    return load_recipe(task.dataset, overrides, root=root)


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


@dataclass
class Labeller:
    """Everything the ingest of one task needs beyond its dataset recipe; sent to the workers whole."""

    task: TaskRecipe
    root: str
    state: Any = None  # what the label source read once for the whole corpus (e.g. a CSV table)

    @classmethod
    def prepare(cls, task: TaskRecipe, root: str) -> Labeller:
        """Read the corpus-wide label files now, so a malformed one stops the run before it starts."""
        source = label_source(task.labels.source)
        return cls(task, root, source.prepare(task.labels, root) if source.prepare else None)

    def assign_splits(self, files: list[SourceFile]) -> list[SourceFile]:
        """Each file's split under the task's policy; a file whose path names no known official split is
        skipped with that reason."""
        policy = self.task.splits
        if not policy.official:
            return files
        pattern = re.compile(policy.official)
        out = []
        for f in files:
            if f.skip_reason:
                out.append(f)
                continue
            match = pattern.search(f.path)
            official = match.group("official") if match else None
            if official not in policy.mapping:
                reason = (
                    f"no official split in the path ({official or 'none'}; splits.official, splits.mapping)"
                )
                out.append(replace(f, split=None, skip_reason=reason))
                continue
            split = policy.mapping[official]
            if split == "train" and policy.val_fraction > 0:
                fractions = {"train": 1 - policy.val_fraction, "val": policy.val_fraction}
                split = assign_split(self.task.name, f.subject, fractions)
            out.append(replace(f, split=split))
        return out

    def annotations(self, source: SourceFile, reader: RecordingReader) -> list[Annotation]:
        """The recording's annotations; `LabelError` (a skip reason) when it has none."""
        recording = RecordingFile(source, self.root, reader)
        return label_source(self.task.labels.source).read(self.task.labels, recording, self.state)

    def window_starts(self, annotations: list[Annotation]) -> np.ndarray | None:
        return window_starts(self.task.windows.mode, annotations, self.task.windows.length_s)

    @property
    def stride_s(self) -> float | None:
        return self.task.windows.stride_s

    def label(self, starts: np.ndarray, annotations: list[Annotation], sfreq: float) -> WindowLabels:
        w = self.task.windows
        return label_windows(
            w.mode, starts, w.length_s, annotations, self.task.label_map, self.task.classes, 0.5 / sfreq
        )

    def meta(self, label: int) -> dict[str, Any]:
        """The keys a labelled sample adds to its metadata (contract.TASK_META)."""
        return dict(zip(contract.TASK_META, (self.task.name, label, self.task.classes[label]), strict=True))
