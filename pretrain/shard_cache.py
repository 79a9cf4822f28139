"""A node-local cache of whole remote shards: one object-store request per shard per node, not one per window.

Every rank and loader worker of a node shares one folder (`data.cache_dir`). The first process that needs
a shard takes the shard's `flock` lock and streams the whole object to a temporary file in ranged GETs of
`FETCH_CHUNK` bytes (the index knows its size, so no HEAD is needed, and memory stays bounded by one
chunk), checks the size against the index and renames it into place; the others wait on the lock and then
read the file. Samples are then read from the local file by byte range. Readers keep the file open, so
an eviction by another process (an unlink) never cuts a read short.

The stream tells the cache the node's future (`plan_ahead`): the shards of the block being read, then
those of the next block, the same on every process of the node because the plan is. Under
`data.cache_limit_gb`, a shard about to be fetched makes room by evicting the shards needed furthest
ahead (never-needed first, the fetched shard itself and locked shards never). A prefetch may evict only
shards needed later than itself, so it never pushes out what the node reads now; without room, it waits
for the read that needs the shard. A fetch in flight reserves its size (in its temporary file's name), so
fetches of one node run in parallel and still respect the limit. Temporaries of a killed process are
removed by the next process that finds their shard's lock free. Local POSIX shards never come here: they
are read in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eegfm.errors import ConfigError, DataError

SUFFIX = ".shard"
FETCH = ".fetch-"  # <shard name>.fetch-<reserved bytes>-<random>: a fetch in flight
FETCH_CHUNK = 64 << 20  # bytes per ranged GET: four GETs for a 256-MB shard, and at most this in memory
NEVER = 1 << 62  # the `plan_ahead` position of a shard the node does not need soon


def default_cache_dir() -> str:
    """`$TMPDIR/eegfm-shard-cache`: node-local, resolved on the node that reads (not where the config was
    written)."""
    return os.path.join(tempfile.gettempdir(), "eegfm-shard-cache")


def is_remote(url: str) -> bool:
    """Whether a shard URL lives on object storage (cached) rather than a POSIX filesystem (read in place)."""
    fs, _ = fsspec.core.url_to_fs(url)
    return not isinstance(fs, LocalFileSystem)


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive `flock` on `path` for the block; yields False (without waiting) when `blocking` is off
    and another process holds it."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class ShardCache:
    """The node's cache, seen from one process. Shard ids index `urls` and `sizes` (the stream puts token
    shards after the data shards); `limit_bytes` None: `disk_room()`, 0: no limit."""

    def __init__(
        self,
        directory: str,
        limit_bytes: int | None,
        urls: Sequence[str],
        sizes: Sequence[int],
        prefetch_threads: int = 2,
    ):
        self.directory = Path(directory or default_cache_dir())
        self.directory.mkdir(parents=True, exist_ok=True)
        self.urls, self.sizes = list(urls), list(sizes)
        self.names = [hashlib.sha256(u.encode()).hexdigest()[:32] + SUFFIX for u in self.urls]
        self.remove_stale_fetches()
        self.limit_bytes = self.disk_room() if limit_bytes is None else limit_bytes
        if self.limit_bytes and self.sizes and max(self.sizes) > self.limit_bytes:
            biggest = max(range(len(self.sizes)), key=self.sizes.__getitem__)
            why = "data.cache_limit_gb" if limit_bytes is not None else "90 % of the room on its disk"
            raise ConfigError(
                f"data.cache_limit_gb: the shard cache {self.directory} may hold "
                f"{self.limit_bytes / 1e9:.3g} GB ({why}), less than shard {self.urls[biggest]} "
                f"({self.sizes[biggest] / 1e9:.3g} GB): "
                "raise the limit, or point data.cache_dir at a bigger node-local disk"
            )
        self.shard_of_name = {name: i for i, name in enumerate(self.names)}
        self.position: dict[int, int] = {}  # shard → how soon the node needs it (0: now); see plan_ahead
        self.fetches = 0  # whole-shard fetches this process made (for tests and logs)
        self._pool = ThreadPoolExecutor(max_workers=prefetch_threads) if prefetch_threads else None
        self._pending: dict[int, Future] = {}

    def path(self, shard: int) -> Path:
        return self.directory / self.names[shard]

    def _lock_path(self, name: str) -> Path:
        return self.directory / (name + ".lock")

    def plan_ahead(self, groups: Sequence[Sequence[int]]) -> None:
        """The node's future: `groups[0]` the shards needed now, `groups[1]` next, … (eviction order)."""
        position: dict[int, int] = {}
        for rank, shards in enumerate(groups):
            for shard in shards:
                position.setdefault(int(shard), rank)
        self.position = position

    def disk_room(self) -> int:
        """90 % of what the cache's disk can give it: free space plus what the cache already holds, so
        the same on every process of the node however full the cache is when each starts."""
        cached, reserved = self._held()
        return int(0.9 * (shutil.disk_usage(self.directory).free + sum(cached.values()) + reserved))

    def remove_stale_fetches(self) -> None:
        """Delete temporaries whose shard nobody is fetching (a killed process's): their lock is free."""
        for temporary in self.directory.glob("*" + SUFFIX + FETCH + "*"):
            name = temporary.name.split(FETCH, 1)[0]
            with file_lock(self._lock_path(name), blocking=False) as free:
                if free:
                    temporary.unlink(missing_ok=True)

    def _valid(self, shard: int) -> bool:
        try:
            return self.path(shard).stat().st_size == self.sizes[shard]
        except FileNotFoundError:
            return False

    def ensure(self, shard: int, refetch: bool = False, ahead: bool = False) -> bool:
        """The shard whole in the cache, fetched once per node; `refetch` replaces a cached copy found
        corrupt; `ahead` (a prefetch) gives up, returning False, when it would evict what is needed
        sooner."""
        with file_lock(self._lock_path(self.names[shard])):
            if refetch:
                self.path(shard).unlink(missing_ok=True)
            if self._valid(shard):
                return True
            for attempt in range(2):
                temporary = self._reserve(shard, ahead)
                if temporary is None:
                    return False
                got = self._fetch(shard, temporary)
                if got == self.sizes[shard]:
                    os.replace(temporary, self.path(shard))
                    return True
                temporary.unlink(missing_ok=True)
                if attempt:
                    raise DataError(
                        f"{self.urls[shard]}: fetched {got} bytes, its index says {self.sizes[shard]}: the "
                        "shard changed since it was indexed; restore or re-ingest it"
                    )
        raise AssertionError("unreachable")

    def _reserve(self, shard: int, ahead: bool) -> Path | None:
        """Make room for the shard (under a limit: evicting, under the node's room lock) and create its
        temporary, whose name reserves its size until it is renamed into place or removed."""
        size = self.sizes[shard]
        with file_lock(self.directory / ".room.lock") if self.limit_bytes else nullcontext():
            if self.limit_bytes and not self._make_room(size, shard, ahead):
                return None
            handle, name = tempfile.mkstemp(dir=self.directory, prefix=f"{self.names[shard]}{FETCH}{size}-")
            os.close(handle)
        return Path(name)

    def _fetch(self, shard: int, temporary: Path) -> int:
        """Stream the shard into `temporary` in ranged GETs; the last asks for one byte more than the index
        says, so a longer object shows. Returns the bytes received."""
        url, size = self.urls[shard], self.sizes[shard]
        fs, remote = fsspec.core.url_to_fs(url)
        got = 0
        try:
            with open(temporary, "wb") as out:
                for start in range(0, max(size, 1), FETCH_CHUNK):
                    end = size + 1 if start + FETCH_CHUNK >= size else start + FETCH_CHUNK
                    blob = fs.cat_file(remote, start=start, end=end)
                    out.write(blob)
                    got += len(blob)
                    if len(blob) < end - start:
                        break
        except Exception as e:  # any storage failure is the shard's, named
            temporary.unlink(missing_ok=True)
            raise DataError(f"{url}: cannot fetch the shard into the cache ({e})") from e
        self.fetches += 1
        return got

    def _held(self) -> tuple[dict[str, int], int]:
        """Cached shards by name with their sizes, and the bytes reserved by fetches in flight."""
        cached, reserved = {}, 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SUFFIX):
                with suppress(FileNotFoundError):
                    cached[entry.name] = entry.stat().st_size
            elif FETCH in entry.name:
                with suppress(ValueError):
                    reserved += int(entry.name.split(FETCH, 1)[1].split("-", 1)[0])
        return cached, reserved

    def _make_room(self, needed: int, fetching: int, ahead: bool) -> bool:
        """Evict cached shards, needed furthest ahead first, until `needed` more bytes fit the limit; a
        prefetch (`ahead`) evicts only shards needed later than the one it fetches."""
        cached, reserved = self._held()
        total = sum(cached.values()) + reserved
        if total + needed <= self.limit_bytes:
            return True
        mine = self.position.get(fetching, NEVER)

        def when(name: str) -> int:
            shard = self.shard_of_name.get(name)
            return NEVER if shard is None else self.position.get(shard, NEVER)

        candidates = [n for n in cached if self.shard_of_name.get(n) != fetching]
        if ahead:
            candidates = [n for n in candidates if when(n) > mine]
        for name in sorted(candidates, key=when, reverse=True):
            if total + needed <= self.limit_bytes:
                break
            with file_lock(self._lock_path(name), blocking=False) as free:
                if free:  # another process holds it while fetching or checking it: leave it
                    (self.directory / name).unlink(missing_ok=True)
                    total -= cached[name]
        return total + needed <= self.limit_bytes or not ahead

    def prefetch(self, shards: Sequence[int]) -> None:
        """Fetch shards ahead of use in the background, in the given order (bounded by the pool);
        failures surface at read."""
        if self._pool is None:
            return
        self._pending = {s: f for s, f in self._pending.items() if not f.done()}
        for shard in dict.fromkeys(shards):
            if shard not in self._pending and not self._valid(shard):
                self._pending[shard] = self._pool.submit(self._quiet_ensure, shard)

    def _quiet_ensure(self, shard: int) -> None:
        with suppress(Exception):  # the read that needs the shard raises it, in plan order
            self.ensure(shard, ahead=True)

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
