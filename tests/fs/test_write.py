"""The write path on a real mount: append upload, multipart, rebuilds, metadata,
concurrency and memory.

Mounts use small thresholds where they can, so that every way of uploading
is exercised in seconds: append_chunk 1M, part_size 5M, rewrite_threshold
10M, multipart_threshold 24M. The fault proxy in front of the RGW counts the
requests (and their bytes) that prove how data went out.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount, drop_page_cache, staging_files, vm_hwm, wait_until
from tests.support.objects import get, pattern
from tests.support.rgw import MAIN_USER, LocalRGW
from zosfs.zos import ClientConfig, WriteOptions, ZosClient

MiB = 1024 * 1024
SMALL = {"append_chunk": "1M", "part_size": "5M", "rewrite_threshold": "10M", "multipart_threshold": "24M"}


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def proxy(rgw: LocalRGW) -> Iterator[FaultProxy]:
    """A request-counting proxy in front of the RGW (ask for it after `bucket`
    and before `make_mount`, so that mounts are unmounted first)."""
    with FaultProxy(rgw.endpoint) as p:
        yield p




def write_file(path: os.PathLike[str] | str, data: bytes, chunk: int = MiB) -> None:
    """Write as cp would: sequential writes of `chunk` bytes."""
    with open(path, "wb", buffering=0) as f:
        view = memoryview(data)
        for start in range(0, len(data), chunk):
            f.write(view[start : start + chunk])




def http_headers(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"]


def appendable(s3: Any, bucket: str, key: str) -> bool:
    return http_headers(s3, bucket, key).get("x-rgw-object-type", "").lower() == "appendable"






def wait_staging_empty(m: ZosfsMount, timeout: float = 10.0) -> dict[str, Any]:
    """Once every file is closed and uploaded, the staging budget is all free."""
    deadline = time.monotonic() + timeout
    while True:
        stats = m.stats()
        if (stats["staging_reserved"] == 0 and not stats["uploads"]) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def staged_paths(m: ZosfsMount) -> list[str]:
    """The files in the mount's staging directory that hold data (see `staging_files`)."""
    return [str(p) for p in staging_files(m.cache_dir / "staging")]


def staging_empty(m: ZosfsMount) -> bool:
    """Whether staging is empty, once the mount's background removal of uploaded files settles."""
    return wait_until(lambda: staged_paths(m) == [])




def zos_append(rgw: LocalRGW, bucket: str, key: str, data: bytes, opts: WriteOptions) -> None:
    """Make an appendable object the way another ZOS client would."""

    async def main() -> None:
        cfg = ClientConfig(endpoint=rgw.endpoint, bucket=bucket, access_key=MAIN_USER.access_key,
                           secret_key=MAIN_USER.secret_key)
        async with ZosClient(cfg) as zos:
            await zos.append(key, 0, data, opts)

    trio.run(main)


# -- sequential writes -------------------------------------------------------------------

SIZES = [0, 1, MiB - 1, MiB, MiB + 1, 10 * MiB - 1, 10 * MiB + 1, 24 * MiB - 1, 24 * MiB, 24 * MiB + 1, 31 * MiB + 7]


