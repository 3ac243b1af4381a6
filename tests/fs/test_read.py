"""The read path on a real mount: block cache, prefetch, consistency, memory.

Each test checks what a user would: the bytes read equal the object's bytes
whatever the access pattern; another client's change is seen after reopen
and never mixed into an open handle's reads; the cache saves requests (the
fault proxy counts them); the daemon's memory stays bounded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount, drop_page_cache, vm_hwm

MiB = 1024 * 1024
ATTR_TIMEOUT = 1.0  # seconds; mounts that must revalidate soon use it (0 is not usable, see the report)

# A small cache, so that a 40 MiB object is five times the budget.
SMALL_CACHE = {"cache_size": "8M", "block_size": "1M", "readahead": "8M"}


# -- helpers --------------------------------------------------------------------








def put_random(s3: Any, bucket: str, key: str, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def read_all(path: os.PathLike[str] | str, chunk: int = MiB) -> bytes:
    out = bytearray()
    with open(path, "rb", buffering=0) as f:
        while True:
            piece = f.read(chunk)
            if not piece:
                return bytes(out)
            out += piece


# -- byte-for-byte equality ----------------------------------------------------------


def test_large_file_reads_back_exactly_in_every_pattern(bucket: str, s3, make_mount) -> None:
    """A 40 MiB object through an 8 MiB cache: sequentially, backwards, at
    random offsets, and by four readers at once."""
    size = 40 * MiB + 12345
    data = put_random(s3, bucket, "big.bin", size, seed=1)
    m = make_mount(bucket, options=SMALL_CACHE)
    path = m.path / "big.bin"
    assert os.stat(path).st_size == size

    assert hashlib.sha256(read_all(path)).digest() == hashlib.sha256(data).digest()

    drop_page_cache()
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = size
        while offset > 0:
            start = max(0, offset - MiB)
            assert os.pread(fd, offset - start, start) == data[start:offset], f"backwards read at {start}"
            offset = start
    finally:
        os.close(fd)

    drop_page_cache()
    rng = random.Random(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(200):
            start = rng.randrange(size)
            length = rng.choice([1, 100, 4096, 65536, 300_000, MiB, 3 * MiB])
            assert os.pread(fd, length, start) == data[start : start + length], f"random read at {start}+{length}"
    finally:
        os.close(fd)

    drop_page_cache()
    failures: list[str] = []

    def reader(n: int) -> None:
        rng = random.Random(100 + n)
        try:
            with open(path, "rb", buffering=0) as f:
                if n % 2 == 0:  # sequential from a different starting point
                    start = n * 9 * MiB
                    f.seek(start)
                    got = f.read(size)
                    if got != data[start:]:
                        failures.append(f"reader {n}: sequential read differs")
                else:
                    for _ in range(60):
                        start = rng.randrange(size)
                        length = rng.randrange(1, 2 * MiB)
                        if os.pread(f.fileno(), length, start) != data[start : start + length]:
                            failures.append(f"reader {n}: read at {start}+{length} differs")
        except OSError as err:
            failures.append(f"reader {n}: {err}")

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures


def test_small_and_empty_objects(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="empty", Body=b"")
    s3.put_object(Bucket=mnt.bucket, Key="one", Body=b"x")
    assert (mnt.path / "empty").read_bytes() == b""
    assert (mnt.path / "one").read_bytes() == b"x"
    with open(mnt.path / "one", "rb") as f:
        assert os.pread(f.fileno(), 10, 1) == b""
        assert os.pread(f.fileno(), 10, 1000) == b""


# -- consistency with other writers ----------------------------------------------------


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_rewrite_by_another_client_is_seen_after_reopen(bucket: str, s3, same_size: bool, make_mount) -> None:
    """Close-to-open: after another client replaces the object, a new open
    sees the new bytes, from neither the block cache nor the page cache."""
    m = make_mount(bucket, options={"attr_timeout": str(ATTR_TIMEOUT), **SMALL_CACHE})
    old = put_random(s3, bucket, "f", 3 * MiB + 5, seed=2)
    path = m.path / "f"
    assert path.read_bytes() == old  # now in the block cache and the page cache
    assert path.read_bytes() == old
    new = put_random(s3, bucket, "f", len(old) if same_size else 2 * MiB + 1, seed=3)
    time.sleep(ATTR_TIMEOUT + 0.1)  # until then, open() may trust the attributes it has
    assert path.read_bytes() == new
    with open(path, "rb") as f:
        f.seek(MiB)
        assert f.read(1000) == new[MiB : MiB + 1000]


def test_unchanged_object_is_served_from_page_cache_after_reopen(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """keep_cache when the ETag is unchanged: a reopen costs no GET at all."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options={"attr_timeout": str(ATTR_TIMEOUT)})
    data = put_random(s3, bucket, "f", 2 * MiB, seed=4)
    assert (m.path / "f").read_bytes() == data
    time.sleep(ATTR_TIMEOUT + 0.1)
    proxy.reset_stats()
    assert (m.path / "f").read_bytes() == data
    assert proxy.count("GetObject") == 0
    assert proxy.count("HeadObject") >= 1  # it was revalidated


