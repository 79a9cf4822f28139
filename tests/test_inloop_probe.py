"""The in-loop probe: `eval.tasks` probed every `eval.every_n_steps` on a fixed, bounded set of windows,
logged as `probe/<task>/…` columns at the right steps, the same on any number of ranks, equal to
`eegfm probe` of the same weights, and never disturbing training (on/off and killed-and-resumed runs train
to the same bits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
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
from taskshards import write_task_shards

from eegfm.config import documented_yaml
from eegfm.errors import ConfigError
from eegfm.pretrain.config import ProbeTask, load_pretrain_config
from eegfm.pretrain.inloop_probe import load_probe_set, probe_callback, split_quotas
from eegfm.pretrain.metrics import read_metrics

CONFIGS = REPO / "configs" / "pretrain"
MAE = str(CONFIGS / "reve_tiny.yaml")
TOKENIZER = str(CONFIGS / "labram_vqnsp_tiny.yaml")


@pytest.fixture(scope="module")
def task_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary rhythm task, 6/3/3 subjects of 8 windows: 48/24/24 windows."""
    return write_task_shards(tmp_path_factory.mktemp("task") / "shards")


def _tasks(shards: Path) -> str:
    return f"eval.tasks=[{{name: rhythm, shards: {shards}}}]"


def test_probe_settings_are_typed_checked_and_documented(task_shards: Path) -> None:
    with pytest.raises(ConfigError, match=r"eval\.tasks: probes run every eval\.every_n_steps"):
        load_pretrain_config(MAE, [_tasks(task_shards)])
    twice = f"eval.tasks=[{{name: a, shards: {task_shards}}}, {{name: a, shards: {task_shards}}}]"
    with pytest.raises(ConfigError, match=r"eval\.tasks\[1\]\.name: 'a' appears twice"):
        load_pretrain_config(MAE, ["eval.every_n_steps=2", twice])
    with pytest.raises(ConfigError, match=r"eval\.max_windows"):
        load_pretrain_config(MAE, ["eval.max_windows=2"])
    tokenizer = load_pretrain_config(TOKENIZER, ["eval.every_n_steps=2", _tasks(task_shards)])
    with pytest.raises(ConfigError, match="a tokenizer has no encoder to probe"):
        probe_callback(tokenizer)
    printed = documented_yaml(load_pretrain_config(MAE))
    assert "  tasks: []  # Labelled tasks probed" in printed
    assert "  max_windows: 2048  # Windows of each task" in printed


def test_missing_task_shards_stop_the_run_in_one_line(split_shards: Path, tmp_path: Path) -> None:
    command = pretrain_command(
        MAE,
        split_shards,
        str(tmp_path / "run"),
        tmp_path / "keys",
        "eval.every_n_steps=2",
        _tasks(tmp_path / "nowhere"),
    )
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("eegfm ")]
    assert "eval.tasks[0].shards (rhythm)" in line and f"{tmp_path / 'nowhere'}/manifest.json" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_windows_are_fixed_bounded_and_shared_out_once(task_shards: Path) -> None:
    assert split_quotas({"train": 48, "val": 24, "test": 24}, 60) == {"train": 30, "val": 15, "test": 15}
    assert split_quotas({"train": 50, "val": 3, "test": 1}, 10) == {"train": 9, "val": 2, "test": 1}
    assert split_quotas({"train": 5, "val": 3, "test": 1}, 10) == {"train": 5, "val": 3, "test": 1}
    task = ProbeTask("rhythm", str(task_shards))
    some = load_probe_set(task, 60, 0, 15.0, "eval.tasks[0].shards")
    again = load_probe_set(task, 60, 0, 15.0, "eval.tasks[0].shards")
    other = load_probe_set(task, 60, 1, 15.0, "eval.tasks[0].shards")
    assert some.windows == 60
    assert [(s, b.tolist()) for s, b in some.batches] == [(s, b.tolist()) for s, b in again.batches]
    assert [(s, b.tolist()) for s, b in some.batches] != [(s, b.tolist()) for s, b in other.batches]
    for split, count in (("train", 30), ("val", 15), ("test", 15)):
        rows = np.concatenate([b for s, b in some.batches if s == split])
        assert len(rows) == len(set(rows.tolist())) == count and rows.max() < len(some.tables[split])
    whole = load_probe_set(task, 2048, 0, 15.0, "eval.tasks[0].shards")
    assert whole.windows == 96
    for world in (1, 2, 3, 7):
        slots = [whole.rank_slots(rank, world) for rank in range(world)]
        assert len({len(s) for s in slots}) == 1  # every rank runs as many forwards
        counted = sorted(k for s in slots for k, is_counted in s if is_counted)
        assert counted == list(range(len(whole.batches)))  # each batch embedded once


