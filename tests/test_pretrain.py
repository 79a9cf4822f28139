"""`eegfm pretrain` end to end on fixture shards: resume after SIGKILL (on S3) and SIGTERM, DDP with 2
processes and 2 nodes, resuming on another world size, learning, export."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import torch
from conftest import REPO
from pretrainrun import (
    ENV,
    assert_curve_continues,
    assert_killed_run_resumes_exactly,
    keys_by_step,
    losses,
    micro_batches,
    pretrain_command,
    run,
    with_resume,
)

CONFIG = str(REPO / "configs" / "pretrain" / "reve_tiny.yaml")
CLI = [sys.executable, "-m", "eegfm.cli"]
SHARDS = 15  # of the `tueg_shards` corpus's train split


def _pretrain(
    shards: Path, run_dir: str, keys: Path, *overrides: str, resume: str | None = None
) -> list[str]:
    return pretrain_command(CONFIG, shards, run_dir, keys, *overrides, resume=resume)


@pytest.fixture(scope="module")
def uninterrupted(tueg_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 steps in one go, checkpoints every 10: what interrupted runs must reproduce."""
    base = tmp_path_factory.mktemp("uninterrupted")
    run(
        _pretrain(
            tueg_shards,
            str(base / "run"),
            base / "keys",
            "trainer.max_steps=40",
            "checkpoint.every_n_steps=10",
        )
    )
    return base


def test_run_directory_holds_config_metrics_and_checkpoints(uninterrupted: Path) -> None:
    run = uninterrupted / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"step=000000{s}.ckpt"
        for s in (20, 30, 40)  # keep: 3
    ]
    config = (run / "config.yaml").read_text()
    assert "channel_budget: 100" in config and "max_steps: 40" in config
    curve = losses(str(run / "metrics.csv"))
    assert sorted(curve) == list(range(4, 40, 5))  # logged every 5 steps, step column 0-based
    with open(run / "metrics.csv") as f:
        columns = next(csv.reader(f))
    assert {
        "step",
        "loss",
        "lr",
        "reconstruction_loss",
        "secondary_loss",
        "windows_per_s",
        "tokens_per_s",
    } <= set(columns)


