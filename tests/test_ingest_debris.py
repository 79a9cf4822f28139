"""A run killed with SIGKILL leaves temporaries; its re-run removes exactly those and still writes the
bytes an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ingestrun import shards_command

from eegfm.storage import atomic_write, remove_stale_temporaries


def _env(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file under OUT but the resume journal's parts (a resumed run writes more of them)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".state/" not in p.relative_to(out).as_posix()
    }


def _debris(out: Path) -> list[str]:
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if ".tmp-" in p.name or p.name.endswith(".spool")
    )


def _kill_when(command: list[str], env: dict[str, str], ready, timeout: float = 60.0) -> None:
    """Start `command` in its own process group and SIGKILL the whole group (as a scheduler does) as
    soon as `ready()` holds."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()


@pytest.fixture(scope="module")
def uninterrupted(real_edf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(
        shards_command(real_edf_dir, out), check=True, capture_output=True, env=_env(out.parent / "t0")
    )
    return out


@pytest.mark.slow
def test_rerun_removes_the_shard_temporary_of_a_killed_run(
    real_edf_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out, env = tmp_path / "out", _env(tmp_path / "tmp")

    def writing_a_shard() -> bool:
        return any(p.stat().st_size > 0 for p in out.glob("*.tar.tmp-*")) if out.exists() else False

    _kill_when(shards_command(real_edf_dir, out), env, writing_a_shard)
    assert any(".tar.tmp-" in d for d in _debris(out)), "the kill did not hit a shard write"
    subprocess.run(shards_command(real_edf_dir, out), check=True, capture_output=True, env=env)
    assert _debris(out) == []
    assert _outputs(out) == _outputs(uninterrupted)


@pytest.mark.slow
def test_rerun_removes_the_spools_of_a_killed_workers_run(
    real_edf_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    env = _env(tmp)

    def spooling() -> bool:
        return any(out.glob("_tasks/*.spool/run-*/*.spool")) if out.exists() else False

    _kill_when(shards_command(real_edf_dir, out, "--workers", "2"), env, spooling)
    assert any(d.endswith(".spool") for d in _debris(out)), "the kill did not hit a spooling run"
    subprocess.run(
        shards_command(real_edf_dir, out, "--workers", "2"), check=True, capture_output=True, env=env
    )
    assert _debris(out) == []
    assert list(tmp.iterdir()) == []  # nothing spooled to the machine's temporary folder either
    assert _outputs(out) == _outputs(uninterrupted)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from eegfm.storage import atomic_write
    with atomic_write(sys.argv[1]) as path, open(path, "wb") as f:
        f.write(b"half a shard")
        f.flush()
        print(path, flush=True)
        time.sleep(600)
    """
)


def test_remove_stale_temporaries_keeps_live_writers_and_other_names(tmp_path: Path) -> None:
    dead = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / "step=1.ckpt")], stdout=subprocess.PIPE
    )
    dead_temp = Path(dead.stdout.readline().decode().strip())
    dead.kill()
    dead.wait()
    live = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / "step=2.ckpt")], stdout=subprocess.PIPE
    )
    try:
        live_temp = Path(live.stdout.readline().decode().strip())
        (tmp_path / "step=3.ckpt").write_bytes(b"a finished checkpoint")
        (tmp_path / "other.ckpt.tmp-abcd1234").write_bytes(b"another job's temporary")
        (tmp_path / "step=4.ckpt.tmp-notmine").write_bytes(b"not atomic_write's name")  # 7 characters
        with atomic_write(str(tmp_path / "step=5.ckpt")) as own, open(own, "wb") as f:
            f.write(b"this process is writing it")
            removed = remove_stale_temporaries(str(tmp_path), "step=")
            assert Path(own).exists()
        assert removed == [dead_temp.name]
        assert not dead_temp.exists() and live_temp.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [
                live_temp.name,
                "step=3.ckpt",
                "step=5.ckpt",
                "other.ckpt.tmp-abcd1234",
                "step=4.ckpt.tmp-notmine",
            ]
        )
        assert remove_stale_temporaries(str(tmp_path / "missing"), "step=") == []
        assert remove_stale_temporaries("memory://nowhere", "step=") == []
    finally:
        live.kill()
        live.wait()


@pytest.mark.s3
def test_a_killed_upload_leaves_its_local_spool_only_until_the_next_upload(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload to object storage spools in the temp folder; a SIGKILLed one used to leave
    `/tmp/eegfm-upload-*` forever (a whole checkpoint each). The next upload removes a dead one's, never
    a live one's."""
    import tempfile

    import fsspec

    fsspec.filesystem("s3").mkdir("debris")
    env = {**os.environ, **s3_env.env(), "TMPDIR": str(tmp_path)}
    spools = []
    for name in ("dead", "live"):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"s3://debris/{name}.ckpt"], stdout=subprocess.PIPE, env=env
        )
        spools.append((writer, Path(writer.stdout.readline().decode().strip())))
    (dead, dead_spool), (live, live_spool) = spools
    try:
        dead.kill()
        dead.wait()
        assert dead_spool.parent == tmp_path and dead_spool.exists()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this process's uploads spool there too
        with atomic_write("s3://debris/next.ckpt") as path, open(path, "wb") as f:
            f.write(b"a whole checkpoint")
        assert not dead_spool.exists() and live_spool.exists()
        assert fsspec.filesystem("s3").cat("debris/next.ckpt") == b"a whole checkpoint"
    finally:
        live.kill()
        live.wait()
