"""The launch config (`configs/launch/*.yaml`) as typed data: which pretraining run to start, on how many
nodes, and how SLURM, Kubernetes and the ingest jobs are asked for it.

`load_launch_config` checks it against these dataclasses, so a misspelt key or a value of the wrong type
is a `ConfigError` naming the key (and the nearest valid one) before anything is rendered; the values
pasted into `#SBATCH` lines are checked here too (`launch/shell.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from eegfm.config import load_typed, to_container
from eegfm.errors import ConfigError
from eegfm.launch import shell

K8S_KINDS = ("PyTorchJob", "JobSet")


def _at_least(section: str, values: dict[str, int], minimum: int) -> None:
    for key, value in values.items():
        if value < minimum:
            raise ConfigError(f"{section}.{key}={value} must be at least {minimum}")


def _plain_env(section: str, env: dict[str, Any]) -> None:
    """Environment values are single values: a list or mapping has no meaning as a variable."""
    for key, value in env.items():
        if isinstance(value, list | dict):
            raise ConfigError(f"{section}.{key}: give a single value (a string), not {type(value).__name__}")


@dataclass
class PretrainRef:
    """The pretraining run the job starts: a pretraining config and overrides applied to it."""

    config: str = MISSING
    """Path of the pretraining config (configs/pretrain/<name>.yaml), relative to where jobs start."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` overrides of that config, e.g. data.shards=[s3://…] and run.dir=s3://…."""
    command: str = "pretrain"
    """The `eegfm` verb the job runs with that config: pretrain, or finetune (a configs/finetune/ config)."""

    def __post_init__(self) -> None:
        if self.command not in ("pretrain", "finetune"):
            raise ConfigError(f"pretrain.command must be pretrain or finetune, not {self.command!r}")


@dataclass
class Resources:
    """What one job asks for: nodes, and per task (SLURM) or per pod (Kubernetes) CPUs, GPUs, memory."""

    nodes: int = 1
    """Nodes (SLURM) or pods (Kubernetes) the training runs on."""
    gpus_per_node: int = 0
    """GPUs per node; one training process per GPU (0: one process per node, on CPUs)."""
    cpus_per_task: int = 1
    """CPUs per training process (SLURM --cpus-per-task): loader workers + the training process."""
    mem_per_task_gb: int = 8
    """Memory per training process in GiB (SLURM, as --mem-per-cpu)."""
    cpus_per_node: int = 8
    """CPUs per pod (Kubernetes requests and limits)."""
    mem_per_node_gb: int = 64
    """Memory per pod in GiB (Kubernetes requests and limits)."""

    def __post_init__(self) -> None:
        _at_least("resources", {"gpus_per_node": self.gpus_per_node}, 0)
        _at_least(
            "resources",
            {
                "nodes": self.nodes,
                "cpus_per_task": self.cpus_per_task,
                "mem_per_task_gb": self.mem_per_task_gb,
                "cpus_per_node": self.cpus_per_node,
                "mem_per_node_gb": self.mem_per_node_gb,
            },
            1,
        )


@dataclass
class Slurm:
    """How the sbatch scripts ask SLURM for the job, and what they run before it."""

    time: str = "1-00:00:00"
    """Time limit (--time), D-HH:MM:SS."""
    partition: str | None = None
    """Partition(s) of the pretraining job, comma-separated (--partition); null: the cluster's default."""
    cpu_partition: str | None = None
    """Partition of the ingest jobs; null: `partition`."""
    account: str | None = None
    """Account charged (--account); null: the user's default."""
    qos: str | None = None
    """Quality of service (--qos); null: the default."""
    signal_before_s: int = 300
    """Seconds before the time limit SLURM sends USR1: the run checkpoints at the next step boundary."""
    requeue: bool = True
    """Requeue the job after that checkpoint (--requeue); the requeued job resumes from it."""
    log_dir: str = "logs/slurm"
    """Folder of the jobs' output files (--output), created at submission; no spaces or quotes."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the job's command on every node, e.g. `source .venv/bin/activate`."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables exported to the job; ${oc.env:NAME} stays a reference the node resolves. No credentials."""

    def __post_init__(self) -> None:
        for key in ("partition", "cpu_partition"):
            shell.check_pattern(f"slurm.{key}", getattr(self, key), shell.SLURM_PARTITIONS, "partition names")
        for key in ("account", "qos"):
            shell.check_pattern(f"slurm.{key}", getattr(self, key), shell.SLURM_NAME, f"a SLURM {key} name")
        shell.check_pattern("slurm.time", self.time, shell.SLURM_TIME, "a SLURM time limit (D-HH:MM:SS)")
        shell.check_pattern("slurm.log_dir", self.log_dir, shell.DIRECTIVE_PATH, "a path without spaces")
        for n, line in enumerate(self.setup):
            shell.check_line(f"slurm.setup.{n}", line)
        shell.check_env_keys("slurm", self.env)
        _plain_env("slurm.env", self.env)
        _at_least("slurm", {"signal_before_s": self.signal_before_s}, 0)


