"""Validation loss during pretraining: a fixed val set, logged at the right steps, the same on any number
of ranks, and never disturbing training (on/off and killed-and-resumed runs train to the same bits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from pretrainrun import (
    ENV,
    assert_killed_run_resumes_exactly,
    keys_by_step,
    logged,
    losses,
    pretrain_command,
    run,
)

from eegfm.config import documented_yaml
from eegfm.errors import ConfigError
from eegfm.pretrain.config import load_pretrain_config
from eegfm.pretrain.validation import load_val_set

CONFIGS = REPO / "configs" / "pretrain"
MAE = str(CONFIGS / "reve_tiny.yaml")
TOKENIZER = str(CONFIGS / "labram_vqnsp_tiny.yaml")
MCM = str(CONFIGS / "labram_mcm_tiny.yaml")


def _config(shards: Path, *overrides: str):
    return load_pretrain_config(MAE, [f"data.shards=[{shards}]", "data.channel_budget=100", *overrides])


def test_eval_settings_are_typed_checked_and_documented() -> None:
    with pytest.raises(ConfigError, match=r"eval\.every_n_steps: must be ≥ 0"):
        load_pretrain_config(MAE, ["eval.every_n_steps=-1"])
    with pytest.raises(ConfigError, match=r"eval\.val_windows"):
        load_pretrain_config(MAE, ["eval.val_windows=0"])
    with pytest.raises(ConfigError, match="every_n_steps"):  # a typo names the nearest key
        load_pretrain_config(MAE, ["eval.every_n_stepz=5"])
    for name in ("reve_base", "reve_tiny", "labram_vqnsp_tiny", "labram_mcm_tiny"):
        cfg = load_pretrain_config(CONFIGS / f"{name}.yaml")
        assert cfg.eval.every_n_steps == 0 and cfg.eval.val_windows == 2048 and cfg.eval.split == "val"
    printed = documented_yaml(load_pretrain_config(MAE))
    assert "eval:  # Validation loss on held-out windows" in printed
    assert "  every_n_steps: 0  # Steps between evaluations" in printed


def test_the_val_set_is_fixed_bounded_and_shared_out_once(split_shards: Path) -> None:
    whole = load_val_set(_config(split_shards, "eval.every_n_steps=1"))
    assert whole.windows == len(whole.table) == 48  # the 2 held-out subjects, every window
    assert not {int(r) for b in whole.batches for r in b} ^ set(range(48))  # each once
    some = load_val_set(_config(split_shards, "eval.val_windows=30"))
    again = load_val_set(_config(split_shards, "eval.val_windows=30"))
    other = load_val_set(_config(split_shards, "eval.val_windows=30", "eval.seed=1"))
    assert some.windows == 30
    assert [b.tolist() for b in some.batches] == [b.tolist() for b in again.batches]
    assert {int(r) for b in some.batches for r in b} != {int(r) for b in other.batches for r in b}
    table = some.table
    for rows in some.batches:  # one shape per batch, within the channel budget
        assert len({(int(table.channels[r]), int(table.times[r])) for r in rows}) == 1
        assert len(rows) * int(table.channels[rows[0]]) <= 100
    for world in (1, 2, 3, 5, 11):
        slots = [some.rank_slots(rank, world) for rank in range(world)]
        assert len({len(s) for s in slots}) == 1  # every rank runs as many forwards
        counted = sorted(k for s in slots for k, is_counted in s if is_counted)
        assert counted == list(range(len(some.batches)))  # each batch counted on exactly one rank
    # The masks are the batch's own: the same at every read, not those of another batch.
    from eegfm.pretrain.mae import MaePretraining

    transform = MaePretraining.from_config(_config(split_shards)).batch_transform()
    first, second, neighbour = some.read(0, transform), some.read(0, transform), some.read(1, transform)
    assert np.array_equal(first["mask"], second["mask"]) and not np.array_equal(
        first["mask"], neighbour["mask"]
    )


def test_evaluation_without_a_val_split_is_one_line(tueg_shards: Path, tmp_path: Path) -> None:
    command = pretrain_command(
        MAE, tueg_shards, str(tmp_path / "run"), tmp_path / "keys", "eval.every_n_steps=5"
    )
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("eegfm ")]
    assert f"{tueg_shards}/manifest.json: no window of split 'val'" in line
    assert "eval.every_n_steps=0" in line and "splits.val=" in line


def _mae(shards: Path, base: Path, *overrides: str) -> list[str]:
    """12 steps of 2 micro-batches, a row every 2 steps, a checkpoint every 4."""
    return pretrain_command(
        MAE,
        shards,
        str(base / "run"),
        base / "keys",
        "trainer.max_steps=12",
        "trainer.accumulate=2",
        "trainer.log_every=2",
        "checkpoint.every_n_steps=4",
        *overrides,
    )


@pytest.fixture(scope="module")
def evaluated(split_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MAE evaluated every 4 steps (on all 48 val windows), uninterrupted."""
    base = tmp_path_factory.mktemp("evaluated")
    run(_mae(split_shards, base, "eval.every_n_steps=4"))
    return base


