"""What every workload shares: the sizes, the source data, the buckets, and the
checks that make a time count only if the data really is in the bucket.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.contenders import (
    Boto3,
    Contender,
    Endpoint,
    FuseContender,
    Mount,
    drop_caches,
)

MiB = 1 << 20
KiB = 1 << 10
SEED = 20240808

# How often the bucket is polled while waiting for data to arrive. A HEAD is
# cheap; a LIST of 1,000 keys costs RGW a few ms of CPU on a 2-core machine
# shared with the contender's uploads, so it is polled less often.
HEAD_POLL = 0.02
LIST_POLL = 0.1
DURABLE_TIMEOUT = 180.0
EMPTY_TIMEOUT = 10.0


class DataError(Exception):
    """A contender lost, corrupted or did not store data: recorded as a failure, never as a time."""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; `quick()` shrinks them for development runs."""

    big: int = 1024 * MiB             # sequential file; its quarters are the parallel files
    small_files: int = 1000
    small_size: int = 4 * KiB
    ls_files: int = 10_000
    tree_dirs: int = 100
    tree_files_per_dir: int = 100
    append_base: int = 256 * MiB
    append_small_base: int = 1 * KiB
    appends: int = 10
    append_size: int = 1 * KiB
    rand_4k_reads: int = 200
    rand_1m_reads: int = 100
    parallel: int = 4

    @classmethod
    def quick(cls) -> Sizes:
        return cls(big=64 * MiB, small_files=100, ls_files=1000, tree_dirs=10, tree_files_per_dir=50,
                   append_base=16 * MiB, appends=3, rand_4k_reads=50, rand_1m_reads=20)

    @property
    def quarter(self) -> int:
        return self.big // self.parallel