def test_sequential_writes_of_every_size_read_back_exactly(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """0 B, 1 B, just under/at/over append_chunk, rewrite_threshold and
    multipart_threshold: the object, and the file read back, are the bytes
    written. A file closed before its first append chunk is one PUT (a
    Normal object; see whole_put); up to multipart_threshold files stay
    appendable; beyond it they continue as multipart uploads that copy what
    was appended server-side."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    files = {f"f{size}": pattern(size, size) for size in SIZES}
    for name, data in files.items():
        proxy.reset_stats()
        write_file(m.path / name, data)
        assert get(s3, bucket, name) == data, name
        assert os.stat(m.path / name).st_size == len(data)
        if 0 < len(data) < MiB:
            assert not appendable(s3, bucket, name), name
            assert proxy.count("AppendObject") == 0 and proxy.count("PutObject") == 1, name
            assert sum(r.request_bytes for r in proxy.records("PutObject")) == len(data), name
        elif len(data) <= 24 * MiB:
            assert appendable(s3, bucket, name), name
            assert proxy.count("PutObject") == 0 and proxy.count("UploadPart") == 0, name
            sent = sum(r.request_bytes for r in proxy.records("AppendObject"))
            assert sent == len(data), f"{name}: {sent} bytes appended for {len(data)}"
        else:
            assert not appendable(s3, bucket, name)
            # What was appended before the threshold is not sent again, but
            # for the part it ended in (whole parts are copied server-side).
            appended = sum(r.request_bytes for r in proxy.records("AppendObject"))
            uploaded = sum(r.request_bytes for r in proxy.records("UploadPart"))
            assert uploaded <= len(data) - appended + 5 * MiB, name
            assert proxy.count("PutObject") == 0, name
    drop_page_cache()
    for name, data in files.items():
        assert (m.path / name).read_bytes() == data, name
    assert wait_staging_empty(m)["staging_reserved"] == 0
    assert staging_empty(m), staged_paths(m)


def test_a_growing_file_is_readable_by_others_while_written(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    data = pattern(3 * MiB + 10, 1)
    with open(m.path / "log", "wb", buffering=0) as f:
        f.write(data[: 2 * MiB + 5])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if s3.head_object(Bucket=bucket, Key="log")["ContentLength"] >= MiB:
                    break
            except s3.exceptions.ClientError:
                pass
            time.sleep(0.05)
        seen = get(s3, bucket, "log")
        assert len(seen) >= MiB and data.startswith(seen)
        f.write(data[2 * MiB + 5 :])
    assert get(s3, bucket, "log") == data


def test_a_reader_on_the_same_mount_reads_appended_bytes_while_appends_go_on(bucket: str, s3, make_mount) -> None:
    """Appended bytes leave staging and are read from the object; each
    append changes the object's ETag before its answer arrives. A reader
    of the file's start (page cache dropped before every read) never gets
    an error or wrong bytes while the writer streams on."""
    # (Small appends, often: many chances for a read to meet one.)
    m = make_mount(bucket, options={**SMALL, "multipart_threshold": "1G", "append_delay": "0.02"})
    data = pattern(8 * MiB, 25)
    errors: list[BaseException] = []
    reads = 0
    with open(m.path / "stream", "wb", buffering=0) as f:
        f.write(data[:MiB])
        os.fsync(f.fileno())  # (the start is in the object, and only there)
        done = threading.Event()

        def reader() -> None:
            nonlocal reads
            with open(m.path / "stream", "rb", buffering=0) as r:
                while not done.is_set():
                    os.posix_fadvise(r.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    try:
                        if os.pread(r.fileno(), 64 * 1024, 4096) != data[4096 : 4096 + 64 * 1024]:
                            errors.append(AssertionError("wrong bytes"))
                    except OSError as err:
                        errors.append(err)
                    reads += 1

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for pos in range(MiB, len(data), 16 * 1024):
                f.write(data[pos : pos + 16 * 1024])
                time.sleep(0.005)
        finally:
            done.set()
            thread.join()
    assert reads > 100
    assert not errors, f"{len(errors)} of {reads} reads failed, e.g. {errors[0]!r}"
    assert get(s3, bucket, "stream") == data


def test_appended_data_leaves_staging_while_the_file_is_still_open(bucket: str, s3, make_mount) -> None:
    """A file streamed out by appends does not pile up in staging (disk and
    page cache) until close: what is in the object is punched out of the
    staging file (once copied into the disk cache, within seconds), and
    reads of it come from the object."""
    m = make_mount(bucket, options=SMALL)
    data = pattern(20 * MiB + 123, 5)
    with open(m.path / "stream", "w+b", buffering=0) as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos : pos + MiB])
        os.fsync(f.fileno())  # everything appended
        assert get(s3, bucket, "stream") == data
        [staged] = [p for p in staged_paths(m) if p.endswith(".data")]
        assert os.stat(staged).st_size == len(data)
        assert wait_until(lambda: os.stat(staged).st_blocks * 512 <= 64 * 1024, timeout=15), \
            f"{os.stat(staged).st_blocks * 512} bytes still staged"
        f.seek(0)
        assert f.read() == data  # (from the object)
        f.write(b"tail")  # the file goes on growing from where it was
    assert get(s3, bucket, "stream") == data + b"tail"
    assert appendable(s3, bucket, "stream")


def test_uploaded_parts_of_a_large_new_file_leave_staging_and_stay_readable(bucket: str, s3, make_mount) -> None:
    """Past multipart_threshold a new file goes on by parallel multipart
    upload, and every part that went out is freed from staging (the upload
    holds it). A read of such a part, or a write into it, first completes the
    upload up to there (the object then holds those bytes): both see and keep
    exactly the file's bytes."""
    m = make_mount(bucket, options=SMALL)
    data = bytearray(pattern(60 * MiB + 4321, 12))
    with open(m.path / "big", "w+b", buffering=0) as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos : pos + MiB])
        [staged] = [p for p in staged_paths(m) if p.endswith(".data")]
        assert wait_until(lambda: os.stat(staged).st_blocks * 512 <= 16 * MiB, timeout=30), (
            f"{os.stat(staged).st_blocks * 512} bytes still staged")
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "no upload holds the freed parts"
        before = s3.head_object(Bucket=bucket, Key="big")["ContentLength"]
        assert before <= 24 * MiB + MiB  # the appended start only, so far
        drop_page_cache()
        assert os.pread(f.fileno(), MiB, 40 * MiB) == data[40 * MiB : 41 * MiB]
        # The upload was completed up to there: the object holds the bytes read.
        assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] >= 41 * MiB
        os.pwrite(f.fileno(), b"X" * 100, 30 * MiB + 5)  # into a part that was uploaded
        data[30 * MiB + 5 : 30 * MiB + 105] = b"X" * 100
        f.seek(0, os.SEEK_END)
        f.write(b"end")
        data += b"end"
        drop_page_cache()
        f.seek(0)
        assert f.read() == data
    assert get(s3, bucket, "big") == data
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert wait_staging_empty(m)["staging_reserved"] == 0
    assert staging_empty(m), staged_paths(m)
    assert "completed the upload of the first" in m.log_text()


def test_truncating_and_unlinking_a_large_new_file_whose_parts_left_staging(bucket: str, s3, make_mount) -> None:
    """Truncation below freed parts keeps every byte below the new end; an
    unlinked file whose parts left staging still reads whole through the
    handle that has it open, and nothing of it stays in the bucket."""
    m = make_mount(bucket, options=SMALL)
    data = pattern(50 * MiB, 13)
    with open(m.path / "cut", "w+b", buffering=0) as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos : pos + MiB])
        [staged] = [p for p in staged_paths(m) if p.endswith(".data")]
        assert wait_until(lambda: os.stat(staged).st_blocks * 512 <= 16 * MiB, timeout=30)
        os.ftruncate(f.fileno(), 33 * MiB + 7)
    assert get(s3, bucket, "cut") == data[: 33 * MiB + 7]
    with open(m.path / "gone", "w+b", buffering=0) as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos : pos + MiB])
        [staged] = [p for p in staged_paths(m) if p.endswith(".data")]
        assert wait_until(lambda: os.stat(staged).st_blocks * 512 <= 16 * MiB, timeout=30)
        os.unlink(m.path / "gone")
        drop_page_cache()
        f.seek(0)
        assert f.read() == data
    assert wait_until(lambda: not exists_key(s3, bucket, "gone"))
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert wait_staging_empty(m)["staging_reserved"] == 0
    assert staging_empty(m), staged_paths(m)


