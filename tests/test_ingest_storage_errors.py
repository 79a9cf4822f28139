"""Storage that cannot be used gives `eegfm shards` exit code 2 and one line naming the URL or endpoint and
what to do, not a library's traceback: an unreachable endpoint, no credentials, OUT a file, a read-only
or a full filesystem."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO


def _shards(root: Path, out: str, env: dict[str, str] | None = None, wrap: list[str] | None = None):
    command = [
        *(wrap or []),
        sys.executable, "-m", "eegfm.cli", "shards", "--dataset", "generic", "--root", str(root),
        "--out", out, "--shard-mb", "0.25", "--no-progress",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eegfm shards: error: "), done.stderr
    return lines[0]


def _s3_env(endpoint: str, credentials: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    if credentials:
        env.update(AWS_ACCESS_KEY_ID="id", AWS_SECRET_ACCESS_KEY="secret")
    return env


def test_unreachable_endpoint_is_one_line_and_fast(real_edf_dir: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    done = _shards(real_edf_dir, "s3://bucket/x", _s3_env(f"http://127.0.0.1:{port}", credentials=True))
    line = _one_line_error(done)
    assert f"cannot reach endpoint http://127.0.0.1:{port} (connection refused)" in line
    assert "s3://bucket/x" in line and "AWS_ENDPOINT_URL" in line
    assert time.monotonic() - started < 10  # not s3fs's and botocore's retries (~13 s)


def test_missing_credentials_say_what_to_set(real_edf_dir: Path) -> None:
    with socket.socket() as listening:  # an endpoint that accepts connections: only credentials lack
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        endpoint = f"http://127.0.0.1:{listening.getsockname()[1]}"
        done = _shards(real_edf_dir, "s3://bucket/x", _s3_env(endpoint, credentials=False))
    line = _one_line_error(done)
    assert "s3://bucket/x" in line and "no credentials" in line and "AWS_ACCESS_KEY_ID" in line


def test_out_an_existing_file(real_edf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    line = _one_line_error(_shards(real_edf_dir, str(out)))
    assert f"OUT {out}: is a file, not a folder" in line
    line = _one_line_error(_shards(real_edf_dir, str(out / "below")))
    assert f"OUT {out / 'below'} (its parent {out}): is a file, not a folder" in line


def _mounted(options: str, folder: Path) -> list[str]:
    """A command prefix that runs the rest with a fresh tmpfs (`options`) on `folder`, in a private mount
    namespace: as root, chmod cannot make a folder read-only, but a read-only mount can; the test skips
    where unprivileged user namespaces are not available."""
    unshare = shutil.which("unshare")
    probe = [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o {options} tmpfs {folder}"] if unshare else None
    folder.mkdir(parents=True, exist_ok=True)
    if probe is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -rm` and tmpfs mounts to make a read-only or full filesystem")
    return [unshare, "-rm", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs {folder} && exec "$@"', "sh"]


def test_read_only_out(real_edf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    line = _one_line_error(_shards(real_edf_dir, str(out / "shards"), wrap=_mounted("ro", out)))
    assert f"{out / 'shards'}" in line and "read-only file system" in line


@pytest.mark.slow
def test_full_disk_names_the_file(real_edf_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    line = _one_line_error(_shards(real_edf_dir, str(out / "shards"), wrap=_mounted("size=1m", out)))
    assert f"{out / 'shards'}/generic-" in line and "no space left on device while writing" in line
    assert ".tmp-" not in line  # the shard's name, not its temporary's
