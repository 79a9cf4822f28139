"""The catalogue of dataset recipes (`eegfm recipes`) and the subjects one corpus shares with another.

Facts about each corpus (licence, hours and subjects as published, where they come from) live in its
recipe, so the table printed here is only ever as good as those recipes; a fact nobody could find stays
empty (shown as `?`) instead of being guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec

from eegfm.ingest.recipe import Recipe, RecipeError, available_recipes, load_recipe
from eegfm.storage import storage_errors

COLUMNS = ("name", "kind", "hours", "subjects", "licence", "root")


@dataclass(frozen=True)
class CatalogueRow:
    """One recipe as `eegfm recipes` lists it."""

    name: str
    layout: str
    format: str
    hours: float | None
    subjects: int | None
    licence: str
    redistributable: bool | None
    root: str
    url: str
    description: str

    @property
    def kind(self) -> str:
        """`bids`, or the file format of a files-layout recipe (`auto`: by extension)."""
        return "bids" if self.layout == "bids" else self.format


def catalogue() -> list[CatalogueRow]:
    """Every shipped recipe, loaded and typed (a broken recipe fails here with its file and key)."""
    rows = []
    for name in available_recipes():
        r = load_recipe(name)
        rows.append(
            CatalogueRow(
                name=r.name,
                layout=r.layout,
                format=r.format,
                hours=r.hours,
                subjects=r.subjects,
                licence=r.licence,
                redistributable=r.redistributable,
                root=r.root,
                url=r.url,
                description=r.description,
            )
        )
    return rows


def catalogue_json(rows: list[CatalogueRow]) -> str:
    """The catalogue for scripts: one object per recipe, nulls where a fact was not published."""
    return json.dumps([{**row.__dict__, "kind": row.kind} for row in rows], indent=1, ensure_ascii=False)


def catalogue_table(rows: list[CatalogueRow]) -> str:
    """The catalogue as an aligned text table, with totals of the published hours and subjects."""

    def cell(row: CatalogueRow, column: str) -> str:
        value: Any = row.kind if column == "kind" else getattr(row, column)
        if value is None or value == "":
            return "?"
        if column == "hours":
            return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(row, c) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    right = {"hours", "subjects"}

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if c in right else v.ljust(w) for c, v, w in zip(COLUMNS, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    hours = sum(r.hours for r in rows if r.hours is not None)
    subjects = sum(r.subjects for r in rows if r.subjects is not None)
    footer = (
        f"{len(rows)} recipes; published totals: {hours:,.0f} h over "
        f"{sum(r.hours is not None for r in rows)} recipes, {subjects:,} subjects over "
        f"{sum(r.subjects is not None for r in rows)} recipes (? = not published or not found; subjects "
        f"can be in several corpora)"
    )
    return "\n".join([line(list(COLUMNS)), *(line(r) for r in cells), footer])


# --- exclude_from -------------------------------------------------------------------------------------


def excluded_subjects(recipe: Recipe) -> dict[str, str]:
    """Subject → the corpus it is excluded for, from every entry of `recipe.exclude_from`.

    An entry is a recipe name (its files listed under its default root with its own layout), `name=ROOT`
    (the same under ROOT, e.g. where your copy of TUAB lives), or a path/URL of a `manifest.json` written
    by `eegfm shards` (its files' subjects). Listing the other corpus (not a hand-kept list) is what keeps
    every evaluation subject out of pretraining as that corpus grows.
    """
    out: dict[str, str] = {}
    for entry in recipe.exclude_from:
        source, subjects = _subjects_of(recipe, entry)
        for subject in sorted(subjects):
            out.setdefault(subject, source)
    return out


def _subjects_of(recipe: Recipe, entry: str) -> tuple[str, set[str]]:
    if entry.endswith(".json"):
        try:
            with (
                storage_errors(entry, "reading the manifest named in exclude_from"),
                fsspec.open(entry, "rt") as f,
            ):
                manifest = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise RecipeError(
                f"recipe {recipe.name}: exclude_from manifest {entry!r} cannot be read ({e}); write it with "
                f"`eegfm shards` first, or name the recipe (name or name=ROOT) instead"
            ) from None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) and "subject" in f for f in files):
            raise RecipeError(
                f"recipe {recipe.name}: exclude_from entry {entry!r} is not an `eegfm shards` manifest.json "
                f"(no files with a subject); give a manifest, a recipe name, or name=ROOT"
            )
        return entry, {str(f["subject"]) for f in files if f["subject"]}
    name, _, root = entry.partition("=")
    if name == recipe.name:
        raise RecipeError(f"recipe {recipe.name}: exclude_from names the recipe itself; name another corpus")
    other = load_recipe(name, root=root or None)
    if other.layout != "files":
        raise RecipeError(
            f"recipe {recipe.name}: exclude_from {entry!r} is a {other.layout} recipe; give the path of its "
            f"manifest.json instead (written by `eegfm shards --dataset {name}`)"
        )
    from eegfm.ingest.recipe import discover  # discover calls back here for `recipe`, not for `other`

    if other.exclude_from:
        other = _without_exclusions(other)
    return name, {f.subject for f in discover(other) if f.subject}


def _without_exclusions(recipe: Recipe) -> Recipe:
    """The other corpus's own subjects, not the ones it excludes in turn (no chains, no cycles)."""
    from dataclasses import replace

    return replace(recipe, exclude_from=())
