"""Durability on a real mount: what close() and fsync() promise when the
server fails, and where the data is when it cannot be stored.

The daemon talks to the RGW through the fault proxy; a rule that answers
every upload with 503 (or resets every connection) is "the server is down".
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount, staging_files, wait_until
from tests.support.objects import get, pattern
from tests.support.rgw import MAIN_USER
from zosfs.zos import ClientConfig, WriteOptions, ZosClient

MiB = 1024 * 1024
SMALL = {"append_chunk": "1M", "part_size": "5M", "rewrite_threshold": "10M", "multipart_threshold": "24M"}
UPLOADS = {"AppendObject", "PutObject", "UploadPart", "UploadPartCopy", "CreateMultipartUpload", "CompleteMultipartUpload"}








def exists(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0




def kept_files(log: str, key: str) -> list[tuple[str, str]]:
    """(data file, journal) pairs the log names for a key that was not uploaded."""
    return re.findall(rf"the data of '{re.escape(key)}' could not be uploaded .*?; it is kept in (\S+) \(journal (\S+)\)", log)


def still_serving(m: ZosfsMount) -> None:
    """The daemon is up and the mount answers (what needs no request)."""
    assert m.process is not None and m.process.poll() is None
    os.stat(m.path)
    os.statvfs(m.path)


def wait_recovered(m: ZosfsMount) -> None:
    """Recovery runs in the background once the mount is up: wait for its end."""
    if "recovering " in m.log_text():
        wait_for(lambda: "recovery of " in m.log_text(), timeout=60)


def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Wait for what happens after close() returns: the kernel sends the
    release (the last upload attempt, then the staging decision) on its own."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_fsync_fails_while_the_server_is_down_and_succeeds_after(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    first, second = pattern(2 * MiB + 1, 1), pattern(3 * MiB, 2)
    with open(m.path / "f", "w+b", buffering=0) as f:
        f.write(first)
        os.fsync(f.fileno())
        assert get(s3, bucket, "f") == first
        down = proxy.add_rule(Rule(op=UPLOADS, status=503))
        f.write(second)
        with pytest.raises(OSError) as info:
            os.fsync(f.fileno())
        assert info.value.errno == errno.EIO
        still_serving(m)
        assert get(s3, bucket, "f") == first  # what the first fsync stored is intact
        f.seek(0)
        assert f.read() == first + second  # and nothing written is lost locally
        proxy.remove_rule(down)
        os.fsync(f.fileno())
        assert get(s3, bucket, "f") == first + second
        f.write(b"tail")
    assert get(s3, bucket, "f") == first + second + b"tail"
    assert m.stats()["staging_reserved"] == 0


def test_close_fails_and_the_data_is_kept_in_staging(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    data = pattern(3 * MiB + 7, 3)
    down = proxy.add_rule(Rule(op=UPLOADS, status=503))
    f = open(m.path / "lost", "wb", buffering=0)
    f.write(data)
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.EIO
    still_serving(m)
    assert not exists(s3, bucket, "lost")
    wait_for(lambda: kept_files(m.log_text(), "lost"))
    kept = kept_files(m.log_text(), "lost")
    assert len(kept) == 1, m.log_text()[-3000:]
    data_file, journal = kept[0]
    with open(data_file, "rb") as staged:
        assert staged.read() == data
    with open(journal) as j:
        record = json.load(j)
    assert record["key"] == "lost" and record["state"] == "failed"
    assert m.stats()["staging_reserved"] == 0  # kept on disk, but not held against the budget

    proxy.remove_rule(down)
    with open(m.path / "lost", "wb") as f:  # the user's retry: write it again
        f.write(data)
    assert get(s3, bucket, "lost") == data


def test_a_log_made_appendable_again_is_recovered_if_its_append_fails(bucket: str, s3, proxy: FaultProxy, tmp_path,
                                                                      make_mount) -> None:
    """`>>` to a small PUT object deletes it and appends the whole log anew
    (see Writer._become_appendable). If that append fails, close says EIO,
    the whole log (old lines and new) is in staging, and the next mount
    stores it."""
    s3.put_object(Bucket=bucket, Key="log", Body=b"old line\n")
    options = {**SMALL, "staging_dir": str(tmp_path / "staging")}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    down = proxy.add_rule(Rule(op="AppendObject", status=503))
    f = open(m.path / "log", "ab", buffering=0)
    f.write(b"new line\n")
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.EIO
    assert not exists(s3, bucket, "log")  # (deleted before the append)
    wait_for(lambda: kept_files(m.log_text(), "log"))
    [(data_file, _)] = kept_files(m.log_text(), "log")
    with open(data_file, "rb") as staged:
        assert staged.read() == b"old line\nnew line\n"
    m.unmount()
    proxy.remove_rule(down)
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)
    wait_recovered(m2)
    assert "recovered 'log'" in m2.log_text()
    assert get(s3, bucket, "log") == b"old line\nnew line\n"
    assert (m2.path / "log").read_bytes() == b"old line\nnew line\n"


def test_a_failed_rebuild_leaves_the_object_as_it_was(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """A change that cannot be completed never replaces the object: neither
    a multipart rebuild nor a PUT leaves a partial version, and the failed
    multipart upload is aborted."""
    big, small = pattern(30 * MiB, 4), pattern(3 * MiB, 5)
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    proxy.add_rule(Rule(op={"CompleteMultipartUpload", "PutObject"}, status=503))
    for name in ("big", "small"):
        with pytest.raises(OSError) as info:
            with open(m.path / name, "r+b", buffering=0) as f:
                os.pwrite(f.fileno(), b"X" * MiB, 2 * MiB)
        assert info.value.errno == errno.EIO
    wait_for(lambda: kept_files(m.log_text(), "big") and kept_files(m.log_text(), "small"))
    assert get(s3, bucket, "big") == big
    assert get(s3, bucket, "small") == small
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    still_serving(m)


def test_a_failing_upload_in_the_middle_of_a_large_write(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """Parts fail while a file grows past multipart_threshold; the server
    comes back; fsync then stores everything."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    data = pattern(40 * MiB, 6)
    with open(m.path / "big", "wb", buffering=0) as f:
        f.write(data[: 8 * MiB])
        os.fsync(f.fileno())
        down = proxy.add_rule(Rule(op=UPLOADS, status=503))
        for start in range(8 * MiB, len(data), MiB):
            f.write(data[start : start + MiB])
        with pytest.raises(OSError):
            os.fsync(f.fileno())
        assert get(s3, bucket, "big") == data[: 8 * MiB]
        proxy.remove_rule(down)
        os.fsync(f.fileno())
        assert get(s3, bucket, "big") == data
    assert get(s3, bucket, "big") == data


