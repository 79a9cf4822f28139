"""Launchers: SLURM scripts and Kubernetes manifests rendered from the launch configs, validated offline
(Kubernetes schemas, bash syntax, hadolint), and the committed examples equal to what they render."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from eegfm.errors import ConfigError
from eegfm.launch import k8s, slurm
from eegfm.launch.config import load_launch_config

LAUNCH = REPO / "configs" / "launch"
EXAMPLES = LAUNCH / "examples"


def _cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    """`eegfm …` with only the venv on PATH (no sbatch, no kubectl), after `path` if given."""
    env = {**os.environ, "PATH": ":".join(filter(None, [path, os.path.dirname(sys.executable)]))}
    return subprocess.run(
        [sys.executable, "-m", "eegfm.cli", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def test_slurm_script_for_4_nodes_of_8_gpus() -> None:
    script = slurm.render_pretrain(load_launch_config(LAUNCH / "slurm_4x8_reve_base.yaml"), "x.yaml")
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
    script = slurm.render_pretrain(load_launch_config(LAUNCH / "slurm_cpu_2node.yaml"), "x.yaml")
    assert "--nodes=2\n" in script and "--ntasks-per-node=1\n" in script and "gpus" not in script
    assert "--partition" not in script and "trainer.devices=1" in script


def test_ingest_array_skips_finished_partitions(tmp_path: Path) -> None:
    from eegfm.ingest import contract

    out = tmp_path / "shards"
    (out / contract.TASKS_DIR).mkdir(parents=True)
    (out / contract.TASKS_DIR / (contract.task_stem(1, 3) + ".json")).write_text("{}")
    cfg = load_launch_config(LAUNCH / "slurm_cpu_2node.yaml", [f"ingest.out={out}"])
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
    manifest = k8s.render_pretrain(
        load_launch_config(LAUNCH / "k8s_4x8_reve_base.yaml", [f"k8s.kind={kind}"])
    )
    k8s.validate(manifest)
    text = k8s.to_yaml([manifest])
    assert "torchrun" in text and "--nproc-per-node=8" in text and "trainer.num_nodes=4" in text
    assert "medium: Memory" in text and "nvidia.com/gpu: '8'" in text and "secretKeyRef" in text
    assert "&id" not in text  # no YAML anchors


def test_kubernetes_ingest_is_an_indexed_job_then_a_merge() -> None:
    jobs = k8s.render_ingest(load_launch_config(LAUNCH / "k8s_4x8_reve_base.yaml"))
    for job in jobs:
        k8s.validate(job)
    assert jobs[0]["spec"]["completionMode"] == "Indexed" and jobs[0]["spec"]["completions"] == 64
    assert (
        '--task-index "$JOB_COMPLETION_INDEX"'
        in jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    )
    assert jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["eegfm", "merge"]


def test_validation_refuses_bad_manifests() -> None:
    cfg = load_launch_config(LAUNCH / "k8s_4x8_reve_base.yaml")
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


# --- A launch config's values are data: refused where they cannot be quoted, inert where they are. ---


def _launch_config(tmp_path: Path, body: str) -> Path:
    """A CPU launch config with `body` (YAML) merged over it; its run directory under `tmp_path`."""
    path = tmp_path / "launch.yaml"
    head = f"extends: {LAUNCH / 'slurm_cpu_2node.yaml'}\n"
    run = f"pretrain:\n  overrides: [run.dir={tmp_path / 'run'}]\n" if "pretrain:" not in body else ""
    path.write_text(head + run + body)
    return path


WRAP = "\n#SBATCH --wrap=touch /tmp/pwned"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("name: 'a;touch /tmp/pwned'", "name"),
        (f"name: {json.dumps('a' + WRAP)}", "name"),
        (f"slurm:\n  partition: {json.dumps('gpu' + WRAP)}", "slurm.partition"),
        ("slurm:\n  account: 'a b;id'", "slurm.account"),
        ("slurm:\n  qos: '$(id)'", "slurm.qos"),
        ("slurm:\n  time: '1:00 --wrap=id'", "slurm.time"),
        (f"slurm:\n  log_dir: {json.dumps('logs' + WRAP)}", "slurm.log_dir"),
        (f"slurm:\n  setup: [{json.dumps('true' + WRAP)}]", "slurm.setup.0"),
        ("slurm:\n  env: {'A;touch /tmp/pwned': x}", "slurm.env"),
        (f"slurm:\n  env: {{{json.dumps('A' + WRAP)}: x}}", "slurm.env"),
        ("slurm:\n  env: {'$(id)': x}", "slurm.env"),
        (f"slurm:\n  env: {{A: {json.dumps('x' + WRAP)}}}", "slurm.env.A"),
        (f"pretrain:\n  overrides: [{json.dumps('run.dir=x' + WRAP)}]", "pretrain.overrides.0"),
    ],
)
def test_values_that_would_inject_lines_are_refused(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        slurm.render_pretrain(load_launch_config(_launch_config(tmp_path, body)), "launch.yaml")
    done = _cli("submit", "slurm", "--config", str(tmp_path / "launch.yaml"), "--dry-run")
    assert done.returncode == 2 and key in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def _run_script(script: str, tmp_path: Path, stand_ins: str, env: dict[str, str] | None = None) -> list[str]:
    """Run `script` with real bash, its `srun`/`eegfm` replaced by functions that print their arguments
    (NUL-separated); returns those arguments."""
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    done = subprocess.run(
        ["bash", "-c", f'{stand_ins}; . "$0"', str(path)],
        capture_output=True,
        env={"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "0", **(env or {})},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split("\0")[:-1]


def test_injected_commands_in_quoted_values_never_run(tmp_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4()}")
    attempts = [f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"'; touch {marker}; '"]
    env = "\n".join(f"    V{n}: {json.dumps(value)}" for n, value in enumerate(attempts))
    # each override's value YAML-quoted, as `eegfm pretrain` parses it
    overrides = ", ".join(json.dumps(f"logging.tensorboard={json.dumps(value)}") for value in attempts)
    body = f"""pretrain:
  overrides: [run.dir={tmp_path / "run"}, {overrides}]
