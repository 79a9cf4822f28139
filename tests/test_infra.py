"""The test infrastructure itself (tests/infra/): the S3 server counts the requests a reader makes, and
several servers share a host."""

from __future__ import annotations

from pathlib import Path

import pytest
from infra.s3 import S3Server

pytestmark = pytest.mark.s3


def test_request_counts_are_the_gets_and_puts_made_with_s3fs(s3_server: S3Server) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    fs.mkdir("counting")
    # The bucket's first object makes SeaweedFS grow its volumes; under load that PUT can fail with a 500
    # that botocore retries (2 PUTs for 1). Measure from the second object on, as a warm bucket behaves.
    fs.pipe_file("counting/warm", b"1")
    before = s3_server.settled_counts("counting")
    for n in range(3):
        fs.pipe_file(f"counting/object-{n}", bytes(range(256)) * 4)  # one PutObject each
    for n in range(7):
        start = 100 * n
        assert fs.cat_file(f"counting/object-{n % 3}", start=start, end=start + 10) == bytes(
            (start + i) % 256 for i in range(10)
        )  # one ranged GetObject each, no HEAD
    counted = s3_server.wait_for_requests(before, {"GET": 7, "PUT": 3}, bucket="counting")
    assert counted == {"GET": 7, "PUT": 3}
    assert s3_server.request_counts()["GET"] >= 7  # summed over all buckets too


@pytest.mark.slow
def test_a_second_s3_server_on_the_same_host_starts(s3_server: S3Server, tmp_path: Path) -> None:
    """Without -s3.port.iceberg=0 -s3.port.lance=0, the second server exits: 8181 and 9101 are taken."""
    import s3fs

    second = S3Server(tmp_path)
    try:
        assert second.endpoint != s3_server.endpoint
        for server, payload in ((s3_server, b"first"), (second, b"second")):
            fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
            fs.pipe("probe-bucket/which", payload)
        for server, payload in ((s3_server, b"first"), (second, b"second")):
            fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
            assert fs.cat("probe-bucket/which") == payload
    finally:
        second.stop()
