"""`eegfm probe`: frozen-encoder features of labelled task shards, a logistic regression and a k-NN, and
three baselines (random init, band power, shuffled labels) in one report."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrainrun import ENV
from taskshards import write_task_shards

from eegfm.cli import main
from eegfm.errors import DataError
from eegfm.ingest.fixtures import GENERIC_EEG
from eegfm.ingest.positions import montage_positions
from eegfm.models.features import embed_batch, token_layers
from eegfm.models.mcm import SIZES as MCM_SIZES
from eegfm.models.mcm import MaskedCodeEncoder, McmConfig
from eegfm.models.reve import SIZES, ReveEncoder
from eegfm.pretrain.export import export_encoder
from eegfm.pretrain.probe import (
    ProbeOptions,
    SplitData,
    align_channels,
    align_splits,
    classification_metrics,
    fit_and_score,
    independent_shuffle,
    mean_over_shuffles,
    run_probe,
)
from eegfm.pretrain.taskshards import labelled_batches, read_task_info

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def task_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small binary task (delta vs alpha rhythm), 6/3/3 subjects, 8 windows each."""
    return write_task_shards(tmp_path_factory.mktemp("task") / "shards")


# ---- metrics against an independent, by-hand calculation ------------------------------------------------


def test_binary_metrics_equal_a_hand_calculation() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.45, 0.9, 0.2, 0.6, 0.3, 0.05, 0.95])
    pred = (p1 > 0.5).astype(int)
    metrics = classification_metrics(y, pred, np.stack([1 - p1, p1], axis=1), 2)

    tp, fn = np.sum((y == 1) & (pred == 1)), np.sum((y == 1) & (pred == 0))
    tn, fp = np.sum((y == 0) & (pred == 0)), np.sum((y == 0) & (pred == 1))
    assert metrics["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    positives, negatives = p1[y == 1], p1[y == 0]  # AUROC: share of (positive, negative) pairs ranked right
    pairs = [(a > b) + 0.5 * (a == b) for a in positives for b in negatives]
    assert metrics["auroc"] == pytest.approx(np.mean(pairs))
    ranked = y[np.argsort(-p1)]  # average precision: mean of the precision at each positive's rank
    precision_at_hits = [ranked[: i + 1].mean() for i in range(len(ranked)) if ranked[i] == 1]
    assert metrics["auc_pr"] == pytest.approx(np.mean(precision_at_hits))
    assert set(metrics) == {"balanced_accuracy", "auroc", "auc_pr"}


def test_multiclass_metrics_equal_a_hand_calculation() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1])
    pred = np.array([0, 1, 0, 1, 1, 2, 1, 2, 0, 2, 2, 1, 0, 1])
    metrics = classification_metrics(y, pred, np.eye(3)[pred], 3)

    confusion = np.zeros((3, 3))
    for t, p in zip(y, pred, strict=True):
        confusion[t, p] += 1
    n = confusion.sum()
    recall = np.diag(confusion) / confusion.sum(axis=1)
    assert metrics["balanced_accuracy"] == pytest.approx(recall.mean())
    observed = np.trace(confusion) / n
    expected = (confusion.sum(axis=1) * confusion.sum(axis=0)).sum() / n**2
    assert metrics["cohen_kappa"] == pytest.approx((observed - expected) / (1 - expected))
    tp = np.diag(confusion)
    f1 = 2 * tp / (2 * tp + (confusion.sum(axis=0) - tp) + (confusion.sum(axis=1) - tp))
    assert metrics["f1_weighted"] == pytest.approx((f1 * confusion.sum(axis=1)).sum() / n)
    assert set(metrics) == {"balanced_accuracy", "cohen_kappa", "f1_weighted"}


# ---- fitting: separable features, shuffled labels ------------------------------------------------------


