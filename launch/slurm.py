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
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2

from eegfm.ingest import contract
from eegfm.launch import shell
from eegfm.launch.config import LaunchConfig, written
from eegfm.launch.errors import SubmitError
from eegfm.storage import atomic_write, exists, join_url

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _written(cfg: LaunchConfig, dotted: str) -> Any:
    """The value at `dotted` as written: a `${oc.env:…}` stays the lookup, not the secret it resolves to."""
    node: Any = written(cfg)
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part)
    return node


def pretrain_command(cfg: LaunchConfig, devices: int, resume: bool = True) -> str:
    """The `eegfm pretrain` command line every task runs, sized for the job. An override that reads the
    environment (`${oc.env:…}`) is passed as written, for `eegfm pretrain` to resolve on the node."""
    overrides = [str(o) for o in _written(cfg, "pretrain.overrides")]
    overrides += [f"trainer.num_nodes={cfg.resources.nodes}", f"trainer.devices={devices}"]
    words = [
        "eegfm",
        cfg.pretrain.command,
        "--config",
        cfg.pretrain.config,
        *(["--resume", "auto"] if resume else []),
    ]
    return shlex.join([*words, *overrides])


def run_dir(cfg: LaunchConfig) -> str:
    """The run directory the pretraining config resolves to, after the launch config's overrides."""
    from eegfm.config import load_config

    return str(load_config(cfg.pretrain.config, list(cfg.pretrain.overrides)).run.dir)


def _check_lines(cfg: LaunchConfig, keys: list[str]) -> None:
    """No newline in values that go into the script quoted: one line per value keeps the script readable
    and sbatch's directive parsing out of it."""
    for key in keys:
        value = _written(cfg, key)
        for n, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            shell.check_line(key if n is None else f"{key}.{n}", item)


def _env_exports(cfg: LaunchConfig) -> list[tuple[str, str]]:
    """(key, shell word) for each `slurm.env` variable; `${oc.env:…}` values stay references."""
    as_written = written(cfg)["slurm"]["env"]
    shell.refuse_inline_credentials("slurm", cfg.slurm.env, as_written)
    return [
        (key, shell.shell_word(f"slurm.env.{key}", value, as_written[key]))
        for key, value in cfg.slurm.env.items()
    ]


def render_pretrain(cfg: LaunchConfig, source: str) -> str:
    """The pretraining job's sbatch script; `source` (the launch config's path) is named in a comment."""
    _check_lines(cfg, ["pretrain.config", "pretrain.overrides"])
    r, s = cfg.resources, cfg.slurm
    directory = run_dir(cfg)
    shell.check_line("--config", source)
    shell.check_line("run.dir", directory)
    tasks_per_node = r.gpus_per_node or 1  # one process per GPU; one per node on CPU-only nodes
    return _TEMPLATES.get_template("pretrain.sbatch.j2").render(
        source=source,
        name=cfg.name,
        r=r,
        s=s,
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


def render_ingest(cfg: LaunchConfig, partitions: list[int]) -> tuple[str, str]:
    """(array script for `partitions`, merge script) of the launch config's `ingest` section."""
    i = cfg.ingest
    words = ["eegfm", "shards", "--dataset", shell.shell_word("ingest.dataset", i.dataset), "--no-progress"]
    if i.root:
        words += ["--root", shell.shell_word("ingest.root", i.root, _written(cfg, "ingest.root"))]
    out = shell.shell_word("ingest.out", ingest_out(cfg), _written(cfg, "ingest.out"))
    words += ["--out", out]
    common = {"name": f"{cfg.name}-ingest", "s": cfg.slurm, "i": i, "env": _env_exports(cfg)}
    array_script = _TEMPLATES.get_template("ingest.sbatch.j2").render(
        **common, array=",".join(str(int(p)) for p in partitions), command=" ".join(words)
    )
    merge_script = _TEMPLATES.get_template("merge.sbatch.j2").render(**common, out=out)
    return array_script, merge_script


def ingest_out(cfg: LaunchConfig) -> str:
    """Where the ingest writes its shards: `ingest.out`, else shards/<dataset>."""
    return cfg.ingest.out or f"shards/{cfg.ingest.dataset}"


def sbatch(script: str, *options: str) -> str:
    """Submit a script on standard input; returns the job id."""
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch is not on PATH: submit from a SLURM login node, or use --dry-run")
    done = subprocess.run(
        ["sbatch", "--parsable", *options], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise SubmitError(f"sbatch refused the job: {why}")
    return done.stdout.strip().split(";")[0]


def submit_pretrain(cfg: LaunchConfig, source: str) -> dict[str, Any]:
    """Submit the pretraining job; its script is saved in the run directory first."""
    script = render_pretrain(cfg, source)
    Path(cfg.slurm.log_dir).mkdir(parents=True, exist_ok=True)
    job = sbatch(script)
    saved = join_url(run_dir(cfg), "launch", f"{cfg.name}-{job}.sbatch")
    with atomic_write(saved) as path, open(path, "w") as f:
        f.write(script)
    return {"job": job, "script": saved}


def submit_ingest(cfg: LaunchConfig) -> dict[str, Any]:
    """Submit the partitions still to do as an array job, then the merge after all of them."""
    pending = pending_partitions(ingest_out(cfg), cfg.ingest.tasks)
    Path(cfg.slurm.log_dir).mkdir(parents=True, exist_ok=True)
    array_script, merge_script = render_ingest(cfg, pending)
    jobs: dict[str, Any] = {"partitions": pending}
    if pending:
        jobs["array"] = sbatch(array_script)
        jobs["merge"] = sbatch(merge_script, f"--dependency=afterok:{jobs['array']}")
    elif not exists(join_url(ingest_out(cfg), contract.MANIFEST_NAME)):
        jobs["merge"] = sbatch(merge_script)
    return jobs


def load_launch_config(path: str | Path, overrides: list[str] | None = None) -> LaunchConfig:
    """The launch config at `path` with `key=value` overrides, typed and checked (`launch/config.py`)."""
    from eegfm.launch.config import load_launch_config as load

    return load(path, overrides)
