"""Through `eegfm submit slurm`, on a real two-node SLURM started by the tests: a 2-node CPU pretraining
that is requeued mid-run and ends on the same samples and curve as an uninterrupted job, and an ingest
array of 3 partitions + merge that equals a single-process ingest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
from conftest import REPO
from infra.slurm import SlurmCluster
from pretrainrun import assert_curve_continues, keys_by_step, losses

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _launch_config(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"extends: {REPO / 'configs' / 'launch' / 'slurm_cpu_2node.yaml'}\nname: {name}\n{body}")
    return path


def _submit(cluster: SlurmCluster, config: Path, *extra: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "eegfm.cli", "submit", "slurm", "--config", str(config), *extra],
        cwd=REPO,
        env={**cluster.env, **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _env(s3_env: object | None = None) -> dict[str, str]:
    """What the jobs inherit (sbatch exports the submitter's environment): this venv first on PATH."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return {**env, **(s3_env.env() if s3_env else {})}


def test_requeued_two_node_job_resumes_to_the_uninterrupted_stream(
    slurm_cluster: SlurmCluster, s3_env, tueg_shards: Path, tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3")
    fs.mkdir("slurm")
    jobs = {}
    for name in ("whole", "requeued"):
        config = _launch_config(
            tmp_path,
            name,
            f"""pretrain:
  overrides:
    - data.shards=[{tueg_shards}]
    - run.dir=s3://slurm/{name}
    - logging.tensorboard=false
    - logging.sample_keys={tmp_path / name / "keys"}
    - data.channel_budget=100
    - trainer.max_steps=30
    - checkpoint.every_n_steps=5
slurm:
  log_dir: {tmp_path / "logs"}
  env:
    AWS_SECRET_ACCESS_KEY: ${{oc.env:AWS_SECRET_ACCESS_KEY}}
""",
        )
        out = _submit(slurm_cluster, config, env=_env(s3_env))
        jobs[name] = re.search(r"submitted SLURM job (\d+)", out)[1]
        saved = fs.cat(f"slurm/{name}/launch/{name}-{jobs[name]}.sbatch").decode()  # saved with the run
        # the secret stays a reference the node resolves
        assert s3_env.env()["AWS_SECRET_ACCESS_KEY"] not in saved and "${AWS_SECRET_ACCESS_KEY}" in saved

    # The warning signal, as --signal=USR1@… sends it (to the job's steps), once a checkpoint exists.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not fs.exists("slurm/requeued/checkpoints/step=00000005.ckpt"):
        fs.invalidate_cache()
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", jobs["requeued"]], env=slurm_cluster.env, check=True)

    whole, requeued = (slurm_cluster.wait(jobs[name]) for name in ("whole", "requeued"))
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.out"))
    assert whole["JobState"] == requeued["JobState"] == "COMPLETED", logs[-4000:]
    assert requeued["Restarts"] == "1" and whole["Restarts"] == "0", requeued
    assert keys_by_step(tmp_path / "requeued" / "keys") == keys_by_step(tmp_path / "whole" / "keys")
    assert_curve_continues(losses("s3://slurm/requeued/metrics.csv"), losses("s3://slurm/whole/metrics.csv"))
    fs.invalidate_cache()
    assert fs.exists("slurm/requeued/checkpoints/step=00000030.ckpt")


def test_ingest_array_and_merge_equal_a_single_process_ingest(
    slurm_cluster: SlurmCluster, real_edf_dir: Path, tmp_path: Path
) -> None:
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    out = tmp_path / "array"
    config = _launch_config(
        tmp_path,
        "ingest",
        f"""ingest:
  dataset: generic
  root: {real_edf_dir}
  out: {out}
  tasks: 3
slurm:
  log_dir: {tmp_path / "logs"}
""",
    )
    submitted = _submit(slurm_cluster, config, "--ingest", env=_env())
    found = re.search(r"ingest partitions \[0, 1, 2\]: array job (\d+), merge job (\d+)", submitted)
    assert found, submitted
    assert slurm_cluster.wait(found[2])["JobState"] == "COMPLETED"
    merged = json.loads((out / "manifest.json").read_text())
    single = run_shards(
        load_recipe("generic", root=str(real_edf_dir)), str(tmp_path / "single"), progress=False
    )
    assert merged["files"] == single["files"]
    for key in ("hours", "samples", "subjects", "files", "per_montage", "skip_reasons"):
        assert merged["totals"][key] == single["totals"][key], key
    # Submitted again: every partition has finished and the manifest exists, so nothing is submitted.
    again = _submit(slurm_cluster, config, "--ingest", env=_env())
    assert "ingest partitions []: array job None, merge job None" in again
