"""What the disk under the work directory can do by itself: the ceilings
that the cache rows are judged against.

Two numbers, each from a file of `size` bytes written first and deleted
after, read with O_DIRECT in 8 MiB pieces (no page cache on either side):

- `read`: the file read alone. No read served from a cache on this disk
  can be faster (the remount row).
- `read_while_writing`: the same read while another thread writes as much
  to a second file at once. On this machine the local RGW's OSD keeps its
  data on the same disk as every contender's cache, so a cold read that
  also fills a disk cache (zosfs's default) moves each byte twice through
  the one disk: the OSD reads it, the cache writes it. This is the ceiling
  of such a read, whatever the client does.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from pathlib import Path

from tests.bench.contenders import drop_caches

MiB = 1 << 20
PIECE = 8 * MiB


def _write(path: Path, buf: mmap.mmap, count: int) -> float:
    """Write `count` pieces of `buf` with O_DIRECT; the seconds it took."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        t0 = time.monotonic()
        for i in range(count):
            os.pwrite(fd, buf, i * PIECE)
        return time.monotonic() - t0
    finally:
        os.close(fd)


def _read(path: Path, count: int) -> float:
    """Read `count` pieces with O_DIRECT; the seconds it took."""
    buf = mmap.mmap(-1, PIECE)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        t0 = time.monotonic()
        for i in range(count):
            os.preadv(fd, [buf], i * PIECE)
        return time.monotonic() - t0
    finally:
        os.close(fd)
        buf.close()


def probe(directory: Path, size: int) -> dict[str, float]:
    """MiB/s of `read` and `read_while_writing` (module docstring); empty
    if the disk's filesystem refuses O_DIRECT or anything else fails."""
    count = max(1, size // PIECE)
    source, sink = directory / "disk-probe-read.bin", directory / "disk-probe-write.bin"
    buf = mmap.mmap(-1, PIECE)
    buf.write(os.urandom(PIECE))  # (random: no layer under the disk can compress it away)
    try:
        _write(source, buf, count)
        drop_caches()
        alone = _read(source, count)
        drop_caches()
        writer = threading.Thread(target=_write, args=(sink, buf, count))
        writer.start()
        try:
            mixed = _read(source, count)
        finally:
            writer.join()
        return {"read": count * PIECE / MiB / alone, "read_while_writing": count * PIECE / MiB / mixed}
    except OSError:
        return {}
    finally:
        buf.close()
        source.unlink(missing_ok=True)
        sink.unlink(missing_ok=True)
