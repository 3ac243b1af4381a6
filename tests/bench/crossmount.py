"""The cross-mount workload (issue 20): `cat` of small files just rewritten
by another mount of the same bucket.

Close-to-open as users know it from NFS: what one mount closed, another
reads as soon as it opens it. Mount B reads N small files once (so it holds
them in its caches and the kernel holds their attributes), mount A rewrites
them all with other bytes of the same size, and at once B `cat`s them all;
the time is that `cat`. The bytes must be the new ones: a contender that
serves any old byte gets a failure, not a time.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess
import time

from tests.bench.contenders import Contender, FuseContender
from tests.bench.context import Context, DataError, Sample, request_counts, write_file


def cat(paths: list[str]) -> tuple[float, bytes]:
    """One `cat` of all the files; (seconds, its output)."""
    t0 = time.monotonic()
    result = subprocess.run(["cat", *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seconds = time.monotonic() - t0
    if result.returncode != 0:
        raise DataError(f"cat exited {result.returncode}: {result.stderr.decode()[:200]}")
    return seconds, result.stdout


def cross_mount_cat(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """`cat` of N small files on mount B just after mount A rewrote them (correct content required)."""
    assert isinstance(who, FuseContender)
    s = ctx.sizes
    bucket = ctx.bucket("xmount")
    prefix = f"{who.name}-{run}/"
    names = [f"f{i:05d}.dat" for i in range(s.small_files)]
    size = s.small_size
    old = [bytes(ctx.src.big[i * size:(i + 1) * size]) for i in range(s.small_files)]
    new = [bytes(ctx.src.big[(i + s.small_files) * size:(i + s.small_files + 1) * size]) for i in range(s.small_files)]
    writer = copy.copy(who)  # the same daemon and options; its own mount point, caches and logs
    writer.workdir = who.workdir / "writer"
    writer.mountpoint = writer.workdir / "mnt" / who.name
    writer.log_dir = writer.workdir / "logs"
    try:
        with ctx.mounted(who, bucket) as b, ctx.mounted(writer, bucket, cold=False) as a:
            (a.path / prefix).mkdir()
            for name, body in zip(names, old):
                write_file(a.path / prefix / name, memoryview(body))
            paths = [str(b.path / prefix / name) for name in names]
            _, got = cat(paths)  # B reads them: its caches hold this version
            if hashlib.md5(got).digest() != hashlib.md5(b"".join(old)).digest():
                raise DataError("the first cat on the reading mount did not read what the other mount wrote")
            for name, body in zip(names, new):
                write_file(a.path / prefix / name, memoryview(body))
            before = request_counts(who.stats(b))
            seconds, got = cat(paths)
            after = request_counts(who.stats(b))
            want = b"".join(new)
            if got != want:
                stale = sum(got[i * size:(i + 1) * size] != body for i, body in enumerate(new))
                raise DataError(f"cat on the reading mount served old or wrong bytes for {stale} of "
                                f"{len(new)} files just rewritten on the other mount")
    finally:
        ctx.delete(bucket, prefix)
    requests = {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}
    return {"xmount_cat": Sample([s.small_files / seconds], {"seconds": seconds, "requests": requests or None})}