def test_an_appendable_file_grown_past_multipart_threshold_stays_appendable(bucket: str, s3, proxy: FaultProxy,
                                                                            make_mount) -> None:
    """multipart_threshold is for new files: `>>` to an appendable object
    that is or becomes larger appends only the new bytes, never copies it."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    first, more = pattern(20 * MiB, 14), pattern(10 * MiB, 15)
    write_file(m.path / "log", first)
    assert appendable(s3, bucket, "log")
    proxy.reset_stats()
    with open(m.path / "log", "ab", buffering=0) as f:
        for pos in range(0, len(more), MiB):
            f.write(more[pos : pos + MiB])
    assert get(s3, bucket, "log") == first + more
    assert appendable(s3, bucket, "log")
    ops = proxy.stats
    assert not {"UploadPartCopy", "CopyObject", "CreateMultipartUpload"} & set(ops), ops


def test_a_new_file_fsynced_while_appending_stays_appendable_past_multipart_threshold(
    bucket: str, s3, proxy: FaultProxy, make_mount
) -> None:
    """A writer that fsyncs (a log, a database) keeps appending past
    multipart_threshold: each fsync costs the new bytes, never a multipart
    completion that would copy the whole file so far."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    data = pattern(40 * MiB, 19)
    with open(m.path / "journal", "wb", buffering=0) as f:
        for pos in range(0, len(data), 4 * MiB):
            f.write(data[pos : pos + 4 * MiB])
            os.fsync(f.fileno())
            assert get(s3, bucket, "journal") == data[: pos + 4 * MiB]
    assert get(s3, bucket, "journal") == data
    assert appendable(s3, bucket, "journal")
    ops = proxy.stats
    assert not {"UploadPartCopy", "CreateMultipartUpload"} & set(ops), ops


def test_a_slowly_written_new_file_stays_appendable_past_multipart_threshold(
    bucket: str, s3, proxy: FaultProxy, make_mount
) -> None:
    """A writer slower than serial appends (a log that never fsyncs) keeps
    appending past multipart_threshold: others read it in the bucket while it
    grows beyond the threshold, and it stays appendable after close."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    data = pattern(48 * MiB, 23)
    seen_past_threshold = 0
    with open(m.path / "app.log", "wb", buffering=0) as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos : pos + MiB])
            time.sleep(0.05)  # about 16 MiB/s
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and seen_past_threshold <= 24 * MiB:
            seen_past_threshold = s3.head_object(Bucket=bucket, Key="app.log")["ContentLength"]
            time.sleep(0.05)
        assert data.startswith(get(s3, bucket, "app.log"))
    assert seen_past_threshold > 24 * MiB, "nothing past multipart_threshold was in the bucket before close"
    assert get(s3, bucket, "app.log") == data
    assert appendable(s3, bucket, "app.log")
    ops = proxy.stats
    assert not {"UploadPartCopy", "CreateMultipartUpload", "UploadPart"} & set(ops), ops
    assert sum(r.request_bytes for r in proxy.records("AppendObject")) == len(data)


def test_a_slow_log_reaches_the_bucket_within_append_delay(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """Lines written now and then, far less than append_chunk, are in the
    bucket (for `tail` on another machine) within append_delay of being
    written, without fsync or close; the object stays appendable."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "append_delay": "1"})
    lines = [f"{n:04d} something happened\n".encode() for n in range(6)]
    with open(m.path / "slow.log", "ab", buffering=0) as f:
        for n, line in enumerate(lines):
            f.write(line)
            expected = b"".join(lines[: n + 1])
            written = time.monotonic()
            assert wait_until(lambda: exists_key(s3, bucket, "slow.log") and get(s3, bucket, "slow.log") == expected,
                              timeout=5), f"line {n} not in the bucket 5 s after it was written"
            assert time.monotonic() - written >= 0.5, "appended long before append_delay"
    assert get(s3, bucket, "slow.log") == b"".join(lines)
    assert appendable(s3, bucket, "slow.log")
    assert proxy.count("AppendObject") <= len(lines) + 2


def test_dd_past_multipart_threshold_goes_multipart_like_any_fast_copy(
    bucket: str, s3, proxy: FaultProxy, make_mount, tmp_path
) -> None:
    """dd flushes the new, empty file once before writing (it closes the
    descriptor it duplicated): that is no fsync of appended data, so a dd
    copy past multipart_threshold goes by parallel multipart as cp's does."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    source = tmp_path / "source"
    data = pattern(40 * MiB, 24)
    source.write_bytes(data)
    subprocess.run(["dd", f"if={source}", f"of={m.path / 'copy'}", "bs=1M", "status=none"], check=True)
    assert get(s3, bucket, "copy") == data
    assert proxy.count("CreateMultipartUpload") == 1
    assert not appendable(s3, bucket, "copy")


def test_a_small_new_file_is_one_put_and_stays_appendable_where_asked(bucket: str, s3, proxy: FaultProxy,
                                                                     make_mount) -> None:
    """A new file closed before its first append chunk (cp, tar, rsync of
    small files) is stored by one PUT with its metadata; with whole_put=0 by
    one append, as an appendable object; a file made through O_APPEND (a
    log) is appended either way."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    path = m.path / "small.txt"
    proxy.reset_stats()
    write_file(path, b"x" * 5000)
    assert proxy.count("PutObject") == 1 and proxy.count("AppendObject") == 0, proxy.stats
    assert get(s3, bucket, "small.txt") == b"x" * 5000 and not appendable(s3, bucket, "small.txt")
    assert http_headers(s3, bucket, "small.txt")["x-amz-meta-mode"] == str(os.stat(path).st_mode)
    proxy.reset_stats()
    with open(m.path / "new.log", "a") as f:
        f.write("line\n")
    assert proxy.count("PutObject") == 0 and proxy.count("AppendObject") == 1, proxy.stats
    assert appendable(s3, bucket, "new.log")
    assert m.unmount() == 0
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "whole_put": "0"})
    proxy.reset_stats()
    write_file(m.path / "kept.txt", b"y" * 5000)
    assert proxy.count("PutObject") == 0 and proxy.count("AppendObject") == 1, proxy.stats
    assert get(s3, bucket, "kept.txt") == b"y" * 5000 and appendable(s3, bucket, "kept.txt")


