"""Times as POSIX says, on a real mount (issue 17.3): atime is stored when
set and not moved by reads; ctime moves on every change and is stored; O_TRUNC
and truncate move mtime and ctime; a directory's times move with its entries
and reach its marker coalesced (at most about one PUT a second). Each point is
read back from the bucket (s3fs's headers), after a remount and by a second
mount; objects written by boto3 with s3fs's time headers are shown as s3fs
shows them."""

from __future__ import annotations

import os
import re
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.fs.test_metadata import delta, head, request_counts
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount, wait_until

PAST = 1_500_000_000_123_456_789
OLDER = 1_400_000_000_000_000_001


def stored_ns(value: str) -> int:
    return int(Decimal(value) * 10**9)


def meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return head(s3, bucket, key)["Metadata"]


def stored_times(s3: Any, bucket: str, key: str) -> tuple[int, int, int]:
    """(atime, mtime, ctime) as s3fs reads them: a missing atime or ctime is mtime."""
    m = meta(s3, bucket, key)
    mtime = stored_ns(m["mtime"])
    return stored_ns(m.get("atime", m["mtime"])), mtime, stored_ns(m.get("ctime", m["mtime"]))


def times(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def test_atime_is_stored_when_set_and_not_moved_by_reads(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket)
    f = m.path / "f"
    f.write_bytes(b"data")
    os.utime(f, ns=(OLDER, PAST))
    assert times(f)[:2] == (OLDER, PAST)
    assert f.read_bytes() == b"data"
    os.listdir(m.path)
    assert times(f)[0] == OLDER  # reads move nothing (noatime)
    assert stored_times(s3, bucket, "f")[:2] == (OLDER, PAST)
    assert meta(s3, bucket, "f")["atime"] == "1400000000.000000001"  # s3fs's form
    # touch -a changes atime alone; touch -d both.
    subprocess.run(["touch", "-a", "-d", "@1300000000", str(f)], check=True)
    assert times(f)[:2] == (1_300_000_000 * 10**9, PAST)
    # A write moves mtime, not atime.
    with open(f, "ab") as fh:
        fh.write(b"more")
    a, mtime, _ = times(f)
    assert a == 1_300_000_000 * 10**9 and mtime > PAST
    second = make_mount(bucket)
    assert times(second.path / "f")[:2] == (a, mtime)
    assert m.unmount() == 0
    m.start()
    assert times(m.path / "f")[:2] == (a, mtime)


def test_ctime_moves_on_every_change_and_is_stored(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket)
    f = m.path / "f"
    f.write_bytes(b"x")
    changes = [
        ("chmod to the same mode", lambda: os.chmod(f, os.stat(f).st_mode & 0o7777)),
        ("chown to the same ids", lambda: os.chown(f, os.stat(f).st_uid, os.stat(f).st_gid)),
        ("chown -1 -1", lambda: os.chown(f, -1, -1)),
        ("utimensat", lambda: os.utime(f, ns=(PAST, PAST))),
        ("setxattr", lambda: os.setxattr(f, "user.k", b"v")),
        ("removexattr", lambda: os.removexattr(f, "user.k")),
        ("write", lambda: f.write_bytes(b"y")),
    ]
    for what, change in changes:
        before = os.stat(f).st_ctime_ns
        time.sleep(0.01)
        t0 = time.time_ns()
        change()
        ctime = os.stat(f).st_ctime_ns
        assert ctime >= t0 > before, what
        assert stored_times(s3, bucket, "f")[2] == ctime, what
    os.utime(f, ns=(PAST, PAST))
    time.sleep(0.01)
    t0 = time.time_ns()
    os.rename(f, m.path / "g")
    a, mtime, ctime = times(m.path / "g")
    assert (a, mtime) == (PAST, PAST) and ctime >= t0  # a rename moves ctime only
    assert stored_times(s3, bucket, "g") == (PAST, PAST, ctime)
    second = make_mount(bucket)
    assert times(second.path / "g") == (PAST, PAST, ctime)
    assert m.unmount() == 0
    m.start()
    assert times(m.path / "g") == (PAST, PAST, ctime)


def test_truncate_and_o_trunc_move_mtime_and_ctime(mnt: ZosfsMount, s3) -> None:
    cases = {"same-size": b"abc", "shorter": b"abcdef", "empty": b""}
    for name, body in cases.items():
        (mnt.path / name).write_bytes(body)
        os.utime(mnt.path / name, ns=(PAST, PAST))
    t0 = time.time_ns()
    os.truncate(mnt.path / "same-size", 3)
    os.truncate(mnt.path / "shorter", 2)
    os.close(os.open(mnt.path / "empty", os.O_WRONLY | os.O_TRUNC))
    for name in cases:
        a, mtime, ctime = times(mnt.path / name)
        assert a == PAST and mtime >= t0 and ctime >= t0, name
        assert stored_times(s3, mnt.bucket, name) == (a, mtime, ctime), name
    assert os.stat(mnt.path / "same-size").st_size == 3 and os.stat(mnt.path / "shorter").st_size == 2


def test_directory_times_follow_entries_and_reach_the_marker(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket)
    d = m.path / "d"
    d.mkdir()
    steps = [
        ("create", lambda: (d / "f").write_bytes(b"x")),
        ("mkdir", lambda: (d / "sub").mkdir()),
        ("symlink", lambda: os.symlink("f", d / "l")),
        ("rename within", lambda: os.rename(d / "f", d / "g")),
        ("unlink", lambda: os.unlink(d / "g")),
        ("rmdir", lambda: os.rmdir(d / "sub")),
        ("rename out", lambda: os.rename(d / "l", m.path / "l")),
    ]
    for what, step in steps:
        os.utime(d, ns=(PAST, PAST))
        t0 = time.time_ns()
        step()
        a, mtime, ctime = times(d)
        assert a == PAST and mtime >= t0 and ctime >= t0, what
    # The marker follows within about a second, without a request per entry.
    assert wait_until(lambda: stored_times(s3, bucket, "d/")[1:] == times(d)[1:], timeout=5)
    # A directory's own rename moves its ctime, not its mtime.
    os.utime(d, ns=(PAST, PAST))
    t0 = time.time_ns()
    os.rename(d, m.path / "e")
    a, mtime, ctime = times(m.path / "e")
    assert (a, mtime) == (PAST, PAST) and ctime >= t0
    # The root moves too (in memory: it has no marker).
    assert os.stat(m.path).st_mtime_ns >= t0
    expected = times(m.path / "e")
    assert m.unmount() == 0  # flushes what is queued
    assert stored_times(s3, bucket, "e/") == expected
    m.start()
    assert times(m.path / "e") == expected
    second = make_mount(bucket)
    assert times(second.path / "e") == expected


def test_directory_without_marker_keeps_times_in_memory(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="implicit/a", Body=b"")
    before = os.stat(mnt.path / "implicit").st_mtime_ns
    time.sleep(0.01)
    (mnt.path / "implicit" / "b").write_bytes(b"")
    assert os.stat(mnt.path / "implicit").st_mtime_ns > before
    time.sleep(1.5)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mnt.bucket, Prefix="implicit")["Contents"]]
    assert sorted(keys) == ["implicit/a", "implicit/b"]  # no marker was made


