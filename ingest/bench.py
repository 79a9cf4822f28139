"""`make bench-ingest`: ingest throughput per core against a plain MNE pipeline, and peak memory vs length.

Both pipelines run on the same TUEG-like files (21-33 channels, 250/256/512 Hz) in this one process, each
pinned to one core (one BLAS/FFT thread); the figure is hours of EEG per second per core and their ratio.
Peak RSS is measured in a fresh process per recording length (1 h and 24 h of 33 channels at 256 Hz).

Beside the EDF corpus, a BIDS corpus in BrainVision (`bids_fixtures.write_bids_tree`, read through layout
bids and MNE's lazy reader) gives its own hours per core-hour, and one-recording BIDS trees of 2 h and 24 h
(21 channels at 250 Hz, float32) in BrainVision and in EEGLAB .set + .fdt give peak RSS vs length: it must
stay flat (chunked reads) and under 1 GB. Each long recording is deleted as soon as it is measured, so the
bench needs at most one of them on disk at a time (24 h: 1.8 GB) under TMPDIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402 - after the thread limits

from eegfm.ingest.bids_fixtures import CHANNELS, move_data_to_fdt, write_bids_tree  # noqa: E402
from eegfm.ingest.fixtures import GENERIC_EEG, Signal, generate_corpus, simulate_eeg, write_edf  # noqa: E402
from eegfm.ingest.recipe import discover, load_recipe  # noqa: E402
from eegfm.ingest.recording import ingest_file  # noqa: E402
from eegfm.ingest.run import run_task  # noqa: E402

_MORE_1010 = ("AF3", "AF4", "FC1", "FC2", "FC5", "FC6", "CP1", "CP2", "CP5", "CP6", "PO3", "PO4", "Oz", "FCz")


def mne_pipeline(path: Path, out_dir: Path) -> float:
    """The pipeline papers script: read → pick → notch → filter → resample → windows → save."""
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_edf(path, preload=True, verbose=False)
    picks = [ch for ch in raw.ch_names if ch.startswith("EEG ") and ch[4:5].isalpha()]
    raw.pick(picks)
    raw.notch_filter(60.0, verbose=False)
    raw.filter(0.1, 75.0, verbose=False)
    raw.resample(200.0, verbose=False)
    data = raw.get_data().astype(np.float32) * 1e6
    n = 2000
    for i in range(data.shape[1] // n):
        np.save(out_dir / f"{path.stem}_{i:05d}.npy", data[:, i * n : (i + 1) * n].astype(np.float16))
    return raw.n_times / raw.info["sfreq"] / 3600


def throughput(work_dir: Path, subjects: int, duration_s: float, repeats: int) -> dict:
    """Steady-state CPU seconds of both pipelines on the same files: one untimed warm-up file each (imports,
    filter design), then the median of `repeats` timed passes over the whole corpus."""
    corpus = work_dir / "corpus"
    generate_corpus("tueg", corpus, seed=0, n_subjects=subjects, duration_s=duration_s)
    recipe = load_recipe("tueg", root=str(corpus))
    sources = [s for s in discover(recipe) if s.skip_reason is None]
    mne_out = work_dir / "mne"
    mne_out.mkdir()
    list(ingest_file(sources[0], recipe).samples)
    mne_pipeline(Path(sources[0].url), mne_out)

    ours_s, theirs_s = [], []
    for i in range(repeats):
        started = time.process_time()
        task = run_task(recipe, str(work_dir / f"shards{i}"), workers=1, progress=False)  # no merge/report
        ours_s.append(time.process_time() - started)
        started = time.process_time()
        theirs = sum(mne_pipeline(Path(s.url), mne_out) for s in sources)
        theirs_s.append(time.process_time() - started)
    ours = sum(f["hours"] for f in task["files"])
    ours_cpu, theirs_cpu = statistics.median(ours_s), statistics.median(theirs_s)
    return {
        "files": len(sources),
        "eegfm_hours_written": round(ours, 3),
        "eegfm_cpu_s_runs": [round(x, 2) for x in ours_s],
        "eegfm_hours_per_core_hour": round(ours / ours_cpu * 3600),
        "mne_hours_read": round(theirs, 3),
        "mne_cpu_s_runs": [round(x, 2) for x in theirs_s],
        "mne_hours_per_core_hour": round(theirs / theirs_cpu * 3600),
        "speedup_per_core": round((ours / ours_cpu) / (theirs / theirs_cpu), 2),
    }


def long_recording(path: Path, hours: float) -> Path:
    """A 33-channel 256 Hz EDF of `hours` hours: ten simulated minutes of records, repeated (cheap)."""
    names = [*GENERIC_EEG, *_MORE_1010]
    block_s = 600.0
    data = simulate_eeg(names, 256.0, block_s, mains_hz=60.0, rng=np.random.default_rng(0))
    block = path.with_suffix(".block.edf")
    write_edf(
        block,
        [
            Signal(n, d, 256.0, physical_min=-3200.0, physical_max=3200.0)
            for n, d in zip(names, data, strict=True)
        ],
    )
    raw = block.read_bytes()
    header_bytes = 256 * (len(names) + 1)
    repeats = round(hours * 3600 / block_s)
    with open(path, "wb") as f:
        head = bytearray(raw[:header_bytes])
        head[236:244] = f"{int(block_s) * repeats:<8d}".encode()
        f.write(head)
        for _ in range(repeats):
            f.write(raw[header_bytes:])
    block.unlink()
    return path


def peak_rss_mb(root: Path, recipe: str = "generic") -> tuple[float, int]:
    """Peak RSS of a fresh process that ingests the one recording under `root` (through `recipe`) and
    drains its samples."""
    code = (
        "import sys, re\n"
        "from eegfm.ingest.recipe import load_recipe, discover\n"
        "from eegfm.ingest.recording import ingest_file\n"
        "r = load_recipe(sys.argv[2], root=sys.argv[1])\n"
        "(s,) = discover(r)\n"
        "res = ingest_file(s, r)\n"
        "n = sum(1 for _ in res.samples)\n"
        "assert res.outcome.status == 'written', res.outcome\n"
        # VmHWM is this process's own peak: ru_maxrss would also count the parent's memory before exec.
        "print(n, re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), recipe], capture_output=True, text=True, check=True
    )
    windows, kb = done.stdout.split()
    return round(int(kb) / 1024, 1), int(windows)


def bids_throughput(work_dir: Path, duration_s: float, repeats: int) -> dict:
    """Hours of EEG per core-hour of `eegfm shards` on a BIDS tree in BrainVision (7 recordings of
    `duration_s`, 21 channels at 256 Hz): sidecars, positions and MNE's reader included."""
    tree = write_bids_tree(work_dir / "bids-brainvision", duration_s=duration_s, data_format="BrainVision")
    recipe = load_recipe("bids", root=str(tree.root))
    sources = [s for s in discover(recipe) if s.skip_reason is None]
    list(ingest_file(sources[0], recipe).samples)  # warm-up: imports, filter design
    runs = []
    for i in range(repeats):
        started = time.process_time()
        task = run_task(recipe, str(work_dir / f"bids-shards{i}"), workers=1, progress=False)
        runs.append(time.process_time() - started)
    hours = sum(f["hours"] for f in task["files"])
    return {
        "bids_brainvision_files": len(sources),
        "bids_brainvision_hours_written": round(hours, 3),
        "bids_brainvision_cpu_s_runs": [round(x, 2) for x in runs],
        "bids_brainvision_hours_per_core_hour": round(hours / statistics.median(runs) * 3600),
    }