def test_a_new_file_written_on_after_a_close_of_a_shared_descriptor(bucket: str, s3, proxy: FaultProxy,
                                                                   make_mount) -> None:
    """A descriptor shared with a child that closes its copy (`cmd > out`
    with children that write and exit) flushes the file before the writer
    is done: after the one PUT, growth beyond it makes the object
    appendable once, and later closes send only the new bytes (never the
    whole file at every close)."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    expected = b""
    with open(m.path / "out", "wb", buffering=0) as f:
        for n in range(6):
            line = f"step {n}\n".encode() * 100
            f.write(line)
            expected += line
            os.close(os.dup(f.fileno()))  # a flush, as a child's exit makes
            assert get(s3, bucket, "out") == expected, n
    assert get(s3, bucket, "out") == expected and appendable(s3, bucket, "out")
    assert proxy.count("PutObject") == 1 and proxy.count("DeleteObject") == 1
    # The first close stored 700 bytes, the second made it appendable (1,400
    # bytes appended whole), and each later close appended its 700 only.
    assert sum(r.request_bytes for r in proxy.records("AppendObject")) == len(expected)
    assert (m.path / "out").read_bytes() == expected


def test_appending_to_a_small_non_appendable_object_makes_it_appendable(bucket: str, s3, proxy: FaultProxy,
                                                                       make_mount) -> None:
    """`>>` to a small object made by PUT (or left by `: > log`, or by
    logrotate's copytruncate) stores it once more as an appendable object,
    with its tags and ACL; from then on each `>>` sends only its bytes,
    instead of downloading and uploading the whole log every time."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    s3.put_object(Bucket=bucket, Key="log", Body=b"first\n", Tagging="team=ops", ACL="public-read")
    with open(m.path / "log", "a") as f:
        f.write("second\n")
    assert get(s3, bucket, "log") == b"first\nsecond\n"
    assert appendable(s3, bucket, "log")
    assert s3.get_object_tagging(Bucket=bucket, Key="log")["TagSet"] == [{"Key": "team", "Value": "ops"}]
    grants = s3.get_object_acl(Bucket=bucket, Key="log")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)
    expected = b"first\nsecond\n"
    for cycle in range(2):
        proxy.reset_stats()
        lines = [f"line {cycle}.{n}\n".encode() for n in range(5)]
        for line in lines:
            with open(m.path / "log", "ab") as f:
                f.write(line)
            expected += line
        assert get(s3, bucket, "log") == expected
        ops = proxy.stats
        assert not {"PutObject", "GetObject", "UploadPartCopy", "DeleteObject"} & set(ops), ops
        assert sum(r.request_bytes for r in proxy.records("AppendObject")) == sum(map(len, lines))
        # Truncated (`: > log`, copytruncate): the next `>>` makes it appendable again.
        with open(m.path / "log", "w"):
            pass
        with open(m.path / "log", "ab") as f:
            f.write(b"after truncation\n")
        expected = b"after truncation\n"
        assert get(s3, bucket, "log") == expected
        assert appendable(s3, bucket, "log")
    assert (m.path / "log").read_bytes() == expected


