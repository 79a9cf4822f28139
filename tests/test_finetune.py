"""`eegfm finetune`: lp, ft (layer-wise lr decay) and lp+ft on labelled task shards; early stopping on val
balanced accuracy, test metrics of the best val epoch, seeds as mean ± std, resume, launch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pretrainrun import ENV, kill_once_saved
from taskshards import write_task_shards

from eegfm.cli import main
from eegfm.config import typed
from eegfm.models.heads import ClassificationHead
from eegfm.models.mcm import SIZES as MCM_SIZES
from eegfm.models.mcm import MaskedCodeEncoder, McmConfig
from eegfm.models.reve import SIZES, ReveEncoder
from eegfm.pretrain.checkpoints import list_checkpoints, load_state
from eegfm.pretrain.export import export_encoder, load_encoder
from eegfm.pretrain.finetune import TaskDataModule, param_groups
from eegfm.pretrain.finetune_config import FinetuneConfig, FullFinetunePhase
from eegfm.pretrain.finetune_run import run_finetune
from eegfm.pretrain.taskshards import load_split, read_task_info

REPO = Path(__file__).resolve().parent.parent
# The lp recipe the synthetic rhythm task is learnt with (6 steps of 8 windows per epoch).
LP = ["lp.lr=3e-2", "lp.warmup_epochs=0", "lp.epochs=20", "lp.patience=3", "task.batch_windows=8"]


@pytest.fixture(scope="module")
def task_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary task (delta vs alpha rhythm), 6/3/3 subjects, 8 windows each: 48/24/24 windows."""
    return write_task_shards(tmp_path_factory.mktemp("task") / "shards")


