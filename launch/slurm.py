"""SLURM: render sbatch scripts from a launch config and submit them; the jobs run the `eegfm` commands.

Pretraining: one task per GPU (`--ntasks-per-node` = GPUs per node) running `srun eegfm pretrain
--resume auto …`, so Lightning takes ranks from SLURM; `--signal=USR1@s` warns the run, which saves at the
next step boundary and requeues the job (`--requeue`), and the requeued job resumes. Ingest: an array job
whose task i ingests partition i of N, and a merge job that waits for all of them (`afterok`);
partitions already finished are not submitted again.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import jinja2
from omegaconf import DictConfig, OmegaConf

from eegfm.ingest import contract
from eegfm.storage import atomic_write, exists, join_url

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_TEMPLATES.filters["quote"] = lambda value: shlex.quote(str(value))


def pretrain_command(cfg: DictConfig, devices: int, resume: bool = True) -> str:
    """The `eegfm pretrain` command line every task runs, sized for the job."""
    overrides = [
        *cfg.pretrain.overrides,
        f"trainer.num_nodes={cfg.resources.nodes}",
        f"trainer.devices={devices}",
    ]
    words = ["eegfm", "pretrain", "--config", cfg.pretrain.config, *(["--resume", "auto"] if resume else [])]
    return shlex.join([*words, *overrides])


def run_dir(cfg: DictConfig) -> str:
    """The run directory the pretraining config resolves to, after the launch config's overrides."""
    from eegfm.config import load_config

    return str(load_config(cfg.pretrain.config, list(cfg.pretrain.overrides)).run.dir)


def render_pretrain(cfg: DictConfig, source: str) -> str:
    r, s = cfg.resources, cfg.slurm
    tasks_per_node = r.gpus_per_node or 1  # one process per GPU; one per node on CPU-only nodes
    return _TEMPLATES.get_template("pretrain.sbatch.j2").render(
        source=source,
        name=cfg.name,
        r=r,
        s=s,
        run_dir=run_dir(cfg),
        tasks_per_node=tasks_per_node,
        mem_per_cpu_mb=int(r.mem_per_task_gb * 1024 / r.cpus_per_task),
        command=pretrain_command(cfg, tasks_per_node),
    )


def pending_partitions(out: str, tasks: int) -> list[int]:
    """Ingest partitions of `out` that have not written their task manifest yet."""
    done = [
        exists(join_url(out, contract.TASKS_DIR, contract.task_stem(i, tasks) + ".json"))
        for i in range(tasks)
    ]
    return [i for i in range(tasks) if not done[i]]


def render_ingest(cfg: DictConfig, partitions: list[int]) -> tuple[str, str]:
    """(array script for `partitions`, merge script) of the launch config's `ingest` section."""
    i, s = cfg.ingest, cfg.slurm
    words = ["eegfm", "shards", "--dataset", i.dataset, "--no-progress"]
    words += [*(["--root", i.root] if i.root else []), "--out", ingest_out(cfg)]
    array = ",".join(str(p) for p in partitions)
    common = {"name": f"{cfg.name}-ingest", "s": s, "i": i, "tasks": i.tasks}
    array_script = _TEMPLATES.get_template("ingest.sbatch.j2").render(
        **common, array=array, command=shlex.join(words)
    )
    merge_script = _TEMPLATES.get_template("merge.sbatch.j2").render(**common, out=ingest_out(cfg))
    return array_script, merge_script


def ingest_out(cfg: DictConfig) -> str:
    return str(cfg.ingest.out or f"shards/{cfg.ingest.dataset}")


def sbatch(script: str, *options: str) -> str:
    """Submit a script on standard input; returns the job id."""
    done = subprocess.run(
        ["sbatch", "--parsable", *options], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"sbatch refused the job: {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]


def submit_pretrain(cfg: DictConfig, source: str) -> dict[str, Any]:
    """Submit the pretraining job; its script is saved in the run directory first."""
    script = render_pretrain(cfg, source)
    Path(cfg.slurm.log_dir).mkdir(parents=True, exist_ok=True)
    job = sbatch(script)
    saved = join_url(run_dir(cfg), "launch", f"{cfg.name}-{job}.sbatch")
    with atomic_write(saved) as path, open(path, "w") as f:
        f.write(script)
    return {"job": job, "script": saved}


def submit_ingest(cfg: DictConfig) -> dict[str, Any]:
    """Submit the partitions still to do as an array job, then the merge after all of them."""
    pending = pending_partitions(ingest_out(cfg), int(cfg.ingest.tasks))
    Path(cfg.slurm.log_dir).mkdir(parents=True, exist_ok=True)
    array_script, merge_script = render_ingest(cfg, pending)
    jobs: dict[str, Any] = {"partitions": pending}
    if pending:
        jobs["array"] = sbatch(array_script)
        jobs["merge"] = sbatch(merge_script, f"--dependency=afterok:{jobs['array']}")
    elif not exists(join_url(ingest_out(cfg), contract.MANIFEST_NAME)):
        jobs["merge"] = sbatch(merge_script)
    return jobs


def load_launch_config(path: str, overrides: list[str]) -> DictConfig:
    from eegfm.config import load_config

    cfg = load_config(path, overrides)
    OmegaConf.set_readonly(cfg, True)
    return cfg