def test_one_gib_file_with_default_options(bucket: str, s3, make_mount) -> None:
    size = 1024 * MiB
    block = pattern(MiB, 99)
    m = make_mount(bucket)
    digest = hashlib.md5()
    started = time.monotonic()
    with open(m.path / "big", "wb", buffering=0) as f:
        for n in range(size // MiB):
            piece = n.to_bytes(8, "little") + block[8:]
            digest.update(piece)
            f.write(piece)
    elapsed = time.monotonic() - started
    print(f"1 GiB written and closed in {elapsed:.1f} s ({size / MiB / elapsed:.0f} MiB/s)")
    remote = hashlib.md5()
    for piece in s3.get_object(Bucket=bucket, Key="big")["Body"].iter_chunks(MiB):
        remote.update(piece)
    assert remote.hexdigest() == digest.hexdigest()
    drop_page_cache()
    local = hashlib.md5()
    with open(m.path / "big", "rb", buffering=0) as f:
        while piece := f.read(MiB):
            local.update(piece)
    assert local.hexdigest() == digest.hexdigest()
    assert wait_staging_empty(m)["staging_reserved"] == 0


# -- appends ---------------------------------------------------------------------------


def test_repeated_shell_appends_send_only_the_new_bytes(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint)
    path = m.path / "app.log"
    subprocess.run(f"echo first line > {path}", shell=True, check=True)
    assert appendable(s3, bucket, "app.log")
    expected = b"first line\n"
    proxy.reset_stats()
    appended = 0
    for n in range(10):
        line = f"line {n} " + "x" * (n + 1) + "\n"
        subprocess.run(f"echo '{line.strip()}' >> {path}", shell=True, check=True)
        expected += line.encode()
        appended += len(line)
    assert sum(r.request_bytes for r in proxy.records("AppendObject")) == appended
    assert proxy.count("AppendObject") == 10
    for op in ("PutObject", "GetObject", "UploadPart", "UploadPartCopy", "CopyObject"):
        assert proxy.count(op) == 0, f"{op}: {proxy.count(op)}"
    assert get(s3, bucket, "app.log") == expected
    assert path.read_bytes() == expected
    assert appendable(s3, bucket, "app.log")
    headers = http_headers(s3, bucket, "app.log")
    assert int(headers["x-rgw-next-append-position"]) == len(expected)


def test_appending_to_a_large_normal_object_does_not_download_it(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    base = pattern(100 * MiB, 5)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=base)
    m = make_mount(bucket, endpoint=proxy.endpoint)
    extra = pattern(MiB + 3, 6)
    proxy.reset_stats()
    with open(m.path / "big.bin", "ab", buffering=0) as f:
        f.write(extra)
    fetched = sum(r.response_bytes for r in proxy.records("GetObject"))
    assert fetched <= 8 * MiB, f"{fetched} bytes downloaded to append {len(extra)}"
    assert proxy.count("UploadPartCopy") >= 10
    assert sum(r.request_bytes for r in proxy.records("UploadPart")) <= 8 * MiB + len(extra)
    assert proxy.count("PutObject") == 0
    remote = hashlib.md5()
    for piece in s3.get_object(Bucket=bucket, Key="big.bin")["Body"].iter_chunks(MiB):
        remote.update(piece)
    assert remote.hexdigest() == hashlib.md5(base + extra).hexdigest()
    assert os.stat(m.path / "big.bin").st_size == len(base) + len(extra)


def test_appending_to_a_small_normal_object_rewrites_it(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="small", Body=b"abc")
    with open(mnt.path / "small", "ab") as f:
        f.write(b"def")
    assert get(s3, mnt.bucket, "small") == b"abcdef"


# -- random writes and truncation ---------------------------------------------------------


def test_random_writes_into_a_large_file_match_a_reference_copy(bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount) -> None:
    size = 50 * MiB
    base = pattern(size, 7)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=base)
    reference = tmp_path / "reference"
    reference.write_bytes(base)
    m = make_mount(bucket, endpoint=proxy.endpoint)
    rng = random.Random(8)
    proxy.reset_stats()
    touched: set[int] = set()  # 8 MiB parts written to
    with open(m.path / "r.bin", "r+b", buffering=0) as f, open(reference, "r+b", buffering=0) as ref:
        for n in range(150):
            # Mostly in the first 20 MiB, so that later parts stay unchanged.
            limit = 20 * MiB if n % 30 else size + MiB
            offset = rng.randrange(limit)
            data = rng.randbytes(rng.choice([1, 17, 4096, 100_000, 700_000]))
            assert os.pwrite(f.fileno(), data, offset) == len(data)
            os.pwrite(ref.fileno(), data, offset)
            touched.update(range(offset // (8 * MiB), (offset + len(data) - 1) // (8 * MiB) + 1))
            if n % 25 == 0:
                check = rng.randrange(size)
                assert os.pread(f.fileno(), 300_000, check) == os.pread(ref.fileno(), 300_000, check)
    expected = reference.read_bytes()
    assert get(s3, bucket, "r.bin") == expected
    untouched = set(range(-(-len(expected) // (8 * MiB)))) - touched
    assert len(untouched) >= 2
    assert proxy.count("UploadPartCopy") >= len(untouched)  # unchanged parts were copied server-side
    assert sum(r.response_bytes for r in proxy.records("GetObject")) <= (len(touched) + 1) * 8 * MiB
    drop_page_cache()
    assert (m.path / "r.bin").read_bytes() == expected
    assert wait_staging_empty(m)["staging_reserved"] == 0


@pytest.mark.parametrize("size", [3 * MiB, 30 * MiB], ids=["small", "multipart"])
def test_truncate_down_and_up(bucket: str, s3, size: int, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    base = pattern(size, 9)
    s3.put_object(Bucket=bucket, Key="t", Body=base)
    path = m.path / "t"
    cut = size // 2 + 123
    os.truncate(path, cut)  # with no handle open: stored at once
    assert get(s3, bucket, "t") == base[:cut]
    assert os.stat(path).st_size == cut
    os.truncate(path, cut + 2 * MiB)
    assert get(s3, bucket, "t") == base[:cut] + bytes(2 * MiB)
    with open(path, "r+b") as f:
        f.truncate(100)
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
        f.truncate(50)
        f.truncate(60)
        f.seek(0)
        assert f.read() == base[:50] + bytes(10)
    assert get(s3, bucket, "t") == base[:50] + bytes(10)
    assert path.read_bytes() == base[:50] + bytes(10)


def test_o_trunc_replaces_the_content(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    s3.put_object(Bucket=bucket, Key="a", Body=pattern(12 * MiB, 1))
    with open(m.path / "a", "wb") as f:  # O_WRONLY | O_CREAT | O_TRUNC
        f.write(b"new")
    assert get(s3, bucket, "a") == b"new"
    assert (m.path / "a").read_bytes() == b"new"
    fd = os.open(m.path / "a", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert get(s3, bucket, "a") == b""
    assert os.stat(m.path / "a").st_size == 0


def test_sparse_writes_past_the_end_read_as_zeros(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    s3.put_object(Bucket=bucket, Key="s", Body=b"start")
    with open(m.path / "s", "r+b", buffering=0) as f:
        os.pwrite(f.fileno(), b"end", 3 * MiB)
        assert os.pread(f.fileno(), 10, 5) == bytes(10)
    expected = b"start" + bytes(3 * MiB - 5) + b"end"
    assert get(s3, bucket, "s") == expected
    with open(m.path / "new", "wb", buffering=0) as f:  # a new file (append mode) too
        f.seek(2 * MiB)
        f.write(b"x")
    assert get(s3, bucket, "new") == bytes(2 * MiB) + b"x"
    assert (m.path / "s").read_bytes() == expected


# -- buckets without append ------------------------------------------------------------------


def test_versioned_bucket_uses_put_and_multipart(versioned_bucket: str, s3, make_mount) -> None:
    m = make_mount(versioned_bucket, options=SMALL)
    small, large = pattern(100_000, 1), pattern(30 * MiB + 1, 2)
    write_file(m.path / "small", small)
    write_file(m.path / "large", large)
    assert get(s3, versioned_bucket, "small") == small
    assert get(s3, versioned_bucket, "large") == large
    with open(m.path / "small", "ab") as f:
        f.write(b"more")
    assert get(s3, versioned_bucket, "small") == small + b"more"
    drop_page_cache()
    assert (m.path / "large").read_bytes() == large
    assert not appendable(s3, versioned_bucket, "small")


# -- metadata -------------------------------------------------------------------------------------


def check_metadata(s3: Any, bucket: str, key: str, *, content_type: str, tags: dict[str, str]) -> None:
    head = s3.head_object(Bucket=bucket, Key=key)
    meta = head["Metadata"]
    assert stat.S_IMODE(int(meta["mode"])) == 0o640
    assert (meta["uid"], meta["gid"]) == ("1234", "5678")
    assert abs(float(meta["mtime"]) - time.time()) < 60
    assert head["ContentType"] == content_type
    got = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    assert got == tags


def test_metadata_and_tags_survive_an_append_and_a_rewrite(bucket: str, s3, rgw: LocalRGW, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    tags = {"project": "zosfs", "tier": "gold"}
    # An appendable object made by another client, with a content type.
    zos_append(rgw, bucket, "log.txt", b"one\n", WriteOptions(content_type="text/plain", metadata={"owner-note": "keep me"}))
    s3.put_object_tagging(Bucket=bucket, Key="log.txt", Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
    # A normal object too.
    s3.put_object(Bucket=bucket, Key="data.csv", Body=b"a,b\n", ContentType="text/csv", Tagging="project=zosfs&tier=gold")
    for name in ("log.txt", "data.csv"):
        path = m.path / name
        os.chmod(path, 0o640)
        os.chown(path, 1234, 5678)
        with open(path, "ab") as f:  # an append
            f.write(b"two\n")
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (1234, 5678)
        assert abs(st.st_mtime - time.time()) < 60
        ctype = "text/plain" if name == "log.txt" else "text/csv"
        check_metadata(s3, bucket, name, content_type=ctype, tags=tags)
        with open(path, "r+b") as f:  # a rewrite
            f.write(b"ONE")
        check_metadata(s3, bucket, name, content_type=ctype, tags=tags)
    assert get(s3, bucket, "log.txt") == b"ONE\ntwo\n"
    assert get(s3, bucket, "data.csv") == b"ONE\ntwo\n"
    assert s3.head_object(Bucket=bucket, Key="log.txt")["Metadata"]["owner-note"] == "keep me"


def test_chmod_and_touch_of_an_appendable_file_keep_it_appendable(mnt: ZosfsMount, s3) -> None:
    path = mnt.path / "f"
    with open(path, "ab") as f:  # (made through O_APPEND: by append upload)
        f.write(b"data")
    os.chmod(path, 0o600)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    assert appendable(s3, mnt.bucket, "f")
    with open(path, "ab") as f:
        f.write(b"more")
    assert appendable(s3, mnt.bucket, "f")
    assert get(s3, mnt.bucket, "f") == b"datamore"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- durability points --------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, 2 * MiB, 30 * MiB], ids=["new", "small", "multipart"])
def test_fsync_returns_when_the_data_is_in_the_bucket(bucket: str, s3, existing: int | None, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    expected = bytearray(pattern(existing, 3) if existing else b"")
    if existing:
        s3.put_object(Bucket=bucket, Key="f", Body=bytes(expected))
    with open(m.path / "f", "r+b" if existing else "wb", buffering=0) as f:
        for n in range(3):
            data = pattern(MiB + n, 10 + n)
            offset = n * 700_000
            os.pwrite(f.fileno(), data, offset)
            expected[offset : offset + len(data)] = data
            os.fsync(f.fileno())
            assert get(s3, bucket, "f") == bytes(expected), f"after fsync {n}"
        os.fdatasync(f.fileno())
    assert get(s3, bucket, "f") == bytes(expected)


def test_writes_after_a_flush_on_the_same_handle(bucket: str, s3, make_mount) -> None:
    """A handle that stays open after fsync keeps working: later writes,
    reads and truncates are all seen, by the next fsync and by close."""
    m = make_mount(bucket, options=SMALL)
    model = bytearray()
    with open(m.path / "f", "w+b", buffering=0) as f:
        fd = f.fileno()

        def pwrite(data: bytes, offset: int) -> None:
            os.pwrite(fd, data, offset)
            end = offset + len(data)
            if end > len(model):
                model.extend(bytes(end - len(model)))
            model[offset:end] = data

        pwrite(pattern(3 * MiB, 1), 0)  # appends
        os.fsync(fd)
        pwrite(b"middle", MiB)  # an overwrite of what was appended
        assert os.pread(fd, 10, MiB - 2) == bytes(model[MiB - 2 : MiB + 8])
        os.fsync(fd)
        assert get(s3, bucket, "f") == bytes(model)
        pwrite(pattern(12 * MiB, 2), 2 * MiB)  # past rewrite_threshold
        os.fsync(fd)
        assert get(s3, bucket, "f") == bytes(model)
        os.ftruncate(fd, 5 * MiB)
        del model[5 * MiB :]
        pwrite(b"end", 6 * MiB)
        assert os.pread(fd, 6 * MiB + 3, 0) == bytes(model)
    assert get(s3, bucket, "f") == bytes(model)
    assert wait_staging_empty(m)["staging_reserved"] == 0


# -- concurrency ---------------------------------------------------------------------------------


def test_two_handles_writing_the_same_file(bucket: str, s3, make_mount) -> None:
    """Both handles share one state, as on a local disk: the bytes each wrote
    where it wrote them, later writes winning; each close stores both."""
    m = make_mount(bucket, options=SMALL)
    path = m.path / "shared"
    model = bytearray(3 * MiB)
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(path, os.O_RDWR)
    rng = random.Random(4)
    for n in range(40):
        fd = a if n % 2 else b
        offset = rng.randrange(3 * MiB - 100_000)
        data = rng.randbytes(rng.randrange(1, 100_000))
        os.pwrite(fd, data, offset)
        model[offset : offset + len(data)] = data
    os.pwrite(a, b"!", 3 * MiB - 1)
    model[-1:] = b"!"
    assert os.pread(b, 3 * MiB, 0) == bytes(model)
    os.close(a)
    assert get(s3, bucket, "shared") == bytes(model)
    os.pwrite(b, b"last", 0)
    model[:4] = b"last"
    os.close(b)
    assert get(s3, bucket, "shared") == bytes(model)


def test_a_reader_sees_what_a_writer_appends(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    path = m.path / "growing"
    with open(path, "wb", buffering=0) as w:
        w.write(b"header\n")
        with open(path, "rb", buffering=0) as r:
            expected = b"header\n"
            for n in range(20):
                line = f"line {n}\n".encode() * 10_000
                w.write(line)
                expected += line
                r.seek(0)
                assert r.read() == expected
    assert get(s3, bucket, "growing") == expected
    # A reader opened before the writer follows this mount's own changes.
    with open(path, "rb", buffering=0) as r:
        assert r.read(7) == b"header\n"
        with open(path, "ab") as w:
            w.write(b"more")
        r.seek(0)
        assert r.read() == expected + b"more"


def test_reading_the_appended_part_while_appends_go_on(bucket: str, s3, make_mount) -> None:
    """The appended start of a growing file is read from the object (staging
    freed it) while the writer's appends keep changing the object's ETag:
    every read returns the right bytes, none fails. (A small staging budget
    keeps the appends small and frequent.)"""
    m = make_mount(bucket, options={**SMALL, "staging_size": "8M"})
    path = m.path / "growing"
    block = pattern(MiB, 12)
    done = threading.Event()
    failures: list[object] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        fd = os.open(path, os.O_RDONLY)
        try:
            while not done.is_set():
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # (so that reads reach the daemon)
                try:
                    data = os.pread(fd, 65536, 0)
                except OSError as err:
                    failures.append(err)
                    continue
                reads += 1
                if data != block[: len(data)]:
                    failures.append(f"{len(data)} bytes read differ")
        finally:
            os.close(fd)

    with open(path, "wb", buffering=0) as w:
        w.write(block)
        os.fsync(w.fileno())
        t = threading.Thread(target=reader)
        t.start()
        try:
            blocks = 1
            while reads < 40 and blocks < 400:
                w.write(block)
                blocks += 1
        finally:
            done.set()
            t.join()
    assert not failures, failures[:3]
    assert reads >= 5, f"only {reads} reads while {blocks} MiB were written"
    assert s3.head_object(Bucket=bucket, Key="growing")["ContentLength"] == blocks * MiB


def test_reads_while_another_thread_rewrites_a_large_file(bucket: str, s3, make_mount) -> None:
    """A reader on the same mount, while a writer overwrites parts of a large
    file in random order (parts go out in the background meanwhile): bytes
    already rewritten read as the new ones, bytes never rewritten as the old."""
    m = make_mount(bucket, options=SMALL)
    chunk, count = MiB, 24
    old = pattern(chunk * count, 1)
    s3.put_object(Bucket=bucket, Key="big", Body=old)
    new = pattern(chunk * count, 2)
    order = random.Random(3).sample(range(count), count * 2 // 3)
    untouched = set(range(count)) - set(order)
    done: set[int] = set()
    failures: list[str] = []
    finished = threading.Event()

    def reader() -> None:
        rng = random.Random(4)
        with open(m.path / "big", "rb", buffering=0) as f:
            while not finished.is_set():
                offset = rng.randrange(len(old) - 3 * chunk)
                length = rng.randrange(1, 3 * chunk)
                rewritten = set(done)  # (before the read: these stay rewritten)
                os.posix_fadvise(f.fileno(), offset, length, os.POSIX_FADV_DONTNEED)
                got = os.pread(f.fileno(), length, offset)
                for n in range(offset // chunk, (offset + length - 1) // chunk + 1):
                    source = new if n in rewritten else old if n in untouched else None
                    lo, hi = max(offset, n * chunk), min(offset + length, (n + 1) * chunk)
                    if source is not None and got[lo - offset : hi - offset] != source[lo:hi]:
                        failures.append(f"chunk {n} ({'rewritten' if source is new else 'untouched'}) read wrong")

    with open(m.path / "big", "r+b", buffering=0) as w:
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for n in order:
                os.pwrite(w.fileno(), new[n * chunk : (n + 1) * chunk], n * chunk)
                done.add(n)
                time.sleep(0.01)
        finally:
            finished.set()
            thread.join(60)
    assert not failures, failures[:5]
    expected = bytearray(old)
    for n in order:
        expected[n * chunk : (n + 1) * chunk] = new[n * chunk : (n + 1) * chunk]
    assert get(s3, bucket, "big") == bytes(expected)


def test_rename_of_a_file_open_for_writing(bucket: str, s3, make_mount) -> None:
    """The handle follows the file to its new name: what it wrote before the
    rename is moved, what it writes after goes to the new name."""
    m = make_mount(bucket, options=SMALL)
    first, second = pattern(2 * MiB + 1, 1), pattern(MiB, 2)
    with open(m.path / "old", "wb", buffering=0) as f:
        f.write(first)
        os.rename(m.path / "old", m.path / "new")
        f.write(second)
    assert get(s3, bucket, "new") == first + second
    assert "old" not in os.listdir(m.path)
    assert s3.list_objects_v2(Bucket=bucket, Prefix="old").get("KeyCount") == 0
    assert (m.path / "new").read_bytes() == first + second


def test_unlink_of_a_file_open_for_writing(bucket: str, s3, make_mount) -> None:
    """The name and the object go at once; the handle keeps working on what it
    wrote, and nothing of it reaches the bucket afterwards."""
    m = make_mount(bucket, options=SMALL)
    with open(m.path / "tmp", "w+b", buffering=0) as f:
        f.write(pattern(3 * MiB, 1))  # partly appended in the background
        os.unlink(m.path / "tmp")
        assert "tmp" not in os.listdir(m.path)
        f.write(b"after")
        f.seek(3 * MiB)
        assert f.read() == b"after"
        os.fsync(f.fileno())
    time.sleep(0.3)
    assert not user_keys(s3, bucket)
    assert wait_staging_empty(m)["staging_reserved"] == 0
    assert staging_empty(m), staged_paths(m)


def test_writers_wait_for_the_staging_budget(bucket: str, s3, make_mount) -> None:
    """With a staging budget far smaller than the files, writers are slowed
    while their data goes out, and never hold more than the budget."""
    m = make_mount(bucket, options={**SMALL, "staging_size": "12M"})
    s3.put_object(Bucket=bucket, Key="old", Body=pattern(30 * MiB, 1))
    new, rewrite = pattern(40 * MiB, 2), pattern(30 * MiB, 3)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, m.stats()["staging_reserved"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    writers = [threading.Thread(target=write_file, args=(m.path / "new", new)),
               threading.Thread(target=write_file, args=(m.path / "old", rewrite))]
    try:
        for t in writers:
            t.start()
        for t in writers:
            t.join(120)
    finally:
        done.set()
        sampler.join()
    assert get(s3, bucket, "new") == new
    assert get(s3, bucket, "old") == rewrite
    assert 0 < peak <= 12 * MiB + MiB
    assert wait_staging_empty(m)["staging_reserved"] == 0


@pytest.mark.parametrize("upload", ["append", "multipart"])
def test_a_streaming_writer_waits_while_its_uploads_lag_far_behind(bucket: str, s3, proxy: FaultProxy, make_mount,
                                                                  upload: str) -> None:
    """A writer faster than its uploads is held about 128 MiB ahead of them
    (not the whole 4 GiB staging budget), and goes on when they do: appends
    (a file kept below multipart_threshold), or the parts of a new file past
    it (64 MiB here, appended, then 128 MiB ahead of the parts)."""
    options = {"multipart_threshold": "1G" if upload == "append" else "64M"}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options)
    block = pattern(MiB, 8)
    total = 300
    written = 0

    def writer() -> None:
        nonlocal written
        with open(m.path / "fast", "wb", buffering=0) as f:
            for _ in range(total):
                f.write(block)
                written += 1

    proxy.add_rule(Rule(op="AppendObject" if upload == "append" else "UploadPart", stall=True))
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(4)
    held = written
    reserved = m.stats()["staging_reserved"]
    proxy.clear_rules()
    t.join(120)
    assert not t.is_alive()
    low, high = (100, 130) if upload == "append" else (128, 195)
    assert low <= held <= high, f"{held} MiB written while no {upload} got through"
    assert reserved <= high * MiB
    digest = hashlib.md5()
    for chunk in s3.get_object(Bucket=bucket, Key="fast")["Body"].iter_chunks(8 * MiB):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.md5(block * total).hexdigest()
    assert appendable(s3, bucket, "fast") == (upload == "append")


def test_truncate_and_rewrite_while_an_append_is_on_its_way(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """A truncation below what is being appended, then writes that make the
    file longer again: the bytes the truncation dropped must not come back
    from the object (they read as zeros)."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    first, second, late = pattern(MiB + 1, 1), pattern(MiB, 2), pattern(MiB, 3)
    with open(m.path / "f", "w+b", buffering=0) as f:
        f.write(first)
        deadline = time.monotonic() + 10
        while proxy.count("AppendObject", status=200) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        slow = proxy.add_rule(Rule(op={"GetObjectAcl", "AppendObject"}, delay=1.0))
        f.write(second)  # the next append starts, and waits
        time.sleep(0.3)
        os.ftruncate(f.fileno(), 0)
        os.pwrite(f.fileno(), late, MiB + MiB // 2)
        proxy.remove_rule(slow)
    expected = bytes(MiB + MiB // 2) + late
    assert get(s3, bucket, "f") == expected
    assert (m.path / "f").read_bytes() == expected


def test_reopening_while_the_last_close_is_still_storing(bucket: str, s3, make_mount) -> None:
    """close() returns before the kernel's release is handled: an open that
    comes in meanwhile takes over the file's state, and nothing is lost."""
    m = make_mount(bucket, options=SMALL)
    path = m.path / "quick"
    expected = b""
    for n in range(40):
        line = f"{n} ".encode() * (1 + n * 997 % 40_000)
        with open(path, "ab", buffering=0) as f:
            f.write(line)
        expected += line
        if n % 8 == 0:
            with open(path, "r+b", buffering=0) as f:  # an overwrite too: replace mode
                f.write(b"<>")
            expected = b"<>" + expected[2:]
    assert get(s3, bucket, "quick") == expected
    assert path.read_bytes() == expected
    assert wait_staging_empty(m)["staging_reserved"] == 0


def test_an_unlinked_file_open_for_writing_keeps_its_content(bucket: str, s3, make_mount) -> None:
    m = make_mount(bucket, options=SMALL)
    old = pattern(12 * MiB, 1)
    s3.put_object(Bucket=bucket, Key="old", Body=old)
    with open(m.path / "old", "r+b", buffering=0) as f:
        os.pwrite(f.fileno(), b"mine", 0)
        os.unlink(m.path / "old")
        assert not (m.path / "old").exists()
        assert wait_until(lambda: not exists_key(s3, bucket, "old"))  # deletes are batched
        assert os.pread(f.fileno(), 4, 0) == b"mine"
        assert os.pread(f.fileno(), 100, 11 * MiB) == old[11 * MiB : 11 * MiB + 100]
        os.ftruncate(f.fileno(), MiB)
    assert not user_keys(s3, bucket)
    assert wait_staging_empty(m)["staging_reserved"] == 0
    assert staging_empty(m), staged_paths(m)


def exists_key(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


# -- memory ---------------------------------------------------------------------------------------


def test_four_large_files_written_at_once_keep_memory_bounded(bucket: str, s3, make_mount) -> None:
    """Staging is on disk: the daemon's peak RSS while four 256 MiB files are
    written at once stays far below their size (bound documented in README)."""
    size = 256 * MiB
    m = make_mount(bucket)
    assert m.process is not None
    block = pattern(MiB, 1)
    digests: dict[str, str] = {}
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        digest = hashlib.md5()
        try:
            with open(m.path / f"w{n}", "wb", buffering=0) as f:
                for i in range(size // MiB):
                    piece = bytes([n, i % 256]) + block[2:]
                    digest.update(piece)
                    f.write(piece)
        except BaseException as err:
            errors.append(err)
        digests[f"w{n}"] = digest.hexdigest()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    peak = vm_hwm(m.process.pid)
    print(f"daemon VmHWM after writing 4 x 256 MiB at once: {peak / MiB:.0f} MiB")
    assert peak < 150 * MiB
    for key, digest in digests.items():
        remote = hashlib.md5()
        for piece in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MiB):
            remote.update(piece)
        assert remote.hexdigest() == digest, key
    assert wait_staging_empty(m)["staging_reserved"] == 0


def user_keys(s3: Any, bucket: str) -> list[str]:
    """The bucket's keys but zosfs's own (the change feed under .zosfs/)."""
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if not o["Key"].startswith(".zosfs/")]