def test_copying_many_files_sends_about_one_marker_put_a_second(mnt: ZosfsMount, s3, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    n = 1000
    for i in range(n):
        (src / f"f{i:04d}").write_bytes(b"x")
    os.mkdir(mnt.path / "d")
    before = request_counts(mnt)
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", f"{src}/.", str(mnt.path / "d")], check=True)
    elapsed = time.monotonic() - t0
    time.sleep(1.5)  # the last coalesced write
    spent = delta(before, request_counts(mnt))
    puts = spent.get("PutObject", 0) + spent.get("AppendObject", 0)
    marker_puts = puts - n
    print(f"{n} files copied in {elapsed:.1f} s: requests {spent}")
    assert marker_puts >= 1  # the marker was written...
    assert marker_puts <= elapsed + 3, (spent, elapsed)  # ...about once a second, not once per file
    assert stored_times(s3, mnt.bucket, "d/")[1:] == times(mnt.path / "d")[1:]
    s3_keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mnt.bucket, Prefix="d/")
               for o in page.get("Contents", [])]
    for i in range(0, len(s3_keys), 1000):
        s3.delete_objects(Bucket=mnt.bucket, Delete={"Objects": [{"Key": k} for k in s3_keys[i:i + 1000]]})


def test_s3fs_time_headers_written_by_boto3_are_shown(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="s3fs-file", Body=b"x", Metadata={
        "mode": "33188", "uid": "0", "gid": "0", "atime": "1600000000.000000005",
        "mtime": "1600000100.5", "ctime": "1600000200"})
    s3.put_object(Bucket=mnt.bucket, Key="s3fs-dir/", Body=b"", ContentType="application/x-directory", Metadata={
        "mode": "16877", "atime": "1600000001", "mtime": "1600000002", "ctime": "1600000003"})
    assert times(mnt.path / "s3fs-file") == (1_600_000_000_000_000_005, 1_600_000_100_500_000_000,
                                            1_600_000_200 * 10**9)
    assert times(mnt.path / "s3fs-dir") == (1_600_000_001 * 10**9, 1_600_000_002 * 10**9, 1_600_000_003 * 10**9)


