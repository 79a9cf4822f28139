"""The QC report: one self-contained `report.html` beside `manifest.json`.

A person judging an ingest run should see at a glance what went in, what was dropped and why, which
montages and electrodes the shards cover and whether amplitudes look like EEG, without any tooling: the
file has its figures inline (base64 PNG from matplotlib's Agg canvas), no scripts and no network fetches.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from eegfm.ingest import contract
from eegfm.storage import atomic_write, join_url

MAX_CHANNELS = 80  # bars in the coverage chart, and the most electrodes the map still labels
MAX_MONTAGES = 40  # bars in the montage chart; the table lists them all
MAX_SKIPPED_ROWS = 2000  # skipped files listed; manifest.json has every one
SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}

_CSS = """
body { font-family: sans-serif; max-width: 1150px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.small { font-size: 0.85em; color: #555; } .meta { color: #555; } .warn { color: #a00; font-weight: bold; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
"""


def render_report_html(manifest: dict[str, Any]) -> str:
    """The whole report as one HTML string, so that callers and tests need no storage to look at it."""
    totals = manifest["totals"]
    files = manifest["files"]
    shards = manifest["shards"]
    written = [f for f in files if f["status"] == "written"]
    skipped = [f for f in files if f["status"] != "written"]
    dataset = str(manifest.get("dataset", "?"))
    # One name per tag, from the same place for the table and the figure.
    montage_names = {tag: m["montage_name"] for tag, m in totals["per_montage"].items()}

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>eegfm QC report: {_esc(dataset)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>QC report: {_esc(dataset)}</h1>",
        '<p class="meta">'
        + " · ".join(
            f"{label} <code>{_esc(manifest.get(key, '?'))}</code>"
            for label, key in (
                ("format", "format"),
                ("code", "code_version"),
                ("preprocess", "preprocess_hash"),
            )
        )
        + "</p>",
    ]
    if not written:
        parts.append(
            f'<p class="warn">No shards were written: all {len(files):,} input files were skipped '
            "(reasons below).</p>"
            if files
            else '<p class="warn">No shards were written: no input files were found.</p>'
        )

    parts += [
        "<h2>Totals</h2>",
        _table(
            ["hours", "samples", "subjects", "files written", "files skipped", "shards", "shard bytes"],
            [
                [
                    totals["hours"],
                    totals["samples"],
                    totals["subjects"],
                    totals["files"]["written"],
                    totals["files"]["skipped"],
                    len(shards),
                    _size(sum(s["bytes"] for s in shards)),
                ]
            ],
        ),
        "<h2>Per split</h2>",
        _split_table(totals["per_split"]),
        *_positions_sections(written),
        *_label_sections(manifest),
        "<h2>Per montage</h2>",
        _table(
            ["tag", "name", "channels", "hours", "samples", "channel names"],
            [
                [
                    tag,
                    m["montage_name"],
                    len(m["channels"]),
                    m["hours"],
                    m["samples"],
                    _Small(", ".join(m["channels"])),
                ]
                for tag, m in sorted(totals["per_montage"].items(), key=lambda kv: -kv[1]["hours"])
            ],
        ),
        "<h2>Figures</h2>",
        *(
            _img(fig, alt)
            for fig, alt in (
                (montage_split_figure(written, montage_names), "hours per montage and split"),
                (channel_coverage_figure(totals["channel_hours"]), "hours per channel"),
                (electrode_map_figure(totals["positions"], totals["channel_hours"]), "electrode positions"),
                (amplitude_figure(totals["amplitude_histogram"]), "amplitude histogram"),
            )
        ),
        "<h2>Skip reasons</h2>",
        _counts_table(totals["skip_reasons"], "files"),
        "<h2>Dropped channels</h2>",
        _counts_table(totals["dropped_channel_reasons"], "channels"),
        "<h2>Dropped windows</h2>",
        _counts_table(totals["dropped_window_reasons"], "windows"),
        f"<h2>Skipped files ({len(skipped):,})</h2>",
        _skipped_table(skipped),
        "<h2>Configuration</h2>",
        "<details><summary>resolved recipe and preprocessing</summary><pre>"
        + _esc(json.dumps(manifest.get("config", {}), indent=1, ensure_ascii=False, default=str))
        + "</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(manifest: dict[str, Any], out_dir: str) -> str:
    """Write `report.html` into `out_dir` (local path or fsspec URL) and return its URL.

    Written like the manifest (`storage.atomic_write`): a reader sees the old report or the new one.
    """
    url = join_url(out_dir, contract.REPORT_NAME)
    data = render_report_html(manifest).encode("utf-8")
    with atomic_write(url) as path, open(path, "wb") as f:
        f.write(data)
    return url


# --- figures -------------------------------------------------------------------------------------------


def montage_split_figure(
    written: list[dict[str, Any]], montage_names: dict[str, str] | None = None
) -> Figure:
    """Stacked bars of hours per montage, one colour per split: which montages dominate each split.

    The per-montage totals carry no split, so this one figure counts from the written files; its labels
    are `montage_names` (tag → name, the per-montage table's names) so that table and figure agree.
    """
    hours: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    names: dict[str, str] = dict(montage_names or {})
    for f in written:
        hours[f["montage"]][f["split"]] += f["hours"]
        names.setdefault(f["montage"], f["montage_name"])
    if not hours:
        return _no_data("Hours per montage and split", "no files were written")
    tags = sorted(hours, key=lambda t: -sum(hours[t].values()))
    shown = tags[:MAX_MONTAGES]
    shown_names = [names[t] for t in shown]
    labels = [
        f"{n} [{t[:6]}]" if shown_names.count(n) > 1 else n for n, t in zip(shown_names, shown, strict=True)
    ]
    splits = [s for s in contract.SPLITS if any(s in hours[t] for t in tags)]
    splits += sorted({s for t in tags for s in hours[t]} - set(splits), key=str)

    fig = Figure(figsize=(9, 1.4 + 0.32 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    left = np.zeros(len(shown))
    for split in splits:
        values = np.array([hours[t].get(split, 0.0) for t in shown])
        ax.barh(y, values, left=left, color=SPLIT_COLOURS.get(split), label=str(split), height=0.7)
        left += values
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # most hours on top, no empty margins
    ax.set_xlim(0, 1.03 * left.max())
    ax.set_xlabel("hours of EEG")
    ax.set_title("Hours per montage and split" + _capped(len(shown), len(tags), "montages"))
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def channel_coverage_figure(channel_hours: dict[str, float]) -> Figure:
    """Hours per canonical channel, most covered first: how much pretraining data each electrode sees."""
    if not channel_hours:
        return _no_data("Channel coverage", "no channels were written")
    ranked = sorted(channel_hours.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:MAX_CHANNELS]
    fig = Figure(figsize=(max(6.0, 1.5 + 0.15 * len(shown)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(shown))
    colours = ["#c44e52" if _is_bipolar(n) else "#4c72b0" for n, _ in shown]
    ax.bar(x, [h for _, h in shown], color=colours, width=0.8)
    ax.set_xticks(x, [n for n, _ in shown], rotation=90, fontsize=8)
    ax.set_xlim(-0.7, len(shown) - 0.3)
    ax.set_ylabel("hours of EEG")
    ax.set_xlabel("channel (red: bipolar derivation)" if any(_is_bipolar(n) for n, _ in shown) else "channel")
    ax.set_title("Channel coverage: hours per channel" + _capped(len(shown), len(ranked), "channels"))
    ax.grid(axis="y", alpha=0.3)
    return fig


def electrode_map_figure(positions: dict[str, list[float]], channel_hours: dict[str, float]) -> Figure:
    """Top view of every electrode present, sized and coloured by hours: spots holes in scalp coverage."""
    names = [n for n, p in positions.items() if p is not None and np.all(np.isfinite(p))]
    if not names:
        return _no_data("Electrode positions present", "no electrode positions")
    xy = project_top_view(np.array([positions[n] for n in names], dtype=float))
    hours = np.array([channel_hours.get(n, 0.0) for n in names])
    top = float(hours.max()) or 1.0
    bipolar = np.array([_is_bipolar(n) for n in names])

    fig = Figure(figsize=(7.6, 6.2), layout="constrained")
    ax = fig.add_subplot()
    ring = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(ring), np.sin(ring), color="#444", lw=1.5)
    ax.plot([-0.12, 0.0, 0.12], [0.993, 1.13, 0.993], color="#444", lw=1.5)  # nose
    for side, label in ((-1, "L"), (1, "R")):
        ax.plot(side * (1 + 0.05 * np.sin(ring[:100])), 0.18 * np.cos(ring[:100]), color="#444", lw=1.5)
        ax.text(side * 1.2, -1.05, label, ha="center", fontsize=11, color="#444")
    crowding = min(1.0, MAX_CHANNELS / len(names))  # dense caps get smaller markers
    sizes = np.where(bipolar, 0.6, 1.0) * crowding * (25 + 175 * hours / top)  # marker areas, points²
    scatter = None
    for mask, marker in ((~bipolar, "o"), (bipolar, "D")):
        if mask.any():
            scatter = ax.scatter(
                xy[mask, 0],
                xy[mask, 1],
                s=sizes[mask],
                c=hours[mask],
                cmap="viridis",
                vmin=0.0,
                vmax=top,
                marker=marker,
                edgecolors="k",
                linewidths=0.5,
                zorder=3,
            )
    fig.colorbar(scatter, ax=ax, shrink=0.8, label="hours of EEG")
    labelled = len(names) <= MAX_CHANNELS
    if labelled:
        for name, (px, py), size in zip(names, xy, sizes, strict=True):
            offset = np.sqrt(size) / 2 + 1  # just above the marker
            ax.annotate(
                name, (px, py), xytext=(0, offset), textcoords="offset points", ha="center", fontsize=7
            )
    if bipolar.any():
        ax.legend(
            handles=[
                Line2D([], [], ls="", marker="o", color="grey", label="electrode"),
                Line2D([], [], ls="", marker="D", color="grey", label="bipolar (midpoint)"),
            ],
            loc="lower left",
            fontsize=8,
        )
    extent = max(1.3, float(np.abs(xy).max()) + 0.15)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.axis("off")
    note = "" if labelled else f", names hidden above {MAX_CHANNELS}"
    ax.set_title(f"Electrode positions present ({len(names)}{note}); top view, nose up")
    return fig


def amplitude_figure(histogram: dict[str, list[float]]) -> Figure:
    """Counts of sampled amplitudes: a healthy run is a narrow peak at 0 µV, not mass in the end bins."""
    edges = np.asarray(histogram["edges_uv"], dtype=float)
    counts = np.asarray(histogram["counts"], dtype=float)
    title = "Amplitude histogram"
    if len(edges) != len(counts) + 1 or counts.sum() <= 0:
        return _no_data(title, "no amplitudes were sampled")
    ends = (counts[0] + counts[-1]) / counts.sum()
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    floor = 0.5  # empty bins sit on this baseline: a log axis has no zero
    ax.stairs(np.maximum(counts, floor), edges, baseline=floor, fill=True, color="#4c72b0")
    ax.set_yscale("log")
    ax.set_ylim(floor, 2 * counts.max())
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("amplitude (µV)")
    ax.set_ylabel("count (log scale)")
    ax.set_title(
        f"{title}: {ends:.2%} in the end bins, which also hold values beyond [{edges[0]:g}, {edges[-1]:g}] µV"
    )
    ax.grid(axis="y", alpha=0.3)
    return fig


def project_top_view(xyz: np.ndarray) -> np.ndarray:
    """Azimuthal equidistant projection of head-frame positions about the vertex.

    MNE's head frame has its origin between the ears and its x-y plane through the nasion and both ears,
    so measuring each electrode's angle from +z at the origin puts that plane (the head outline with nose
    and ears) on the unit circle; electrodes below it, such as earlobe references, fall just outside.
    """
    norm = np.maximum(np.linalg.norm(xyz, axis=1), 1e-12)
    radius = np.arccos(np.clip(xyz[:, 2] / norm, -1.0, 1.0)) / (np.pi / 2)
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    return np.c_[radius * np.cos(azimuth), radius * np.sin(azimuth)]


def _no_data(title: str, message: str) -> Figure:
    """A small placeholder, so an empty run still gets a readable report rather than an error."""
    fig = Figure(figsize=(6, 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#a00", transform=ax.transAxes)
    return fig


def _img(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_esc(alt)}">'


# --- tables --------------------------------------------------------------------------------------------


class _Small(str):
    """A cell shown in small grey type (long lists that should not dominate a table)."""


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, _Small):
        return f'<td class="small">{_esc(value)}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:,.3f}</td>'
    return f"<td>{_esc(value)}</td>"


def _split_table(per_split: dict[str, dict[str, Any]]) -> str:
    """Every split in the contract, zeros included: a missing validation split is itself a finding."""
    splits = [*contract.SPLITS, *sorted(set(per_split) - set(contract.SPLITS))]
    keys = ["files", "subjects", "samples", "hours", "shards"]
    empty = {"files": 0, "subjects": 0, "samples": 0, "hours": 0.0, "shards": 0}
    return _table(["split", *keys], [[s, *(per_split.get(s, empty).get(k, 0) for k in keys)] for s in splits])


def _label_sections(manifest: dict[str, Any]) -> list[str]:
    """A task's windows per split and class, and why windows went unlabelled (nothing for pretraining)."""
    if "classes" not in manifest:
        return []
    classes, counts = manifest["classes"], manifest["class_counts"]
    splits = [*contract.SPLITS, *sorted(set(counts) - set(contract.SPLITS))]
    rows = [
        [s, *(counts.get(s, {}).get(c, 0) for c in classes), sum(counts.get(s, {}).values())] for s in splits
    ]
    return [
        f"<h2>Labels: task {_esc(manifest['task'])}</h2>",
        "<p>Windows per split and class (label = column order).</p>",
        _table(["split", *(f"{i}: {c}" for i, c in enumerate(classes)), "all"], rows),
        "<h3>Unlabelled windows and events</h3>",
        _counts_table(manifest["totals"].get("unlabelled_reasons", {}), "windows or events"),
    ]


def _positions_sections(written: list[dict[str, Any]]) -> list[str]:
    """Where the recordings' electrode positions came from (BIDS: digitised or template), when known."""
    sources = Counter(f["positions_source"] for f in written if f.get("positions_source"))
    if not sources:
        return []
    digitised = sum(n for source, n in sources.items() if source.startswith("digitized"))
    return [
        "<h2>Electrode positions</h2>",
        f"<p>{digitised:,} of {len(written):,} recordings written have digitised positions "
        "(their own electrodes.tsv, in the head frame); the others have template positions.</p>",
        _table(["positions source", "recordings"], sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))),
    ]


def _counts_table(counts: dict[str, int], what: str) -> str:
    if not counts:
        return "<p>none</p>"
    return _table(["reason", what], sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _skipped_table(skipped: list[dict[str, Any]]) -> str:
    if not skipped:
        return "<p>none</p>"
    table = _table(["file", "reason"], [[f["path"], f["reason"]] for f in skipped[:MAX_SKIPPED_ROWS]])
    if len(skipped) > MAX_SKIPPED_ROWS:
        table += f"<p>… and {len(skipped) - MAX_SKIPPED_ROWS:,} more: see {contract.MANIFEST_NAME}.</p>"
    return table


# --- small helpers -------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_bipolar(name: str) -> bool:
    return "-" in name


def _capped(shown: int, total: int, what: str) -> str:
    return f" (top {shown} of {total} {what})" if shown < total else ""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
