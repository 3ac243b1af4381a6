"""The workloads (issues 8 and 21), one function per run.

Each run function takes (context, contender, run number), sets up what it
needs, measures, checks the data against the source, cleans up what it
wrote, and returns {metric name: Sample}. A filesystem contender is mounted
for each run (and again where a workload needs a cold mount), so no run
benefits from a previous run's caches unless it is meant to (the warm read,
zosfs's ls remount).

Buckets: each workload has its own bucket ("bench-NAME"), which every
contender mounts in turn; objects a run writes are deleted after it, so each
contender starts from the same bucket. Read-only fixtures (fixtures.py: the
1 GiB and 256 MiB objects, the ls directory, the find tree) are put once with
boto3, with s3fs-style metadata headers, and read by every contender.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.bench.contenders import Boto3, Contender, drop_caches
from tests.bench.crossmount import cross_mount_cat
from tests.bench.remount import seq_read_remount
from tests.bench.context import (
    SEED,
    Context,
    DataError,
    KiB,
    MiB,
    Sample,
    md5_of,
    read_file,
    request_counts,
    request_delta,
    write_file,
)
from tests.bench.fixtures import (
    ls_fixture,
    prepare_read,
    prepare_read_quarter,
    read_fixture,
    tree_fixture,
    tree_objects,
)
from zosfs.namespace.index import INDEX_PREFIX


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    throughput: bool = False   # unit MiB/s: in throughput.png and the first row of results.png


@dataclass(frozen=True)
class Workload:
    name: str
    metrics: tuple[Metric, ...]
    run: Callable[[Context, Contender, int], dict[str, Sample]]
    boto3: bool = True          # whether boto3 alone takes part
    prepare: Callable[[Context], None] | None = None


def now() -> float:
    return time.monotonic()


# -- sequential write ---------------------------------------------------------------


def seq_write(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Write the 1 GiB source file; the time runs until the object is in the bucket."""
    bucket = ctx.bucket("seq")
    key = f"{who.name}-{run}.bin"
    data = ctx.src.big
    stats = None
    if isinstance(who, Boto3):
        client = ctx.fresh_client()
        t0 = now()
        client.upload_file(str(ctx.src.big_path), bucket, key, Config=who.transfer_config())
        closed = now()
        durable = ctx.wait_durable(bucket, {key: len(data)})
    else:
        with ctx.mounted(who, bucket, cold=False) as m:
            t0 = now()
            write_file(m.path / key, data)
            closed = now()
            durable = ctx.wait_durable(bucket, {key: len(data)})
        stats = request_counts(m.stats)
    ctx.verify(bucket, {key: ctx.src.md5(0, len(data))})
    ctx.delete(bucket, keys=[key])
    seconds = durable - t0
    return {"seq_write": Sample([len(data) / MiB / seconds],
                                {"seconds": seconds, "close_seconds": closed - t0, "requests": stats})}


# -- sequential read, cold then warm --------------------------------------------------


