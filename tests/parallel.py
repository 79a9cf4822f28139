"""`make test`: the whole suite in two pytest processes at once, one per core.

Why: most tests are single-threaded subprocess runs (OMP_NUM_THREADS=1) that leave the second core idle,
and the suite in one process took 1,609 s on the 2-core VM (about 27 min; CI's budget is ~15). Every test
file goes to exactly one group (the files' measured seconds below balance them; a new file counts as
10 s), each group has its own pytest temp folder and its own session servers (S3 servers pick free
ports), and the SLURM tests stay in one group (the cluster is one per host). The groups' outputs are
printed whole, one after the other, and the exit status is the worse of the two.

`python tests/parallel.py [pytest args]`; with a test path among the arguments it runs one plain pytest.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GROUPS = 2
# Seconds per file (setup + call + teardown), measured with `make test PYTEST_ARGS=--durations=0` (2-core VM,
# both groups running; test_bids.py plus its S3 test measured alone): balances the groups.
SECONDS = {
    "test_seed_pretrain.py": 296,
    "test_tokenizers.py": 219,
    "test_pretrain.py": 209,
    "test_pretrain_hardening.py": 171,
    "test_mamba_pretrain.py": 170,
    "test_validation.py": 151,
    "test_inloop_probe.py": 143,
    "test_resume_and_storage.py": 111,
    "test_slurm.py": 98,
    "test_probe.py": 89,
    "test_finetune.py": 71,
    "test_bids.py": 60,
    "test_catalogue.py": 37,
    "test_ingest_debris.py": 30,
    "test_ingest_storage_errors.py": 30,
    "test_shard_cache.py": 25,
    "test_dryrun.py": 24,
    "test_task_sources.py": 19,
    "test_tasks.py": 17,
    "test_simulate_stream.py": 16,
    "test_pretrain_config.py": 16,
    "test_infra.py": 14,
    "test_launch.py": 14,
    "test_ingest_recipes.py": 12,
}
DEFAULT_SECONDS = 10


def groups(files: list[Path], n: int = GROUPS) -> list[list[Path]]:
    """Files split into `n` groups of about equal measured time (longest first, to the lightest group)."""
    loads, split = [0.0] * n, [[] for _ in range(n)]
    for path in sorted(files, key=lambda p: (-SECONDS.get(p.name, DEFAULT_SECONDS), p.name)):
        lightest = loads.index(min(loads))
        split[lightest].append(path)
        loads[lightest] += SECONDS.get(path.name, DEFAULT_SECONDS)
    return split


def main(args: list[str]) -> int:
    if any(a.startswith("tests/") or a.endswith(".py") or "::" in a for a in args):
        return subprocess.call([sys.executable, "-m", "pytest", *args])
    files = sorted(TESTS.glob("test_*.py"))
    split = groups(files)
    assert sorted(p for g in split for p in g) == files  # every file in exactly one group
    with tempfile.TemporaryDirectory(prefix="eegfm-tests-") as work:
        runs = []
        for i, group in enumerate(split):
            log = open(Path(work) / f"group-{i}.log", "w+")  # noqa: SIM115 - closed below
            command = [sys.executable, "-m", "pytest", f"--basetemp={Path(work) / f'tmp-{i}'}", *args]
            runs.append(
                (log, subprocess.Popen([*command, *map(str, group)], stdout=log, stderr=subprocess.STDOUT))
            )
        status = 0
        for i, (log, process) in enumerate(runs):
            status = max(status, process.wait())
            log.seek(0)
            print(f"==================== group {i + 1} of {len(runs)} ====================", flush=True)
            sys.stdout.write(log.read())
            log.close()
        return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
