"""The pretraining guarantees on the paths the first tests did not walk: accumulation with preemption,
resumes whose stream changed, corrupt shards, non-finite losses, FSDP training, kills during a save.

Each test here failed on the code before the hardening issue (the commit messages say how).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from pretrainrun import (
    ENV,
    assert_curve_continues,
    keys_by_step,
    losses,
    micro_batches,
    pretrain_command,
    run,
    with_resume,
)

from eegfm.ingest import contract
from eegfm.pretrain.checkpoints import load_state

CONFIG = str(REPO / "configs" / "pretrain" / "reve_tiny.yaml")


def _pretrain(shards: Path | str, run_dir: Path, keys: Path, *overrides: str, resume: str | None = None):
    return pretrain_command(CONFIG, shards, str(run_dir), keys, *overrides, resume=resume)


def _fails(command: list[str]) -> str:
    """Run a command that must fail with one line (exit 2, no traceback); returns that line."""
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("eegfm ")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def _stop_with_sigterm_after(command: list[str], checkpoint: Path) -> None:
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not checkpoint.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, process.stderr.read()[-3000:]


@pytest.fixture(scope="module")
def accumulated(tueg_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 steps of 2 micro-batches each in one go: what an interrupted run must reproduce."""
    base = tmp_path_factory.mktemp("accumulated")
    run(
        _pretrain(
            tueg_shards,
            base / "run",
            base / "keys",
            "trainer.max_steps=16",
            "trainer.accumulate=2",
            "trainer.log_every=1",
            "checkpoint.every_n_steps=4",
        )
    )
    return base


@pytest.mark.slow
def test_sigterm_with_accumulation_resumes_to_the_same_micro_batches(
    tueg_shards: Path, accumulated: Path, tmp_path: Path
) -> None:
    """A stop used to land after the first micro-batch of a step while the cursor said the whole step was
    consumed: the resumed run's step pairs were shifted by one from then on (and the old sample log kept
    only each step's last micro-batch, which hid it)."""
    command = _pretrain(
        tueg_shards,
        tmp_path / "run",
        tmp_path / "keys",
        "trainer.max_steps=16",
        "trainer.accumulate=2",
        "trainer.log_every=1",
        "checkpoint.every_n_steps=4",
    )
    _stop_with_sigterm_after(command, tmp_path / "run" / "checkpoints" / "step=00000004.ckpt")
    stopped = load_state(str(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]))
    assert 4 <= stopped["global_step"] < 16
    run(with_resume(command))
    whole = micro_batches(accumulated / "keys")
    resumed = micro_batches(tmp_path / "keys")
    assert [(s, e, i) for s, e, i, _ in resumed] == [(s, e, i) for s, e, i, _ in whole]
    assert keys_by_step(tmp_path / "keys") == keys_by_step(accumulated / "keys")
    assert_curve_continues(
        losses(str(tmp_path / "run" / "metrics.csv")), losses(str(accumulated / "run" / "metrics.csv"))
    )


