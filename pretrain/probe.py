"""The frozen-encoder probe: how linearly (and locally) a pretrained encoder separates a labelled task.

Four separate parts, so that the in-loop probe (features embedded on every rank, gathered, the probe fit
once) reuses the same functions as `eegfm probe`:

- reading labelled windows: `pretrain/taskshards.py`;
- embedding them with an encoder: `models/features.py` (pure PyTorch, one batch at a time), driven over a
  split by `embed_windows` here;
- fitting and scoring: `fit_and_score` (numpy in, metrics out: scikit-learn's logistic regression with C
  chosen on the val split, and a k-NN), `classification_metrics`, `band_power_features`,
  `train_attention_pool` (REVE's learned pooling query, trained with a linear head);
- the command's report: `run_probe` → `probe.json`, and `format_table`.

Every number is reported beside three baselines from the same run: the same architecture with random
weights (seeded), a log band-power logistic regression, and the encoder's features with the training
labels shuffled (what chance looks like through the same procedure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eegfm.errors import ConfigError, DataError
from eegfm.models.features import LAYERS, POOLINGS, AttentionPool, embed_batch
from eegfm.models.mcm import MaskedCodeEncoder
from eegfm.models.reve import ReveEncoder
from eegfm.pretrain.taskshards import LabelledBatch, TaskInfo, labelled_batches, load_split, read_task_info
from eegfm.storage import join_url, write_json

# scikit-learn is imported where a probe is fitted: every pretraining process imports this module (for the
# in-loop probe) but few probe. At module level it cost each process's start-up 0.2-0.4 s of CPU (`import
# eegfm.pretrain.train`: 7.5-7.8 s → 7.3-7.4 s user, 2-core VM), paid by every rank of every run.
SPLITS = ("train", "val", "test")
BANDS_HZ = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
C_GRID = tuple(10.0**k for k in range(-4, 3))  # logistic regression's inverse L2 strength, chosen on val
K_GRID = (1, 3, 5, 11, 21)  # k-NN's neighbours, chosen on val
BASELINES = ("random_init", "band_power", "shuffled_labels")
ENCODER = "encoder"


@dataclass(frozen=True)
class ProbeOptions:
    """How `eegfm probe` (and the in-loop probe) embeds and fits; `key=value` on the command line."""

    pooling: str = "mean"
    """`mean` of each layer's tokens, or `attention`: REVE's learned query, trained with the probe."""
    layers: str = "last"
    """`last` layer, or `all` transformer layers (mean: concatenated per layer; attention: one query)."""
    seed: int = 0
    """Seeds the random-init encoder, the label shuffles and the attention query."""
    batch_windows: int = 64
    """Windows embedded together (all of one channel count)."""
    clip: float = 15.0
    """Clip after the per-recording z-score, as in pretraining (`data.clip`)."""
    attention_steps: int = 300
    """Full-batch Adam steps that train the attention query and its linear head."""
    shuffles: int = 20
    """Label shuffles the shuffled-labels baseline averages (each fit and scored like the probe)."""
    device: str = "cpu"
    """Where the encoder runs: `cpu`, `cuda`, or `auto` (cuda when there is one)."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r}: one of {', '.join(POOLINGS)}")
        if self.layers not in LAYERS:
            raise ConfigError(f"layers={self.layers!r}: one of {', '.join(LAYERS)}")
        if min(self.batch_windows, self.attention_steps, self.shuffles) < 1 or self.clip <= 0:
            raise ConfigError("batch_windows, attention_steps and shuffles must be ≥ 1, clip > 0")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device={self.device!r}: cpu, cuda or auto")


