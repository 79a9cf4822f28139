"""A node-local cache of whole remote shards: one object-store request per shard per node, not one per window.

Every rank and loader worker of a node shares one folder (`data.cache_dir`). The first process that needs
a shard takes the shard's `flock` lock, fetches the whole object with ONE ranged GET (the index knows its
size, so no HEAD is needed) into a temporary file, checks the size against the index and renames it into
place; the others wait on the lock and then read the file. Samples are then read from the local file by
byte range. Readers keep the file open, so an eviction by another process (an unlink) never cuts a read
short. When adding a shard would pass `data.cache_limit_gb`, the cached shards this process needs
furthest ahead (or not at all) are evicted first, skipping any whose lock another process holds.
Local POSIX shards never come here: they are read in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eegfm.errors import ConfigError, DataError

SUFFIX = ".shard"


def default_cache_dir() -> str:
    """`$TMPDIR/eegfm-shard-cache`: node-local, resolved on the node that reads (not where the config was
    written)."""
    return os.path.join(tempfile.gettempdir(), "eegfm-shard-cache")


def is_remote(url: str) -> bool:
    """Whether a shard URL lives on object storage (cached) rather than a POSIX filesystem (read in place)."""
    fs, _ = fsspec.core.url_to_fs(url)
    return not isinstance(fs, LocalFileSystem)


class ShardCache:
    """The node's cache, seen from one process. `upcoming` (set by the stream: shard ids in plan order)
    tells eviction which shards are needed soonest."""

    def __init__(
        self, directory: str, limit_bytes: int, urls: Sequence[str], sizes: Sequence[int], prefetch: int = 2
    ):
        self.directory = Path(directory or default_cache_dir())
        self.directory.mkdir(parents=True, exist_ok=True)
        self.limit_bytes, self.urls, self.sizes = limit_bytes, list(urls), list(sizes)
        if limit_bytes and self.sizes and max(self.sizes) > limit_bytes:
            biggest = max(range(len(self.sizes)), key=self.sizes.__getitem__)
            raise ConfigError(
                f"data.cache_limit_gb: {limit_bytes / 1e9:g} GB is smaller than shard {self.urls[biggest]} "
                f"({self.sizes[biggest] / 1e9:.3g} GB); raise the limit (0: no limit)"
            )
        self.names = [hashlib.sha256(u.encode()).hexdigest()[:32] + SUFFIX for u in self.urls]
        self.shard_of_name = {name: i for i, name in enumerate(self.names)}
        self.upcoming: list[int] = []
        self.fetches = 0  # whole-shard fetches this process made (for tests and logs)
        self._pool = ThreadPoolExecutor(max_workers=prefetch) if prefetch else None
        self._pending: dict[int, object] = {}

    def path(self, shard: int) -> Path:
        return self.directory / self.names[shard]

    @contextmanager
    def _locked(self, shard: int) -> Iterator[None]:
        with open(self.directory / (self.names[shard] + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _valid(self, shard: int) -> bool:
        try:
            return self.path(shard).stat().st_size == self.sizes[shard]
        except FileNotFoundError:
            return False

    def ensure(self, shard: int, refetch: bool = False) -> None:
        """The shard whole in the cache, fetched once per node; `refetch` replaces a cached copy found
        corrupt."""
        with self._locked(shard):
            if refetch:
                self.path(shard).unlink(missing_ok=True)
            if self._valid(shard):
                return
            with self._room():
                self._fetch_checked(shard)

    @contextmanager
    def _room(self) -> Iterator[None]:
        """Under a limit, one fetch at a time per node, so that two fetchers cannot both count the same
        free space; without a limit, fetches run in parallel."""
        if not self.limit_bytes:
            yield
            return
        with open(self.directory / ".room.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _fetch_checked(self, shard: int) -> None:
        """Fetch, verify the size against the index, fetch once more on a mismatch, then give up."""
        self._make_room(self.sizes[shard], shard)
        for attempt in range(2):
            got = self._fetch(shard)
            if got == self.sizes[shard]:
                return
            if attempt:
                self.path(shard).unlink(missing_ok=True)
                raise DataError(
                    f"{self.urls[shard]}: fetched {got} bytes, its index says {self.sizes[shard]}: the "
                    "shard changed since it was indexed; restore or re-ingest it"
                )

    def _fetch(self, shard: int) -> int:
        url, size = self.urls[shard], self.sizes[shard]
        fs, remote = fsspec.core.url_to_fs(url)
        try:
            # One ranged GET of the whole object (a range needs no HEAD); one byte more shows a longer object.
            blob = fs.cat_file(remote, start=0, end=size + 1)
        except Exception as e:  # any storage failure is the shard's, named
            raise DataError(f"{url}: cannot fetch the shard into the cache ({e})") from e
        self.fetches += 1
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".fetch-")
        with os.fdopen(handle, "wb") as out:
            out.write(blob)
        os.replace(temporary, self.path(shard))
        return len(blob)

    def _make_room(self, needed: int, fetching: int) -> None:
        """Evict cached shards, needed furthest ahead first, until `needed` more bytes fit the limit."""
        if not self.limit_bytes:
            return
        cached = {p.name: p.stat().st_size for p in self.directory.glob("*" + SUFFIX) if p.exists()}
        total = sum(cached.values())
        if total + needed <= self.limit_bytes:
            return
        soon = {}
        for position, shard in enumerate(self.upcoming):
            soon.setdefault(shard, position)
        never = len(self.upcoming)
        order = sorted(
            (n for n in cached if self.shard_of_name.get(n) != fetching),
            key=lambda n: -soon.get(self.shard_of_name.get(n, -1), never),
        )
        for name in order:
            if total + needed <= self.limit_bytes:
                return
            if self._evict(name):
                total -= cached[name]

    def _evict(self, name: str) -> bool:
        """Remove one cached shard unless another process holds its lock (fetching or checking it)."""
        with open(self.directory / (name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                (self.directory / name).unlink(missing_ok=True)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def prefetch(self, shards: Iterable[int]) -> None:
        """Fetch shards ahead of use in the background (bounded by the pool); failures surface at read."""
        if self._pool is None:
            return
        self._pending = {s: f for s, f in self._pending.items() if not f.done()}
        for shard in dict.fromkeys(shards):
            if shard not in self._pending and not self._valid(shard):
                self._pending[shard] = self._pool.submit(self._quiet_ensure, shard)

    def _quiet_ensure(self, shard: int) -> None:
        with suppress(Exception):  # the read that needs the shard raises it, in plan order
            self.ensure(shard)

    def read(
        self, shard: int, starts: Sequence[int], sizes: Sequence[int], refetch: bool = False
    ) -> list[bytes]:
        """Byte ranges of a shard, from its cached copy (fetched first if missing or the wrong size)."""
        for _ in range(3):
            self.ensure(shard, refetch)
            refetch = False
            try:
                handle = os.open(self.path(shard), os.O_RDONLY)
            except FileNotFoundError:  # evicted by another process between fetch and open: fetch again
                continue
            try:
                if os.fstat(handle).st_size != self.sizes[shard]:  # truncated on disk since
                    refetch = True
                    continue
                return [os.pread(handle, size, start) for start, size in zip(starts, sizes, strict=True)]
            finally:
                os.close(handle)
        raise DataError(f"{self.urls[shard]}: cached copy in {self.directory} keeps vanishing or changing")