@pytest.fixture(scope="module")
def finished(tueg_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step run, checkpointed every 3 steps, to resume in other ways."""
    base = tmp_path_factory.mktemp("finished")
    run(
        _pretrain(
            tueg_shards, base / "run", base / "keys", "trainer.max_steps=6", "checkpoint.every_n_steps=3"
        )
    )
    return base


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "change"),
    [
        ("data.channel_budget=120", "channel_budget: 100 → 120"),
        ("trainer.accumulate=2", "accumulation: 1 → 2"),
        ("data.seed=1", "seed: 0 → 1"),
    ],
)
def test_a_resume_whose_stream_changed_is_refused(
    finished: Path, tueg_shards: Path, tmp_path: Path, override: str, change: str
) -> None:
    """A changed channel budget used to train 60 windows of an epoch twice and 97 never, silently."""
    run_dir = _copy_run(finished, tmp_path)
    line = _fails(
        _pretrain(tueg_shards, run_dir, tmp_path / "keys", "trainer.max_steps=9", override, resume="auto")
    )
    assert change in line and "--reset-stream" in line


@pytest.mark.slow
def test_weights_order_and_reingested_shards_change_the_fingerprint(
    finished: Path, tueg_shards: Path, chbmit_shards: Path, tmp_path: Path
) -> None:
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    run_dir = _copy_run(finished, tmp_path)
    weighted = f"data.shards=[{{url: {tueg_shards}, weight: 1.0}}]"
    line = _fails(
        _pretrain(tueg_shards, run_dir, tmp_path / "k", weighted, "trainer.max_steps=9", resume="auto")
    )
    assert "datasets[0].weight: None → 1.0" in line
    two = f"data.shards=[{chbmit_shards},{tueg_shards}]"
    line = _fails(_pretrain(tueg_shards, run_dir, tmp_path / "k", two, "trainer.max_steps=9", resume="auto"))
    assert "datasets[0].manifest" in line and "datasets[1].manifest: (absent)" in line
    # The same corpus ingested again with another band-pass: the same keys, other data.
    recipe = load_recipe("tueg", ["preprocess.h_freq=70"], root=str(tueg_shards.parent / "corpus"))
    again = tmp_path / "reingested"
    run_shards(recipe, str(again), shard_bytes=512 * 1024, progress=False)
    line = _fails(_pretrain(again, run_dir, tmp_path / "k", "trainer.max_steps=9", resume="auto"))
    assert "preprocess_hash" in line and "content" in line


@pytest.mark.slow
def test_reset_stream_continues_from_the_next_epoch_and_a_resume_needs_only_the_run_dir(
    finished: Path, tueg_shards: Path, tmp_path: Path
) -> None:
    run_dir = _copy_run(finished, tmp_path)
    resume_only = [*_pretrain(tueg_shards, run_dir, tmp_path / "keys")[:3], "pretrain", "--resume", "auto"]
    done = run([*resume_only, f"run.dir={run_dir}", "trainer.max_steps=8", "--reset-stream",
                "data.channel_budget=120", f"logging.sample_keys={tmp_path / 'keys'}"])  # fmt: skip
    assert "--reset-stream: the stream restarts at epoch 1's beginning" in done.stderr
    rows = micro_batches(tmp_path / "keys")
    assert [(step, epoch, index) for step, epoch, index, _ in rows] == [(6, 1, 0), (7, 1, 1)]
    # The saved config was the base: data.shards came from it, not from the defaults.
    assert f"- {tueg_shards}" in (run_dir / "config.yaml").read_text()


def _copy_shards(shards: Path, to: Path) -> Path:
    shutil.copytree(shards, to)
    return to


def _first_sample(shards: Path) -> tuple[Path, list]:
    manifest = json.loads((shards / contract.MANIFEST_NAME).read_text())
    shard = next(s for s in manifest["shards"] if s["split"] == "train")["url"]
    index = json.loads((shards / contract.index_name(shard)).read_text())
    return shards / shard, index["samples"][0]


@pytest.mark.slow
def test_corrupt_bytes_stop_the_run_naming_shard_and_sample(tueg_shards: Path, tmp_path: Path) -> None:
    """4,096 random bytes inside one sample's EEG used to train to NaN and exit 0 with NaN weights."""
    shards = _copy_shards(tueg_shards, tmp_path / "shards")
    shard, (key, offset, size, *_) = _first_sample(shards)
    data = bytearray(shard.read_bytes())
    start = offset + size // 2 - 2048
    data[start : start + 4096] = np.random.default_rng(0).bytes(4096)
    shard.write_bytes(bytes(data))
    line = _fails(_pretrain(shards, tmp_path / "run", tmp_path / "keys", "trainer.max_steps=30"))
    assert str(shard) in line and key in line and "checksum mismatch" in line
    saved = list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    for checkpoint in saved:  # at most the step-0 one; never non-finite weights
        assert all(torch.isfinite(v).all() for v in load_state(str(checkpoint))["state_dict"].values())


def test_a_truncated_shard_is_caught_at_start_up(tueg_shards: Path, tmp_path: Path) -> None:
    shards = _copy_shards(tueg_shards, tmp_path / "shards")
    shard, _ = _first_sample(shards)
    os.truncate(shard, shard.stat().st_size - 1000)
    line = _fails(_pretrain(shards, tmp_path / "run", tmp_path / "keys", "trainer.max_steps=3"))
    assert str(shard) in line and "truncated" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_non_finite_loss_stops_or_is_skipped_and_never_saved(tueg_shards: Path, tmp_path: Path) -> None:
    """A learning rate of 1e6 blows the weights up within a few steps: the run must stop naming the
    step and the samples, having saved only finite weights; with skip_nonfinite it goes on and counts."""
    blow_up = ("optim.lr=1e6", "optim.warmup_fraction=0", "trainer.gradient_clip=0", "trainer.max_steps=12")
    line = _fails(
        _pretrain(tueg_shards, tmp_path / "run", tmp_path / "keys", *blow_up, "checkpoint.every_n_steps=1")
    )
    assert "non-finite loss" in line and "samples " in line and "_w0" in line
    for checkpoint in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        assert all(torch.isfinite(v).all() for v in load_state(str(checkpoint))["state_dict"].values())
    run(_pretrain(tueg_shards, tmp_path / "skip", tmp_path / "k2", *blow_up, "trainer.skip_nonfinite=true",
                  "trainer.log_every=1"))  # fmt: skip
    rows = (tmp_path / "skip" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("skipped_nonfinite")]) >= 1