# ---- fitting and scoring: numpy in, metrics out ---------------------------------------------------------


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, n_classes: int
) -> dict[str, float]:
    """Balanced accuracy always; AUROC and AUC-PR (average precision, positive = class 1) for a binary
    task; Cohen's kappa and the support-weighted F1 for more classes. `scores`: (n, n_classes) class
    probabilities."""
    from sklearn.metrics import (
        average_precision_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        f1_score,
        roc_auc_score,
    )

    metrics = {"balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred))}
    if n_classes == 2:
        metrics["auroc"] = float(roc_auc_score(y_true, scores[:, 1]))
        metrics["auc_pr"] = float(average_precision_score(y_true, scores[:, 1]))
    else:
        labels = np.arange(n_classes)
        metrics["cohen_kappa"] = float(cohen_kappa_score(y_true, y_pred, labels=labels))
        metrics["f1_weighted"] = float(f1_score(y_true, y_pred, labels=labels, average="weighted"))
    return metrics


def _full_scores(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba over every class of the task, also those the training split lacked."""
    scores = np.zeros((len(x), n_classes))
    scores[:, model.classes_] = model.predict_proba(x)
    return scores


def independent_shuffle(labels: np.ndarray, seed: int | list[int]) -> np.ndarray:
    """The labels permuted so that the permuted labels hold no information about the true ones: within
    every true class, each label is given as often as its overall share says (rounded), at random places.

    A plain permutation of a finite sample keeps a chance correlation with the true labels (54 % agreement
    instead of 50 %, say), and on a task whose features separate the classes a probe follows that small
    correlation to the true boundary: measured on the synthetic rhythm task, a plain permutation gave a
    shuffled-labels balanced accuracy of 0.85. Here the contingency table of (true, shuffled) is the
    independent one, so only the within-class noise is left to fit.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    remaining = counts.copy()  # shuffled labels of each class still to give
    shuffled = np.empty_like(labels)
    for c, n_c in zip(classes, counts, strict=True):
        rows = np.flatnonzero(labels == c)
        want = n_c * counts / counts.sum()
        take = np.minimum(np.floor(want).astype(int), remaining)
        for k in np.argsort(-(want - take), kind="stable"):  # largest remainders first, where labels remain
            if take.sum() >= n_c:
                break
            if take[k] < remaining[k]:
                take[k] += 1
        while take.sum() < n_c:  # rounding left a gap only other labels can fill
            take[int(np.argmax(remaining - take))] += 1
        remaining -= take
        shuffled[rng.permutation(rows)] = np.repeat(classes, take)
    return shuffled


def fit_and_score(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    *,
    shuffle_seed: int | list[int] | None = None,
) -> dict[str, float]:
    """Fit on train, choose on val, score on test: (features (n, d), labels (n,)) each.

    A logistic regression for each C of `C_GRID` (classes weighted inversely to their frequency: the
    score is balanced accuracy, and on an imbalanced train split a strongly regularised unweighted fit
    predicts the majority class for every C, a tie at chance) and a k-NN for each k of `K_GRID` on
    standardised features; the one with the best val balanced accuracy is scored on test, ties broken by
    the lower val log-loss (then the smaller C, the smaller k): when val cannot tell candidates apart by
    accuracy (a small val split), the most regularised fit, which predicts one class, no longer wins.
    Returns the logistic regression's metrics, the k-NN's as `knn_<metric>`, and what was chosen.
    `shuffle_seed`: the shuffled-labels baseline: the training labels, and the val labels C and k are
    chosen on, are shuffled (`independent_shuffle`), so that no true label but the test split's is seen.
    Choosing on the true val labels picks, among the candidates' random directions, the one whose polarity
    happens to split the classes (on the synthetic rhythm task, 10 shuffles: 0.64 with the true val labels,
    0.59 with shuffled ones, and 0.51 over 40). Deterministic.
    """
    (x_train, y_train), y_val = train, val[1]
    if shuffle_seed is not None:
        seed = [int(n) for n in np.atleast_1d(shuffle_seed)]
        y_train = independent_shuffle(y_train, seed)
        y_val = independent_shuffle(y_val, [*seed, 1])
    if len(np.unique(y_train)) < 2:
        raise DataError(
            f"the training split holds {len(np.unique(y_train))} class: a probe needs two or more"
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, log_loss
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (x_train, val[0], test[0]))
    chosen: dict[str, Any] = {}
    for name, candidates, build in (
        ("C", C_GRID, lambda c: LogisticRegression(C=c, class_weight="balanced", max_iter=5000)),
        ("k", [k for k in K_GRID if k <= len(x_train)], lambda k: KNeighborsClassifier(n_neighbors=k)),
    ):
        best, best_score = None, (-1.0, -np.inf)
        for value in candidates:
            model = build(value).fit(x_train, y_train)
            probabilities = _full_scores(model, x_val, n_classes)
            score = (
                balanced_accuracy_score(y_val, model.predict(x_val)),
                -log_loss(
                    y_val, probabilities / probabilities.sum(1, keepdims=True), labels=list(range(n_classes))
                ),
            )
            if score > best_score:
                best, best_score = (value, model), score
        chosen[name] = best
        chosen[f"val_{name}"] = best_score[0]
    (c, logistic), (k, knn) = chosen["C"], chosen["k"]
    metrics = classification_metrics(
        test[1], logistic.predict(x_test), _full_scores(logistic, x_test, n_classes), n_classes
    )
    knn_metrics = classification_metrics(
        test[1], knn.predict(x_test), _full_scores(knn, x_test, n_classes), n_classes
    )
    metrics.update({f"knn_{name}": value for name, value in knn_metrics.items()})
    metrics.update(
        C=float(c),
        k=int(k),
        val_balanced_accuracy=float(chosen["val_C"]),
        knn_val_balanced_accuracy=float(chosen["val_k"]),
    )
    return metrics


def band_power_features(eeg: np.ndarray, sfreq: float) -> np.ndarray:
    """(n, C, T) → (n, C, 5): log mean power in delta, theta, alpha, beta and gamma (`BANDS_HZ`) per
    channel, from Welch's periodogram over 2-s segments."""
    from scipy.signal import welch

    freqs, power = welch(eeg, fs=sfreq, nperseg=min(eeg.shape[-1], int(2 * sfreq)), axis=-1)
    bands = [power[..., (freqs >= lo) & (freqs < hi)].mean(axis=-1) for lo, hi in BANDS_HZ.values()]
    return np.log(np.stack(bands, axis=-1) + 1e-12)


def channel_union(channels: Iterable[list[str]]) -> dict[str, int]:
    """Channel name → column, over every window's channels, in order of first appearance."""
    names: dict[str, int] = {}
    for window_channels in channels:
        for name in window_channels:
            names.setdefault(name, len(names))
    return names


def align_channels(
    per_window: list[np.ndarray], channels: list[list[str]], names: dict[str, int] | None = None
) -> np.ndarray:
    """Per-channel features (C_i, F) of windows of any montages → one (n, U·F) matrix over the channel
    union `names` (default: these windows' own); a channel a window lacks takes its mean.

    Every split of one probe must share one `names`: a column has to mean the same channel in the
    features the regression is fitted on and in those it is scored on."""
    names = channel_union(channels) if names is None else names
    features = per_window[0].shape[-1]
    out = np.empty((len(per_window), len(names), features))
    for i, (values, window_channels) in enumerate(zip(per_window, channels, strict=True)):
        out[i] = values.mean(axis=0)
        out[i, [names[c] for c in window_channels]] = values
    return out.reshape(len(per_window), -1)


def train_attention_pool(
    tokens: list[torch.Tensor], labels: list[np.ndarray], n_classes: int, *, steps: int, seed: int
) -> AttentionPool:
    """REVE's pooling query, trained with a linear head on the frozen tokens by full-batch Adam.

    `tokens`: batches of (B, N, E) standardised tokens (N may differ between batches, as channel counts
    do); `labels`: each batch's labels. The head is discarded: the query's pooled vectors go to
    `fit_and_score` like mean-pooled ones.
    """
    generator = torch.Generator().manual_seed(seed)
    dim = tokens[0].shape[-1]
    pool = AttentionPool(dim, generator)
    head = torch.nn.Linear(dim, n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * dim**-0.5)
        head.bias.zero_()
    optimiser = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=1e-2, weight_decay=1e-4)
    targets = [torch.from_numpy(y) for y in labels]
    total = sum(len(y) for y in labels)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = sum(
            torch.nn.functional.cross_entropy(head(pool(x)), y, reduction="sum")
            for x, y in zip(tokens, targets, strict=True)
        )
        (loss / total).backward()
        optimiser.step()
    return pool.eval()


# ---- embedding a split ----------------------------------------------------------------------------------


@dataclass
class SplitData:
    """One split's windows as the probe uses them: encoder features, band powers and labels."""

    labels: np.ndarray  # (n,)
    features: dict[str, list[torch.Tensor]]  # per encoder: per batch, pooled (B, D) or tokens (B, N, E)
    powers: list[np.ndarray]  # per window, (C_i, 5) log band powers
    channels: list[list[str]]  # per window, its channel names
    batch_labels: list[np.ndarray]  # labels per batch, for the attention query
    band_power: np.ndarray | None = None  # (n, U·5) over the union of every split's channels (`align_splits`)


def embed_windows(
    encoders: dict[str, ReveEncoder | MaskedCodeEncoder],
    batches: Iterable[LabelledBatch],
    options: ProbeOptions,
    device: torch.device,
) -> SplitData:
    """Every encoder's features of the same windows (each read and decoded once), and their band powers."""
    features: dict[str, list[torch.Tensor]] = {name: [] for name in encoders}
    labels, powers, channels = [], [], []
    for batch in batches:
        eeg, positions = batch.eeg.to(device), batch.positions.to(device)
        for name, encoder in encoders.items():
            out = embed_batch(encoder, eeg, positions, pooling=options.pooling, layers=options.layers)
            features[name].append(out.float().cpu())
        labels.append(batch.labels)
        window_power = band_power_features(batch.eeg.numpy().astype(np.float64), batch.sfreq)
        powers.extend(window_power)
        channels.extend(
            c or [f"ch{i}" for i in range(len(p))] for c, p in zip(batch.channels, window_power, strict=True)
        )
    if not labels:
        raise DataError("a split of the task holds no window")
    return SplitData(np.concatenate(labels), features, powers, channels, labels)


def align_splits(splits: dict[str, SplitData]) -> None:
    """Set every split's band-power matrix over one channel union, the union of all splits' channels."""
    names = channel_union(c for data in splits.values() for c in data.channels)
    for data in splits.values():
        data.band_power = align_channels(data.powers, data.channels, names)


def _pooled(
    splits: dict[str, SplitData],
    name: str,
    options: ProbeOptions,
    n_classes: int,
    shuffle_seed: list[int] | None,
) -> dict[str, np.ndarray]:
    """Each split's (n, D) features of encoder `name`: mean-pooled as embedded, or pooled by a query
    trained on the train split (with its shuffled labels for the shuffled baseline)."""
    if options.pooling == "mean":
        return {split: torch.cat(data.features[name]).numpy() for split, data in splits.items()}
    train_tokens = splits["train"].features[name]
    flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in train_tokens])
    mean, std = flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6)
    labels = splits["train"].batch_labels
    if shuffle_seed is not None:  # the same permutation as fit_and_score's, cut back into batches
        shuffled = independent_shuffle(np.concatenate(labels), shuffle_seed)
        labels = np.split(shuffled, np.cumsum([len(y) for y in labels])[:-1])
    pool = train_attention_pool(
        [(x - mean) / std for x in train_tokens],
        labels,
        n_classes,
        steps=options.attention_steps,
        seed=options.seed,
    )
    with torch.no_grad():
        return {
            split: torch.cat([pool((x - mean) / std) for x in data.features[name]]).numpy()
            for split, data in splits.items()
        }


