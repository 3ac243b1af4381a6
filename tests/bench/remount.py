"""The remount workload (issue 19): a sequential read of the big object after
a remount, served by each contender's persistent cache of file data on disk.

zosfs with its disk cache (on by default, in cache_dir), s3fs with
`-o use_cache=DIR`, rclone with `--vfs-cache-mode full`, each keeping its
cache directory across the remount. The object is read once on a first
mount (cold: page cache dropped, empty cache directory; that time is the
`seq_read_remount_cold` row), which is then unmounted; the page cache is
dropped, the contender mounts again with the same cache directory, and the
second read is timed (`seq_read_remount`). Both reads are checked against
the source. For zosfs the GETs of the timed read are counted (there should
be none: every block is on disk).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from tests.bench.contenders import Contender, FuseContender
from tests.bench.context import Context, DataError, MiB, Sample, md5_of, read_file, request_delta
from tests.bench.fixtures import read_fixture

CACHE_SETTLE = 60.0  # seconds zosfs may take to finish writing its disk cache after the first read


def seq_read_remount(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Read the big object on a mount with a persistent data cache, unmount, drop the page cache,
    mount again with the same cache directory, and time a second read (warm on disk)."""
    assert isinstance(who, FuseContender)
    bucket, key, size = read_fixture(ctx)
    expected = ctx.src.md5(0, size)
    buf = ctx.buffer(size)
    cache_dir = ctx.workdir / "cache" / f"{who.name}-remount-{run}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    extra: dict[str, Any] = {}
    try:
        with ctx.mounted(who, bucket, cache_dir=cache_dir, data_cache=True) as m:
            t0 = time.monotonic()
            got = read_file(m.path / key, buf)
            cold = time.monotonic() - t0
            if got != size or md5_of(buf) != expected:
                raise DataError(f"first read returned {got} bytes that differ from the object")
            if who.name == "zosfs":
                written = _wait_disk_cache(ctx, who, m, size)
                extra["disk_cache_written"] = written
        # (mounted() drops the page cache before mounting again.)
        with ctx.mounted(who, bucket, cache_dir=cache_dir, data_cache=True) as m:
            before = ctx.stats(who, m)
            t0 = time.monotonic()
            got = read_file(m.path / key, buf)
            warm = time.monotonic() - t0
            after = ctx.stats(who, m)
            if got != size or md5_of(buf) != expected:
                raise DataError(f"read after the remount returned {got} bytes that differ from the object")
        if before and after:
            extra.update(get_requests=request_delta(before, after, "GetObject"),
                         get_bytes=request_delta(before, after, "GetObject", "bytes"))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return {"seq_read_remount_cold": Sample([size / MiB / cold], {"seconds": cold}),
            "seq_read_remount": Sample([size / MiB / warm], {"seconds": warm, **extra})}


def _wait_disk_cache(ctx: Context, who: FuseContender, mount: Any, size: int) -> int:
    """Until zosfs's disk cache has written what the first read fetched (it writes behind the
    reads, which never wait for it; blocks it had to skip are never written, so it also stops
    when nothing was written for 3 s), at most CACHE_SETTLE seconds: the bytes written then."""
    deadline = time.monotonic() + CACHE_SETTLE
    written, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = ctx.stats(who, mount) or {}
        now = int(stats.get("disk_cache", {}).get("bytes_written", 0))
        if now != written:
            written, since = now, time.monotonic()
        if written >= size or time.monotonic() - since > 3:
            break
        time.sleep(0.5)
    return written
