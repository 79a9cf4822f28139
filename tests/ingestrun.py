"""Running `eegfm shards` from the tests."""

from __future__ import annotations

import sys
from pathlib import Path

SHARD_MB = "0.25"  # a few samples per shard: many commits (and a shard being written most of the time)


def shards_command(root: Path | str, out: Path | str, *extra: str) -> list[str]:
    """`eegfm shards` with the generic recipe, small shards and no progress bar."""
    return [
        sys.executable, "-m", "eegfm.cli", "shards", "--dataset", "generic", "--root", str(root),
        "--out", str(out), "--shard-mb", SHARD_MB, "--no-progress", *extra,
    ]  # fmt: skip