@pytest.mark.slow
def test_fsdp_trains_on_two_processes_with_weight_decay_on_matrices_only(
    tueg_shards: Path, tmp_path: Path
) -> None:
    """Under FSDP the parameters are flat 1-D views when the optimizer is built: grouping by `p.dim()`
    put every parameter in the no-decay group. Groups are now chosen by name."""
    run(
        _pretrain(
            tueg_shards,
            tmp_path / "run",
            tmp_path / "keys",
            "trainer.strategy=fsdp",
            "trainer.devices=2",
            "trainer.max_steps=3",
            "checkpoint.every_n_steps=3",
        )
    )
    from eegfm.pretrain.config import load_pretrain_config
    from eegfm.pretrain.train import build_module

    state = load_state(str(tmp_path / "run" / "checkpoints" / "step=00000003.ckpt"))
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    # The optimizer state is keyed by parameter index, in the model's own parameter order.
    names = [(n, p.dim()) for n, p in build_module(load_pretrain_config(CONFIG)).named_parameters()]
    groups = state["optimizer_states"][0]["param_groups"]
    decay = {names[i][0] for g in groups if g["weight_decay"] > 0 for i in g["params"]}
    assert decay == {n for n, dim in names if dim >= 2}
    steps = keys_by_step(tmp_path / "keys")
    assert sorted(steps) == [0, 1] and not set(steps[0][0]) & set(steps[1][0])


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_resumes_from_the_previous_one(
    tueg_shards: Path, tmp_path: Path
) -> None:
    """A checkpoint big enough to be caught mid-write (a wider model): SIGKILL while its temporary file
    exists; the resume must start from the previous complete checkpoint and remove the debris."""
    wide = (
        "model.overrides={embed_dim: 512, depth: 6, heads: 8}",
        "trainer.max_steps=3",
        "checkpoint.every_n_steps=1",
    )
    run_dir = tmp_path / "run"
    command = _pretrain(tueg_shards, run_dir, tmp_path / "keys", *wide)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = run_dir / "checkpoints"
    deadline = time.monotonic() + 300
    caught = None
    while time.monotonic() < deadline and process.poll() is None and caught is None:
        if folder.is_dir():
            caught = next((p for p in folder.iterdir() if p.name.startswith("step=00000002.ckpt.tmp-")), None)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert caught is not None, "never saw the step-2 checkpoint being written"
    assert not (folder / "step=00000002.ckpt").exists() and (folder / "step=00000001.ckpt").exists()
    done = run(with_resume(command))
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
    assert sorted(p.name for p in folder.iterdir())[-1] == "step=00000003.ckpt"
    assert "step=00000001.ckpt" in done.stderr + done.stdout  # Lightning: restored from …


def test_flops_do_not_depend_on_how_parameters_are_laid_out() -> None:
    """FSDP flattens parameters into 1-D shards; MFU's FLOPs counted `p.dim() == 2` parameters at each call
    and fell to the embeddings' share. Counted at build time, they survive flattening (here: every
    parameter replaced by a 1-D view of itself, as FSDP's flat parameters are)."""
    from eegfm.pretrain.config import load_pretrain_config
    from eegfm.pretrain.train import build_module

    for config in ("reve_tiny.yaml", "labram_vqnsp_tiny.yaml"):
        module = build_module(load_pretrain_config(REPO / "configs" / "pretrain" / config))
        before = module.train_flops(4, 21, 10)
        for p in module.parameters():
            p.data = p.data.flatten()
        assert module.train_flops(4, 21, 10) == before > 0