def _mae(train: Path, base: Path, *overrides: str) -> list[str]:
    """12 steps of 2 micro-batches, a row every 2 steps, a checkpoint every 4, val_loss every 4."""
    return pretrain_command(
        MAE,
        train,
        str(base / "run"),
        base / "keys",
        "trainer.max_steps=12",
        "trainer.accumulate=2",
        "trainer.log_every=2",
        "checkpoint.every_n_steps=4",
        "eval.every_n_steps=4",
        *overrides,
    )


def _probing(task_shards: Path) -> list[str]:
    return [_tasks(task_shards), "eval.max_windows=60", "eval.probe_shuffles=2"]


def probe_columns(metrics: str) -> dict[str, dict[int, float]]:
    """{column: {step: value}} of every probe/… column but the timings."""
    with fsspec.open(metrics, "r") as f:
        header = f.readline().strip().split(",")
    names = [c for c in header if c.startswith("probe/") and not c.endswith("/seconds")]
    return {name: logged(metrics, name) for name in names}


@pytest.fixture(scope="module")
def probed(split_shards: Path, task_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny MAE trained on TUEG-like windows, probed on the rhythm task every 4 steps, uninterrupted."""
    base = tmp_path_factory.mktemp("probed")
    run(_mae(split_shards, base, *_probing(task_shards)))
    return base


@pytest.mark.slow
def test_probe_columns_are_logged_at_their_steps_and_leave_training_alone(
    probed: Path, split_shards: Path, tmp_path: Path
) -> None:
    metrics = str(probed / "run" / "metrics.csv")
    columns = probe_columns(metrics)
    for name in (
        "probe/rhythm/balanced_accuracy",
        "probe/rhythm/auroc",
        "probe/rhythm/knn_balanced_accuracy",
        "probe/rhythm/random_init/balanced_accuracy",
        "probe/rhythm/band_power/balanced_accuracy",
        "probe/rhythm/shuffled_labels/balanced_accuracy",
    ):
        assert sorted(columns[name]) == [3, 7, 11], name  # after steps 4, 8, 12 (0-based rows)
    seconds = logged(metrics, "probe/rhythm/seconds")
    assert sorted(seconds) == [3, 7, 11] and all(s > 0 for s in seconds.values())
    # The fixed baselines are computed once and logged as such every time.
    assert len(set(columns["probe/rhythm/band_power/balanced_accuracy"].values())) == 1
    assert columns["probe/rhythm/band_power/balanced_accuracy"][3] >= 0.95  # separable by construction
    # The same run without probes trains on the same windows to the same bits, val_loss included.
    run(_mae(split_shards, tmp_path))
    assert probe_columns(str(tmp_path / "run" / "metrics.csv")) == {}
    assert losses(str(tmp_path / "run" / "metrics.csv")) == losses(metrics)
    assert logged(str(tmp_path / "run" / "metrics.csv"), "val_loss") == logged(metrics, "val_loss")
    assert keys_by_step(tmp_path / "keys") == keys_by_step(probed / "keys")


@pytest.mark.slow
def test_a_killed_run_with_probes_resumes_its_curves_and_probe_columns_bit_for_bit(
    probed: Path, split_shards: Path, task_shards: Path, tmp_path: Path
) -> None:
    """Killed after its step-8 checkpoint (two probes done), resumed: the train, val and probe columns of
    the uninterrupted run, to the bit (the probe at step 12 is computed by a fresh process, which
    recomputes its baselines)."""
    command = _mae(split_shards, tmp_path, *_probing(task_shards))
    assert_killed_run_resumes_exactly(command, ENV, str(tmp_path / "run"), 8, 12, tmp_path / "keys", probed)
    resumed = probe_columns(str(tmp_path / "run" / "metrics.csv"))
    assert resumed == probe_columns(str(probed / "run" / "metrics.csv"))
    assert sorted(resumed["probe/rhythm/balanced_accuracy"]) == [3, 7, 11]


_PROBE_ON_ONE_PROCESS = """
import json, sys, torch
from omegaconf import OmegaConf
from eegfm.pretrain.config import pretrain_config
from eegfm.pretrain.inloop_probe import probe_callback
from eegfm.pretrain.mae import MaePretraining
run, checkpoint = sys.argv[1:]
callback = probe_callback(pretrain_config(OmegaConf.load(f"{run}/config.yaml")))
module = MaePretraining.load_from_checkpoint(checkpoint, weights_only=True).eval()
with torch.no_grad():
    columns = callback.probe_once(callback.probes[0], module.model.encoder, device=torch.device("cpu"))
print(json.dumps({"batches": len(callback.probes[0].batches), "columns": columns}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_probe_to_the_bits_of_one(
    split_shards: Path, task_shards: Path, tmp_path: Path, strategy: str
) -> None:
    """Two ranks (gloo) embed alternate batches (3 batches of 30, 15 and 15 windows: rank 0 embeds two;
    under FSDP rank 1 runs an uncounted repeat, each forward gathering the sharded weights through the
    wrapper); the gathered probe's columns after the last step equal one process's probe of the same
    weights, to the bit."""
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
        *_probing(task_shards),
    )
    run(command)
    two = {k: v for k, v in probe_columns(str(tmp_path / "run" / "metrics.csv")).items()}
    assert all(sorted(values) == [1, 3] for values in two.values())
    checkpoint = tmp_path / "run" / "checkpoints" / "step=00000004.ckpt"
    done = run([sys.executable, "-c", _PROBE_ON_ONE_PROCESS, str(tmp_path / "run"), str(checkpoint)])
    one = json.loads(done.stdout.strip().splitlines()[-1])
    assert one["batches"] == 3
    assert {k: v for k, v in one["columns"].items()} == {name: values[3] for name, values in two.items()}


@pytest.mark.slow
def test_in_loop_probe_equals_eegfm_probe_and_pretraining_beats_random_init(tmp_path: Path) -> None:
    """The tiny MAE pretrained 60 steps on the unlabelled windows of a rhythm task (8/4/6 subjects, 12
    windows each: 216, all probed), probed in the loop at steps 30 and 60: at step 60 its columns are
    `eegfm probe`'s numbers for the step-60 checkpoint, and the encoder beats its random initialisation."""
    shards = write_task_shards(
        tmp_path / "shards", subjects={"train": 8, "val": 4, "test": 6}, windows_per_class=6, seed=1
    )
    command = [
        sys.executable,
        "-m",
        "eegfm.cli",
        "pretrain",
        "--config",
        MAE,
        f"data.shards=[{shards}]",
        f"run.dir={tmp_path / 'run'}",
        "logging.tensorboard=false",
        "trainer.max_steps=60",
        "data.num_workers=0",
        "checkpoint.every_n_steps=1000",
        "eval.every_n_steps=30",
        _tasks(shards),
        "eval.probe_shuffles=3",
    ]
    run(command)
    columns = probe_columns(str(tmp_path / "run" / "metrics.csv"))
    at_60 = {name: values[59] for name, values in columns.items()}
    probe = [sys.executable, "-m", "eegfm.cli", "probe", "--checkpoint", str(tmp_path / "run")]
    run([*probe, "--task-shards", str(shards), "--out", str(tmp_path / "probe"), "shuffles=3"])
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["windows"] == {"train": 96, "val": 48, "test": 72}
    for metric, value in report["metrics"].items():
        assert at_60[f"probe/rhythm/{metric}"] == value, metric
    for baseline, metrics in report["baselines"].items():
        for metric in ("balanced_accuracy", "auroc", "knn_balanced_accuracy"):
            assert at_60[f"probe/rhythm/{baseline}/{metric}"] == metrics[metric], (baseline, metric)
    encoder, random_init = (
        at_60["probe/rhythm/balanced_accuracy"],
        at_60["probe/rhythm/random_init/balanced_accuracy"],
    )
    print(f"in-loop probe at step 60: balanced accuracy {encoder:.3f} vs random init {random_init:.3f}")
    assert encoder >= random_init + 0.06
    assert at_60["probe/rhythm/auroc"] > at_60["probe/rhythm/random_init/auroc"]
    rows = read_metrics(str(tmp_path / "run" / "metrics.csv"))
    assert [int(r["step"]) for r in rows if r.get("probe/rhythm/balanced_accuracy")] == [29, 59]