@pytest.mark.slow
def test_val_loss_is_logged_at_its_steps_and_leaves_training_alone(
    evaluated: Path, split_shards: Path, tmp_path: Path
) -> None:
    metrics = str(evaluated / "run" / "metrics.csv")
    val = logged(metrics, "val_loss")
    assert sorted(val) == [3, 7, 11]  # after steps 4, 8 and 12: rows 3, 7, 11 (0-based)
    assert sorted(logged(metrics, "val_reconstruction_loss")) == [3, 7, 11]
    assert val[11] < val[3]  # it learns on held-out subjects
    # The same run without evaluation trains on the same windows to the same bits.
    run(_mae(split_shards, tmp_path))
    assert logged(str(tmp_path / "run" / "metrics.csv"), "val_loss") == {}
    assert losses(str(tmp_path / "run" / "metrics.csv")) == losses(metrics)
    assert keys_by_step(tmp_path / "keys") == keys_by_step(evaluated / "keys")


@pytest.mark.slow
def test_a_killed_run_with_evaluation_resumes_both_curves_bit_for_bit(
    evaluated: Path, split_shards: Path, tmp_path: Path
) -> None:
    """Killed after its step-8 checkpoint (two evaluations done), resumed: the same train and val curves
    as the uninterrupted run, so evaluation is deterministic too (every value computed twice)."""
    command = _mae(split_shards, tmp_path, "eval.every_n_steps=4")
    assert_killed_run_resumes_exactly(
        command, ENV, str(tmp_path / "run"), 8, 12, tmp_path / "keys", evaluated
    )
    assert sorted(logged(str(tmp_path / "run" / "metrics.csv"), "val_loss")) == [3, 7, 11]


_EVALUATE_ON_ONE_PROCESS = """
import sys, torch
from omegaconf import OmegaConf
from eegfm.pretrain.config import pretrain_config
from eegfm.pretrain.mae import MaePretraining
from eegfm.pretrain.validation import evaluate, load_val_set
run, checkpoint = sys.argv[1:]
cfg = pretrain_config(OmegaConf.load(f"{run}/config.yaml"))
val = load_val_set(cfg)
module = MaePretraining.load_from_checkpoint(checkpoint, weights_only=True).eval()
with torch.no_grad():
    print(len(val.batches), repr(evaluate(module, val)["val_loss"]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_evaluate_to_the_bits_of_one(split_shards: Path, tmp_path: Path, strategy: str) -> None:
    """42 val windows make 11 batches: rank 1 runs a repeat of one that must not count (under FSDP it
    must run it: each forward gathers the sharded weights from both ranks). The 2-rank run's val_loss
    after its last step equals one process's evaluation of the same weights, to the bit."""
    command = pretrain_command(
        MAE,
        split_shards,
        str(tmp_path / "run"),
        tmp_path / "keys",
        "trainer.max_steps=4",
        "trainer.devices=2",
        f"trainer.strategy={strategy}",
        "trainer.log_every=2",
        "checkpoint.every_n_steps=4",
        "eval.every_n_steps=2",
        "eval.val_windows=42",
    )
    run(command)
    two = logged(str(tmp_path / "run" / "metrics.csv"), "val_loss")
    assert sorted(two) == [1, 3]
    checkpoint = tmp_path / "run" / "checkpoints" / "step=00000004.ckpt"
    done = run([sys.executable, "-c", _EVALUATE_ON_ONE_PROCESS, str(tmp_path / "run"), str(checkpoint)])
    batches, one = done.stdout.split()
    assert int(batches) == 11 and float(one) == two[3]


def _tokenizer(shards: Path, base: Path, *overrides: str) -> list[str]:
    return pretrain_command(
        TOKENIZER,
        shards,
        str(base / "run"),
        base / "keys",
        "trainer.max_steps=12",
        "trainer.log_every=1",
        "checkpoint.every_n_steps=12",
        *overrides,
    )


@pytest.mark.slow
def test_tokenizer_and_masked_code_model_log_their_val_metrics(split_shards: Path, tmp_path: Path) -> None:
    """The tokenizer logs val_loss (reconstruction) and its codebooks' usage on the val set, and trains
    to the same bits as without evaluation, although its dead-code restarts and k-means draw from torch's
    global generator (an evaluation drawing from it changes this curve); stage 2 logs val_loss and
    val_masked_code_accuracy."""
    on, off = tmp_path / "on", tmp_path / "off"
    run(_tokenizer(split_shards, on, "eval.every_n_steps=4"))
    run(_tokenizer(split_shards, off))
    metrics = str(on / "run" / "metrics.csv")
    assert losses(metrics) == losses(str(off / "run" / "metrics.csv"))
    for column in ("val_loss", "val_codebook_usage", "val_codebook_perplexity"):
        assert sorted(logged(metrics, column)) == [3, 7, 11], column
    usage = logged(metrics, "val_codebook_usage")
    # Distinct codes of 48 windows × 21 channels × 10 patches among 512: some, not all, not one.
    assert all(1 / 512 < u < 1 for u in usage.values()), usage
    assert logged(metrics, "val_codebook_perplexity")[11] > 1

    stage2 = tmp_path / "mcm"
    run(
        pretrain_command(
            MCM,
            split_shards,
            str(stage2 / "run"),
            stage2 / "keys",
            f"tokenizer.checkpoint={on / 'run'}",
            "trainer.max_steps=4",
            "trainer.log_every=2",
            "checkpoint.every_n_steps=4",
            "eval.every_n_steps=2",
        )
    )
    metrics = str(stage2 / "run" / "metrics.csv")
    assert sorted(logged(metrics, "val_loss")) == [1, 3]
    accuracy = logged(metrics, "val_masked_code_accuracy")
    assert sorted(accuracy) == [1, 3] and all(0 < a < 1 for a in accuracy.values())
