"""Free TCP ports on 127.0.0.1 for the servers the tests start."""

from __future__ import annotations

import os
import random
import socket

_GIVEN: set[int] = set()  # ports handed out in this process: a server may not have bound them yet
_RANDOM = random.Random(os.getpid())  # test processes running at once start from different ports


def free_port() -> int:
    """A free port p with p + 10000 free too (SeaweedFS serves gRPC on port + 10000), never one handed
    out before in this process (a server started earlier may not have bound it yet)."""
    for port in _RANDOM.sample(range(20000, 30000), 2000):
        if {port, port + 10000} & _GIVEN:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _GIVEN.update((port, port + 10000))
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")