def seq_read(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Read the 1 GiB object cold (page cache dropped, new mount), then warm (same mount, again).

    For zosfs the GET requests made during the warm read are counted from
    `zosfs stats`: the kernel's page cache and zosfs's block cache should
    serve it all when it fits.
    """
    bucket, key, size = read_fixture(ctx)
    expected = ctx.src.md5(0, size)
    buf = ctx.buffer(size)
    if isinstance(who, Boto3):
        cold = boto3_cold_read(ctx, who, bucket, key, size)
        return {"seq_read_cold": Sample([size / MiB / cold], {"seconds": cold})}
    with ctx.mounted(who, bucket) as m:
        path = m.path / key
        t0 = now()
        got = read_file(path, buf)
        cold = now() - t0
        if got != size or md5_of(buf) != expected:
            raise DataError(f"cold read returned {got} bytes that differ from the object")
        before = ctx.stats(who, m)
        t0 = now()
        got = read_file(path, buf)
        warm = now() - t0
        after = ctx.stats(who, m)
        if got != size or md5_of(buf) != expected:
            raise DataError(f"warm read returned {got} bytes that differ from the object")
    gets = request_delta(before, after, "GetObject")
    return {
        "seq_read_cold": Sample([size / MiB / cold], {"seconds": cold, "requests": request_counts(before)}),
        "seq_read_warm": Sample([size / MiB / warm], {"seconds": warm, "get_requests": gets,
                                                      "get_bytes": request_delta(before, after, "GetObject", "bytes")}),
    }


def boto3_cold_read(ctx: Context, who: Boto3, bucket: str, key: str, size: int) -> float:
    """boto3's cold read of `key` (page cache dropped, a new client): seconds, checked against the source."""
    buf = ctx.buffer(size)
    drop_caches()
    client = ctx.fresh_client()
    t0 = now()
    got = who.download(client, bucket, key, buf)
    seconds = now() - t0
    if got != size or md5_of(buf) != ctx.src.md5(0, size):
        raise DataError("boto3 download differs from the source")
    return seconds


def seq_read_256(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Read the 256 MiB object cold (page cache dropped, new mount): the size a cache of 256 MiB
    could hold whole, where seq_read's 1 GiB cannot."""
    bucket, key, size = read_fixture(ctx, quarter=True)
    if isinstance(who, Boto3):
        seconds = boto3_cold_read(ctx, who, bucket, key, size)
        return {"seq_read_256_cold": Sample([size / MiB / seconds], {"seconds": seconds})}
    buf = ctx.buffer(size)
    with ctx.mounted(who, bucket) as m:
        t0 = now()
        got = read_file(m.path / key, buf)
        seconds = now() - t0
        if got != size or md5_of(buf) != ctx.src.md5(0, size):
            raise DataError(f"cold read returned {got} bytes that differ from the object")
    return {"seq_read_256_cold": Sample([size / MiB / seconds],
                                        {"seconds": seconds, "requests": request_counts(m.stats)})}


# -- random reads ---------------------------------------------------------------------


def random_reads(ctx: Context, who: Contender, run: int, *, size: int, count: int, metric: str) -> dict[str, Sample]:
    """`count` reads of `size` bytes at 4 KiB-aligned offsets drawn with a fixed seed, one after
    another (like a database or an image viewer), on a cold mount; reports reads per second."""
    bucket, key, objsize = read_fixture(ctx)
    rng = random.Random(SEED + size)
    offsets = [rng.randrange(0, (objsize - size) // 4096 + 1) * 4096 for _ in range(count)]
    extra: dict[str, Any] = {}
    if isinstance(who, Boto3):
        drop_caches()
        client = ctx.fresh_client()
        t0 = now()
        got = [client.get_object(Bucket=bucket, Key=key, Range=f"bytes={off}-{off + size - 1}")["Body"].read()
               for off in offsets]
        seconds = now() - t0
    else:
        with ctx.mounted(who, bucket) as m:
            before = ctx.stats(who, m)
            fd = os.open(m.path / key, os.O_RDONLY)
            try:
                t0 = now()
                got = [os.pread(fd, size, off) for off in offsets]
                seconds = now() - t0
            finally:
                os.close(fd)
            after = ctx.stats(who, m)
        if before:
            extra = {"get_requests": request_delta(before, after, "GetObject"),
                     "get_bytes": request_delta(before, after, "GetObject", "bytes")}
    bad = sum(1 for off, data in zip(offsets, got) if data != ctx.src.big[off:off + size])
    if bad:
        raise DataError(f"{bad} of {count} random reads returned wrong data")
    return {metric: Sample([count / seconds], {"seconds": seconds, **extra})}


# -- many small files -------------------------------------------------------------------


def small_files(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Create and write N files of 4 KiB one after another; the time runs until all are in the bucket."""
    s = ctx.sizes
    bucket = ctx.bucket("small")
    prefix = f"{who.name}-{run}/"
    names = [f"f{i:05d}.dat" for i in range(s.small_files)]
    data = [ctx.src.big[i * s.small_size:(i + 1) * s.small_size] for i in range(s.small_files)]
    expected = {prefix + name: s.small_size for name in names}
    stats = None
    if isinstance(who, Boto3):
        client = ctx.fresh_client()
        t0 = now()
        for name, body in zip(names, data):
            client.put_object(Bucket=bucket, Key=prefix + name, Body=bytes(body))
        closed = now()
        durable = ctx.wait_durable(bucket, expected)
    else:
        with ctx.mounted(who, bucket, cold=False) as m:
            directory = m.path / prefix
            directory.mkdir()
            t0 = now()
            for name, body in zip(names, data):
                write_file(directory / name, body)
            closed = now()
            durable = ctx.wait_durable(bucket, expected)
        stats = request_counts(m.stats)
    ctx.verify(bucket, {prefix + name: md5_of(body) for name, body in zip(names, data)})
    ctx.delete(bucket, prefix)
    seconds = durable - t0
    return {"small_files": Sample([s.small_files / seconds],
                                  {"seconds": seconds, "close_files_per_s": s.small_files / (closed - t0),
                                   "requests": stats})}


# -- listings -----------------------------------------------------------------------------


def run_counted(command: list[str]) -> tuple[float, int]:
    """Run a command; return (seconds, lines of output). A failing command is a failure."""
    t0 = now()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
    seconds = now() - t0
    if result.returncode != 0:
        raise DataError(f"{' '.join(command[:2])} exited {result.returncode}: {result.stderr.decode()[:200]}")
    return seconds, result.stdout.count(b"\n")


def ls(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """`ls -l` of a directory of N files on a first mount (empty caches, page cache dropped).

    For zosfs the same again on a remount that reuses the first mount's
    cache_dir (its persistent metadata cache). boto3's numbers are the bare
    LIST of those keys, the reference.
    """
    bucket = ctx.bucket("ls")
    n = ctx.sizes.ls_files
    if isinstance(who, Boto3):
        samples = {}
        for metric in ("ls_first", "ls_remount", "ls_index"):
            client = ctx.fresh_client()
            t0 = now()
            count = sum(page.get("KeyCount", 0) for page in
                        client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ls/"))
            seconds = now() - t0
            if count != n + 1:
                raise DataError(f"LIST found {count} keys, not {n + 1}")
            samples[metric] = Sample([seconds])
        return samples

    def list_once(cache_dir: Any = None) -> tuple[float, dict[str, int]]:
        with ctx.mounted(who, bucket, cache_dir=cache_dir) as m:
            seconds, lines = run_counted(["ls", "-l", str(m.path / "ls")])
        if lines != n + 1:  # "total" and one line per file
            raise DataError(f"ls -l listed {lines - 1} entries, not {n}")
        return seconds, request_counts(m.stats)

    if who.name != "zosfs":
        seconds, stats = list_once()
        return {"ls_first": Sample([seconds], {"requests": stats})}
    # The first mount finds no metadata index (as in a bucket written by other
    # tools: an earlier run's zosfs mounts left one), and writes one; the
    # remount reuses its cache_dir; a third mount with an empty cache_dir is
    # a first mount on another host that finds the index.
    drop_index(ctx, bucket)
    cache_dir = ctx.workdir / "cache" / f"zosfs-ls-{run}"
    other_host = ctx.workdir / "cache" / f"zosfs-ls-{run}-other"
    try:
        first, first_stats = list_once(cache_dir)
        again, again_stats = list_once(cache_dir)
        indexed, indexed_stats = list_once(other_host)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(other_host, ignore_errors=True)
    if not indexed_stats.get("GetObject"):
        raise DataError("the mount on another host read no metadata index")
    return {"ls_first": Sample([first], {"requests": first_stats}),
            "ls_remount": Sample([again], {"requests": again_stats}),
            "ls_index": Sample([indexed], {"requests": indexed_stats})}


def drop_index(ctx: Context, bucket: str) -> None:
    """Delete the metadata index zosfs mounts keep in the bucket."""
    keys = [{"Key": o["Key"]} for page in ctx.client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=INDEX_PREFIX) for o in page.get("Contents", [])]
    for start in range(0, len(keys), 1000):
        ctx.client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})


def find(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """`find` over a tree of D directories of F files on a cold mount; boto3: the recursive LIST."""
    bucket = ctx.bucket("find")
    s = ctx.sizes
    entries = 1 + s.tree_dirs + s.tree_dirs * s.tree_files_per_dir   # the root, its dirs, their files
    if isinstance(who, Boto3):
        client = ctx.fresh_client()
        t0 = now()
        count = sum(page.get("KeyCount", 0) for page in
                    client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tree/"))
        seconds = now() - t0
        if count != entries:
            raise DataError(f"LIST found {count} keys, not {entries}")
        return {"find": Sample([seconds])}
    with ctx.mounted(who, bucket) as m:
        seconds, lines = run_counted(["find", str(m.path / "tree")])
    if lines != entries:
        raise DataError(f"find listed {lines} entries, not {entries}")
    return {"find": Sample([seconds], {"requests": request_counts(m.stats)})}


def rm(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """`rm -r` of a tree of D directories of F files (put fresh for each run, untimed) on a cold
    mount; the time runs until nothing is left under the prefix in the bucket."""
    bucket = ctx.bucket("rm")
    ctx.delete(bucket, "tree/")
    started = now()
    ctx.put_many(bucket, tree_objects(ctx, "tree/"))
    ctx.log(f"    put the tree in {now() - started:.1f} s")
    with ctx.mounted(who, bucket) as m:
        t0 = now()
        result = subprocess.run(["rm", "-r", str(m.path / "tree")], capture_output=True)
        returned = now()
        if result.returncode != 0:
            raise DataError(f"rm -r exited {result.returncode}: {result.stderr.decode()[:200]}")
        try:
            empty = ctx.wait_empty(bucket, "tree/")
        except DataError as error:
            raise DataError(f"{error} ({returned - t0:.1f} s after rm -r started)") from None
    return {"rm": Sample([empty - t0], {"rm_seconds": returned - t0, "requests": request_counts(m.stats)})}


# -- appends ----------------------------------------------------------------------------------


def append(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Append 1 KiB ten times to a 256 MiB file and to a 1 KiB file, both created through the
    contender's own mount (a first mount), then appended to from a second mount (cold), as to a
    file that was already in the bucket. Each append is open(O_APPEND), write 1 KiB, close, and
    its time runs until the bucket holds the new length."""
    s = ctx.sizes
    bucket = ctx.bucket("append")
    files = {"append_256m": (f"{who.name}-{run}-big.bin", s.append_base),
             "append_1k": (f"{who.name}-{run}-small.bin", s.append_small_base)}
    # The appended data comes from the end of the source, so it differs from the base.
    chunks = [ctx.src.big[len(ctx.src.big) - (i + 1) * s.append_size:len(ctx.src.big) - i * s.append_size]
              for i in range(s.appends)]
    created: dict[str, float] = {}
    with ctx.mounted(who, bucket, cold=False) as m:
        for metric, (key, size) in files.items():
            t0 = now()
            write_file(m.path / key, ctx.src.big[:size])
            created[metric] = ctx.wait_durable(bucket, {key: size}) - t0
    times: dict[str, list[float]] = {metric: [] for metric in files}
    closes: dict[str, list[float]] = {metric: [] for metric in files}
    with ctx.mounted(who, bucket) as m:
        for metric, (key, size) in files.items():
            for chunk in chunks:
                t0 = now()
                write_file(m.path / key, chunk, flags=os.O_WRONLY | os.O_APPEND)
                closed = now()
                size += len(chunk)
                durable = ctx.wait_durable(bucket, {key: size})
                times[metric].append((durable - t0) * 1000)
                closes[metric].append((closed - t0) * 1000)
    stats = request_counts(m.stats)
    expected = {}
    for metric, (key, size) in files.items():
        expected[key] = md5_of(bytes(ctx.src.big[:size]) + b"".join(bytes(c) for c in chunks))
    ctx.verify(bucket, expected)
    ctx.delete(bucket, keys=[key for key, _ in files.values()])
    return {metric: Sample(times[metric], {"create_seconds": created[metric], "close_ms": closes[metric],
                                           "requests": stats})
            for metric in files}


# -- parallel files ----------------------------------------------------------------------------


def parallel(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
    """Write four 256 MiB files at once (one thread each; time until all are in the bucket), then
    read them at once on a new mount with the page cache dropped (cold)."""
    s = ctx.sizes
    bucket = ctx.bucket("par")
    keys = [f"{who.name}-{run}-{i}.bin" for i in range(s.parallel)]
    expected_size = {key: s.quarter for key in keys}
    md5s = {key: ctx.src.md5(i * s.quarter, s.quarter) for i, key in enumerate(keys)}
    buf = ctx.buffer(s.parallel * s.quarter)
    views = [buf[i * s.quarter:(i + 1) * s.quarter] for i in range(s.parallel)]
    total = s.parallel * s.quarter / MiB

    def at_once(fn: Callable[[int], Any]) -> list[Any]:
        with ThreadPoolExecutor(s.parallel) as pool:
            return list(pool.map(fn, range(s.parallel)))

    extra_w: dict[str, Any] = {}
    extra_r: dict[str, Any] = {}
    if isinstance(who, Boto3):
        client = ctx.fresh_client()
        config = who.transfer_config()
        t0 = now()
        at_once(lambda i: client.upload_file(str(ctx.src.quarter_paths[i]), bucket, keys[i], Config=config))
        durable = ctx.wait_durable(bucket, expected_size)
        write_seconds = durable - t0
        ctx.verify(bucket, md5s)
        drop_caches()
        client = ctx.fresh_client()
        t0 = now()
        got = at_once(lambda i: who.download(client, bucket, keys[i], views[i]))
        read_seconds = now() - t0
    else:
        with ctx.mounted(who, bucket, cold=False) as m:
            t0 = now()
            at_once(lambda i: write_file(m.path / keys[i], ctx.src.quarter(i)))
            extra_w["close_seconds"] = now() - t0
            durable = ctx.wait_durable(bucket, expected_size)
            write_seconds = durable - t0
        extra_w["requests"] = request_counts(m.stats)
        ctx.verify(bucket, md5s)
        with ctx.mounted(who, bucket) as m:
            t0 = now()
            got = at_once(lambda i: read_file(m.path / keys[i], views[i]))
            read_seconds = now() - t0
        extra_r["requests"] = request_counts(m.stats)
    bad = [key for key, n, view in zip(keys, got, views) if n != s.quarter or md5_of(view) != md5s[key]]
    if bad:
        raise DataError(f"parallel read of {bad[0]} returned wrong data")
    ctx.delete(bucket, keys=keys)
    return {"par_write": Sample([total / write_seconds], {"seconds": write_seconds, **extra_w}),
            "par_read": Sample([total / read_seconds], {"seconds": read_seconds, **extra_r})}


# -- the registry ----------------------------------------------------------------------------


def _random(size: int, metric: str, count_attr: str) -> Callable[[Context, Contender, int], dict[str, Sample]]:
    def run(ctx: Context, who: Contender, run: int) -> dict[str, Sample]:
        return random_reads(ctx, who, run, size=size, count=getattr(ctx.sizes, count_attr), metric=metric)

    run.__doc__ = random_reads.__doc__
    return run


def workloads(sizes: Any) -> list[Workload]:
    """All workloads, in the order they run, with titles that carry the sizes in use."""
    big = f"{sizes.big // MiB} MiB" if sizes.big < 1024 * MiB else f"{sizes.big // (1024 * MiB)} GiB"
    q = f"{sizes.quarter // MiB} MiB"
    tree = f"{sizes.tree_dirs * sizes.tree_files_per_dir:,} files in {sizes.tree_dirs} dirs"
    M = Metric
    return [
        Workload("seq_write", (M("seq_write", f"sequential write {big} (until in bucket)", "MiB/s", True, True),),
                 seq_write),
        Workload("seq_read", (M("seq_read_cold", f"sequential read {big}, cold", "MiB/s", True, True),
                              M("seq_read_warm", f"sequential read {big}, warm (same mount)", "MiB/s", True, True)),
                 seq_read, prepare=prepare_read),
        Workload("seq_read_remount", (M("seq_read_remount_cold", f"sequential read {big}, cold, first mount with a "
                                        "persistent data cache", "MiB/s", True, True),
                                      M("seq_read_remount", f"sequential read {big} after a remount (warm on disk)",
                                        "MiB/s", True, True)),
                 seq_read_remount, boto3=False, prepare=prepare_read),
        Workload("seq_read_256", (M("seq_read_256_cold", f"sequential read {q}, cold", "MiB/s", True, True),),
                 seq_read_256, prepare=prepare_read_quarter),
        Workload("rand_4k", (M("rand_4k", f"random 4 KiB reads ({sizes.rand_4k_reads}), cold", "reads/s", True),),
                 _random(4 * KiB, "rand_4k", "rand_4k_reads"), prepare=prepare_read),
        Workload("rand_1m", (M("rand_1m", f"random 1 MiB reads ({sizes.rand_1m_reads}), cold", "reads/s", True),),
                 _random(MiB, "rand_1m", "rand_1m_reads"), prepare=prepare_read),
        Workload("small_files", (M("small_files", f"create {sizes.small_files:,} files of 4 KiB (until in bucket)",
                                   "files/s", True),), small_files),
        Workload("xmount", (M("xmount_cat", f"cat {sizes.small_files:,} files of 4 KiB just rewritten by another mount",
                              "files/s", True),), cross_mount_cat, boto3=False),
        Workload("ls", (M("ls_first", f"ls -l of {sizes.ls_files:,} files, first mount (boto3: bare LIST)", "s", False),
                        M("ls_remount", f"ls -l of {sizes.ls_files:,} files, zosfs remount (boto3: bare LIST)", "s",
                          False),
                        M("ls_index", f"ls -l of {sizes.ls_files:,} files, zosfs first mount on another host, with "
                                      "the metadata index the first mount wrote (boto3: bare LIST)", "s", False)),
                 ls, prepare=ls_fixture),
        Workload("find", (M("find", f"find over {tree} (boto3: LIST)", "s", False),), find, prepare=tree_fixture),
        Workload("rm", (M("rm", f"rm -r of {tree} (until gone from bucket)", "s", False),), rm, boto3=False),
        Workload("append", (M("append_256m", f"append 1 KiB to a {sizes.append_base // MiB} MiB file (until in bucket)",
                              "ms", False),
                            M("append_1k", "append 1 KiB to a 1 KiB file (until in bucket)", "ms", False)),
                 append, boto3=False),
        Workload("parallel", (M("par_write", f"{sizes.parallel} files of {q} written in parallel (until in bucket)",
                                "MiB/s", True, True),
                              M("par_read", f"{sizes.parallel} files of {q} read in parallel, cold", "MiB/s", True,
                                True)),
                 parallel),
    ]
