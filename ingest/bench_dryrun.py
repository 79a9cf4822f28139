"""`make bench-dryrun`: seconds for `eegfm shards --dry-run` over 1,000 EDF headers on one core.

The corpus is the TUEG fixture (21-33 channels at 250/256/512 Hz, TUH's labels and header quirks): 100
subjects with two 10-s recordings each, copied under 4 more subject ids each (1,000 files; a dry run
reads headers only, so the recordings' length does not matter, and simulating 1,000 of them would take
minutes). The command runs in a fresh process pinned to one core (imports included), as a user runs it;
the files were just written, so their headers are in the page cache (a cold disk or object storage adds
one read per file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eegfm.ingest.fixtures import generate_corpus, tuh_subject


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=100, help="generated subjects, two files each")
    parser.add_argument("--copies", type=int, default=5, help="subject ids per generated subject")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="eegfm-bench-dryrun-"))
    try:
        corpus = work / "corpus"
        started = time.perf_counter()
        made = generate_corpus("tueg", corpus, seed=0, n_subjects=args.subjects, duration_s=10.0)
        files = len(made) * args.copies
        for copy in range(1, args.copies):
            for rel in made:
                subject = rel.split("/")[2]
                twin = tuh_subject(copy * 100_000 + int.from_bytes(subject.encode(), "big") % 100_000)
                target = corpus / rel.replace(subject, twin)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(corpus / rel, target)
        generated_s = time.perf_counter() - started
        command = [sys.executable, "-m", "eegfm.cli", "shards", "--dataset", "tueg", "--root", str(corpus)]
        command += ["--dry-run", "--json"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
        )
        wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        report = json.loads(done.stdout)
        figures = {
            "machine": f"{os.cpu_count()} cores (command pinned to one)",
            "files": files,
            "generate_s": round(generated_s, 2),
            "command": " ".join(["eegfm", *command[3:]]),
            "command_wall_s": round(wall_s, 2),
            "command_cpu_s": round(cpu_s, 2),
            "dry_run_wall_s": report["seconds"],
            "dry_run_cpu_s": report["cpu_seconds"],
            "files_per_cpu_s": round(files / report["cpu_seconds"]),
            "files_listed": report["files"]["under_root"],
            "distinct_channel_layouts": report["distinct_channel_layouts"],
            "would_write": report["files"]["would_write"],
            "estimated_hours": report["estimate"]["hours"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
