"""`eegfm probe --watch RUN`: probe every checkpoint of a run as it appears, once, as a job of its own.

On a cluster the probe need not slow the pretraining job: a small job (a GPU or a few CPU cores) watches
the run directory, locally or on S3, and probes each new checkpoint on each task. Results go to
`RUN/eval/probes.csv`, one row per (task, step, model, metric) — `model` is `encoder` or a baseline —
rewritten whole through the atomic write after each probe, so a killed watcher loses at most the probe it
was running and a restarted one skips every (task, step) the file already holds: each checkpoint is
probed exactly once. `RUN/eval/probes.png` is redrawn after each probe: per task, balanced accuracy
against step, with each baseline as a horizontal line (its mean over the checkpoints) — what a user looks
at to choose a checkpoint. The watcher stops once it has probed the step the run's config ends at
(`trainer.max_steps`), or after one pass with `once`.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import fsspec
from omegaconf import OmegaConf

from eegfm.pretrain.checkpoints import list_checkpoints, step_of
from eegfm.pretrain.probe import ENCODER, ProbeOptions, run_probe
from eegfm.pretrain.taskshards import read_task_info
from eegfm.storage import atomic_write, join_url

FIELDS = ("task", "step", "checkpoint", "model", "metric", "value")
EVAL_DIR = "eval"
CSV_NAME = "probes.csv"
PLOT_NAME = "probes.png"
PLOTTED = "balanced_accuracy"


def read_rows(run: str) -> list[dict[str, Any]]:
    """The rows of `RUN/eval/probes.csv` so far (none if there is no file yet)."""
    url = join_url(run, EVAL_DIR, CSV_NAME)
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return []
    with fsspec.open(url, "r") as f:
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in csv.DictReader(f)]


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One probe report (`run_probe`) as rows: every numeric metric of the encoder and of each baseline."""
    models = {ENCODER: report["metrics"], **report["baselines"]}
    return [
        {
            "task": report["task"],
            "step": report["step"],
            "checkpoint": report["checkpoint"],
            "model": model,
            "metric": metric,
            "value": float(value),
        }
        for model, metrics in models.items()
        for metric, value in metrics.items()
        if isinstance(value, int | float)
    ]


def write_rows(run: str, rows: Sequence[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(join_url(run, EVAL_DIR, CSV_NAME)) as local, open(local, "w") as f:
        f.write(text.getvalue())


def plot(run: str, rows: Sequence[dict[str, Any]]) -> None:
    """`RUN/eval/probes.png`: per task, the encoder's balanced accuracy against step, baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        picked = [r for r in rows if r["task"] == task and r["metric"] == PLOTTED]
        encoder = sorted((r["step"], r["value"]) for r in picked if r["model"] == ENCODER)
        axis.plot([s for s, _ in encoder], [v for _, v in encoder], "o-", color="black", label=ENCODER)
        for model, style in (("random_init", "C0"), ("band_power", "C1"), ("shuffled_labels", "C3")):
            values = [r["value"] for r in picked if r["model"] == model]
            if values:
                axis.axhline(sum(values) / len(values), linestyle="--", color=style, label=model)
        axis.set(title=task, xlabel="step", ylabel="balanced accuracy (test)", ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_write(join_url(run, EVAL_DIR, PLOT_NAME)) as local:
        figure.savefig(local, format="png", dpi=100)
    plt.close(figure)


def final_step(run: str) -> int | None:
    """The step the run's saved config ends at (`trainer.max_steps`), if it says."""
    url = join_url(run, "config.yaml")
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with fsspec.open(url, "r") as f:
        return OmegaConf.select(OmegaConf.create(f.read()), "trainer.max_steps", default=None)


def watch(
    run: str,
    task_shards: Sequence[str],
    options: ProbeOptions,
    *,
    poll_s: float = 60.0,
    once: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """Probe each checkpoint of `run` not yet in its `eval/probes.csv` on each task; returns how many
    probes ran. Loops (sleeping `poll_s` between passes) until the run's final step is probed, unless
    `once`."""
    tasks = {read_task_info(shards).name: shards for shards in task_shards}
    rows = read_rows(run)
    done = {(r["task"], r["step"]) for r in rows}
    last = final_step(run)
    probes = 0
    while True:
        for checkpoint in list_checkpoints(run):
            step = step_of(checkpoint)
            for task, shards in tasks.items():
                if (task, step) in done:
                    continue
                started = time.monotonic()
                report = run_probe(checkpoint, shards, None, options)
                seconds = time.monotonic() - started
                rows += report_rows(report)
                rows.append(
                    dict(zip(FIELDS, (task, step, checkpoint, ENCODER, "seconds", seconds), strict=True))
                )
                write_rows(run, rows)
                plot(run, rows)
                done.add((task, step))
                probes += 1
                accuracy = report["metrics"]["balanced_accuracy"]
                say(f"{task} step {step}: balanced accuracy {accuracy:.3f} in {seconds:.1f} s")
        if once or (last is not None and all((task, last) in done for task in tasks)):
            return probes
        time.sleep(poll_s)
