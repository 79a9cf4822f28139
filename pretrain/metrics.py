"""`metrics.csv` in the run directory: one row per logged step, continued (not restarted) on resume.

Lightning's CSVLogger deletes an existing `metrics.csv` when its folder is not empty and appends to
object storage, which S3 cannot do; a resumed run would lose the curve it joins. This logger keeps the
rows, drops those past the step it resumes from, and rewrites the file atomically on each flush.
"""

from __future__ import annotations

import csv
import io
from argparse import Namespace
from typing import Any

import fsspec
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from eegfm.storage import atomic_write, exists, join_url

METRICS_NAME = "metrics.csv"


def read_metrics(url: str) -> list[dict[str, str]]:
    """The rows of a `metrics.csv` (local or remote), as dicts of strings."""
    with fsspec.open(url, "r", newline="") as f:
        return list(csv.DictReader(f))


class RunCsvLogger(Logger):
    def __init__(self, run_dir: str, flush_every: int = 50):
        super().__init__()
        self.url = join_url(run_dir, METRICS_NAME)
        self.flush_every = flush_every
        self.rows: list[dict[str, Any]] = []
        self._pending = 0

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def resume_from(self, step: int) -> None:
        """Keep the rows of steps a resumed run will not redo: those up to the checkpoint's step."""
        if exists(self.url):
            self.rows = [
                {"step": int(r["step"]), **{k: v for k, v in r.items() if k != "step"}}
                for r in read_metrics(self.url)
                if int(r["step"]) < step
            ]

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The resolved config is saved as `config.yaml` beside this file."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        if self.rows and self.rows[-1]["step"] == step:  # several log calls of one step: one row
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})
        self._pending += 1
        if self._pending >= self.flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self._pending and exists(self.url):
            return
        columns = ["step", *sorted({k for row in self.rows for k in row} - {"step"})]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.url) as path, open(path, "w") as f:
            f.write(text.getvalue())
        self._pending = 0

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