class Sources:
    """The data every contender writes: one pseudo-random file in tmpfs.

    It lives in /dev/shm so that dropping the page cache for cold reads does
    not turn the writers' source into disk reads, and is mapped so that
    writes through a mount take slices of it without copies. Its quarters are
    also separate files, for boto3's upload_file.
    """

    def __init__(self, directory: Path, sizes: Sizes):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.big_path = directory / "big.bin"
        rng = random.Random(SEED)
        piece = 16 * MiB
        with self.big_path.open("wb") as f:
            for start in range(0, sizes.big, piece):
                f.write(rng.randbytes(min(piece, sizes.big - start)))
        self._file = self.big_path.open("rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.big = memoryview(self._map)
        self.quarter_paths = []
        for i in range(sizes.parallel):
            path = directory / f"part{i}.bin"
            path.write_bytes(self.big[i * sizes.quarter:(i + 1) * sizes.quarter])
            self.quarter_paths.append(path)
        self.sizes = sizes
        self._md5: dict[tuple[int, int], str] = {}

    def quarter(self, i: int) -> memoryview:
        q = self.sizes.quarter
        return self.big[i * q:(i + 1) * q]

    def md5(self, start: int, length: int) -> str:
        """MD5 of big[start:start+length], computed once."""
        if (start, length) not in self._md5:
            self._md5[(start, length)] = hashlib.md5(self.big[start:start + length]).hexdigest()
        return self._md5[(start, length)]

    def close(self) -> None:
        self.big.release()
        self._map.close()
        self._file.close()


@dataclass
class Sample:
    """One run's measurements of one metric (several values, e.g. one per append) and its details."""

    values: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def md5_of(data: Any) -> str:
    return hashlib.md5(data).hexdigest()


def write_file(path: Path, data: memoryview, *, chunk: int = MiB, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
               ) -> None:
    """Write `data` in 1 MiB writes (like `dd bs=1M`, or `cp` on zosfs) and close.

    Errors from write() or close() propagate: EIO at close is how a
    filesystem says the data was not stored.
    """
    fd = os.open(path, flags, 0o644)
    try:
        pos = 0
        while pos < len(data):
            pos += os.write(fd, data[pos:pos + chunk])
    finally:
        os.close(fd)


def read_file(path: Path, into: memoryview, *, chunk: int = MiB) -> int:
    """Read a file in 1 MiB reads into `into`; return its length (reads on past `into` to find the end)."""
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < len(into):
            n = f.readinto(into[pos:pos + chunk])
            if not n:
                return pos
            pos += n
        return pos + len(f.read(1))


def common_prefix(keys: list[str]) -> str:
    prefix = os.path.commonprefix(keys)
    return prefix[:prefix.rfind("/") + 1] if "/" in prefix else prefix


class Context:
    """Shared state and helpers for the workloads."""

    def __init__(self, endpoint: Endpoint, workdir: Path, sources: Sources, sizes: Sizes, log: Any):
        self.endpoint = endpoint
        self.workdir = workdir
        self.src = sources
        self.sizes = sizes
        self.log = log
        self.client = endpoint.client()
        self.buckets: set[str] = set()
        self._buffer: bytearray | None = None
        self.rss: dict[str, dict[str, int]] = {}   # workload -> contender -> peak bytes
        self.mount_problems: list[str] = []
        self.workload = ""

    # -- buckets -----------------------------------------------------------

    def bucket(self, name: str) -> str:
        """The bucket of a workload ("bench-NAME"), created on first use."""
        bucket = f"bench-{name}"
        if bucket not in self.buckets:
            try:
                self.client.create_bucket(Bucket=bucket)
            except self.client.exceptions.BucketAlreadyOwnedByYou:
                pass
            self.buckets.add(bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every key under `prefix` with its size."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = obj["Size"]
        return found

    def delete(self, bucket: str, prefix: str = "", keys: list[str] | None = None) -> None:
        """Delete `keys`, or every key under `prefix`, in parallel batches of 1,000."""
        keys = list(self.keys(bucket, prefix)) if keys is None else keys
        batches = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]

        def delete(batch: list[str]) -> None:
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(delete, batches))

    def put_many(self, bucket: str, objects: list[tuple[str, bytes, dict[str, str], str]]) -> None:
        """PUT (key, body, metadata, content type) objects with 16 threads."""

        def put(obj: tuple[str, bytes, dict[str, str], str]) -> None:
            key, body, metadata, content_type = obj
            self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata, ContentType=content_type)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, objects))

    # -- durability and content checks ----------------------------------------

    def wait_durable(self, bucket: str, expected: dict[str, int], timeout: float = DURABLE_TIMEOUT) -> float:
        """Poll until every key is in the bucket with its expected size; return that moment (monotonic).

        Time to durability counts: rclone returns from close() at once and
        uploads later (5 s later by default), so a write is only done when a
        HEAD or LIST shows it. For zosfs and s3fs the first poll succeeds,
        since their close() returns once the data is stored.
        """
        pending = dict(expected)
        prefix = common_prefix(list(expected))
        deadline = time.monotonic() + timeout
        while True:
            if len(pending) <= 8:
                for key, size in list(pending.items()):
                    try:
                        head = self.client.head_object(Bucket=bucket, Key=key)
                    except self.client.exceptions.ClientError:
                        continue
                    if head["ContentLength"] == size:
                        del pending[key]
            else:
                for key, size in self.keys(bucket, prefix).items():
                    if pending.get(key) == size:
                        del pending[key]
            if not pending:
                return time.monotonic()
            if time.monotonic() > deadline:
                example = next(iter(pending))
                raise DataError(f"{len(pending)} of {len(expected)} objects not in the bucket with the right size "
                                f"{timeout:.0f} s after writing (e.g. {example})")
            time.sleep(HEAD_POLL if len(pending) <= 8 else LIST_POLL)

    def wait_empty(self, bucket: str, prefix: str, timeout: float = EMPTY_TIMEOUT) -> float:
        """Poll until nothing is left under `prefix`; return that moment (monotonic).

        Every contender deletes synchronously in unlink/rmdir, so whatever is
        still there after `timeout` stays: the directories come back on the next
        mount, and that is recorded as a failure.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = self.keys(bucket, prefix)
            if not left:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise DataError(f"rm -r left {len(left)} objects under {prefix} (e.g. {sorted(left)[0]})")
            time.sleep(LIST_POLL)

    def verify(self, bucket: str, expected: dict[str, str]) -> None:
        """Check that every key holds the source's bytes: so no contender wins by losing data.

        An object stored by one PUT (or one append) has the MD5 of its bytes
        as ETag, computed by the server from what it received, so a LIST
        checks thousands of small files at once. Objects whose ETag is not a
        plain MD5 (multipart uploads, several appends) are read back with a GET
        and hashed.
        """
        etags = self.etags(bucket, list(expected))
        to_read = {key: md5 for key, md5 in expected.items() if etags.get(key) != md5}
        missing = [key for key in to_read if key not in etags]
        if missing:
            raise DataError(f"{len(missing)} of {len(expected)} objects are missing (e.g. {missing[0]})")
        plain = [key for key in to_read if "-" not in etags[key]]
        if plain:
            raise DataError(f"{len(plain)} of {len(expected)} objects have wrong content (e.g. {plain[0]})")

        def check(item: tuple[str, str]) -> str | None:
            key, md5 = item
            digest = hashlib.md5()
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            while chunk := body.read(MiB):
                digest.update(chunk)
            return None if digest.hexdigest() == md5 else key

        with ThreadPoolExecutor(min(8, max(1, len(to_read)))) as pool:
            bad = [key for key in pool.map(check, to_read.items()) if key]
        if bad:
            raise DataError(f"{len(bad)} of {len(expected)} objects have wrong content (e.g. {bad[0]})")

    def etags(self, bucket: str, keys: list[str]) -> dict[str, str]:
        """The ETags (without quotes) of `keys` that exist: by HEAD for a few, by LIST for many."""
        found = {}
        if len(keys) <= 8:
            for key in keys:
                try:
                    found[key] = self.client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
                except self.client.exceptions.ClientError:
                    pass
            return found
        wanted = set(keys)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=common_prefix(keys)):
            for obj in page.get("Contents", []):
                if obj["Key"] in wanted:
                    found[obj["Key"]] = obj["ETag"].strip('"')
        return found

    def buffer(self, size: int) -> memoryview:
        """A reusable read buffer of `size` bytes (one allocation for the whole run)."""
        if self._buffer is None or len(self._buffer) < size:
            self._buffer = bytearray(size)
        return memoryview(self._buffer)[:size]

    # -- mounts ---------------------------------------------------------------

    @contextmanager
    def mounted(self, who: Contender, bucket: str, *, cold: bool = True, cache_dir: Path | None = None,
                data_cache: bool = False) -> Iterator[Mount]:
        """Mount `bucket` with `who`, and unmount on leaving, whatever happens.

        `cold` drops the kernel's caches first, so that nothing a previous
        mount read is served from RAM. The daemon's peak RSS is recorded per
        workload, and zosfs's request counters are kept in `mount.stats`.
        `data_cache`: with the contender's persistent cache of file data
        (see FuseContender.command).
        """
        assert isinstance(who, FuseContender)
        if cold:
            drop_caches()
        mount = who.mount(bucket, cache_dir=cache_dir, data_cache=data_cache)
        try:
            yield mount
            mount.stats = who.stats(mount)
        finally:
            mount.unmount()
            peaks = self.rss.setdefault(self.workload, {})
            if mount.peak_rss:
                peaks[who.name] = max(peaks.get(who.name, 0), mount.peak_rss)
            self._check_log(who, mount)

    def _check_log(self, who: Contender, mount: Mount) -> None:
        """Note errors a daemon logged or its exit status, for the report."""
        if mount.exit_status not in (0, None):
            self.mount_problems.append(f"{self.workload}: {who.name} exited with status {mount.exit_status} "
                                       f"(log {mount.log.name})")
        if who.name != "zosfs" or not mount.log.exists():
            return
        for line in mount.log.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line or "Traceback" in line or " WARNING " in line:
                self.mount_problems.append(f"{self.workload}: zosfs {mount.log.name}: {line.strip()[:300]}")

    def stats(self, who: Contender, mount: Mount) -> dict[str, Any] | None:
        return who.stats(mount) if isinstance(who, FuseContender) else None

    def fresh_client(self) -> Any:
        """A new boto3 client (no warm connections), for boto3's cold runs."""
        return self.endpoint.client()


def request_counts(stats: dict[str, Any] | None) -> dict[str, int]:
    """zosfs's request counts by operation, from `zosfs stats --json`."""
    if not stats:
        return {}
    return {op: s["count"] for op, s in stats.get("requests", {}).items()}


def request_delta(before: dict[str, Any] | None, after: dict[str, Any] | None, op: str,
                  field_name: str = "count") -> int | None:
    """How many `op` requests (or bytes) zosfs made between two stats snapshots."""
    if not before or not after:
        return None
    b = before.get("requests", {}).get(op, {}).get(field_name, 0)
    a = after.get("requests", {}).get(op, {}).get(field_name, 0)
    return a - b


__all__ = ["Boto3", "Context", "DataError", "MiB", "KiB", "SEED", "Sample", "Sizes", "Sources", "md5_of",
           "read_file", "write_file", "request_counts", "request_delta"]