def test_object_changed_under_an_open_handle_never_reads_mixed(bucket: str, s3, make_mount) -> None:
    """An open handle keeps reading the version it opened (from the cache) or
    gets EIO; it never returns bytes of the new version, even after the
    mount has noticed the change."""
    size = 16 * MiB
    m = make_mount(bucket, options={"attr_timeout": str(ATTR_TIMEOUT), "cache_size": "4M", "block_size": "1M", "readahead": "2M"})
    old = put_random(s3, bucket, "f", size, seed=5)
    path = m.path / "f"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, 0) == old[:MiB]
        new = put_random(s3, bucket, "f", size, seed=6)
        time.sleep(ATTR_TIMEOUT + 0.1)
        assert os.stat(path).st_size == size  # revalidates: the mount now knows the new ETag
        with open(path, "rb") as other:  # and another open drops the page cache
            assert other.read(MiB) == new[:MiB]
        results = {"old": 0, "eio": 0}
        for offset in list(range(0, size, MiB)) + [8 * MiB + 7, 100]:
            try:
                got = os.pread(fd, MiB, offset)
            except OSError as err:
                assert err.errno == errno.EIO
                results["eio"] += 1
                continue
            assert got == old[offset : offset + MiB], f"read at {offset} is not of the version opened"
            results["old"] += 1
        assert results["eio"] > 0  # most of it was never cached: it cannot be read any more
    finally:
        os.close(fd)
    assert path.read_bytes() == new
    assert "changed on the server while open" in m.log_text()


def test_object_deleted_under_an_open_handle_reads_eio(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options={"attr_timeout": str(ATTR_TIMEOUT), "cache_size": "4M", "block_size": "1M", "readahead": "1M"})
    put_random(s3, bucket, "f", 8 * MiB, seed=8)
    fd = os.open(m.path / "f", os.O_RDONLY)
    try:
        os.pread(fd, 4096, 0)
        s3.delete_object(Bucket=bucket, Key="f")
        with pytest.raises(OSError) as info:
            os.pread(fd, MiB, 6 * MiB)
        assert info.value.errno == errno.EIO
    finally:
        os.close(fd)


# -- requests saved by the cache --------------------------------------------------------


def test_sequential_read_uses_one_get_per_block_and_rereads_use_none(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    size = 32 * MiB
    data = put_random(s3, bucket, "f", size, seed=9)
    m = make_mount(bucket, endpoint=proxy.endpoint, options={"cache_size": "64M", "block_size": "1M", "readahead": "16M"})
    os.stat(m.path / "f")
    proxy.reset_stats()
    with open(m.path / "f", "rb", buffering=0) as f:
        got = f.read(size + 1)
    assert got == data
    gets = proxy.count("GetObject")
    blocks = size // MiB
    print(f"sequential read of 32 MiB: {gets} GETs, {sum(r.response_bytes for r in proxy.records('GetObject'))} bytes")
    # 128 KiB requests, one GET each, would have been 256.
    assert gets <= blocks + 4, f"{gets} GETs for {blocks} blocks"
    assert sum(r.response_bytes for r in proxy.records("GetObject")) <= size + 4 * MiB

    drop_page_cache()
    proxy.reset_stats()
    assert read_all(m.path / "f") == data
    assert proxy.count("GetObject") == 0, "a re-read within the cache budget must come from the block cache"


# -- memory -----------------------------------------------------------------------------------


def test_streaming_a_large_object_keeps_memory_bounded(bucket: str, s3, make_mount) -> None:
    """A 256 MiB object through a 32 MiB cache: the daemon's peak RSS stays
    within the cache budget plus a constant (the interpreter and libraries)."""
    size = 256 * MiB
    chunk = random.Random(10).randbytes(MiB)
    digest = hashlib.sha256()
    # Build it by multipart copy-free upload of repeated-but-shifted chunks.
    up = s3.create_multipart_upload(Bucket=bucket, Key="huge")["UploadId"]
    parts = []
    for n in range(size // (16 * MiB)):
        body = (bytes([n]) + chunk[1:]) * 16
        digest.update(body)
        etag = s3.upload_part(Bucket=bucket, Key="huge", UploadId=up, PartNumber=n + 1, Body=body)["ETag"]
        parts.append({"PartNumber": n + 1, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="huge", UploadId=up, MultipartUpload={"Parts": parts})

    m = make_mount(bucket, options={"cache_size": "32M"})
    assert m.process is not None
    before = vm_hwm(m.process.pid)
    got = hashlib.sha256()
    with open(m.path / "huge", "rb", buffering=0) as f:
        while piece := f.read(MiB):
            got.update(piece)
    assert got.digest() == digest.digest()
    peak = vm_hwm(m.process.pid)
    print(f"daemon VmHWM before {before / MiB:.0f} MiB, after streaming 256 MiB {peak / MiB:.0f} MiB")
    assert peak < (32 + 100) * MiB


# -- archived objects -------------------------------------------------------------------------


def test_archived_object_reads_eagain_with_restore_hint(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    put_random(s3, bucket, "cold.bin", 3 * MiB, seed=11)
    warm = put_random(s3, bucket, "warm.bin", 1000, seed=12)
    proxy.add_rule(Rule(op="GetObject", key="cold.bin", status=403, error_code="InvalidObjectState"))
    m = make_mount(bucket, endpoint=proxy.endpoint)
    fd = os.open(m.path / "cold.bin", os.O_RDONLY)  # (a buffered read() would turn EAGAIN into None)
    try:
        with pytest.raises(OSError) as info:
            os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EAGAIN
    assert (m.path / "warm.bin").read_bytes() == warm  # the mount is fine
    deadline = time.monotonic() + 5
    while "restore" not in m.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = m.log_text()
    assert "cold.bin" in log and "archived" in log and "user.zos.restore" in log
