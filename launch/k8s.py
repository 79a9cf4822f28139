"""Kubernetes: render a Kubeflow PyTorchJob or a JobSet for pretraining, and an Indexed Job (+ merge Job)
for ingest; validate them offline; apply them with kubectl when it is there.

Pods run `torchrun` (so Lightning sees TorchElastic and takes its ranks from it) with the same
`eegfm pretrain --resume auto …` as SLURM: a restarted pod resumes from the newest complete checkpoint in
object storage. S3 credentials come only from a Secret reference; they are never rendered or logged.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

import yaml

from eegfm.errors import ConfigError
from eegfm.launch.config import LaunchConfig
from eegfm.launch.errors import SubmitError
from eegfm.launch.slurm import ingest_out, pretrain_command

KUBERNETES = "1.33"  # the API version the manifests are validated against
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _env(cfg: LaunchConfig) -> list[dict[str, Any]]:
    k = cfg.k8s
    secret = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": k.s3_secret, "key": key}}} for key in CREDENTIALS
    ]
    plain = [{"name": str(key), "value": str(value)} for key, value in k.env.items()]
    return secret + plain


def _pod_spec(
    cfg: LaunchConfig, command: list[str], *, gpus: int, cpus: int, memory_gb: int
) -> dict[str, Any]:
    k = cfg.k8s
    resources = {"cpu": str(cpus), "memory": f"{memory_gb}Gi"}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "pytorch",  # the name Kubeflow's training operator looks for
                "image": k.image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "env": _env(cfg),
                "resources": {"requests": resources, "limits": resources},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],  # DataLoader workers' tensors
            }
        ],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{k.shm_gb}Gi"}}],
    }
    if k.node_selector:
        spec["nodeSelector"] = dict(k.node_selector)
    if k.tolerations:
        spec["tolerations"] = [dict(toleration) for toleration in k.tolerations]
    return spec


def _torchrun(cfg: LaunchConfig, nodes: str, node_rank: str, master: str) -> list[str]:
    gpus = cfg.resources.gpus_per_node
    # exec: torchrun becomes the container's PID 1 and passes a pod's SIGTERM on to the training
    # processes, which checkpoint and stop.
    script = (
        f"exec torchrun --nnodes={nodes} --node-rank={node_rank} --nproc-per-node={gpus} "
        f"--master-addr={master} --master-port=29500 -m eegfm.cli "
        + pretrain_command(cfg, gpus).removeprefix("eegfm ")
    )
    return ["bash", "-c", script]


def render_pytorchjob(cfg: LaunchConfig) -> dict[str, Any]:
    r = cfg.resources
    command = _torchrun(cfg, "${PET_NNODES}", "${PET_NODE_RANK}", "${PET_MASTER_ADDR}")

    def replicas(count: int) -> dict[str, Any]:
        pod = _pod_spec(cfg, command, gpus=r.gpus_per_node, cpus=r.cpus_per_node, memory_gb=r.mem_per_node_gb)
        return {"replicas": count, "restartPolicy": "OnFailure", "template": {"spec": pod}}

    spec: dict[str, Any] = {
        "runPolicy": {"backoffLimit": cfg.k8s.max_restarts, "cleanPodPolicy": "None"},
        "nprocPerNode": str(r.gpus_per_node),
        "pytorchReplicaSpecs": {"Master": replicas(1)},
    }
    if r.nodes > 1:
        spec["pytorchReplicaSpecs"]["Worker"] = replicas(r.nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": cfg.name, "namespace": cfg.k8s.namespace},
        "spec": spec,
    }


def render_jobset(cfg: LaunchConfig) -> dict[str, Any]:
    """For clusters without Kubeflow: one Indexed Job of `nodes` pods; pod 0 is torchrun's rendezvous."""
    r, name = cfg.resources, cfg.name
    master = f"{name}-nodes-0-0.{name}"  # JobSet's headless service: <jobset>-<job>-<index>-<pod>.<jobset>
    command = _torchrun(cfg, str(r.nodes), "${JOB_COMPLETION_INDEX}", master)
    pod = _pod_spec(cfg, command, gpus=r.gpus_per_node, cpus=r.cpus_per_node, memory_gb=r.mem_per_node_gb)
    pod["restartPolicy"] = "Never"  # the JobSet restarts the whole set, so ranks stay together
    job = {
        "parallelism": r.nodes,
        "completions": r.nodes,
        "completionMode": "Indexed",
        "backoffLimit": 0,
        "template": {"spec": pod},
    }
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "namespace": cfg.k8s.namespace},
        "spec": {
            "failurePolicy": {"maxRestarts": cfg.k8s.max_restarts},
            "network": {"enableDNSHostnames": True},
            "replicatedJobs": [{"name": "nodes", "replicas": 1, "template": {"spec": job}}],
        },
    }