def test_server_unreachable_then_back(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """Every connection reset, as if the server were stopped: fsync fails,
    the mount stays up, and works again once the server is back."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "connect_timeout": "2", "read_timeout": "5"})
    (m.path / "before").write_bytes(b"stored")
    with open(m.path / "f", "wb", buffering=0) as f:
        f.write(b"first")
        os.fsync(f.fileno())
        down = proxy.add_rule(Rule(reset_before=True))
        f.write(pattern(MiB, 7))
        with pytest.raises(OSError) as info:
            os.fsync(f.fileno())
        assert info.value.errno == errno.EIO
        still_serving(m)
        proxy.remove_rule(down)
        os.fsync(f.fileno())
    assert get(s3, bucket, "f") == b"first" + pattern(MiB, 7)
    assert (m.path / "before").read_bytes() == b"stored"


def test_transient_failures_are_retried_invisibly(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint, options=SMALL)
    blips = proxy.add_rule(Rule(op=UPLOADS, status=503, every=3, times=6))
    lost_answer = proxy.add_rule(Rule(op="AppendObject", reset_after=True, times=1))
    data = pattern(12 * MiB + 5, 8)
    with open(m.path / "f", "wb", buffering=0) as f:
        for start in range(0, len(data), MiB):
            f.write(data[start : start + MiB])
    assert blips.fired >= 1 and lost_answer.fired == 1
    assert get(s3, bucket, "f") == data  # nothing appended twice, nothing skipped


def test_data_of_a_killed_daemon_is_found_by_the_next_mount(bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount) -> None:
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    data = pattern(2 * MiB, 9)
    proxy.add_rule(Rule(op=UPLOADS, stall=True))  # nothing gets out
    f = open(m.path / "unsaved", "wb", buffering=0)
    f.write(data)
    m.kill(f)
    proxy.clear_rules()
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)  # (same endpoint: same staging)
    wait_recovered(m2)
    # A new file's data (all of it is in staging) is uploaded by the next mount.
    assert "recovered 'unsaved'" in m2.log_text()
    assert s3.get_object(Bucket=bucket, Key="unsaved")["Body"].read() == data
    assert (m2.path / "unsaved").read_bytes() == data
    assert not [p for p in staging_files(staging) if p.suffix == ".data"]


def test_a_killed_daemons_partly_appended_file_is_completed_by_the_next_mount(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """The appended part of a new file is freed from staging (it is in the
    object); the next mount appends the part that was only in staging."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    data = pattern(5 * MiB + 77, 4)
    f = open(m.path / "half", "wb", buffering=0)
    f.write(data[: 3 * MiB])
    os.fsync(f.fileno())
    proxy.add_rule(Rule(op=UPLOADS, stall=True))
    f.write(data[3 * MiB :])
    [journal] = [p for p in staging_files(staging) if p.suffix == ".json"]
    assert json.loads(journal.read_text())["appended"] == 3 * MiB
    m.kill(f)
    proxy.clear_rules()
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)
    wait_recovered(m2)
    assert "recovered 'half'" in m2.log_text()
    assert get(s3, bucket, "half") == data
    assert not [p for p in staging_files(staging) if p.suffix == ".data"]


