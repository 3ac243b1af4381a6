"""The read-only fixtures the workloads share, put once with boto3 with s3fs-style
metadata headers and read by every contender: the objects of the sequential
and random reads, the ls directory, the find tree (and the rm tree, put anew
for every run).
"""

from __future__ import annotations

import time

from tests.bench.contenders import Boto3
from tests.bench.context import Context, KiB

FILE_MODE = str(0o100644)   # s3fs's x-amz-meta-mode is decimal with the S_IFMT bits
DIR_MODE = str(0o040755)
FIXTURE_MTIME = "1700000000"


def now() -> float:
    return time.monotonic()


def s3fs_meta(mode: str = FILE_MODE) -> dict[str, str]:
    """POSIX metadata as s3fs writes it, so that metadata matters in listings."""
    return {"mode": mode, "uid": "0", "gid": "0", "mtime": FIXTURE_MTIME}


READ_KEY = "big.bin"
READ_QUARTER_KEY = "quarter.bin"


def read_fixture(ctx: Context, *, quarter: bool = False) -> tuple[str, str, int]:
    """The object every contender reads: the source file (1 GiB), or with `quarter`
    its first quarter (256 MiB), put by boto3 as an 8 MiB-part multipart upload
    with s3fs metadata. Reading one common object keeps the read numbers free
    of how each contender lays out what it writes."""
    bucket = ctx.bucket("read")
    key, path = (READ_QUARTER_KEY, ctx.src.quarter_paths[0]) if quarter else (READ_KEY, ctx.src.big_path)
    size = ctx.sizes.quarter if quarter else len(ctx.src.big)
    if ctx.keys(bucket, key).get(key) != size:
        ctx.client.upload_file(str(path), bucket, key, Config=Boto3.transfer_config(),
                               ExtraArgs={"Metadata": s3fs_meta(), "ContentType": "application/octet-stream"})
        ctx.verify(bucket, {key: ctx.src.md5(0, size)})
    return bucket, key, size


def ls_fixture(ctx: Context) -> None:
    """A directory `ls/` of N files (1 KiB each, s3fs metadata) and its marker, put once in parallel."""
    bucket = ctx.bucket("ls")
    n = ctx.sizes.ls_files
    if len(ctx.keys(bucket, "ls/")) == n + 1:
        return
    started = now()
    objects = [("ls/", b"", s3fs_meta(DIR_MODE), "application/x-directory")]
    objects += [(f"ls/f{i:05d}.dat", bytes(ctx.src.big[i:i + KiB]), s3fs_meta(), "application/octet-stream")
                for i in range(n)]
    ctx.put_many(bucket, objects)
    ctx.log(f"  put {n} files for ls in {now() - started:.1f} s")


def prepare_read(ctx: Context) -> None:
    read_fixture(ctx)


def prepare_read_quarter(ctx: Context) -> None:
    read_fixture(ctx, quarter=True)


def tree_objects(ctx: Context, root: str) -> list[tuple[str, bytes, dict[str, str], str]]:
    """`root` with D directories of F files each, with directory markers, as s3fs would have made them."""
    s = ctx.sizes
    objects = [(root, b"", s3fs_meta(DIR_MODE), "application/x-directory")]
    for d in range(s.tree_dirs):
        objects.append((f"{root}d{d:03d}/", b"", s3fs_meta(DIR_MODE), "application/x-directory"))
        for f in range(s.tree_files_per_dir):
            objects.append((f"{root}d{d:03d}/f{f:03d}.dat", b"x" * 256, s3fs_meta(), "application/octet-stream"))
    return objects


def tree_fixture(ctx: Context) -> None:
    bucket = ctx.bucket("find")
    objects = tree_objects(ctx, "tree/")
    if len(ctx.keys(bucket, "tree/")) == len(objects):
        return
    started = now()
    ctx.put_many(bucket, objects)
    ctx.log(f"  put a tree of {len(objects)} objects for find in {now() - started:.1f} s")
