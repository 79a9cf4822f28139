"""The QC report: four inline PNG figures, tables that match the manifest, escaped text, empty runs."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from matplotlib.image import imread

from eegfm.ingest import contract
from eegfm.ingest.manifest import FORMAT, totals
from eegfm.ingest.positions import midpoint, montage_positions
from eegfm.ingest.report import (
    MAX_CHANNELS,
    amplitude_figure,
    channel_coverage_figure,
    electrode_map_figure,
    montage_split_figure,
    project_top_view,
    render_report_html,
    write_report,
)
from eegfm.ingest.windows import HISTOGRAM_EDGES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEN_TWENTY = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8"]
TEN_TWENTY += ["P7", "P3", "Pz", "P4", "P8", "O1", "O2"]
BIPOLAR = [("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"), ("Fp2", "F8"), ("F8", "T8"), ("Cz", "Pz")]
SCRIPT_FILE = "x/<script>alert(1)</script>.edf"


def _montage(channels: list[str]) -> dict[str, Any]:
    pos = montage_positions("colin27_1005")
    positions = [
        list(midpoint(pos[c.split("-")[0]], pos[c.split("-")[1]]) if "-" in c else pos[c]) for c in channels
    ]
    return {
        "montage_name": contract.montage_name("ar" if "-" not in channels[0] else "tcp", channels),
        "channels": channels,
        "positions": positions,
    }


def _written(path: str, split: str, subject: str, tag: str, montage: dict[str, Any], hours: float) -> dict:
    samples = round(hours * 360)  # 10 s windows
    return {
        "path": path,
        "status": "written",
        "reason": None,
        "samples": samples,
        "hours": hours,
        "split": split,
        "subject": subject,
        "montage": tag,
        "montage_name": montage["montage_name"],
        "channels": montage["channels"],
        "dropped_channels": {"EEG EKG1-REF": "non-EEG: ECG"},
        "dropped_windows": {"too_few_good_channels": 2},
        "notes": [],
    }


def _skipped(path: str, reason: str) -> dict:
    return {
        "path": path,
        "status": "skipped",
        "reason": reason,
        "samples": 0,
        "hours": 0.0,
        "split": None,
        "subject": path.split("/")[0],
        "montage": None,
        "montage_name": None,
        "dropped_channels": {},
        "dropped_windows": {},
        "notes": [],
    }


def make_manifest(files: list[dict], montages: dict[str, dict], histogram: list[int]) -> dict[str, Any]:
    """A manifest shaped exactly like the merged one: totals come from the real `manifest.totals`."""
    shards = [
        {
            "url": f"demo-{s}-0000-000000.tar",
            "split": s,
            "task": 0,
            "samples": 1,
            "hours": 0.1,
            "bytes": 3 << 20,
        }
        for s in sorted({f["split"] for f in files if f["status"] == "written"})
    ]
    return {
        "format": FORMAT,
        "dataset": "demo",
        "code_version": "0.1.0+gtest",
        "preprocess_hash": "a1b2c3d4e5f6",
        "config": {"name": "demo", "preprocess": {"window_s": 10.0}},
        "shards": shards,
        "totals": totals(files, shards, histogram, montages),
        "files": files,
    }


def example_manifest() -> dict[str, Any]:
    """Two montages (one bipolar) over three splits, three skipped files, one with markup in its name."""
    mono, bip = _montage(TEN_TWENTY), _montage([f"{a}-{b}" for a, b in BIPOLAR])
    montages = {"aaaa000001": mono, "bbbb000002": bip}
    files = [
        _written("s1/r1.edf", "train", "s1", "aaaa000001", mono, 1.5),
        _written("s2/r1.edf", "train", "s2", "bbbb000002", bip, 0.25),
        _written("s3/r1.edf", "val", "s3", "aaaa000001", mono, 0.5),
        _written("s4/r1.edf", "test", "s4", "bbbb000002", bip, 0.25),
        _skipped("s5/short.edf", "shorter than one window (5 s < 10 s)"),
        _skipped("s6/short.edf", "shorter than one window (2 s < 10 s)"),
        _skipped(SCRIPT_FILE, "no EEG channel with a known position <b>bold</b>"),
    ]
    centres = (HISTOGRAM_EDGES[:-1] + HISTOGRAM_EDGES[1:]) / 2
    histogram = np.round(1e5 * np.exp(-0.5 * (centres / 40.0) ** 2)).astype(int)
    histogram[-1] = 7  # clipped samples
    return make_manifest(files, montages, histogram.tolist())


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return example_manifest()


@pytest.fixture(scope="module")
def page(manifest) -> str:
    return render_report_html(manifest)


@pytest.fixture(scope="module")
def empty_manifest() -> dict[str, Any]:
    files = [_skipped("a/1.edf", "no EEG channel with a known position"), _skipped("b/2.edf", "unreadable")]
    return make_manifest(files, {}, [0] * (len(HISTOGRAM_EDGES) - 1))


def _pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(b) for b in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_report_has_four_valid_png_figures(page):
    pngs = _pngs(page)
    assert len(pngs) == 4
    for png in pngs:
        assert png.startswith(PNG_SIGNATURE)
        image = imread(io.BytesIO(png), format="png")
        height, width = image.shape[:2]
        assert 150 <= height <= 2500 and 400 <= width <= 2500
        assert image[..., :3].std() > 0.05  # something was drawn


def test_tables_hold_totals_reasons_and_skipped_files(manifest, page):
    t = manifest["totals"]
    assert (
        t["hours"] == pytest.approx(2.5)
        and t["samples"] == 900
        and t["files"] == {"written": 4, "skipped": 3}
    )
    row = re.search(r"<th>hours</th>.*?</tr>(<tr>.*?</tr>)", page).group(1)
    assert [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>.*?</td>", row)] == [
        "2.500", "900", "4", "4", "3", "3", "9.0 MiB"
    ]  # fmt: skip
    assert '<td>shorter than one window</td><td class="n">2</td>' in page
    assert "no EEG channel with a known position" in page
    assert "non-EEG: ECG" in page and "too_few_good_channels" in page
    for tag, name in (("aaaa000001", "ar/19"), ("bbbb000002", "tcp/7")):
        assert f"<td>{tag}</td><td>{name}</td>" in page
    assert "s5/short.edf" in page and "shorter than one window (5 s &lt; 10 s)" in page
    assert "<td>val</td>" in page and "No shards were written" not in page


def test_untrusted_text_is_escaped(page):
    assert "<script" not in page and "<b>bold" not in page
    assert "x/&lt;script&gt;alert(1)&lt;/script&gt;.edf" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


def test_empty_run_still_renders(empty_manifest):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib complaints about empty or log-scaled data
        page = render_report_html(empty_manifest)
    assert "No shards were written: all 2 input files were skipped" in page
    assert "unreadable" in page and "a/1.edf" in page
    assert all(png.startswith(PNG_SIGNATURE) for png in _pngs(page))


def test_write_report_local_and_url(manifest, page, tmp_path: Path):
    url = write_report(manifest, str(tmp_path))
    assert url == f"{tmp_path}/{contract.REPORT_NAME}"
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page
    remote = f"memory://eegfm-report-{uuid.uuid4().hex}"
    url = write_report(manifest, remote)
    try:
        with fsspec.open(url, "rt", encoding="utf-8") as f:
            assert f.read().startswith("<!DOCTYPE html>")
    finally:
        fsspec.filesystem("memory").rm(remote, recursive=True)


def test_montage_figure_stacks_every_written_hour(manifest):
    written = [f for f in manifest["files"] if f["status"] == "written"]
    ax = montage_split_figure([*written, {**written[0], "path": "s1/r2.edf", "hours": 0.5}]).axes[0]
    assert sum(p.get_width() for p in ax.patches) == pytest.approx(3.0)
    assert max(p.get_width() for p in ax.patches) == pytest.approx(2.0)  # both train files of ar/19
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val", "test"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ar/19", "tcp/7"]  # most hours first
    twin = {**written[0], "montage": "cccc000003", "hours": 0.1}  # same name, other channel order
    ax = montage_split_figure([*written, twin]).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ar/19 [aaaa00]", "tcp/7", "ar/19 [cccc00]"]


def test_projection_puts_nose_up_and_left_left():
    pos = montage_positions("colin27_1005")
    names = ["Cz", "Fz", "Pz", "Oz", "Fpz", "T7", "T8", "C3", "C4", "A1"]
    xy = dict(zip(names, project_top_view(np.array([pos[n] for n in names])), strict=True))
    assert np.hypot(*xy["Cz"]) < 0.15
    assert xy["Fpz"][1] > xy["Fz"][1] > 0.3 and xy["Oz"][1] < xy["Pz"][1] < 0
    assert xy["T7"][0] < xy["C3"][0] < 0 < xy["C4"][0] < xy["T8"][0]
    for name in ("Fpz", "T7", "Oz", "T8"):  # the 10-20 ring lies inside the outline (nasion and ear level)
        assert 0.5 < np.hypot(*xy[name]) < 1.0
    assert np.hypot(*xy["A1"]) > 1.0  # earlobes hang below it


def test_large_caps_are_capped_and_unlabelled():
    pos = montage_positions("colin27_1005")
    hours = {name: float(i % 7) for i, name in enumerate(pos)}
    ax = channel_coverage_figure(hours).axes[0]
    assert len(ax.patches) == MAX_CHANNELS and f"top {MAX_CHANNELS} of {len(pos)} channels" in ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    assert heights == sorted(heights, reverse=True)
    ax = electrode_map_figure({n: list(p) for n, p in pos.items()}, hours).axes[0]
    assert not any(t.get_text() in pos for t in ax.texts) and "names hidden" in ax.get_title()


def test_small_caps_are_labelled_and_histogram_is_log(manifest):
    t = manifest["totals"]
    ax = electrode_map_figure(t["positions"], t["channel_hours"]).axes[0]
    assert {x.get_text() for x in ax.texts} >= set(t["positions"])
    assert [len(c.get_offsets()) for c in ax.collections] == [len(TEN_TWENTY), len(BIPOLAR)]
    ax = amplitude_figure(t["amplitude_histogram"]).axes[0]
    assert ax.get_yscale() == "log" and "µV" in ax.get_xlabel()


def test_one_name_per_montage_tag_in_table_and_figure(tueg_shards: Path):
    """TUEG's average-referenced and linked-ears folders hold the same electrodes: two tags, one name each,
    and the report's table and figure call each tag the same."""
    manifest = json.loads((tueg_shards / contract.MANIFEST_NAME).read_text())
    written = [f for f in manifest["files"] if f["status"] == "written"]
    names_of_tag: dict[str, set[str]] = {}
    for f in written:
        names_of_tag.setdefault(f["montage"], set()).add(f["montage_name"])
    assert all(len(names) == 1 for names in names_of_tag.values()), names_of_tag
    by_name = {next(iter(n)): tag for tag, n in names_of_tag.items()}
    assert {"tcp_ar/21", "tcp_le/21"} <= set(by_name)
    assert by_name["tcp_ar/21"] != by_name["tcp_le/21"]

    page = (tueg_shards / contract.REPORT_NAME).read_text(encoding="utf-8")
    table = page.split("<h2>Per montage</h2>", 1)[1].split("</table>", 1)[0]
    table_names = dict(re.findall(r"<tr><td>([0-9a-f]{10})</td><td>([^<]+)</td>", table))
    assert table_names == {tag: next(iter(n)) for tag, n in names_of_tag.items()}
    per_montage = manifest["totals"]["per_montage"]
    montage_names = {tag: m["montage_name"] for tag, m in per_montage.items()}
    ax = montage_split_figure(written, montage_names).axes[0]
    figure_names = {t.get_text() for t in ax.get_yticklabels()}
    assert figure_names == set(table_names.values())  # every name unique, so no [tag] suffix either