def forget_inodes() -> None:
    """Make the kernel forget unused dentries and inodes (as memory pressure,
    or another process's `echo 3 > drop_caches`, does at any time).

    The kernel queues its FORGETs to the daemon; the short pause lets them
    arrive before the next lookup does (on a loaded machine a lookup could
    otherwise overtake them and find the old inode still counted)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    time.sleep(0.1)


def test_directory_times_survive_the_kernel_forgetting_its_inode(bucket: str, s3, proxy: FaultProxy,
                                                                  make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint)
    d = m.path / "d"
    d.mkdir()
    os.utime(d, ns=(PAST, PAST))
    assert stored_times(s3, bucket, "d/")[1] == PAST
    # Hold the coalesced marker write back, so that the first stats below
    # see only the marker's old times from the bucket.
    slow = proxy.add_rule(Rule(op="PutObject", key=re.compile(r"^d/$"), delay=4.0, times=1))
    t0 = time.time_ns()
    (d / "f").write_bytes(b"x")
    _, mtime, ctime = times(d)
    assert mtime >= t0 and ctime >= t0
    inos = {os.stat(d).st_ino}
    for attempt in range(8):  # three times, and more (within the marker write's delay) until one is seen
        if attempt >= 3 and len(inos) > 1:
            break
        forget_inodes()
        st = os.stat(d)
        inos.add(st.st_ino)
        assert (st.st_mtime_ns, st.st_ctime_ns) == (mtime, ctime)  # not the marker's older times
        assert stored_times(s3, bucket, "d/")[1] == PAST  # (still old in the bucket)
    assert len(inos) > 1, "the kernel never forgot the directory's inode: the test proved nothing"
    # The write lands (after its delay); the times stay, stored or not.
    assert wait_until(lambda: stored_times(s3, bucket, "d/")[1:] == (mtime, ctime), timeout=15)
    assert slow.fired == 1
    for _ in range(3):
        forget_inodes()
        assert times(d)[1:] == (mtime, ctime)
    # Changed again and forgotten before the write is due, with no stat to
    # bring the inode back: the write still reaches the marker.
    t1 = time.time_ns()
    (d / "g").write_bytes(b"y")
    forget_inodes()
    assert wait_until(lambda: stored_times(s3, bucket, "d/")[1] >= t1, timeout=15)
    _, mtime2, ctime2 = stored_times(s3, bucket, "d/")
    forget_inodes()
    assert times(d)[1:] == (mtime2, ctime2) and mtime2 >= t1 and ctime2 >= t1
    second = make_mount(bucket)
    assert times(second.path / "d")[1:] == (mtime2, ctime2)
    for name in ("d/f", "d/g", "d/"):
        s3.delete_object(Bucket=bucket, Key=name)
