"""`make test-gpu`: the strategies on a real GPU, in one short script a user can run on their own node.

For each of DDP, FSDP and DeepSpeed ZeRO-2 it trains `reve_base` in bf16 for a few steps on one GPU from a
generated fixture corpus, then trains the same run again but stops it with SIGTERM once its first
checkpoint exists and resumes it. It checks that every loss is finite, that the strategies agree at the
first step, and that each resumed run logs the same losses as its uninterrupted twin; it prints tokens/s
and MFU from `metrics.csv`. Exit code 0 only if every check passed.

`--cpu` runs the same logic on the CPU (reve_tiny, 32-bit, DDP and FSDP only) to check the script itself.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = 8
FIRST_CHECKPOINT = 4


def _shards(work: Path) -> Path:
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    out = work / "shards"
    generate_corpus("tueg", work / "corpus", seed=0, n_subjects=4, duration_s=300.0)
    run_shards(load_recipe("tueg", root=str(work / "corpus")), str(out), progress=False)
    return out


def _command(config: str, shards: Path, run_dir: Path, strategy: str, cpu: bool) -> list[str]:
    device = (
        ["trainer.accelerator=cpu", "trainer.precision=32-true", "data.channel_budget=320"]
        if cpu
        else ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"]
    )
    return [
        sys.executable, "-m", "eegfm.cli", "pretrain", "--config", config, "--resume", "auto",
        f"data.shards=[{shards}]", f"run.dir={run_dir}", f"trainer.strategy={strategy}", "trainer.devices=1",
        f"trainer.max_steps={STEPS}", "trainer.log_every=1", f"checkpoint.every_n_steps={FIRST_CHECKPOINT}",
        "logging.tensorboard=false", "logging.progress_bar=false", "data.num_workers=2",
        f"trainer.deepspeed={REPO}/configs/pretrain/deepspeed/zero2.yaml", *device,
    ]  # fmt: skip


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in _rows(run_dir) if r.get("loss")}


def _run(command: list[str], log: Path) -> None:
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"FAILED ({done.returncode}): {' '.join(command)}; see {log}")


def _run_stopped(command: list[str], run_dir: Path, log: Path) -> None:
    """Start the run, SIGTERM it once its first periodic checkpoint exists, then resume it."""
    checkpoint = run_dir / "checkpoints" / f"step={FIRST_CHECKPOINT:08d}.ckpt"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and process.poll() is None and not checkpoint.exists():
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        if process.wait(600):
            raise SystemExit(f"FAILED: the stopped run exited {process.returncode}; see {log}")
    _run(command, log.with_suffix(".resumed.log"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="check the script on the CPU (reve_tiny)")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--strategies", default=None, help="comma-separated subset")
    args = parser.parse_args(argv)
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            print("make test-gpu: no CUDA GPU here; nothing checked", file=sys.stderr)
            return 2
    strategies = (args.strategies or ("ddp,fsdp" if args.cpu else "ddp,fsdp,deepspeed")).split(",")
    config = str(REPO / "configs" / "pretrain" / ("reve_tiny.yaml" if args.cpu else "reve_base.yaml"))
    work = Path(args.work or tempfile.mkdtemp(prefix="eegfm-gpucheck-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = _shards(work)
    failures, first_losses = [], {}
    print(f"{'strategy':10} {'loss@0':>9} {'loss@end':>9} {'tokens/s':>11} {'mfu':>6}  resumed-exact")
    for strategy in strategies:
        whole, stopped = work / f"{strategy}-whole", work / f"{strategy}-stopped"
        _run(_command(config, shards, whole, strategy, args.cpu), work / f"{strategy}-whole.log")
        _run_stopped(_command(config, shards, stopped, strategy, args.cpu), stopped, work / f"{strategy}.log")
        curve, resumed = _losses(whole), _losses(stopped)
        if not curve or not all(math.isfinite(v) for v in curve.values()):
            failures.append(f"{strategy}: losses not all finite: {curve}")
        first_losses[strategy] = curve.get(0, math.nan)
        worst = max(
            (abs(resumed[s] - v) / max(abs(v), 1e-12) for s, v in curve.items() if s in resumed), default=0
        )
        exact = set(curve) <= set(resumed) and worst <= (0 if args.cpu else 1e-3)
        if not exact:
            failures.append(f"{strategy}: resumed curve differs (max relative difference {worst:.2e})")
        rates = [r for r in _rows(whole) if r.get("tokens_per_s")]
        tokens = float(rates[-1]["tokens_per_s"]) if rates else math.nan
        mfu = float(rates[-1]["mfu"]) if rates and rates[-1].get("mfu") else math.nan
        print(
            f"{strategy:10} {curve.get(0, math.nan):9.4f} {curve.get(STEPS - 1, math.nan):9.4f} "
            f"{tokens:11.0f} {mfu:6.1%}  {exact} (max rel. diff {worst:.1e})"
        )
    reference = first_losses.get("ddp")
    for strategy, value in first_losses.items():
        if reference is not None and abs(value - reference) > 2e-2 * abs(reference):
            failures.append(f"{strategy}: step-0 loss {value:.5f} differs from DDP's {reference:.5f}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"make test-gpu: {len(strategies) - len({f.split(':')[0] for f in failures})} passed, "
          f"{len({f.split(':')[0] for f in failures})} failed; runs in {work}")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
