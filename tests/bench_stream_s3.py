"""`make bench-stream`: object-store GETs per window trained, in a short pretraining run from a real S3
server (SeaweedFS, its own request counters). Not part of `make test` (the file is not `test_*.py`).

A TUEG-like fixture corpus is ingested into 8-MiB shards (about a hundred 10-s windows each; the card's
256-MB shards hold about thirty times more), uploaded, and `reve_tiny` trains one epoch from S3 on one
process through a cold node cache. Target (the streaming issue): at most 0.05 GET per window trained.
Every GET of the job is counted: manifest, indexes, shards. The old stream made 509 GETs for 450 windows
(1.13 per window).
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
from conftest import REPO
from pretrainrun import ENV, micro_batches, pretrain_command, run

TARGET = 0.05


def test_gets_per_window_trained(s3_env, tmp_path: Path) -> None:
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards
    from eegfm.pretrain.plan import epoch_plan
    from eegfm.pretrain.table import DatasetSpec, load_table

    generate_corpus("tueg", tmp_path / "corpus", seed=0, n_subjects=8, duration_s=900.0)
    shards = tmp_path / "shards"
    run_shards(
        load_recipe("tueg", root=str(tmp_path / "corpus")), str(shards), shard_bytes=8 << 20, progress=False
    )
    fs = fsspec.filesystem("s3")
    fs.mkdir("bench")
    fs.put(str(shards), "bench/tueg", recursive=True)

    budget = 1200
    table = load_table([DatasetSpec(str(shards))], "train")
    steps = len(epoch_plan(table, None, [None], 0, 0, budget, 128))  # one epoch, one process, no accumulation
    before = s3_env.settled_counts("bench")
    run(
        pretrain_command(
            str(REPO / "configs" / "pretrain" / "reve_tiny.yaml"),
            "s3://bench/tueg",
            str(tmp_path / "run"),
            tmp_path / "keys",
            f"trainer.max_steps={steps}",
            f"data.channel_budget={budget}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "checkpoint.every_n_steps=1000000",
        ),
        env={**ENV, **s3_env.env()},
    )
    counted = s3_env.wait_for_requests(before, {"GET": 2 * len(table.shard_urls)}, bucket="bench", timeout=2)
    windows = sum(len(keys) for *_, keys in micro_batches(tmp_path / "keys"))
    result = {
        "shards": len(table.shard_urls),
        "windows_trained": windows,
        "requests": dict(counted),
        "gets_per_window": counted["GET"] / windows,
        "target": TARGET,
    }
    print(json.dumps(result, indent=1))
    assert windows == len(table) and result["gets_per_window"] <= TARGET, result