def _blobs(rng: np.random.Generator, n: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Features that separate the classes by construction: class c centred at 6·e_c in 6 dimensions."""
    labels = np.repeat(np.arange(classes), n // classes)
    features = rng.standard_normal((len(labels), 6))
    features[np.arange(len(labels)), labels] += 6.0
    return features, labels


@pytest.mark.parametrize("classes", [2, 3])
def test_separable_features_give_one_and_shuffled_labels_give_chance(classes: int) -> None:
    rng = np.random.default_rng(0)
    train, val, test = (_blobs(rng, n, classes) for n in (120, 60, 120))
    metrics = fit_and_score(train, val, test, classes)
    assert metrics["balanced_accuracy"] >= 0.99 and metrics["knn_balanced_accuracy"] >= 0.99

    shuffled = mean_over_shuffles(
        [fit_and_score(train, val, test, classes, shuffle_seed=[0, i]) for i in range(10)]
    )
    chance = 1 / classes
    # Measured 0.50 (2 classes) and 0.40 (3 classes); an unshuffled fit, as a broken shuffle gives, is 1.0.
    assert shuffled["balanced_accuracy"] <= chance + 0.15, shuffled
    assert shuffled["knn_balanced_accuracy"] <= chance + 0.15, shuffled


def test_independent_shuffle_keeps_counts_and_carries_no_label() -> None:
    labels = np.repeat([0, 1, 2], [40, 30, 20])
    shuffled = independent_shuffle(labels, 7)
    assert np.bincount(shuffled).tolist() == [40, 30, 20]
    for c, n_c in enumerate([40, 30, 20]):  # within each true class, every label at its overall share
        within = np.bincount(shuffled[labels == c], minlength=3)
        assert np.abs(within - n_c * np.array([40, 30, 20]) / 90).max() <= 1, (c, within)
    assert not np.array_equal(shuffled, labels)
    assert np.array_equal(independent_shuffle(labels, 7), shuffled)


# ---- reading task shards -------------------------------------------------------------------------------


def test_band_powers_of_every_split_share_one_channel_union() -> None:
    """Splits whose windows list their channels differently (another order, a channel only one has): one
    column means one channel in train and test. Per-split unions (the old code) put Fz's powers in Cz's
    column of the test split, and the band-power baseline was scored on shuffled features."""
    cz, fz, o1 = np.full((1, 5), 1.0), np.full((1, 5), 2.0), np.full((1, 5), 3.0)

    def split(powers: list[np.ndarray], channels: list[list[str]]) -> SplitData:
        return SplitData(np.zeros(len(powers)), {}, powers, channels, [])

    splits = {
        "train": split([np.vstack([cz, fz])], [["Cz", "Fz"]]),
        "test": split([np.vstack([fz, o1, cz])], [["Fz", "O1", "Cz"]]),
    }
    align_splits(splits)
    for data in splits.values():
        assert data.band_power is not None and data.band_power.shape == (1, 15)
    np.testing.assert_array_equal(splits["train"].band_power[0, :10], np.r_[cz[0], fz[0]])
    np.testing.assert_array_equal(splits["test"].band_power[0], np.r_[cz[0], fz[0], o1[0]])
    # The absent O1 takes the window's own channel mean.
    np.testing.assert_array_equal(splits["train"].band_power[0, 10:], np.full(5, 1.5))
    # Negative control: the old per-split union puts the test's first channel (Fz) in column 0.
    old = align_channels(splits["test"].powers, splits["test"].channels)
    assert not np.array_equal(old[0, :5], cz[0])


def test_labelled_windows_read_back_with_their_labels(task_shards: Path) -> None:
    task = read_task_info(str(task_shards))
    assert (task.name, task.classes) == ("rhythm", ("delta", "alpha"))
    batches = list(labelled_batches(str(task_shards), "test", task, clip=15.0, batch_windows=10))
    labels = np.concatenate([b.labels for b in batches])
    assert len(labels) == 24 and np.bincount(labels).tolist() == [12, 12]
    assert task.class_counts["test"] == {"delta": 12, "alpha": 12}
    # The label follows the physiology: alpha windows have more 8–13 Hz power than delta windows.
    eeg = torch.cat([b.eeg for b in batches]).numpy()
    power = np.abs(np.fft.rfft(eeg, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(eeg.shape[-1], 1 / 200)
    alpha_share = power[..., (freqs >= 8) & (freqs < 13)].sum(-1).mean(-1) / power.sum(-1).mean(-1)
    assert alpha_share[labels == 1].min() > alpha_share[labels == 0].max()


def test_a_manifest_without_classes_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    shards = write_task_shards(tmp_path / "shards", subjects={"train": 1, "val": 1, "test": 1})
    manifest = json.loads((shards / "manifest.json").read_text())
    del manifest["classes"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert main(["probe", "--checkpoint", str(tmp_path), "--task-shards", str(shards)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(shards / "manifest.json") in error and "eegfm shards --task" in error


def test_samples_without_the_tasks_label_are_one_line_naming_the_sample(tmp_path: Path) -> None:
    shards = write_task_shards(tmp_path / "shards", subjects={"train": 1, "val": 1, "test": 1})
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["task"] = "sleep_stage"  # the samples say task "rhythm": none has a label of this task
    (shards / "manifest.json").write_text(json.dumps(manifest))
    task = read_task_info(str(shards))
    with pytest.raises(
        DataError,
        match=r"synthtask-train-0000-000000\.tar @ byte 0 \(sample s000_task-.*"
        r"eegfm shards --task",
    ):
        next(labelled_batches(str(shards), "train", task, clip=15.0))


def test_a_tokenizer_checkpoint_is_refused_in_one_line(tmp_path: Path, task_shards: Path, capsys) -> None:
    checkpoint = tmp_path / "checkpoints" / "step=00000010.ckpt"
    checkpoint.parent.mkdir()
    torch.save({"hyper_parameters": {"tokenizer": {}, "optim": {}}, "state_dict": {}}, checkpoint)
    assert main(["probe", "--checkpoint", str(tmp_path), "--task-shards", str(task_shards)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(checkpoint) in error and "supports REVE masked-autoencoder" in error


# ---- features: both encoders, both poolings ------------------------------------------------------------


def _window_batch() -> tuple[torch.Tensor, torch.Tensor]:
    table = montage_positions("standard_1005")
    positions = torch.tensor([table[c] for c in GENERIC_EEG], dtype=torch.float32)
    return torch.randn(
        3, len(GENERIC_EEG), 2000, generator=torch.Generator().manual_seed(0)
    ), positions.expand(3, -1, -1)


def test_layer_features_are_the_encoders_own_outputs() -> None:
    eeg, positions = _window_batch()
    torch.manual_seed(0)
    reve = ReveEncoder(SIZES["reve_tiny"]).eval()
    mcm = MaskedCodeEncoder(McmConfig(**MCM_SIZES["labram_tiny"])).eval()
    with torch.no_grad():
        for encoder, out in ((reve, reve(eeg, positions).flatten(1, 2)), (mcm, mcm(eeg, positions))):
            layers = token_layers(encoder, eeg, positions, "all")
            assert len(layers) == 2  # both tiny encoders have 2 blocks
            torch.testing.assert_close(layers[-1], out)
            torch.testing.assert_close(token_layers(encoder, eeg, positions, "last")[0], out)
            pooled = embed_batch(encoder, eeg, positions, pooling="mean", layers="all")
            torch.testing.assert_close(pooled[:, -out.shape[-1] :], out.mean(dim=1))
            assert embed_batch(encoder, eeg, positions, pooling="attention", layers="all").shape == (
                3,
                2 * out.shape[1],
                out.shape[-1],
            )


def test_masked_code_encoder_probed_with_attention_pooling(tmp_path: Path, task_shards: Path) -> None:
    torch.manual_seed(0)
    export_encoder(MaskedCodeEncoder(McmConfig(**MCM_SIZES["labram_tiny"])), str(tmp_path / "mcm"))
    options = ProbeOptions(pooling="attention", layers="all", attention_steps=40, shuffles=2)
    report = run_probe(str(tmp_path / "mcm"), str(task_shards), str(tmp_path / "out"), options)
    assert report["step"] is None and report["windows"] == {"train": 48, "val": 24, "test": 24}
    assert report["baselines"]["band_power"]["balanced_accuracy"] >= 0.95  # separable by construction
    written = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert set(written["metrics"]) >= {"balanced_accuracy", "auroc", "auc_pr", "knn_balanced_accuracy"}
    assert set(written["baselines"]) == {"random_init", "band_power", "shuffled_labels"}


# ---- the command, end to end on a briefly pretrained tiny MAE ------------------------------------------


def _pretrain(shards: Path, run: Path, steps: int) -> None:
    command = [
        sys.executable,
        "-m",
        "eegfm.cli",
        "pretrain",
        "--config",
        str(REPO / "configs" / "pretrain" / "reve_tiny.yaml"),
        f"data.shards=[{shards}]",
        f"run.dir={run}",
        "logging.tensorboard=false",
        f"trainer.max_steps={steps}",
        "data.num_workers=0",
        "checkpoint.every_n_steps=1000",
    ]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _probe(run: Path, shards: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "eegfm.cli", "probe", "--checkpoint", str(run), "--task-shards"]
    done = subprocess.run(
        [*command, str(shards), "--out", str(out), *overrides], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A tiny MAE (reve_tiny) pretrained for 60 steps on the unlabelled windows of a binary rhythm task
    (8/4/6 subjects, 12 windows each), and `eegfm probe` of it: (shards, probe folder, its output)."""
    base = tmp_path_factory.mktemp("probed")
    shards = write_task_shards(
        base / "shards", subjects={"train": 8, "val": 4, "test": 6}, windows_per_class=6, seed=1
    )
    _pretrain(shards, base / "run", 60)
    return shards, base / "probe", _probe(base / "run", shards, base / "probe")


@pytest.mark.slow
def test_probe_report_table_and_determinism(probed: tuple[Path, Path, subprocess.CompletedProcess]) -> None:
    shards, out, done = probed
    again = out.parent / "again"
    _probe(out.parent / "run", shards, again)
    assert (out / "probe.json").read_bytes() == (again / "probe.json").read_bytes()

    report = json.loads((out / "probe.json").read_text())
    assert report["task"] == "rhythm" and report["step"] == 60
    assert report["checkpoint"] == str(out.parent / "run" / "checkpoints" / "step=00000060.ckpt")
    assert report["windows"] == {"train": 96, "val": 48, "test": 72}
    for entry in (report["metrics"], *report["baselines"].values()):
        assert {"balanced_accuracy", "auroc", "auc_pr", "knn_balanced_accuracy"} <= set(entry)
    assert report["baselines"]["band_power"]["balanced_accuracy"] >= 0.95  # separable by construction
    # Chance is 0.5: measured 0.548 over 20 shuffles; without a shuffle (a broken one) it is ~1.0.
    assert report["baselines"]["shuffled_labels"]["balanced_accuracy"] <= 0.7
    rows = {"encoder": report["metrics"], **report["baselines"]}
    accuracies = ", ".join(f"{k} {v['balanced_accuracy']:.3f}" for k, v in rows.items())
    assert done.stdout.strip().splitlines()[-1] == f"rhythm step 60: balanced accuracy {accuracies}"
    assert re.search(r"^random_init\s", done.stdout, re.M)


@pytest.mark.slow
def test_pretraining_beats_random_init(probed: tuple[Path, Path, subprocess.CompletedProcess]) -> None:
    report = json.loads((probed[1] / "probe.json").read_text())
    encoder, random_init = report["metrics"], report["baselines"]["random_init"]
    # Measured: balanced accuracy 1.000 vs 0.875 (+0.125; +0.111 when pretrained with seed 1), AUROC 1.000 vs
    # 0.926, k-NN 0.986 vs 0.778.
    assert encoder["balanced_accuracy"] >= random_init["balanced_accuracy"] + 0.06, (encoder, random_init)
    assert encoder["auroc"] > random_init["auroc"], (encoder, random_init)


@pytest.mark.slow
def test_watch_probes_each_new_checkpoint_once_and_stops_at_the_last(
    probed: tuple[Path, Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """A watcher started on a run with one checkpoint probes it, then each checkpoint that appears while
    it watches, and exits after the run's final step (`trainer.max_steps` = 60); a second watcher finds
    nothing new and leaves probes.csv as it was. (The checkpoints are copies of the fixture's step-60
    checkpoint under other step names: the watcher is what is tested, not the encoder.)"""
    import shutil
    import time

    shards, out, _ = probed
    source, run = out.parent / "run", tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(source / "config.yaml", run / "config.yaml")

    def appear(step: int) -> None:
        shutil.copy(
            source / "checkpoints" / "step=00000060.ckpt", run / "checkpoints" / f"step={step:08d}.ckpt"
        )

    def probed_steps() -> list[int]:
        csv_path = run / "eval" / "probes.csv"
        if not csv_path.exists():
            return []
        with open(csv_path) as f:
            return sorted({int(r["step"]) for r in csv.DictReader(f)})

    command = [sys.executable, "-m", "eegfm.cli", "probe", "--watch", str(run), "--task-shards", str(shards)]
    appear(20)
    watcher = subprocess.Popen([*command, "--poll", "0.2"], env=ENV, stdout=subprocess.PIPE, text=True)
    for step, then in ((20, 40), (40, 60)):
        deadline = time.monotonic() + 120
        while step not in probed_steps() and time.monotonic() < deadline and watcher.poll() is None:
            time.sleep(0.2)
        assert probed_steps()[-1] == step, probed_steps()
        appear(then)
    assert watcher.wait(120) == 0
    assert watcher.stdout.read().strip().splitlines()[-1].startswith("3 checkpoint probes")

    with open(run / "eval" / "probes.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["task"], r["step"], r["model"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # each (checkpoint, model, metric) once
    assert {(r["step"], r["model"]) for r in rows if r["metric"] == "balanced_accuracy"} == {
        (str(s), m) for s in (20, 40, 60) for m in ("encoder", "random_init", "band_power", "shuffled_labels")
    }
    assert (run / "eval" / "probes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (run / "eval" / "probes.csv").read_bytes()
    again = subprocess.run([*command, "--once"], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.startswith("0 checkpoint probes"), again.stderr[-2000:]
    assert (run / "eval" / "probes.csv").read_bytes() == before
