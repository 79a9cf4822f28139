"""`make bench-ingest`: ingest throughput per core against a plain MNE pipeline, and peak memory vs length.

Both pipelines run on the same TUEG-like files (21-33 channels, 250/256/512 Hz) in this one process, each
pinned to one core (one BLAS/FFT thread); the figure is hours of EEG per second per core and their ratio.
Peak RSS is measured in a fresh process per recording length (1 h and 24 h of 33 channels at 256 Hz).
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


def peak_rss_mb(path: Path) -> tuple[float, int]:
    """Peak RSS of a fresh process that ingests `path` (through the generic recipe) and drains its samples."""
    code = (
        "import sys, re\n"
        "from eegfm.ingest.recipe import load_recipe, discover\n"
        "from eegfm.ingest.recording import ingest_file\n"
        "r = load_recipe('generic', root=sys.argv[1])\n"
        "(s,) = discover(r)\n"
        "res = ingest_file(s, r)\n"
        "n = sum(1 for _ in res.samples)\n"
        "assert res.outcome.status == 'written', res.outcome\n"
        # VmHWM is this process's own peak: ru_maxrss would also count the parent's memory before exec.
        "print(n, re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path.parent)], capture_output=True, text=True, check=True
    )
    windows, kb = done.stdout.split()
    return round(int(kb) / 1024, 1), int(windows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per fixture recording")
    parser.add_argument("--long-hours", type=float, default=24.0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="eegfm-bench-"))
    try:
        figures = {
            "machine": f"{os.cpu_count()} cores, {platform_memory()}",
            **throughput(work, args.subjects, args.duration, args.repeats),
        }
        for hours in (1.0, args.long_hours):
            folder = work / f"long{hours:g}"
            folder.mkdir()
            rss, windows = peak_rss_mb(long_recording(folder / f"rec_{hours:g}h.edf", hours))
            figures[f"peak_rss_mb_{hours:g}h_33ch_256hz"] = rss
            figures[f"windows_{hours:g}h"] = windows
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