@dataclass
class Ingest:
    """`eegfm submit … --ingest`: one corpus ingested as N partitions in parallel, then merged."""

    dataset: str = "generic"
    """Recipe name (ingest/recipes/<name>.yaml)."""
    root: str | None = None
    """Folder of the raw recordings; null: the recipe's root."""
    out: str | None = None
    """Where the shards go (local or s3://…); null: shards/<dataset>."""
    tasks: int = 1
    """Partitions: array tasks (SLURM) or completion indexes (Kubernetes)."""
    parallelism: int = 1
    """Partitions running at once (Kubernetes)."""
    cpus_per_task: int = 1
    """CPUs (and ingest workers) per partition."""
    mem_per_task_gb: int = 4
    """Memory per partition in GiB."""
    time: str = "12:00:00"
    """Time limit of each array task (SLURM), D-HH:MM:SS."""

    def __post_init__(self) -> None:
        _at_least(
            "ingest",
            {
                "tasks": self.tasks,
                "parallelism": self.parallelism,
                "cpus_per_task": self.cpus_per_task,
                "mem_per_task_gb": self.mem_per_task_gb,
            },
            1,
        )
        shell.check_pattern("ingest.time", self.time, shell.SLURM_TIME, "a SLURM time limit (D-HH:MM:SS)")


@dataclass
class K8s:
    """How the Kubernetes manifests run the job: image, namespace, Secret and scheduling hints."""

    kind: str = "PyTorchJob"
    """Pretraining manifest: PyTorchJob (Kubeflow's training operator) or JobSet."""
    namespace: str = "default"
    """Namespace of the jobs."""
    image: str = "ghcr.io/eegfm/eegfm:0.1.0"
    """Container image (`make docker`)."""
    shm_gb: int = 16
    """Size of the memory-backed /dev/shm in GiB, for the DataLoader workers' tensors."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the pods must match (nodeSelector)."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Pod tolerations, as Kubernetes writes them."""
    s3_secret: str = "eegfm-s3"
    """Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, passed as secretKeyRef."""
    env: dict[str, str] = field(default_factory=dict)
    """Plain variables of the containers (e.g. AWS_ENDPOINT_URL); credentials only through `s3_secret`."""
    max_restarts: int = 3
    """Restarts of a failed job; each resumes from the newest complete checkpoint."""

    def __post_init__(self) -> None:
        if self.kind not in K8S_KINDS:
            raise ConfigError(f"k8s.kind must be one of {', '.join(K8S_KINDS)}, not {self.kind!r}")
        _at_least("k8s", {"shm_gb": self.shm_gb}, 1)
        _at_least("k8s", {"max_restarts": self.max_restarts}, 0)
        shell.check_env_keys("k8s", self.env)
        _plain_env("k8s.env", self.env)


@dataclass
class LaunchConfig:
    """A launch config: a pretraining run (or an ingest) and how SLURM or Kubernetes runs it."""

    name: str = MISSING
    """Job name (SLURM --job-name, Kubernetes metadata.name): letters, digits and _.+-."""
    pretrain: PretrainRef = field(default_factory=PretrainRef)
    """The pretraining run the job starts."""
    resources: Resources = field(default_factory=Resources)
    """Nodes, GPUs, CPUs and memory."""
    slurm: Slurm = field(default_factory=Slurm)
    """SLURM options (eegfm submit slurm)."""
    ingest: Ingest = field(default_factory=Ingest)
    """The ingest jobs (eegfm submit … --ingest)."""
    k8s: K8s = field(default_factory=K8s)
    """Kubernetes options (eegfm submit k8s)."""

    def __post_init__(self) -> None:
        shell.check_pattern("name", self.name, shell.SLURM_NAME, "a job name (letters, digits, _.+-)")


def load_launch_config(path: str | Path, overrides: list[str] | None = None) -> LaunchConfig:
    """`path` (with what it extends) and `key=value` overrides, checked; inline credentials refused."""
    cfg = load_typed(LaunchConfig, path, overrides)
    shell.refuse_inline_credentials("slurm", cfg.slurm.env, written(cfg)["slurm"]["env"])
    return cfg


def written(cfg: LaunchConfig) -> dict[str, Any]:
    """The config as plain dicts with its `${oc.env:…}` values as written, not resolved."""
    return to_container(cfg)