def test_a_checkpoint_holds_everything_a_resume_needs(uninterrupted: Path) -> None:
    state = torch.load(
        uninterrupted / "run" / "checkpoints" / "step=00000040.ckpt", map_location="cpu", weights_only=True
    )
    assert state["global_step"] == 40 and state["optimizer_states"] and state["lr_schedulers"]
    assert any(k.startswith("model.encoder.") for k in state["state_dict"])
    assert state["ShardDataModule"]["epoch"] >= 1  # 40 steps of 22 micro-batches an epoch
    assert {"torch", "cuda", "numpy", "python"} == set(state["rng_states"])
    (config,) = (v["config"] for k, v in state["callbacks"].items() if k.startswith("SaveRunConfig"))
    assert "max_steps: 40" in config and config == (uninterrupted / "run" / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.s3
def test_killed_run_on_s3_resumes_exactly(
    s3_env, tueg_on_s3: str, uninterrupted: Path, tmp_path: Path
) -> None:
    """Shards and checkpoints on S3, shards read through the node cache: killed at step 10, two cached
    shards damaged on disk (one truncated, one with a sample zeroed), resumed: the same windows and the
    same curve to the bit as the uninterrupted run from local shards, and the only shard GETs of the
    resume are the two re-fetches (plus one manifest read, the table coming from the node cache, and one
    listing that checks the shards' sizes)."""
    fsspec.filesystem("s3").mkdir("runs")
    cache = tmp_path / "cache"
    command = pretrain_command(
        CONFIG,
        tueg_on_s3,
        "s3://runs/tiny",
        tmp_path / "keys",
        "trainer.max_steps=40",
        "checkpoint.every_n_steps=10",
        f"data.cache_dir={cache}",
    )
    env = {**ENV, **s3_env.env()}
    counts = {}

    def damage_two_cached_shards() -> None:
        cached = sorted(cache.glob("*.shard"))
        assert len(cached) == 15, cached  # the whole (one-block) corpus, fetched in the first steps
        cached[0].write_bytes(cached[0].read_bytes()[:-1000])
        data = bytearray(cached[1].read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size: only a CRC-32 sees it
        cached[1].write_bytes(bytes(data))
        counts["before"] = s3_env.settled_counts("data")

    assert_killed_run_resumes_exactly(
        command, env, "s3://runs/tiny", 10, 40, tmp_path / "keys", uninterrupted, damage_two_cached_shards
    )
    resumed = s3_env.wait_for_requests(counts["before"], {"GET": 3, "LIST": 1}, bucket="data")
    assert resumed == {"GET": 3, "LIST": 1}, resumed


def test_a_run_with_checkpoints_needs_resume(tueg_shards: Path, uninterrupted: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        _pretrain(tueg_shards, str(uninterrupted / "run"), tmp_path / "keys"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "pass --resume auto" in done.stderr


@pytest.mark.slow
def test_sigterm_saves_at_the_step_boundary_and_resumes(
    tueg_shards: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    command = _pretrain(
        tueg_shards, str(run_dir), tmp_path / "keys", "trainer.max_steps=40", "checkpoint.every_n_steps=10"
    )
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "checkpoints" / "step=00000010.ckpt").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, process.stderr.read()[-3000:]
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved[-1] not in ("step=00000010.ckpt", "step=00000040.ckpt"), saved  # saved where it stopped
    run(with_resume(command))
    assert keys_by_step(tmp_path / "keys") == keys_by_step(uninterrupted / "keys")
    assert_curve_continues(
        losses(str(run_dir / "metrics.csv")), losses(str(uninterrupted / "run" / "metrics.csv"))
    )


@pytest.fixture(scope="module")
def ddp_run(s3_server, tueg_on_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two processes (DDP, gloo) of one node for 4 steps, streaming the shards from S3 through one node
    cache; the S3 requests the job made are left in `requests.json`."""
    base = tmp_path_factory.mktemp("ddp")
    before = s3_server.settled_counts("data")
    run(
        pretrain_command(
            CONFIG,
            tueg_on_s3,
            str(base / "run"),
            base / "keys",
            "trainer.max_steps=4",
            "trainer.devices=2",
            "checkpoint.every_n_steps=4",
            f"data.cache_dir={base / 'cache'}",
        ),
        env={**ENV, **s3_server.env()},
    )
    counted = s3_server.wait_for_requests(before, {"GET": SHARDS * 2 + 4, "LIST": 2}, bucket="data")
    (base / "requests.json").write_text(json.dumps(counted))
    return base


@pytest.mark.slow
@pytest.mark.s3
def test_two_processes_of_a_node_fetch_each_shard_and_index_once(ddp_run: Path) -> None:
    """What the S3 server saw of the 2-process job: per shard one GET (the cache's), per shard index one
    GET (the node's table), the manifest read by each process for the table's key (2) and by the table's
    builder (a HEAD and a GET: 2), one listing per process (shard sizes). The old stream made 509 GETs
    for 450 windows; a cache per process, or a table per process, would show 15 or 17 GETs more."""
    assert json.loads((ddp_run / "requests.json").read_text()) == {"GET": SHARDS * 2 + 4, "LIST": 2}
    assert len(list((ddp_run / "cache").glob("*.shard"))) == SHARDS


@pytest.mark.slow
@pytest.mark.s3
def test_ddp_ranks_split_each_step_and_resume_on_one_process(ddp_run: Path, s3_server) -> None:
    steps = keys_by_step(ddp_run / "keys")
    assert sorted(steps) == [0, 1] and sorted(steps[0]) == sorted(steps[1]) == [0, 1, 2, 3]
    for step in range(4):
        assert not set(steps[0][step]) & set(steps[1][step])
    # Continue the 2-process run on one process: epoch 0 ends with every window seen exactly once.
    # (The resume takes the run's saved config, devices=2 and the S3 shards included: say 1 on top.)
    before = s3_server.settled_counts("data")
    command = [*CLI, "pretrain", "--resume", "auto", f"run.dir={ddp_run / 'run'}", "trainer.max_steps=20"]
    run([*command, "trainer.devices=1"], env={**ENV, **s3_server.env()})
    # The node's cache already holds every shard and the table: one manifest GET and one listing.
    assert s3_server.wait_for_requests(before, {"GET": 1, "LIST": 1}, bucket="data") == {"GET": 1, "LIST": 1}
    batches = micro_batches(ddp_run / "keys")
    epoch0 = [b for b in batches if b[1] == 0]
    assert [b[2] for b in epoch0] == list(range(len(epoch0)))  # micro-batches 0, 1, 2, … once each
    keys = [k for b in epoch0 for k in b[3]]
    assert len(keys) == len(set(keys)) == 95  # every window of the fixture corpus, none twice
    # 22 micro-batches an epoch: steps 0-3 took 2 each, steps 4-17 one each; steps 18-19 go on into epoch 1.
    assert [(b[0], b[1]) for b in batches if b[0] >= 17] == [(17, 0), (18, 1), (19, 1)]


@pytest.mark.slow
@pytest.mark.s3
def test_two_nodes_through_torchrun_match_two_local_processes(
    ddp_run: Path, s3_server, tueg_on_s3: str, tmp_path: Path
) -> None:
    """Two torchrun "nodes", each with its own node-local temp folder (so its own default shard cache):
    the same windows and curve as the two processes of one node, and each node fetches each shard and
    each index once (twice the one-node job's requests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = pretrain_command(
        CONFIG,
        tueg_on_s3,
        str(tmp_path / "run"),
        tmp_path / "keys",
        "trainer.max_steps=4",
        "trainer.num_nodes=2",
    )
    before = s3_server.settled_counts("data")
    nodes = []
    for node in (0, 1):
        (tmp_path / f"node{node}").mkdir()
        nodes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nnodes=2",
                    f"--node-rank={node}",
                    "--nproc-per-node=1",
                    "--master-addr=127.0.0.1",
                    f"--master-port={port}",
                    *command[1:],
                ],
                env={**ENV, **s3_server.env(), "TMPDIR": str(tmp_path / f"node{node}")},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for node in nodes:
        assert node.wait(300) == 0, node.stderr.read()[-3000:]
    expected = {"GET": 2 * (SHARDS * 2 + 3), "LIST": 2}
    assert s3_server.wait_for_requests(before, expected, bucket="data") == expected
    for node in (0, 1):
        assert len(list((tmp_path / f"node{node}" / "eegfm-shard-cache").glob("*.shard"))) == SHARDS
    assert keys_by_step(tmp_path / "keys") == {
        rank: {s: k for s, k in steps.items() if s < 4}
        for rank, steps in keys_by_step(ddp_run / "keys").items()
    }
    two_nodes, two_processes = (
        losses(str(tmp_path / "run" / "metrics.csv")),
        losses(str(ddp_run / "run" / "metrics.csv")),
    )
    assert two_nodes == pytest.approx({s: v for s, v in two_processes.items() if s < 4}, rel=1e-5)


def test_export_from_a_run_directory(uninterrupted: Path, tmp_path: Path) -> None:
    from eegfm.pretrain.export import encoder_from_checkpoint, load_encoder

    done = run(
        [
            sys.executable,
            "-m",
            "eegfm.cli",
            "export",
            "--checkpoint",
            str(uninterrupted / "run"),
            "--out",
            str(tmp_path),
        ]
    )
    assert "step=00000040.ckpt" in done.stdout
    exported = load_encoder(str(tmp_path)).eval()
    trained = encoder_from_checkpoint(str(uninterrupted / "run" / "checkpoints" / "step=00000040.ckpt"))
    eeg, positions = torch.randn(2, 19, 2000), torch.rand(2, 19, 3) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(exported(eeg, positions), trained(eeg, positions))


def test_params_prints_the_encoder_count_last() -> None:
    done = run(
        [
            sys.executable,
            "-m",
            "eegfm.cli",
            "params",
            "--config",
            str(REPO / "configs/pretrain/reve_base.yaml"),
        ]
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("encoder:") and abs(int(last.split()[-1].replace(",", "")) / 69.2e6 - 1) < 0.02


def _heldout_batches(shards: Path, transform: object, epochs: int = 3) -> list[dict]:
    """Every val window of `shards`, `epochs` times over (other groupings, other masks from `transform`),
    in micro-batches of 320 channel-windows."""
    from eegfm.pretrain.plan import Cursor
    from eegfm.pretrain.stream import ShardStream
    from eegfm.pretrain.table import DatasetSpec, load_table

    table = load_table([DatasetSpec(str(shards), split="val")], "train")
    options = dict(seed=123, budget=320, clip=15.0, start=Cursor(), rank=0, world=1, accumulation=1)
    batches = []
    for batch in ShardStream(table, [None], **options, transform=transform):
        if batch["epoch"] == epochs:
            return batches
        batches.append(batch)
    raise AssertionError("the stream ended")


def _masked_losses(checkpoint: str, batches: list[dict]) -> dict[str, float]:
    """Mean masked-patch L1 over `batches` (their masks fixed) of: the trained model, the same model at
    initialisation, and the trivial predictor (each channel's mean over its visible patches)."""
    from eegfm.pretrain.mae import MaePretraining
    from eegfm.pretrain.stream import batch_generator

    trained = MaePretraining.load_from_checkpoint(checkpoint, weights_only=True).eval()
    torch.manual_seed(0)  # the seed every run initialises with (trainer.seed)
    initial = MaePretraining(**trained.hparams).eval()
    totals = {"trained": 0.0, "initial": 0.0, "trivial": 0.0}
    with torch.no_grad():
        for batch in batches:
            for name, module in (("trained", trained), ("initial", initial)):
                generator = batch_generator(123, batch["epoch"], batch["index"], stream=1)
                out = module.model(batch["eeg"], batch["positions"], generator, mask=batch["mask"])
                totals[name] += out.reconstruction_loss.item() / len(batches)
            patches, mask = trained.model.encoder.patchify(batch["eeg"]), batch["mask"]
            visible = (~mask)[..., None].float()
            mean = (patches * visible).sum((2, 3)) / (visible.sum((2, 3)) * patches.shape[-1]).clamp(min=1)
            trivial = mean[:, :, None, None].expand_as(patches)
            loss = torch.nn.functional.l1_loss(trivial[mask], patches[mask])
            totals["trivial"] += loss.item() / len(batches)
    return totals


@pytest.mark.slow
def test_the_model_learns(split_shards: Path, tmp_path: Path) -> None:
    """Trained on 4 subjects, the MAE reconstructs the masked patches of 2 held-out subjects better than
    its own initialisation and than each channel's visible mean.

    Measured (400 steps, lr 3e-3, 3 passes over the 48 held-out windows, fixed masks): held-out L1
    0.746 trained, 0.917 at initialisation, 0.800 for the channel means, i.e. 18.6 % below the
    initialisation and 6.7 % below the channel means. A broken MAE whose decoder never sees the encoder
    (its visible tokens zeroed) measured 0.778, 0.918, 0.800: 15 % below its initialisation but only 2.7 %
    below the channel means. The margins: 9 % below the initialisation (half the gap), 4.5 % below the
    channel means (midway between 6.7 % and 2.7 %). The evaluation itself is deterministic.
    """
    run(
        _pretrain(
            split_shards,
            str(tmp_path / "run"),
            tmp_path / "keys",
            "data.channel_budget=320",
            "trainer.max_steps=400",
            "optim.lr=3e-3",
            "checkpoint.every_n_steps=400",
        )
    )
    trained_on = {key.split("_")[0] for step in keys_by_step(tmp_path / "keys")[0].values() for key in step}
    checkpoint = str(tmp_path / "run" / "checkpoints" / "step=00000400.ckpt")
    from eegfm.pretrain.mae import MaePretraining

    transform = MaePretraining.load_from_checkpoint(checkpoint, weights_only=True).batch_transform()
    batches = _heldout_batches(split_shards, transform)
    held_out = {key.split("_")[0] for batch in batches for key in batch["keys"]}
    assert len(held_out) == 2 and not held_out & trained_on, (sorted(trained_on), sorted(held_out))
    l1 = _masked_losses(checkpoint, batches)
    assert l1["trained"] < 0.955 * l1["trivial"], l1
    assert l1["trained"] < 0.91 * l1["initial"], l1
