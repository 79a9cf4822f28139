"""Shared fixtures: paths to the real EEG files, a real S3 server on 127.0.0.1, small corpora."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra.s3 import S3Server
from infra.slurm import SlurmCluster, install_slurm

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
def tueg_on_s3(s3_server: S3Server, tueg_shards: Path) -> str:
    """`tueg_shards` uploaded once to the session's S3 server: `s3://data/tueg`."""
    import s3fs

    env = s3_server.env()
    fs = s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": s3_server.endpoint},
        skip_instance_cache=True,
    )
    fs.mkdir("data")
    fs.put(str(tueg_shards), "data/tueg", recursive=True)
    return "s3://data/tueg"


@pytest.fixture(scope="session")
def chbmit_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CHB-MIT-like corpus (bipolar double-banana montage): a second dataset to mix with TUEG."""
    base = tmp_path_factory.mktemp("chbmit")
    return _ingest_fixture_corpus("chbmit", base / "corpus", base / "shards", subjects=2, duration_s=60.0)


@pytest.fixture(scope="session")
def split_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TUEG-like corpus of 6 subjects split by subject 60/40 into train and val: 4 subjects (95 windows)
    to train on, 2 others (48 windows) held out. (`tueg_shards` puts all its 4 subjects in train.)"""
    from eegfm.ingest.fixtures import generate_corpus
    from eegfm.ingest.recipe import load_recipe
    from eegfm.ingest.run import run_shards

    base = tmp_path_factory.mktemp("split")
    generate_corpus("tueg", base / "corpus", seed=0, n_subjects=6, duration_s=120.0)
    splits = ["splits.train=0.6", "splits.val=0.4", "splits.test=0.0"]
    recipe = load_recipe("tueg", splits, root=str(base / "corpus"))
    run_shards(recipe, str(base / "shards"), shard_bytes=512 * 1024, progress=False)
    return base / "shards"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    why_not = install_slurm()
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
