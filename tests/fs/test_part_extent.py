"""Multipart parts whose extent changes after they were uploaded, on a real mount.

A part may go out before the file is finished: when the staging budget is
full, every part holding bytes not yet uploaded is sent as it is, the last
one short (see Replace.kick). If the file then grows past that part's end
(a write beyond the end leaving a hole, a truncate upwards) or shrinks, the
part sent must not be the one completed: S3 accepts a part under 5 MiB only
as the last one (EntityTooSmall), and its bytes would be the old ones. Found
by the long fsx run (ZOSFS_FSX_OPS=20000, seed 11).

A tiny staging budget (1M) makes the forced uploads deterministic: a write
that does not fit waits until the parts holding what is staged went out.
"""

from __future__ import annotations

import os
import random
from typing import Any

from tests.support.faultproxy import FaultProxy
from tests.support.mount import ZosfsMount

MiB = 1024 * 1024
OPTIONS = {"part_size": "5M", "rewrite_threshold": "5M", "staging_size": "1M", "append_chunk": "1M"}


def replace_mode_file(s3: Any, bucket: str, m: ZosfsMount) -> int:
    """A file whose object was made by PUT (not appendable: its changes go
    out by replacing it, in parts), opened for writing."""
    s3.put_object(Bucket=bucket, Key="f", Body=b"x")
    return os.open(m.path / "f", os.O_RDWR)


def write_sequentially(fd: int, data: bytes, at: int = 0) -> None:
    for start in range(0, len(data), MiB):
        assert os.pwrite(fd, data[start : start + MiB], at + start) == len(data[start : start + MiB])


def stored(s3: Any, bucket: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key="f")["Body"].read()
    return body


def short_parts_sent(proxy: FaultProxy) -> list[int]:
    """Sizes of the parts sent (or copied) under 5 MiB, in order."""
    return [r.request_bytes for r in proxy.records("UploadPart") if r.request_bytes < 5 * MiB]


def test_a_short_part_is_sent_again_when_a_write_beyond_the_end_grows_the_file_past_it(
        bucket: str, s3: Any, proxy: FaultProxy, make_mount) -> None:
    """fsx seed 11: part 1 went out while the file was 3.4 MiB long; then a
    write 2.6 MiB beyond the end made the file 7 MiB, and only the part
    holding that write was marked changed: the completion sent part 1 as it
    was (3.4 MiB, not the last part: EntityTooSmall, EIO on close)."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=OPTIONS)
    rng = random.Random(1)
    head, tail = rng.randbytes(3_565_893), rng.randbytes(MiB)
    fd = replace_mode_file(s3, bucket, m)
    try:
        write_sequentially(fd, head)
        # This write does not fit the budget: it waits until part 1, as it is
        # now (3.4 MiB), went out.
        assert os.pwrite(fd, tail, 6 * MiB) == len(tail)
        assert len(head) in short_parts_sent(proxy), "part 1 never went out short: the test proves nothing"
    finally:
        os.close(fd)
    want = head + bytes(6 * MiB - len(head)) + tail
    got = stored(s3, bucket)
    assert len(got) == len(want) and got == want
    with open(m.path / "f", "rb") as f:
        assert f.read() == want
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_short_part_is_sent_again_when_a_truncate_grows_the_file_past_it(
        bucket: str, s3: Any, proxy: FaultProxy, make_mount) -> None:
    """The same with the file grown by ftruncate (a hole up to 7 MiB), then
    written beyond the first part, and fsync'd before close."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=OPTIONS)
    rng = random.Random(2)
    head, tail = rng.randbytes(3 * MiB + 12_345), rng.randbytes(MiB)
    fd = replace_mode_file(s3, bucket, m)
    try:
        write_sequentially(fd, head)
        assert proxy.count("UploadPart") > 0, "no part went out before the truncate: the test proves nothing"
        os.ftruncate(fd, 7 * MiB)
        assert os.pwrite(fd, tail, 7 * MiB) == len(tail)
        os.fsync(fd)
        want = head + bytes(7 * MiB - len(head)) + tail
        assert stored(s3, bucket) == want
    finally:
        os.close(fd)
    assert stored(s3, bucket) == want
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_part_sent_before_a_truncate_to_zero_leaves_an_empty_object(
        bucket: str, s3: Any, proxy: FaultProxy, make_mount) -> None:
    """Parts went out, then the file was cut to nothing: the upload's one
    part is empty. It was once "copied" from the object as the range
    [0, 0) (`bytes=0--1`), which RGW refuses (InvalidArgument): fsx seed 11
    on a busier machine."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=OPTIONS)
    fd = replace_mode_file(s3, bucket, m)
    try:
        write_sequentially(fd, random.Random(3).randbytes(3 * MiB))
        assert proxy.count("UploadPart") > 0, "no part went out before the truncate: the test proves nothing"
        os.ftruncate(fd, 0)
        os.fsync(fd)
        assert stored(s3, bucket) == b""
        assert os.pwrite(fd, b"after", 0) == 5
    finally:
        os.close(fd)
    assert stored(s3, bucket) == b"after"
    assert os.path.getsize(m.path / "f") == 5
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
