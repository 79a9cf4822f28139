"""Launchers: SLURM scripts and Kubernetes manifests rendered from the launch configs, validated offline
(Kubernetes schemas, bash syntax, hadolint), and the committed examples equal to what they render."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from eegfm.config import load_config
from eegfm.launch import k8s, slurm

LAUNCH = REPO / "configs" / "launch"
EXAMPLES = LAUNCH / "examples"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no sbatch, no kubectl
    return subprocess.run(
        [sys.executable, "-m", "eegfm.cli", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def test_slurm_script_for_4_nodes_of_8_gpus() -> None:
    script = slurm.render_pretrain(load_config(LAUNCH / "slurm_4x8_reve_base.yaml"), "x.yaml")
    for directive in (
        "--nodes=4",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=12",
        "--mem-per-cpu=8533M",
        "--time=2-00:00:00",
        "--partition=gpu",
        "--signal=USR1@300",
        "--requeue",
        "--output=logs/slurm/%x-%j.out",
    ):
        assert f"#SBATCH {directive}\n" in script, directive
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "eegfm pretrain --config configs/pretrain/reve_base.yaml --resume auto" in srun
    assert srun.endswith("trainer.num_nodes=4 trainer.devices=8")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_cpu_script_has_one_task_per_node_and_no_gpus() -> None:
    script = slurm.render_pretrain(load_config(LAUNCH / "slurm_cpu_2node.yaml"), "x.yaml")
    assert "--nodes=2\n" in script and "--ntasks-per-node=1\n" in script and "gpus" not in script
    assert "--partition" not in script and "trainer.devices=1" in script


def test_ingest_array_skips_finished_partitions(tmp_path: Path) -> None:
    from eegfm.ingest import contract

    out = tmp_path / "shards"
    (out / contract.TASKS_DIR).mkdir(parents=True)
    (out / contract.TASKS_DIR / (contract.task_stem(1, 3) + ".json")).write_text("{}")
    cfg = load_config(LAUNCH / "slurm_cpu_2node.yaml", [f"ingest.out={out}"])
    assert slurm.pending_partitions(str(out), 3) == [0, 2]
    array, merge = slurm.render_ingest(cfg, [0, 2])
    assert "#SBATCH --array=0,2\n" in array
    assert f'--out {out} --num-tasks 3 --task-index "$SLURM_ARRAY_TASK_ID"' in array
    assert f"eegfm merge --out {out}" in merge
    for script in (array, merge):
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_dry_run_prints_without_a_scheduler() -> None:
    done = _cli(
        "submit", "slurm", "--config", "configs/launch/slurm_4x8_reve_base.yaml", "--dry-run", "name=x"
    )
    assert done.returncode == 0 and done.stdout.startswith("#!/bin/bash") and "--job-name=x\n" in done.stdout
    done = _cli("submit", "slurm", "--config", "configs/launch/slurm_4x8_reve_base.yaml")
    assert done.returncode == 2 and "sbatch" in done.stderr
    done = _cli("submit", "k8s", "--config", "configs/launch/k8s_4x8_reve_base.yaml")
    assert done.returncode == 2 and "kubectl is not on PATH" in done.stderr


@pytest.mark.parametrize("kind", ["PyTorchJob", "JobSet"])
def test_kubernetes_pretraining_manifests_validate(kind: str) -> None:
    manifest = k8s.render_pretrain(load_config(LAUNCH / "k8s_4x8_reve_base.yaml", [f"k8s.kind={kind}"]))
    k8s.validate(manifest)
    text = k8s.to_yaml([manifest])
    assert "torchrun" in text and "--nproc-per-node=8" in text and "trainer.num_nodes=4" in text
    assert "medium: Memory" in text and "nvidia.com/gpu: '8'" in text and "secretKeyRef" in text
    assert "&id" not in text  # no YAML anchors


def test_kubernetes_ingest_is_an_indexed_job_then_a_merge() -> None:
    jobs = k8s.render_ingest(load_config(LAUNCH / "k8s_4x8_reve_base.yaml"))
    for job in jobs:
        k8s.validate(job)
    assert jobs[0]["spec"]["completionMode"] == "Indexed" and jobs[0]["spec"]["completions"] == 64
    assert (
        '--task-index "$JOB_COMPLETION_INDEX"'
        in jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    )
    assert jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["eegfm", "merge"]


def test_validation_refuses_bad_manifests() -> None:
    cfg = load_config(LAUNCH / "k8s_4x8_reve_base.yaml")
    manifest = k8s.render_pytorchjob(cfg)
    container = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "oops"})
    with pytest.raises(ValueError, match="inlined; use a Secret"):
        k8s.validate(manifest)
    container["env"].pop()
    container["imagePulPolicy"] = "Always"  # a misspelt field: the strict schema check refuses it
    with pytest.raises(Exception, match="imagePulPolicy"):
        k8s.validate(manifest)
    del container["imagePulPolicy"]
    container["name"] = "trainer"
    with pytest.raises(ValueError, match="no container named 'pytorch'"):
        k8s.validate(manifest)


@pytest.mark.parametrize(
    ("example", "command"),
    [
        ("slurm_4x8_reve_base.sbatch", ("slurm", "slurm_4x8_reve_base.yaml")),
        ("k8s_4x8_reve_base.yaml", ("k8s", "k8s_4x8_reve_base.yaml")),
        ("k8s_4x8_reve_base_jobset.yaml", ("k8s", "k8s_4x8_reve_base.yaml", "k8s.kind=JobSet")),
    ],
)
def test_committed_examples_are_what_the_configs_render(example: str, command: tuple[str, ...]) -> None:
    scheduler, config, *overrides = command
    done = _cli("submit", scheduler, "--config", f"configs/launch/{config}", "--dry-run", *overrides)
    assert done.returncode == 0, done.stderr
    assert (EXAMPLES / example).read_text() == done.stdout, f"re-render {example}: see its first line"
    if scheduler == "k8s":
        k8s.validate(yaml.safe_load(done.stdout))


def test_dockerfile_lints_and_matches_the_lock() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), "--failure-threshold", "info", "-"], input=dockerfile, text=True,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stdout
    locked = re.search(r"^torch==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)[1]
    assert re.search(rf"^ARG BASE=pytorch/pytorch:{re.escape(locked)}-cuda", dockerfile, re.M)
    assert "-c requirements.lock" in dockerfile and re.search(r"^USER [1-9]", dockerfile, re.M)
    assert not re.search(r"AWS_(SECRET|ACCESS)", dockerfile)