def test_a_killed_daemons_partly_appended_file_is_kept_if_the_object_was_replaced(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """If someone replaced the object meanwhile, the staged rest (with zeros
    where the appended bytes were) goes to the recovery folder, and the log
    says which bytes are missing from it."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    f = open(m.path / "gone", "wb", buffering=0)
    f.write(pattern(2 * MiB, 6))
    os.fsync(f.fileno())
    proxy.add_rule(Rule(op=UPLOADS, stall=True))
    f.write(pattern(MiB, 7))
    m.kill(f)
    proxy.clear_rules()
    s3.put_object(Bucket=bucket, Key="gone", Body=b"someone else's")
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    wait_recovered(m2)
    log = m2.log_text()
    assert "its first 2097152 bytes were stored in the object, which has changed since" in log, log[-2000:]
    assert get(s3, bucket, "gone") == b"someone else's"
    kept = list(staging.rglob("recovery/*.data"))
    assert len(kept) == 1 and kept[0].read_bytes()[2 * MiB :] == pattern(MiB, 7)


def test_a_killed_daemons_rewrite_below_the_appended_part_is_kept_not_appended(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """Truncated below what was appended and written again: staging is no
    longer the rest of the object, so recovery must not append it to the
    old bytes; it is kept, and the object stays as it was."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    old = pattern(3 * MiB, 10)
    f = open(m.path / "redo", "wb", buffering=0)
    f.write(old)
    os.fsync(f.fileno())
    proxy.add_rule(Rule(op=UPLOADS, stall=True))
    f.truncate(MiB)
    f.seek(MiB)
    f.write(pattern(3 * MiB, 11))
    m.kill(f)
    proxy.clear_rules()
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    wait_recovered(m2)
    assert "recovered 'redo'" not in m2.log_text()
    assert get(s3, bucket, "redo") == old
    assert list(staging.rglob("recovery/*.data")), m2.log_text()[-2000:]


def test_a_killed_daemons_change_to_an_existing_object_goes_to_the_recovery_folder(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """Staging holds only the changed bytes of an existing object: recovery
    must not guess, so it keeps them, says where, and leaves the object alone."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    original = pattern(3 * MiB, 4)
    s3.put_object(Bucket=bucket, Key="existing", Body=original)
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    proxy.add_rule(Rule(op=UPLOADS, stall=True))
    f = open(m.path / "existing", "r+b", buffering=0)
    os.pwrite(f.fileno(), b"CHANGED", 1000)
    m.kill(f)
    proxy.clear_rules()
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)
    wait_recovered(m2)
    kept = re.findall(r"data of 'existing' left by a daemon that stopped was not uploaded \(.*?\); it is in (\S+)", m2.log_text())
    assert kept and kept[0].startswith(str(staging / "recovery")), m2.log_text()[-2000:]
    with open(kept[0], "rb") as staged:
        assert staged.read()[1000:1007] == b"CHANGED"
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == original


def test_a_writer_waiting_for_the_budget_resumes_when_the_server_returns(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """The staging budget is full and the uploads that would free it fail:
    the writer waits (it is not failed, and nothing is lost), and goes on
    once the server is back."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "staging_size": "4M"})
    down = proxy.add_rule(Rule(op=UPLOADS, status=503))
    timer = threading.Timer(3.0, proxy.remove_rule, args=(down,))
    timer.start()
    data = pattern(12 * MiB, 10)
    started = time.monotonic()
    try:
        with open(m.path / "f", "wb", buffering=0) as f:
            for start in range(0, len(data), MiB):
                f.write(data[start : start + MiB])
    finally:
        timer.join()
    assert time.monotonic() - started >= 2.5  # it did wait
    assert get(s3, bucket, "f") == data
    assert m.stats()["staging_reserved"] == 0


def test_a_killed_daemons_multipart_upload_is_aborted_by_the_next_mount(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    s3.put_object(Bucket=bucket, Key="big", Body=pattern(12 * MiB, 5))
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    proxy.add_rule(Rule(op={"UploadPart", "UploadPartCopy", "CompleteMultipartUpload"}, stall=True))
    f = open(m.path / "big", "r+b", buffering=0)
    f.write(pattern(20 * MiB, 6))  # a rewrite past rewrite_threshold: parts go out while it is written
    deadline = time.monotonic() + 10
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "no multipart upload was started"
    m.kill(f)
    proxy.clear_rules()
    make_mount(bucket, endpoint=proxy.endpoint, options=options)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def write_until_parts_leave_staging(path: os.PathLike[str] | str, data: bytes, staging: Any,
                                    part: int | None = None) -> Any:
    """Write a new file past multipart_threshold (kept open) until the parts
    log names parts that were freed from staging (`part`, if given): from
    then on only the multipart upload holds those bytes."""
    f = open(path, "w+b", buffering=0)
    for start in range(0, len(data), MiB):
        f.write(data[start : start + MiB])

    def freed() -> bool:
        lines = [line for p in staging.rglob("*.parts") for line in p.read_text().splitlines()]
        return bool(lines) and (part is None or any(f'"part": {part},' in line for line in lines))

    wait_for(freed, timeout=30)
    return f


def recovered_by_the_next_mount(make_mount: Any, s3: Any, bucket: str, proxy: FaultProxy, options: dict[str, str],
                                key: str, data: bytes) -> None:
    """A new mount of the same staging stores `key` whole, and leaves no upload behind."""
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)
    wait_recovered(m2)
    assert f"recovered '{key}'" in m2.log_text()
    assert get(s3, bucket, key) == data
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_killed_daemons_large_file_whose_parts_left_staging_is_completed_by_the_next_mount(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """The next mount completes the dead daemon's multipart upload (never
    aborts it: its freed parts are the only copy of those bytes) with the
    appended start, copied on the server, and the rest from staging."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    data = pattern(50 * MiB + 99, 16)
    f = write_until_parts_leave_staging(m.path / "large", data, staging)
    m.kill(f)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    recovered_by_the_next_mount(make_mount, s3, bucket, proxy, options, "large", data)
    assert not [p for p in staging_files(staging) if p.suffix == ".data"] and not list(staging.rglob("*.parts"))


def test_recovery_when_the_object_grew_by_a_late_append_over_freed_parts(bucket: str, s3, rgw, tmp_path,
                                                                         make_mount) -> None:
    """A daemon left append mode while an append was on its way: the
    journal names the object's first 3 MiB, but the append landed and the
    object holds 7 MiB; part 2 ([5, 10) MiB) of the multipart upload was
    freed from staging meanwhile. (This is what the kill tests above leave
    when the machine is busy.) The next mount completes the upload with the
    object's start, the freed part and staging, byte for byte."""
    mib = MiB
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    make_mount(bucket, options=options).unmount()  # (makes the mount's staging folder)
    [folder] = [p.parent for p in staging.rglob("lock")]
    data = pattern(12 * mib + 77, 21)

    async def leave_leftovers() -> tuple[str, str, str]:
        cfg = ClientConfig(endpoint=rgw.endpoint, bucket=bucket, access_key=MAIN_USER.access_key,
                           secret_key=MAIN_USER.secret_key)
        async with ZosClient(cfg) as zos:
            first = await zos.append("late", 0, data[: 3 * mib], WriteOptions())
            await zos.append("late", 3 * mib, data[3 * mib : 7 * mib], WriteOptions())  # the late one
            upload_id = await zos.create_multipart("late", WriteOptions())
            part2 = await zos.upload_part("late", upload_id, 2, data[5 * mib : 10 * mib])
        return first.etag, upload_id, part2

    etag, upload_id, part2 = trio.run(leave_leftovers)
    staged = bytearray(data)
    staged[: 3 * mib] = bytes(3 * mib)  # appended, then freed
    staged[5 * mib : 10 * mib] = bytes(5 * mib)  # part 2, freed
    (folder / "x.data").write_bytes(staged)
    (folder / "x.json").write_text(json.dumps({
        "key": "late", "data": "x.data", "created": True, "state": "writing", "appended": 3 * mib,
        "etag": etag, "upload_id": upload_id, "part_size": 5 * mib}))
    (folder / "x.parts").write_text(json.dumps({"upload_id": upload_id, "part": 2, "etag": part2}) + "\n")
    m = make_mount(bucket, options=options)
    wait_recovered(m)
    assert "recovered 'late'" in m.log_text()
    assert get(s3, bucket, "late") == data
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not list(folder.glob("x.*"))


def test_a_failed_close_keeps_the_upload_that_holds_freed_parts(bucket: str, s3, proxy: FaultProxy, tmp_path,
                                                                 make_mount) -> None:
    """close() of a large new file fails (EIO) while the server refuses
    uploads: the multipart upload holding its freed parts is not aborted,
    the log names it with the staging file, and the next mount completes it."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    data = pattern(40 * MiB + 5, 17)
    f = write_until_parts_leave_staging(m.path / "held", data, staging)
    down = proxy.add_rule(Rule(op=UPLOADS, status=503))
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.EIO
    still_serving(m)
    wait_for(lambda: kept_files(m.log_text(), "held"))
    assert "do not abort that upload" in m.log_text()
    [upload] = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert upload["Key"] == "held" and upload["UploadId"] in m.log_text()
    proxy.remove_rule(down)
    m.unmount()
    recovered_by_the_next_mount(make_mount, s3, bucket, proxy, options, "held", data)


def test_a_killed_daemons_large_file_completed_for_a_read_is_completed_by_the_next_mount(
    bucket: str, s3, proxy: FaultProxy, tmp_path, make_mount
) -> None:
    """A read of a freed part completed the upload up to there (the object
    then holds the file's start, not appendable); the file grew on and the
    daemon died: the next mount rebuilds the object from that start (copied
    on the server) and the rest from staging."""
    staging = tmp_path / "staging"
    options = {**SMALL, "staging_dir": str(staging)}
    m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
    data = pattern(50 * MiB + 99, 18)
    f = write_until_parts_leave_staging(m.path / "grown", data[: 40 * MiB], staging, part=7)  # [30, 35) MiB
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert os.pread(f.fileno(), 1000, 30 * MiB) == data[30 * MiB : 30 * MiB + 1000]
    assert s3.head_object(Bucket=bucket, Key="grown")["ContentLength"] >= 30 * MiB
    proxy.add_rule(Rule(op=UPLOADS, stall=True))  # the rest stays in staging
    f.write(data[40 * MiB :])
    m.kill(f)
    proxy.clear_rules()
    recovered_by_the_next_mount(make_mount, s3, bucket, proxy, options, "grown", data)


def test_spare_staging_files_never_outlive_a_mount(bucket: str, s3, tmp_path, make_mount) -> None:
    """The staging files a mount makes ahead (spares) are removed at unmount,
    and after a SIGKILL by the next mount's recovery, which takes them for
    nothing to recover: nothing moves to the recovery folder, nothing is
    uploaded, and the log has no error."""
    staging = tmp_path / "staging"
    options = {"staging_dir": str(staging)}
    m = make_mount(bucket, options=options, check_log=False)
    (m.path / "a").write_bytes(b"one")
    # (the spares are there: the checks below see them go)
    assert wait_until(lambda: len(list(staging.rglob("*.json"))) >= 4, timeout=10), sorted(staging.rglob("*"))
    assert wait_until(lambda: staging_files(staging) == [], timeout=10)  # (they hold nothing; a's files go soon)
    m.kill()
    m2 = make_mount(bucket, options=options)
    wait_recovered(m2)
    assert "recovering " in m2.log_text()
    (m2.path / "b").write_bytes(b"two")
    assert m2.unmount() == 0
    assert sorted(p.name for p in staging.rglob("*") if p.is_file()) == ["lock"]
    assert not (tmp_path / "recovery").exists() and not list(tmp_path.rglob("recovery"))
    objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(o["Key"] for o in objects if not o["Key"].startswith(".zosfs/")) == ["a", "b"]
    assert " ERROR " not in m2.log_text()
