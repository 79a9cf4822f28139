"""SLURM: render sbatch scripts from a launch config and submit them; the jobs run the `eegfm` commands.

Pretraining: one task per GPU (`--ntasks-per-node` = GPUs per node) running `srun eegfm pretrain
--resume auto …`, so Lightning takes ranks from SLURM; `--signal=USR1@s` warns the run, which saves at the
next step boundary and requeues the job (`--requeue`), and the requeued job resumes. Ingest: an array job
whose task i ingests partition i of N, and a merge job that waits for all of them (`afterok`);
partitions already finished are not submitted again.

Config values are data: names pasted into `#SBATCH` lines are checked against narrow patterns and
everything else is shell-quoted (`launch/shell.py`); values read from the environment stay references.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import jinja2
from omegaconf import DictConfig, OmegaConf

from eegfm.ingest import contract
from eegfm.launch import shell
from eegfm.storage import atomic_write, exists, join_url

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_TEMPLATES.filters["quote"] = lambda value: shlex.quote(str(value))


def _raw(cfg: DictConfig, dotted: str) -> Any:
    """The value at `dotted` as written, its interpolations (`${oc.env:…}`) not resolved."""
    parent, _, leaf = dotted.rpartition(".")
    container = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.to_container(container, resolve=False).get(leaf)


def pretrain_command(cfg: DictConfig, devices: int, resume: bool = True) -> str:
    """The `eegfm pretrain` command line every task runs, sized for the job. An override that reads the
    environment (`${oc.env:…}`) is passed as written, for `eegfm pretrain` to resolve on the node."""
    written = OmegaConf.to_container(cfg.pretrain.overrides, resolve=False)
    overrides = [
        str(raw) if "oc.env:" in str(raw) else str(cfg.pretrain.overrides[n]) for n, raw in enumerate(written)
    ]
    overrides += [f"trainer.num_nodes={int(cfg.resources.nodes)}", f"trainer.devices={int(devices)}"]
    words = ["eegfm", "pretrain", "--config", cfg.pretrain.config, *(["--resume", "auto"] if resume else [])]
    return shlex.join([*words, *overrides])


def run_dir(cfg: DictConfig) -> str:
    """The run directory the pretraining config resolves to, after the launch config's overrides."""
    from eegfm.config import load_config

    return str(load_config(cfg.pretrain.config, list(cfg.pretrain.overrides)).run.dir)


def check(cfg: DictConfig, sections: tuple[str, ...] = ("slurm",)) -> None:
    """Refuse values that would not stay data in an sbatch script (see `launch/shell.py`)."""
    s = cfg.slurm
    shell.check_pattern("name", cfg.name, shell.SLURM_NAME, "a job name (letters, digits, _.+-)")
    for key in ("partition", "cpu_partition"):
        shell.check_pattern(f"slurm.{key}", s[key], shell.SLURM_PARTITIONS, "a list of partition names")
    for key in ("account", "qos"):
        shell.check_pattern(f"slurm.{key}", s[key], shell.SLURM_NAME, f"a SLURM {key} name")
    shell.check_pattern("slurm.time", s.time, shell.SLURM_TIME, "a SLURM time limit (D-HH:MM:SS)")
    shell.check_pattern("slurm.log_dir", s.log_dir, shell.DIRECTIVE_PATH, "a path without spaces or quotes")
    for n, line in enumerate(s.setup):
        shell.check_line(f"slurm.setup.{n}", line)
    for n, override in enumerate(OmegaConf.to_container(cfg.pretrain.overrides, resolve=False)):
        shell.check_line(f"pretrain.overrides.{n}", override)
    shell.check_line("pretrain.config", cfg.pretrain.config)
    raw_env = {key: _raw(cfg, f"slurm.env.{key}") for key in s.env}
    shell.check_env("slurm", dict(raw_env), raw_env)
    if "ingest" in sections:
        shell.check_pattern("ingest.time", cfg.ingest.time, shell.SLURM_TIME, "a SLURM time limit")
        for key in ("dataset", "root", "out"):
            shell.check_line(f"ingest.{key}", _raw(cfg, f"ingest.{key}"))


def _env_exports(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, shell word) for each `slurm.env` variable; `${oc.env:…}` values stay references."""
    exports = []
    for key in cfg.slurm.env:
        raw = _raw(cfg, f"slurm.env.{key}")
        value = None if "oc.env:" in str(raw) else cfg.slurm.env[key]
        exports.append((key, shell.shell_word(f"slurm.env.{key}", value, raw)))
    return exports


def render_pretrain(cfg: DictConfig, source: str) -> str:
    check(cfg)
    r, s = cfg.resources, cfg.slurm
    directory = run_dir(cfg)
    shell.check_line("--config", source)
    shell.check_line("run.dir", directory)
    tasks_per_node = int(r.gpus_per_node or 1)  # one process per GPU; one per node on CPU-only nodes
    return _TEMPLATES.get_template("pretrain.sbatch.j2").render(
        source=source,
        name=cfg.name,
        r=r,
        s=s,
        nodes=int(r.nodes),
        gpus_per_node=int(r.gpus_per_node or 0),
        cpus_per_task=int(r.cpus_per_task),
        signal_before_s=int(s.signal_before_s),
        env=_env_exports(cfg),
        run_dir=directory,
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
    check(cfg, ("slurm", "ingest"))
    i, s = cfg.ingest, cfg.slurm
    out = _ingest_out_word(cfg)
    words = [shlex.join(["eegfm", "shards", "--dataset", i.dataset, "--no-progress"])]
    if i.root:
        words += ["--root", shell.shell_word("ingest.root", i.root, _raw(cfg, "ingest.root"))]
    words += ["--out", out]
    common = {
        "name": f"{cfg.name}-ingest",
        "s": s,
        "env": _env_exports(cfg),
        "tasks": int(i.tasks),
        "cpus_per_task": int(i.cpus_per_task),
        "mem_per_task_gb": int(i.mem_per_task_gb),
        "time": i.time,
    }
    array_script = _TEMPLATES.get_template("ingest.sbatch.j2").render(
        **common, array=",".join(str(int(p)) for p in partitions), command=" ".join(words)
    )
    merge_script = _TEMPLATES.get_template("merge.sbatch.j2").render(**common, out=out)
    return array_script, merge_script


def _ingest_out_word(cfg: DictConfig) -> str:
    raw = _raw(cfg, "ingest.out")
    if raw and "oc.env:" in str(raw):
        return shell.shell_word("ingest.out", None, raw)
    return shlex.quote(ingest_out(cfg))


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