def mean_over_shuffles(runs: list[dict[str, float]]) -> dict[str, float]:
    """The shuffled-labels baseline as the mean of its runs' metrics (the chosen C and k left out), with
    the balanced accuracy's standard deviation: one shuffle of a separable task scatters widely around
    chance (a random direction still splits separable classes, either way round): measured 0.31–0.92
    over 12 shuffles, a standard deviation of 0.15 over 40."""
    names = [k for k in runs[0] if k not in ("C", "k")]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in names}
    mean["balanced_accuracy_std"] = float(np.std([r["balanced_accuracy"] for r in runs]))
    mean["shuffles"] = len(runs)
    return mean


def probe_splits(
    splits: dict[str, SplitData], task: TaskInfo, options: ProbeOptions
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The encoder's metrics and the three baselines' from embedded splits (no I/O)."""
    n = task.n_classes

    def score(features: dict[str, np.ndarray], shuffle: list[int] | None = None) -> dict[str, float]:
        return fit_and_score(*((features[s], splits[s].labels) for s in SPLITS), n, shuffle_seed=shuffle)

    metrics = score(_pooled(splits, ENCODER, options, n, None))
    shuffled = []
    for i in range(options.shuffles):
        seed = [options.seed, i]
        shuffled.append(score(_pooled(splits, ENCODER, options, n, seed), seed))
    baselines = {
        "random_init": score(_pooled(splits, "random_init", options, n, None)),
        "band_power": score({s: splits[s].band_power for s in SPLITS}),
        "shuffled_labels": mean_over_shuffles(shuffled),
    }
    return metrics, baselines


# ---- the command ----------------------------------------------------------------------------------------


def random_init_like(encoder: ReveEncoder | MaskedCodeEncoder, seed: int) -> ReveEncoder | MaskedCodeEncoder:
    """The same architecture with fresh random weights, from `seed` (the global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return type(encoder)(encoder.config).eval()


def load_probe_encoder(
    source: str, verb: str = "eegfm probe"
) -> tuple[ReveEncoder | MaskedCodeEncoder, str, int | None, str]:
    """(encoder, checkpoint, step, run folder) of a run directory, a `.ckpt` file or an exported encoder.

    Supported: REVE masked-autoencoder checkpoints and masked-code (stage 2) checkpoints, and the encoders
    `eegfm export` writes; anything else is a one-line ConfigError.
    """
    import fsspec

    from eegfm.pretrain.checkpoints import latest_checkpoint, load_state, step_of
    from eegfm.pretrain.export import CONFIG, encoder_from_checkpoint, load_encoder

    fs, path = fsspec.core.url_to_fs(source)
    if not source.endswith(".ckpt") and fs.exists(f"{path.rstrip('/')}/{CONFIG}"):
        encoder = load_encoder(source)
        if not isinstance(encoder, ReveEncoder | MaskedCodeEncoder):
            raise ConfigError(
                f"{source}: an exported {type(encoder).__name__}; {verb} supports REVE and masked-code "
                "encoders for now (the others' feature extraction is not built yet)"
            )
        return encoder.eval(), source, None, source
    checkpoint = latest_checkpoint(source)
    if checkpoint is None:
        raise DataError(f"{source}: no complete checkpoint there (a run directory, a .ckpt or an export)")
    hparams = load_state(checkpoint).get("hyper_parameters", {})
    if "mae" not in hparams and "mcm" not in hparams:
        kind = "tokenizer" if "tokenizer" in hparams else "unknown"
        raise ConfigError(
            f"{checkpoint}: a {kind} checkpoint; {verb} supports REVE masked-autoencoder (mae) and "
            "masked-code (mcm) pretraining checkpoints, or an encoder from `eegfm export`"
        )
    run = checkpoint.rsplit("/", 2)[0] if "/checkpoints/" in checkpoint else checkpoint.rsplit("/", 1)[0]
    return encoder_from_checkpoint(checkpoint), checkpoint, step_of(checkpoint), run


def _device(options: ProbeOptions) -> torch.device:
    if options.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device here (device=cpu or auto)")
    return torch.device(options.device)


def run_probe(source: str, task_shards: str, out: str | None, options: ProbeOptions) -> dict[str, Any]:
    """`eegfm probe`: embed the task's splits with the frozen encoder and its random-init twin, fit and
    score the probe and the baselines, write `probe.json` to `out` (default: `<run>/probe/<task>/step=N`)
    and return the report."""
    task = read_task_info(task_shards)
    encoder, checkpoint, step, run = load_probe_encoder(source)
    device = _device(options)
    encoders = {ENCODER: encoder, "random_init": random_init_like(encoder, options.seed)}
    encoders = {name: e.to(device).eval() for name, e in encoders.items()}
    splits = {}
    for split in SPLITS:
        table = load_split(task_shards, split)
        batches = labelled_batches(
            task_shards, split, task, clip=options.clip, batch_windows=options.batch_windows, table=table
        )
        splits[split] = embed_windows(encoders, batches, options, device)
    align_splits(splits)
    metrics, baselines = probe_splits(splits, task, options)
    report = {
        "task": task.name,
        "checkpoint": checkpoint,
        "step": step,
        "metrics": metrics,
        "baselines": baselines,
        "classes": list(task.classes),
        "windows": {split: len(data.labels) for split, data in splits.items()},
        "task_shards": task_shards,
        "options": dataclasses.asdict(options),
    }
    if out is None:
        out = join_url(run, "probe", task.name, "export" if step is None else f"step={step:08d}")
    write_json(join_url(out, "probe.json"), report)
    report["out"] = out
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned rows (encoder, then each baseline; test-split metrics), ending with one line
    that gives the task, the step and every row's balanced accuracy."""
    rows = {ENCODER: report["metrics"], **report["baselines"]}
    names = [k for k in report["metrics"] if k not in ("C", "k") and "val_" not in k]
    lines = [f"{'':16s}" + "".join(f"{n:>24s}" for n in names)]
    for row, values in rows.items():
        lines.append(f"{row:16s}" + "".join(f"{values[n]:24.4f}" for n in names))
    accuracies = ", ".join(f"{row} {values['balanced_accuracy']:.3f}" for row, values in rows.items())
    lines.append(f"{report['task']} step {report['step']}: balanced accuracy {accuracies}")
    return "\n".join(lines)
