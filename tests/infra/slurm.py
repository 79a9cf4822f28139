"""A real SLURM on this host: munged, slurmctld and two slurmd daemons (nodes n1 and n2), from Debian's
packages, which are installed when absent."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.ports import free_port

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


class SlurmCluster:
    """A real SLURM on this host: munged, slurmctld and two slurmd daemons as nodes n1 and n2.

    Debian's packages (`slurmctld slurmd munge slurm-client`) are installed when absent. Everything lives
    under a temporary folder with its own slurm.conf, munge key and socket; only `/etc/hosts` gains
    `n1 n2` (the training's rendezvous resolves the first node's name).
    """

    PACKAGES = ("slurmctld", "slurmd", "munge", "slurm-client")

    def __init__(self, base: Path):
        self.base = base
        for folder in ("munge", "state", "spool", "log"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        (base / "munge").chmod(0o755)  # munged insists that its socket's folder is o+x
        subprocess.run(["mungekey", "--create", f"--keyfile={base}/munge/munge.key"], check=True)
        ctld, n1, n2 = (free_port() for _ in range(3))
        self.conf = base / "slurm.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=eegfm",
                    "SlurmctldHost=localhost",
                    f"SlurmctldPort={ctld}",
                    f"SlurmdPort={n1}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire=10: a requeued job starts again after ~11 s instead of ~2 min
                    f"AuthInfo=socket={base}/munge/munge.sock,cred_expire=10",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={base}/state",
                    f"SlurmdSpoolDir={base}/spool/%n",
                    f"SlurmctldPidFile={base}/slurmctld.pid",
                    f"SlurmdPidFile={base}/slurmd-%n.pid",
                    f"SlurmctldLogFile={base}/log/slurmctld.log",
                    f"SlurmdLogFile={base}/log/slurmd-%n.log",
                    "MailProg=/bin/true",
                    "ProctrackType=proctrack/linuxproc",  # no cgroups, no systemd in a container
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=bf_interval=1",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "ReturnToService=2",
                    "KillWait=5",
                    "MinJobAge=600",
                    "InactiveLimit=0",
                    *(
                        f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs=2 Sockets=1 CoresPerSocket=2 "
                        "ThreadsPerCore=1 RealMemory=8000 State=UNKNOWN"
                        for name, port in (("n1", n1), ("n2", n2))
                    ),
                    "PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        m = base / "munge"
        self._run(
            "munged", f"--socket={m}/munge.sock", f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
            f"--log-file={base}/log/munged.log", f"--seed-file={m}/munged.seed",
        )  # fmt: skip
        self._run("slurmctld", "-f", str(self.conf))
        for node in ("n1", "n2"):
            self._run("slurmd", "-f", str(self.conf), "-N", node)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            idle = self._run("sinfo", "-h", "-N", "-t", "idle", "-o", "%N", check=False).stdout.split()
            if sorted(set(idle)) == ["n1", "n2"]:
                return
            time.sleep(0.5)
        pytest.fail(f"SLURM nodes did not come up; see {base}/log")

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check)

    def job(self, job: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, …)."""
        out = self._run("scontrol", "-o", "show", "job", job).stdout
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def wait(self, job: str, timeout: float = 600) -> dict[str, str]:
        """Wait until a job has ended; returns its record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.job(job)
            if record["JobState"] in ENDED:
                return record
            time.sleep(1)
        pytest.fail(f"SLURM job {job} did not end within {timeout} s: {self.job(job)}")

    def stop(self) -> None:
        pids = [p.read_text().strip() for p in self.base.glob("*.pid")]
        self._run("scancel", "--user=root", check=False)
        self._run("scontrol", "shutdown", check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.25)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        self._run("munged", f"--socket={self.base}/munge/munge.sock", "--stop", check=False)


def install_slurm() -> str | None:
    """Install Debian's SLURM packages when absent; returns why not, or None."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "SLURM is not installed, and installing Debian's packages needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *SlurmCluster.PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    return None