slurm:
  env:
{env}
ingest:
  dataset: {json.dumps(attempts[1])}
  root: {json.dumps(attempts[2])}
  out: {json.dumps(str(tmp_path / attempts[0]))}
"""
    cfg = load_launch_config(_launch_config(tmp_path, body))
    printenv = "".join(f'printf "%s\\0" "$V{n}"; ' for n in range(len(attempts)))
    args = _run_script(
        slurm.render_pretrain(cfg, "launch.yaml"), tmp_path, f'srun() {{ {printenv} printf "%s\\0" "$@"; }}'
    )
    assert args[: len(attempts)] == attempts  # the exported variables hold the text, unexpanded
    tensorboard = [a.removeprefix("logging.tensorboard=") for a in args if a.startswith("logging.")]
    assert [json.loads(value) for value in tensorboard] == attempts
    array, merge = slurm.render_ingest(cfg, [0, 1])
    args = _run_script(array, tmp_path, 'eegfm() { printf "%s\\0" "$@"; }')
    assert args[args.index("--dataset") + 1] == attempts[1] and args[args.index("--root") + 1] == attempts[2]
    assert args[args.index("--out") + 1] == str(tmp_path / attempts[0])
    assert _run_script(merge, tmp_path, 'eegfm() { printf "%s\\0" "$@"; }')[-1] == str(tmp_path / attempts[0])
    assert not marker.exists()


@pytest.mark.parametrize("key", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"])
def test_inline_credentials_are_refused(tmp_path: Path, key: str) -> None:
    path = _launch_config(tmp_path, f"slurm:\n  env: {{{key}: abc123}}")
    with pytest.raises(ConfigError, match=rf"slurm\.env\.{key} is a credential given inline.*oc\.env:{key}"):
        load_launch_config(path)
    assert load_launch_config(path, [f"slurm.env.{key}=${{oc.env:{key},x}}"])  # a reference is fine …
    cfg = load_launch_config(_launch_config(tmp_path, ""))
    cfg.slurm.env[key] = "abc123"  # … a literal set after loading is refused when rendering
    with pytest.raises(ConfigError, match=key):
        slurm.render_ingest(cfg, [0])


def test_secrets_from_the_environment_stay_references_in_the_saved_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"s3cr3t-{uuid.uuid4()}"
    monkeypatch.setenv("EEGFM_TEST_SECRET", secret)
    # A stand-in scheduler (the thing under test is what is rendered and saved): keeps the script, says 4242.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/bash\ncat > {tmp_path / 'submitted.sbatch'}\necho 4242\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    body = f"""pretrain:
  overrides: [run.dir={tmp_path / "run"}, "logging.tensorboard=${{oc.env:EEGFM_TEST_SECRET}}"]