def long_bids_recording(root: Path, hours: float, data_format: str, sfreq: float = 250.0) -> Path:
    """A one-recording BIDS tree whose data file lasts `hours`: ten simulated minutes written by mne-bids
    (BrainVision, or EEGLAB with the data moved into a .fdt), the data file's samples then repeated (cheap:
    neither format stores a sample count in its data file; the .set's `pnts` is updated)."""
    import mne
    import mne_bids
    import scipy.io

    block_s = 600.0
    repeats = round(hours * 3600 / block_s)
    names = list(CHANNELS)
    data = simulate_eeg(names, sfreq, block_s, mains_hz=50.0, rng=np.random.default_rng(0))
    types = ["eeg"] * (len(names) - 2) + ["eog", "misc"]
    raw = mne.io.RawArray(data * 1e-6, mne.create_info(names, sfreq, types), verbose=False)
    raw.info["line_freq"] = 50.0
    path = mne_bids.BIDSPath(subject="01", task="sleep", datatype="eeg", root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne_bids.write_raw_bids(raw, path, format=data_format, allow_preload=True, verbose=False)
    main = Path(path.fpath)
    if data_format == "EEGLAB":
        data_file = move_data_to_fdt(main)
        fields = scipy.io.loadmat(str(main), appendmat=False)
        fields = {k: v for k, v in fields.items() if not k.startswith("__")}
        n_times = int(fields["pnts"].item()) * repeats
        fields["pnts"], fields["xmax"] = float(n_times), float(n_times / sfreq)
        scipy.io.savemat(str(main), fields, appendmat=False, oned_as="row")
    else:
        data_file = main.with_suffix(".eeg")
    block = data_file.read_bytes()
    with open(data_file, "ab") as f:
        for _ in range(repeats - 1):
            f.write(block)
    return main


def bids_peak_rss(work_dir: Path, lengths_h: tuple[float, ...]) -> dict:
    """Peak RSS of one BIDS recording per format and length, each deleted once measured."""
    figures = {}
    for data_format, label in (("BrainVision", "brainvision"), ("EEGLAB", "eeglab_fdt")):
        for hours in lengths_h:
            root = work_dir / f"bids-{label}-{hours:g}h"
            long_bids_recording(root, hours, data_format)
            try:
                rss, windows = peak_rss_mb(root, "bids")
            finally:
                shutil.rmtree(root, ignore_errors=True)
            figures[f"peak_rss_mb_bids_{label}_{hours:g}h_21ch_250hz"] = rss
            figures[f"windows_bids_{label}_{hours:g}h"] = windows
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per fixture recording")
    parser.add_argument("--long-hours", type=float, default=24.0)
    parser.add_argument("--short-hours", type=float, default=2.0, help="the BIDS peak-RSS baseline")
    parser.add_argument(
        "--corpora",
        default="edf,bids",
        help="comma-separated: edf (TUEG-like EDF), bids (BrainVision/EEGLAB)",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    corpora = set(args.corpora.split(","))
    work = Path(tempfile.mkdtemp(prefix="eegfm-bench-"))
    figures: dict = {"machine": f"{os.cpu_count()} cores, {platform_memory()}"}
    try:
        if "edf" in corpora:
            figures.update(throughput(work, args.subjects, args.duration, args.repeats))
            for hours in (1.0, args.long_hours):
                folder = work / f"long{hours:g}"
                folder.mkdir()
                try:
                    rss, windows = peak_rss_mb(long_recording(folder / f"rec_{hours:g}h.edf", hours).parent)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                figures[f"peak_rss_mb_{hours:g}h_33ch_256hz"] = rss
                figures[f"windows_{hours:g}h"] = windows
        if "bids" in corpora:
            figures.update(bids_throughput(work, args.duration, args.repeats))
            figures.update(bids_peak_rss(work, (args.short_hours, args.long_hours)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def platform_memory() -> str:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return f"{pages * size / 2**30:.0f} GiB"


if __name__ == "__main__":
    sys.exit(main())