def render_ingest(cfg: LaunchConfig) -> list[dict[str, Any]]:
    """An Indexed Job whose completion index is the ingest partition, and the merge Job to run after it."""
    i, name = cfg.ingest, f"{cfg.name}-ingest"
    words = ["eegfm", "shards", "--dataset", i.dataset, "--no-progress", "--out", ingest_out(cfg)]
    words += ["--root", i.root] if i.root else []
    shards = shlex.join(words) + f' --num-tasks {i.tasks} --task-index "$JOB_COMPLETION_INDEX"'
    pod = _pod_spec(cfg, ["bash", "-c", shards], gpus=0, cpus=i.cpus_per_task, memory_gb=i.mem_per_task_gb)
    pod["restartPolicy"] = "Never"
    merge = _pod_spec(cfg, ["eegfm", "merge", "--out", ingest_out(cfg)], gpus=0, cpus=1, memory_gb=4)
    merge["restartPolicy"] = "Never"

    def job(job_name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job_name, "namespace": cfg.k8s.namespace},
            "spec": spec,
        }

    return [
        job(
            name,
            {
                "completions": i.tasks,
                "parallelism": i.parallelism,
                "completionMode": "Indexed",
                "backoffLimitPerIndex": 3,  # a re-run partition skips what it committed
                "maxFailedIndexes": 0,
                "template": {"spec": pod},
            },
        ),
        job(f"{name}-merge", {"backoffLimit": 3, "template": {"spec": merge}}),
    ]


def render_pretrain(cfg: LaunchConfig) -> dict[str, Any]:
    """The pretraining manifest of the kind `k8s.kind` names (checked when the config is loaded)."""
    return render_pytorchjob(cfg) if cfg.k8s.kind == "PyTorchJob" else render_jobset(cfg)


def validate(manifest: dict[str, Any]) -> None:
    """Offline checks: core kinds against the Kubernetes schemas (strict: unknown fields are errors); the
    pod templates inside a PyTorchJob and the Job template inside a JobSet the same way; the custom
    resources' own fields here; and credentials only as Secret references."""
    import kubernetes_validate

    kind, name = manifest["kind"], manifest["metadata"]["name"]
    if kind == "Job":
        core = [manifest]
    elif kind == "PyTorchJob":
        specs = manifest["spec"]["pytorchReplicaSpecs"]
        if set(specs) - {"Master", "Worker"} or specs.get("Master", {}).get("replicas") != 1:
            raise ConfigError(f"PyTorchJob {name}: needs exactly one Master (and optional Workers)")
        core = []
        for role, replica in specs.items():
            if replica.get("restartPolicy") not in ("Always", "OnFailure", "Never", "ExitCode"):
                raise ConfigError(f"PyTorchJob {name}: {role} has no valid restartPolicy")
            if not any(c["name"] == "pytorch" for c in replica["template"]["spec"]["containers"]):
                raise ConfigError(f"PyTorchJob {name}: {role} has no container named 'pytorch'")
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-{role.lower()}"}}
            core.append({**pod, "spec": replica["template"]["spec"]})
    elif kind == "JobSet":
        spec = manifest["spec"]
        if not spec.get("replicatedJobs") or int(spec.get("failurePolicy", {}).get("maxRestarts", -1)) < 0:
            raise ConfigError(f"JobSet {name}: needs replicatedJobs and a failurePolicy with maxRestarts")
        core = [
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job["name"]}, **job["template"]}
            for job in spec["replicatedJobs"]
        ]
    else:
        raise ConfigError(f"cannot validate a {kind}")
    for resource in core:
        try:
            kubernetes_validate.validate(resource, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:  # e.g. a toleration the schema does not know
            why = " ".join(str(e).split())
            raise ConfigError(f"{kind} {name}: not valid for Kubernetes {KUBERNETES}: {why}") from None
        for container in _containers(resource):
            for variable in container.get("env", []):
                if variable["name"] in CREDENTIALS and "value" in variable:
                    raise ConfigError(f"{kind} {name}: {variable['name']} inlined; use a Secret reference")


def _containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource["spec"]
    return (spec["template"]["spec"] if "template" in spec else spec)["containers"]


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # plain YAML: no &anchors for the parts pods share


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False)


def apply(manifests: list[dict[str, Any]], wait_for_first: bool = False) -> None:
    """`kubectl apply` each manifest; with `wait_for_first`, wait until the first Job completes (ingest)."""
    if shutil.which("kubectl") is None:
        raise SubmitError("kubectl is not on PATH: use --dry-run and apply the printed manifests yourself")
    for n, manifest in enumerate(manifests):
        _kubectl(["apply", "-f", "-"], to_yaml([manifest]))
        if wait_for_first and n == 0:
            meta = manifest["metadata"]
            _kubectl(["wait", "-n", meta["namespace"], "--for=condition=complete", "--timeout=-1s",
                      f"job/{meta['name']}"])  # fmt: skip


def _kubectl(arguments: list[str], manifest: str | None = None) -> None:
    """Run kubectl; its output passes through, and a refusal is a SubmitError carrying its stderr."""
    done = subprocess.run(["kubectl", *arguments], input=manifest, text=True, stderr=subprocess.PIPE)
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise SubmitError(f"kubectl {arguments[0]} failed: {why}")