@pytest.fixture(scope="module")
def reve_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny REVE encoder (random weights, seed 0) as `eegfm export` writes it."""
    out = tmp_path_factory.mktemp("reve") / "encoder"
    torch.manual_seed(0)
    export_encoder(ReveEncoder(SIZES["reve_tiny"]), str(out))
    return out


def _config(encoder: Path, shards: Path, run: Path, *overrides: str) -> FinetuneConfig:
    raw = {"encoder": {"checkpoint": str(encoder)}, "task": {"shards": str(shards)}, "run": {"dir": str(run)}}
    return typed(FinetuneConfig, raw, ["trainer.accelerator=cpu", *overrides])


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _newest_state(folder: Path) -> dict:
    return load_state(list_checkpoints(str(folder))[-1])


# ---- lp: beats the majority class; early stopping; seeds; determinism ---------------------------------


@pytest.fixture(scope="module")
def lp_runs(
    tmp_path_factory: pytest.TempPathFactory, task_shards: Path, reve_export: Path
) -> tuple[Path, Path]:
    """`eegfm finetune --mode lp --seeds 0,1` twice, into two run directories."""
    base = tmp_path_factory.mktemp("lp")
    for name in ("a", "b"):
        command = ["finetune", "--checkpoint", str(reve_export), "--task-shards", str(task_shards)]
        command += [
            "--mode",
            "lp",
            "--seeds",
            "0,1",
            f"run.dir={base / name}",
            "trainer.accelerator=cpu",
            *LP,
        ]
        assert main(command) == 0
    return base / "a", base / "b"


@pytest.mark.slow
def test_lp_beats_the_majority_class(lp_runs: tuple[Path, Path]) -> None:
    report = json.loads((lp_runs[0] / "finetune.json").read_text())
    assert report["mode"] == "lp" and report["windows"] == {"train": 48, "val": 24, "test": 24}
    # The majority class (the splits are balanced) has a balanced accuracy of 0.5. Measured: test balanced
    # accuracy 1.000 for both seeds at their best val epoch (3), i.e. +0.50 over it; asserted: +0.25.
    assert report["test"]["balanced_accuracy"]["mean"] >= 0.75, report["test"]
    for result in report["per_seed"].values():
        assert result["test"]["balanced_accuracy"] >= 0.7, result


@pytest.mark.slow
def test_lp_leaves_the_encoder_as_it_was(lp_runs: tuple[Path, Path], reve_export: Path) -> None:
    state = _newest_state(lp_runs[0] / "seed=0" / "lp")
    pretrained = load_encoder(str(reve_export)).state_dict()
    for name, tensor in pretrained.items():
        torch.testing.assert_close(state["state_dict"][f"encoder.{name}"], tensor, rtol=0, atol=0)
    trained = {n for g in state["optimizer_states"][0]["param_groups"] for n in g["params"]}
    head = ClassificationHead("attention", 64, 2)
    assert len(trained) == len(list(head.parameters()))  # only the head's parameters are optimised


@pytest.mark.slow
def test_early_stopping_reports_the_best_val_epochs_test_metrics(lp_runs: tuple[Path, Path]) -> None:
    report = json.loads((lp_runs[0] / "finetune.json").read_text())
    for seed in ("0", "1"):
        rows = _rows(lp_runs[0] / f"seed={seed}" / "lp" / "metrics.csv")
        assert [r["epoch"] for r in rows] == list(range(len(rows)))
        val = [r["val_balanced_accuracy"] for r in rows]
        best = int(np.argmax(val))  # the first epoch with the highest val balanced accuracy
        result = report["per_seed"][seed]
        assert result["best_epoch"] == best and result["epochs"] == len(rows)
        # Patience 3 stopped the run 3 epochs after its best one, before the 20 it was allowed: the last
        # epoch is not the best, and its test metrics differ from those reported (measured: best epoch 3
        # of 0–6 for both seeds; test balanced accuracy 1.0 at both, the test loss lower at the last).
        assert len(rows) < 20 and len(rows) - 1 == best + 3, val
        assert rows[-1]["test_loss"] != rows[best]["test_loss"]
        for metric, value in result["test"].items():
            assert value == pytest.approx(rows[best][f"test_{metric}"], rel=1e-12), metric
        assert result["val"]["balanced_accuracy"] == pytest.approx(val[best], rel=1e-12)


@pytest.mark.slow
def test_seeds_report_numpys_mean_and_std(lp_runs: tuple[Path, Path]) -> None:
    report = json.loads((lp_runs[0] / "finetune.json").read_text())
    assert report["seeds"] == [0, 1]
    per_seed = [report["per_seed"][s] for s in ("0", "1")]
    assert per_seed[0]["test"] != per_seed[1]["test"]  # two seeds, two runs
    for split in ("val", "test"):
        assert set(report[split]) == {"loss", "balanced_accuracy", "auroc", "auc_pr"}
        for metric, summary in report[split].items():
            values = [r[split][metric] for r in per_seed]
            assert summary == {"mean": np.mean(values), "std": np.std(values)}


@pytest.mark.slow
def test_the_same_seeds_give_the_same_report(lp_runs: tuple[Path, Path]) -> None:
    first, second = ((run / "finetune.json").read_bytes() for run in lp_runs)
    assert first == second
    for seed in ("0", "1"):
        metrics = [(run / f"seed={seed}" / "lp" / "metrics.csv").read_bytes() for run in lp_runs]
        assert metrics[0] == metrics[1]


# ---- ft: every encoder parameter trained, learning rates decayed by layer -----------------------------


def test_layer_decay_groups_follow_the_depth_exactly() -> None:
    torch.manual_seed(0)
    encoder = ReveEncoder(SIZES["reve_tiny"])  # 2 blocks
    head = ClassificationHead("attention", 64, 2)
    phase = FullFinetunePhase(lr=1e-3, layer_decay=0.5)
    groups = param_groups(encoder, head, phase)
    by_name = {name: g for g in groups for name in g["names"]}
    names = {f"encoder.{n}" for n, _ in encoder.named_parameters()} | {
        f"head.{n}" for n, _ in head.named_parameters()
    }
    assert set(by_name) == names and sum(len(g["names"]) for g in groups) == len(names)  # each once
    expected = {
        "head.linear.weight": 1e-3,
        "head.pool.query": 1e-3,
        "encoder.transformer.layers.1.0.to_qkv.weight": 1e-3 * 0.5,
        "encoder.transformer.layers.1.1.net.0.weight": 1e-3 * 0.5,
        "encoder.transformer.layers.0.0.to_qkv.weight": 1e-3 * 0.25,
        "encoder.to_patch_embedding.0.weight": 1e-3 * 0.125,
        "encoder.to_patch_embedding.0.bias": 1e-3 * 0.125,
    }
    for name, lr in expected.items():
        assert by_name[name]["lr"] == pytest.approx(lr, rel=1e-12), name
    assert by_name["encoder.to_patch_embedding.0.weight"]["weight_decay"] == phase.weight_decay
    assert by_name["encoder.to_patch_embedding.0.bias"]["weight_decay"] == 0.0
    assert by_name["head.pool.query"]["weight_decay"] == 0.0


def test_ft_trains_every_encoder_parameter_with_decayed_rates(
    tmp_path: Path, task_shards: Path, reve_export: Path
) -> None:
    cfg = _config(reve_export, task_shards, tmp_path / "run", "mode=ft", "ft.epochs=1", "ft.layer_decay=0.5")
    cfg.ft.lr = 1e-3
    run_finetune(cfg)
    state = _newest_state(tmp_path / "run" / "seed=0" / "ft")
    pretrained = load_encoder(str(reve_export)).state_dict()
    unchanged = [n for n, t in pretrained.items() if torch.equal(state["state_dict"][f"encoder.{n}"], t)]
    assert unchanged == []  # every encoder tensor moved
    groups = state["optimizer_states"][0]["param_groups"]
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(pretrained) + len(list(ClassificationHead("attention", 64, 2).parameters()))
    top = max(g["layer"] for g in groups)
    assert top == 3  # reve_tiny: embeddings 0, blocks 1 and 2, head 3
    for g in groups:
        assert g["initial_lr"] == pytest.approx(1e-3 * 0.5 ** (top - g["layer"]), rel=1e-12), g["layer"]
    assert {g["layer"] for g in groups} == {0, 1, 2, 3}


def test_a_masked_code_encoder_fine_tunes(tmp_path: Path, task_shards: Path) -> None:
    torch.manual_seed(0)
    export_encoder(MaskedCodeEncoder(McmConfig(**MCM_SIZES["labram_tiny"])), str(tmp_path / "mcm"))
    cfg = _config(
        tmp_path / "mcm", task_shards, tmp_path / "run", "mode=ft", "ft.epochs=1", "head.kind=flatten"
    )
    report = run_finetune(cfg)
    assert report["per_seed"]["0"]["epochs"] == 1
    groups = _newest_state(tmp_path / "run" / "seed=0" / "ft")["optimizer_states"][0]["param_groups"]
    decay = cfg.ft.layer_decay
    for g in groups:  # the final norm sits with the head (layer depth + 1 = 3)
        assert g["initial_lr"] == pytest.approx(cfg.ft.lr * decay ** (3 - g["layer"]), rel=1e-12)


# ---- lp+ft: ft starts from lp's best head --------------------------------------------------------------


def test_lp_then_ft_starts_from_the_lp_head(tmp_path: Path, task_shards: Path, reve_export: Path) -> None:
    # ft's learning rate is so small that after its one epoch its head is still the one it started from.
    cfg = _config(
        reve_export,
        task_shards,
        tmp_path / "run",
        "mode=lp+ft",
        *LP,
        "lp.epochs=4",
        "ft.epochs=1",
        "ft.lr=1e-12",
    )
    report = run_finetune(cfg)
    lp = _newest_state(tmp_path / "run" / "seed=0" / "lp")["finetune"]
    ft = _newest_state(tmp_path / "run" / "seed=0" / "ft")["state_dict"]
    fresh = ClassificationHead("attention", 64, 2, generator=torch.Generator().manual_seed(0)).state_dict()
    for name, tensor in lp["head"].items():
        torch.testing.assert_close(ft[f"head.{name}"], tensor, rtol=0, atol=1e-9)
        if name == "linear.weight":
            assert not torch.allclose(tensor, fresh[name], atol=1e-3)  # lp did train the head
    assert set(report["per_seed"]["0"]["phases"]) == {"lp", "ft"}
    assert report["per_seed"]["0"]["test"] == report["per_seed"]["0"]["phases"]["ft"]["test"]


# ---- errors, resume, launch ----------------------------------------------------------------------------


def test_a_tokenizer_checkpoint_is_refused_in_one_line(tmp_path: Path, task_shards: Path, capsys) -> None:
    checkpoint = tmp_path / "checkpoints" / "step=00000010.ckpt"
    checkpoint.parent.mkdir()
    torch.save({"hyper_parameters": {"tokenizer": {}, "optim": {}}, "state_dict": {}}, checkpoint)
    command = ["finetune", "--checkpoint", str(tmp_path), "--task-shards", str(task_shards)]
    assert main([*command, f"run.dir={tmp_path / 'run'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(checkpoint) in error and "a tokenizer checkpoint" in error
    assert "eegfm finetune supports REVE masked-autoencoder" in error


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, task_shards: Path, capsys) -> None:
    for bad, expected in (
        ("ft.layer_decy=0.5", "did you mean ft.layer_decay?"),
        ("ft.layer_decay=1.5", "ft.layer_decay: must be in (0, 1]"),
        ("head.kind=mean", "head.kind: one of attention, flatten"),
    ):
        assert main(["finetune", "--task-shards", str(task_shards), bad]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and expected in error, error
    assert main(["finetune", "--task-shards", str(task_shards), "--mode", "probe"]) == 2
    assert "mode: one of lp, ft, lp+ft" in capsys.readouterr().err
    assert main(["finetune", "--task-shards", str(task_shards)]) == 2
    assert "encoder.checkpoint: not set; pass --checkpoint" in capsys.readouterr().err


def _finetune_command(encoder: Path, shards: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "eegfm.cli",
        "finetune",
        "--checkpoint",
        str(encoder),
        "--task-shards",
        str(shards),
        "--mode",
        "lp",
        f"run.dir={run}",
        "trainer.accelerator=cpu",
        "checkpoint.keep=-1",
        *LP,
        *extra,
    ]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_report(
    tmp_path: Path, task_shards: Path, reve_export: Path, capsys
) -> None:
    whole = _finetune_command(reve_export, task_shards, tmp_path / "whole")
    done = subprocess.run(whole, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _finetune_command(reve_export, task_shards, tmp_path / "killed")
    kill_once_saved(
        killed, ENV, str(tmp_path / "killed" / "seed=0" / "lp" / "checkpoints" / "step=00000012.ckpt")
    )
    assert not (tmp_path / "killed" / "finetune.json").exists()
    assert main(killed[3:]) == 2  # the same command without --resume is refused, never restarted
    assert "already holds a run (config.yaml): pass --resume auto" in capsys.readouterr().err
    resumed = subprocess.run([*killed, "--resume", "auto"], env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "killed" / "finetune.json").read_bytes() == (
        tmp_path / "whole" / "finetune.json"
    ).read_bytes()
    metrics = "seed=0/lp/metrics.csv"
    assert (tmp_path / "killed" / metrics).read_bytes() == (tmp_path / "whole" / metrics).read_bytes()


def test_slurm_submits_eegfm_finetune(tmp_path: Path, capsys) -> None:
    overrides = [
        "pretrain.command=finetune",
        "pretrain.config=configs/finetune/base.yaml",
        "pretrain.overrides=[encoder.checkpoint=runs/base,task.shards=shards/tuab_task,mode=ft,run.dir=runs/ft]",
    ]
    config = str(REPO / "configs" / "launch" / "slurm_cpu_2node.yaml")
    assert main(["submit", "slurm", "--config", config, "--dry-run", *overrides]) == 0
    script = capsys.readouterr().out
    line = next(x for x in script.splitlines() if x.startswith("srun "))
    words = line.split()
    assert words[2:7] == ["eegfm", "finetune", "--config", "configs/finetune/base.yaml", "--resume"], line
    assert words[-2:] == ["trainer.num_nodes=2", "trainer.devices=1"], line
    # The rendered command line is one `eegfm finetune` accepts (checked without running it).
    argv = [*words[3:], "--print-config"]
    argv[2] = str(REPO / argv[2])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mode: ft" in printed and "num_nodes: 2" in printed and "checkpoint: runs/base" in printed


@pytest.mark.slow
def test_a_pretraining_run_directory_fine_tunes(tmp_path: Path, task_shards: Path) -> None:
    pretrain = [sys.executable, "-m", "eegfm.cli", "pretrain", "--config"]
    pretrain += [str(REPO / "configs" / "pretrain" / "reve_tiny.yaml"), f"data.shards=[{task_shards}]"]
    pretrain += [f"run.dir={tmp_path / 'mae'}", "logging.tensorboard=false", "trainer.max_steps=2"]
    done = subprocess.run([*pretrain, "data.num_workers=0"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = run_finetune(_config(tmp_path / "mae", task_shards, tmp_path / "run", "lp.epochs=1"))
    assert report["step"] == 2
    assert report["checkpoint"] == str(tmp_path / "mae" / "checkpoints" / "step=00000002.ckpt")
    assert report["per_seed"]["0"]["epochs"] == 1


# ---- several ranks -------------------------------------------------------------------------------------


def test_every_rank_runs_as_many_eval_forwards_and_each_window_counts_once(task_shards: Path) -> None:
    """3 val batches over 2 ranks: rank 1 gets a repeat, not counted, so both run 2 forwards (FSDP gathers
    parameters in every forward: a rank with one fewer leaves the others on an unmatched collective)."""
    task = read_task_info(str(task_shards))
    tables = {split: load_split(str(task_shards), split) for split in ("train", "val", "test")}
    counted_rows: list[int] = []
    forwards = []
    for rank in range(2):
        module = TaskDataModule(
            str(task_shards), task, tables, batch_windows=8, clip=15.0, seed=0, num_workers=0
        )
        module.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)
        val_loader, _ = module.val_dataloader()
        batches = list(val_loader)
        forwards.append(len(batches))
        for batch, rows in zip(batches, val_loader.dataset.batches, strict=True):
            if batch["counted"]:
                counted_rows.extend(rows.tolist())
    assert forwards == [2, 2]
    assert sorted(counted_rows) == list(range(len(tables["val"])))  # every val window once, no repeat


@pytest.mark.slow
def test_lp_runs_on_two_fsdp_ranks(tmp_path: Path, task_shards: Path, reve_export: Path) -> None:
    """Two processes under FSDP (gloo): the launch of rank 1 after rank 0 wrote config.yaml, clipping
    under FSDP and the eval forwards in step. Each of these stopped the run before (rank 1 refused the run
    directory; Lightning refuses norm clipping under FSDP; the uneven eval forwards hung a collective)."""
    command = _finetune_command(reve_export, task_shards, tmp_path / "run", "lp.epochs=2")
    done = subprocess.run(
        [*command, "trainer.devices=2", "trainer.strategy=fsdp"], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert report["per_seed"]["0"]["epochs"] == 2
    assert report["windows"] == {"train": 48, "val": 24, "test": 24}