slurm:
  log_dir: {tmp_path / "logs"}
  env:
    AWS_SECRET_ACCESS_KEY: ${{oc.env:EEGFM_TEST_SECRET}}
    TOKEN_URL: "https://x.org/a b/${{oc.env:EEGFM_TEST_SECRET}}?$q"
    REGION: ${{oc.env:EEGFM_TEST_UNSET,eu-west-1}}
"""
    cfg = load_launch_config(_launch_config(tmp_path, body))
    job = slurm.submit_pretrain(cfg, "launch.yaml")
    saved = Path(job["script"])
    assert saved == tmp_path / "run" / "launch" / "eegfm-cpu-4242.sbatch"
    script = saved.read_text()
    assert script == (tmp_path / "submitted.sbatch").read_text()
    assert secret not in script
    assert 'export AWS_SECRET_ACCESS_KEY="${EEGFM_TEST_SECRET}"\n' in script
    assert "'logging.tensorboard=${oc.env:EEGFM_TEST_SECRET}'" in script  # for `eegfm pretrain` to resolve
    # On the node, bash resolves the references from the job's environment.
    stand_in = 'srun() { printf "%s\\0" "$AWS_SECRET_ACCESS_KEY" "$TOKEN_URL" "$REGION"; }'
    args = _run_script(script, tmp_path, stand_in, env={"EEGFM_TEST_SECRET": secret})
    assert args == [secret, f"https://x.org/a b/{secret}?$q", "eu-west-1"]


# --- The launch config is typed: typos, wrong types and out-of-range values are refused by name. ---


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("slurm.partitonn=x", "unknown key slurm.partitonn; did you mean slurm.partition?"),
        ("ingest.taks=3", "unknown key ingest.taks; did you mean ingest.tasks?"),
        (
            "resources.gpus_per_nod=4",
            "unknown key resources.gpus_per_nod; did you mean resources.gpus_per_node?",
        ),
        ("pretrain.overides=[]", "unknown key pretrain.overides; did you mean pretrain.overrides?"),
        ("nmae=x", "unknown key nmae; did you mean name?"),
        ("resources.nodes=four", "resources.nodes: Value 'four'"),
        ("slurm.requeue=maybe", "slurm.requeue: Value 'maybe'"),
        ("resources.nodes=0", "resources.nodes=0 must be at least 1"),
        ("slurm.signal_before_s=-1", "slurm.signal_before_s=-1 must be at least 0"),
        ("slurm.env.A=[1,2]", "slurm.env.A: give a single value"),
        ("k8s.kind=Deployment", "k8s.kind must be one of PyTorchJob, JobSet"),
    ],
)
def test_launch_config_mistakes_exit_2_with_one_line_naming_the_key(override: str, message: str) -> None:
    done = _cli(
        "submit", "slurm", "--config", "configs/launch/slurm_4x8_reve_base.yaml", "--dry-run", override
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("eegfm submit: error: configs/launch/slurm_4x8_reve_base.yaml: ")
    assert message in line, line


def test_every_launch_config_field_is_documented() -> None:
    from eegfm.config import field_docs
    from eegfm.launch import config

    for schema in (
        config.LaunchConfig,
        config.PretrainRef,
        config.Resources,
        config.Slurm,
        config.Ingest,
        config.K8s,
    ):
        missing = {f.name for f in dataclasses.fields(schema)} - set(field_docs(schema))
        assert not missing, f"{schema.__name__}: {missing}"
    for path in LAUNCH.glob("*.yaml"):  # and the committed configs load
        load_launch_config(path)


def test_a_refused_submission_is_one_line_with_the_schedulers_reason(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    config = LAUNCH / "slurm_cpu_2node.yaml"
    overrides = [f"slurm.log_dir={tmp_path / 'logs'}", f"pretrain.overrides=[run.dir={tmp_path / 'run'}]"]
    done = _cli("submit", "slurm", "--config", str(config), *overrides, path=str(bin_dir))
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr
        == "eegfm submit: error: sbatch refused the job: sbatch: error: invalid partition specified: gpu\n"
    )
