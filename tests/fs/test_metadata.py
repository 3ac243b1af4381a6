"""POSIX metadata on a real mount: what other S3 tools wrote is shown as they
meant it (s3fs headers, s3cmd's s3cmd-attrs, nothing at all), what is done
through the mount is stored as s3fs stores it and survives a remount, and the
metadata paths cost no more requests than they must."""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import json
import os
import stat
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount
from tests.support.rgw import LocalRGW

DIR_TYPE = "application/x-directory"


def request_counts(m: ZosfsMount) -> dict[str, int]:
    """Requests the daemon made so far, by operation (`zosfs stats --json`)."""
    out = subprocess.run([sys.executable, "-m", "zosfs", "stats", str(m.path), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return {op: int(s["count"]) for op, s in json.loads(out)["requests"].items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


def head(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return s3.head_object(Bucket=bucket, Key=key)


def object_type(s3: Any, bucket: str, key: str) -> str:
    return head(s3, bucket, key)["ResponseMetadata"]["HTTPHeaders"].get("x-rgw-object-type", "")


def mtime_of(date: str) -> int:
    """Seconds since the epoch of a local time, as `touch -d` reads it."""
    return int(time.mktime(time.strptime(date, "%Y-%m-%d %H:%M:%S")))


def put_many(s3: Any, bucket: str, keys: list[str], **kwargs: Any) -> None:
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode(), **kwargs), keys))


# -- objects written by other tools -----------------------------------------------------


def test_s3fs_metadata_is_shown(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="s3fs/file", Body=b"abc",
                  Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "1001", "gid": "1002", "mtime": "1700000000"})
    s3.put_object(Bucket=bucket, Key="s3fs/frac", Body=b"",
                  Metadata={"mode": str(stat.S_IFREG | 0o751), "uid": "0", "gid": "0", "mtime": "1700000000.123456789"})
    s3.put_object(Bucket=bucket, Key="s3fs/dir/", Body=b"", ContentType=DIR_TYPE,
                  Metadata={"mode": str(stat.S_IFDIR | 0o700), "uid": "1003", "gid": "1004", "mtime": "1600000000"})
    s3.put_object(Bucket=bucket, Key="s3fs/link", Body=b"file",
                  Metadata={"mode": str(stat.S_IFLNK | 0o777), "uid": "1005", "gid": "1006", "mtime": "1500000000"})
    m = make_mount(bucket, options={"uid": "4321", "gid": "8765", "umask": "027"})
    d = m.path / "s3fs"
    assert sorted(os.listdir(d)) == ["dir", "file", "frac", "link"]
    st = os.stat(d / "file")
    assert (st.st_size, st.st_mode, st.st_uid, st.st_gid) == (3, stat.S_IFREG | 0o600, 1001, 1002)
    assert st.st_mtime_ns == 1_700_000_000 * 10**9
    st = os.stat(d / "frac")
    assert (st.st_mode, st.st_uid, st.st_mtime_ns) == (stat.S_IFREG | 0o751, 0, 1_700_000_000_123_456_789)
    st = os.stat(d / "dir")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == (stat.S_IFDIR | 0o700, 1003, 1004, 1_600_000_000 * 10**9)
    st = os.lstat(d / "link")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_size) == (stat.S_IFLNK | 0o777, 1005, 1006, 4)
    assert os.readlink(d / "link") == "file"
    assert (d / "link").read_bytes() == b"abc"  # followed to s3fs/file
    assert (d / "file").read_bytes() == b"abc"


def test_s3cmd_attrs_are_shown(make_mount, bucket: str, s3) -> None:
    attrs = ("atime:1600000100/ctime:1600000200/gid:42/gname:staff/md5:900150983cd24fb0d6963f7d28e17f72/"
             "mode:33261/mtime:1600000300/uid:7/uname:bob")
    s3.put_object(Bucket=bucket, Key="tool.sh", Body=b"abc", Metadata={"s3cmd-attrs": attrs})
    m = make_mount(bucket)
    st = os.stat(m.path / "tool.sh")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_size) == (stat.S_IFREG | 0o755, 7, 42, 3)
    assert st.st_mtime_ns == 1_600_000_300 * 10**9
    assert os.access(m.path / "tool.sh", os.X_OK)


def test_objects_without_metadata_get_the_mount_defaults(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"x" * 1234)
    s3.put_object(Bucket=bucket, Key="implicit/deeper/file", Body=b"")
    s3.put_object(Bucket=bucket, Key="marker/", Body=b"")
    s3.put_object(Bucket=bucket, Key="odd-meta", Body=b"", Metadata={"uid": "99999999999", "mtime": "1e999999", "mode": "x"})
    last_modified = head(s3, bucket, "plain.txt")["LastModified"].timestamp()
    m = make_mount(bucket, options={"uid": "4321", "gid": "8765", "umask": "027"})
    assert sorted(os.listdir(m.path)) == ["implicit", "marker", "odd-meta", "plain.txt"]
    st = os.stat(m.path / "plain.txt")
    assert (st.st_size, st.st_mode, st.st_uid, st.st_gid) == (1234, stat.S_IFREG | 0o640, 4321, 8765)
    assert st.st_mtime == last_modified
    for d in ("implicit", "implicit/deeper", "marker"):
        st = os.stat(m.path / d)
        assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFDIR | 0o750, 4321, 8765), d
    # Garbage in another tool's metadata falls back to the defaults too.
    st = os.stat(m.path / "odd-meta")
    assert (st.st_mode, st.st_uid) == (stat.S_IFREG | 0o640, 4321)
    assert os.listdir(m.path / "implicit/deeper") == ["file"]


# -- what the mount writes -----------------------------------------------------------------


def test_mkdir_and_create_store_s3fs_metadata(mnt: ZosfsMount, s3) -> None:
    before = time.time()
    os.mkdir(mnt.path / "d", 0o750)
    fd = os.open(mnt.path / "d" / "f", os.O_CREAT | os.O_WRONLY, 0o640)
    os.write(fd, b"data")
    os.close(fd)
    after = time.time()
    marker = head(s3, mnt.bucket, "d/")
    assert marker["ContentType"] == DIR_TYPE
    assert marker["ContentLength"] == 0
    meta = marker["Metadata"]
    assert meta["mode"] == str(stat.S_IFDIR | 0o750)
    assert (meta["uid"], meta["gid"]) == (str(os.getuid()), str(os.getgid()))
    assert before - 1 <= float(meta["mtime"]) <= after + 1
    obj = head(s3, mnt.bucket, "d/f")
    meta = obj["Metadata"]
    assert obj["ContentLength"] == 4
    assert meta["mode"] == str(stat.S_IFREG | 0o640)
    assert (meta["uid"], meta["gid"]) == (str(os.getuid()), str(os.getgid()))
    assert before - 1 <= float(meta["mtime"]) <= after + 1
    assert os.stat(mnt.path / "d" / "f").st_mtime_ns == int(Decimal(meta["mtime"]) * 10**9)
    listed = s3.list_objects_v2(Bucket=mnt.bucket)["Contents"]
    assert sorted(o["Key"] for o in listed if not o["Key"].startswith(".zosfs/")) == ["d/", "d/f"]  # (the change feed)


def test_chmod_chown_touch_persist_across_remount(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="keep.txt", Body=b"hello", ContentType="text/x-special",
                  Metadata={"color": "blue"}, Tagging="team=blue")
    (mnt.path / "made").write_bytes(b"made here")
    os.mkdir(mnt.path / "dir")
    s3.put_object(Bucket=mnt.bucket, Key="implicit/child", Body=b"")
    date = "2020-01-02 03:04:05"
    for name in ("keep.txt", "made", "dir", "implicit"):
        p = mnt.path / name
        mode = 0o700 if p.is_dir() else 0o604
        os.chmod(p, mode)
        os.chown(p, 1234, 5678)
        subprocess.run(["touch", "-d", date, str(p)], check=True)
    expected_mtime = mtime_of(date)
    keys = {"keep.txt": "keep.txt", "made": "made", "dir": "dir/", "implicit": "implicit/"}
    for name, key in keys.items():
        meta = head(s3, mnt.bucket, key)["Metadata"]
        is_dir = key.endswith("/")
        assert meta["mode"] == str((stat.S_IFDIR | 0o700) if is_dir else (stat.S_IFREG | 0o604)), name
        assert (meta["uid"], meta["gid"]) == ("1234", "5678"), name
        assert float(meta["mtime"]) == expected_mtime, name
    # Nothing of other tools is lost by a metadata change.
    kept = head(s3, mnt.bucket, "keep.txt")
    assert kept["Metadata"]["color"] == "blue"
    assert kept["ContentType"] == "text/x-special"
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="keep.txt")["TagSet"] == [{"Key": "team", "Value": "blue"}]
    assert s3.get_object(Bucket=mnt.bucket, Key="keep.txt")["Body"].read() == b"hello"
    assert head(s3, mnt.bucket, "implicit/")["ContentType"] == DIR_TYPE
    assert mnt.unmount() == 0
    mnt.start()
    for name in keys:
        st = os.stat(mnt.path / name)
        assert stat.S_IMODE(st.st_mode) == (0o700 if stat.S_ISDIR(st.st_mode) else 0o604), name
        assert (st.st_uid, st.st_gid) == (1234, 5678), name
        assert st.st_mtime == expected_mtime, name
    assert (mnt.path / "made").read_bytes() == b"made here"
    assert os.listdir(mnt.path / "implicit") == ["child"]


def test_utimens_keeps_nanoseconds(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "f").write_bytes(b"x")
    os.utime(mnt.path / "f", ns=(1_500_000_000_000_000_000, 1_600_000_000_123_456_789))
    assert head(s3, mnt.bucket, "f")["Metadata"]["mtime"] == "1600000000.123456789"
    assert os.stat(mnt.path / "f").st_mtime_ns == 1_600_000_000_123_456_789


def test_symlink_is_stored_as_s3fs_does(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "target.txt").write_text("pointed at")
    os.symlink("target.txt", mnt.path / "link")
    os.symlink("/absolute/elsewhere", mnt.path / "dangling")
    obj = s3.get_object(Bucket=mnt.bucket, Key="link")
    assert obj["Body"].read() == b"target.txt"
    assert int(obj["Metadata"]["mode"]) == stat.S_IFLNK | 0o777
    assert os.readlink(mnt.path / "link") == "target.txt"
    assert (mnt.path / "link").read_text() == "pointed at"
    assert stat.S_ISLNK(os.lstat(mnt.path / "link").st_mode)
    assert os.lstat(mnt.path / "link").st_size == len("target.txt")
    assert mnt.unmount() == 0
    mnt.start()
    assert os.readlink(mnt.path / "link") == "target.txt"
    assert os.readlink(mnt.path / "dangling") == "/absolute/elsewhere"
    assert not (mnt.path / "dangling").exists()
    assert stat.S_ISLNK(os.lstat(mnt.path / "dangling").st_mode)


def test_metadata_changes_keep_an_appendable_object_appendable(make_mount, bucket: str, s3, rgw: LocalRGW) -> None:
    with FaultProxy(rgw.endpoint) as proxy:
        m = make_mount(bucket, endpoint=proxy.endpoint)
        p = m.path / "log.txt"
        with open(p, "ab") as f:  # (a log: made through O_APPEND, by append upload)
            f.write(b"first\n")
        assert object_type(s3, bucket, "log.txt") == "Appendable"
        os.chmod(p, 0o600)
        assert object_type(s3, bucket, "log.txt") == "Appendable"
        assert head(s3, bucket, "log.txt")["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
        subprocess.run(["touch", "-d", "2021-05-06 07:08:09", str(p)], check=True)
        info = head(s3, bucket, "log.txt")
        assert info["ResponseMetadata"]["HTTPHeaders"]["x-rgw-object-type"] == "Appendable"
        assert float(info["Metadata"]["mtime"]) == mtime_of("2021-05-06 07:08:09")
        assert info["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
        assert proxy.count("CopyObject") == 0  # a copy would have made it a normal object
        # A new mount reads the metadata once: an upload's answer does not
        # carry its LastModified, which the metadata cache needs besides the
        # ETag (metacache.py); the HEAD's answer is cached, and the next
        # mount asks nothing about the file.
        for heads in (1, 0):
            assert m.unmount() == 0
            m.start()
            proxy.reset_stats()
            subprocess.run(["ls", "-l", str(m.path)], check=True, capture_output=True)
            st = os.stat(p)
            assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o600, mtime_of("2021-05-06 07:08:09"))
            assert proxy.count("HeadObject", key="log.txt") == heads
        with open(p, "ab") as f:
            f.write(b"second\n")
        assert object_type(s3, bucket, "log.txt") == "Appendable"
        assert s3.get_object(Bucket=bucket, Key="log.txt")["Body"].read() == b"first\nsecond\n"
        assert p.read_bytes() == b"first\nsecond\n"
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert m.unmount() == 0


# -- requests -----------------------------------------------------------------------------


def test_security_xattrs_are_answered_without_requests(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "f").write_bytes(b"x")
    os.stat(mnt.path / "f")
    before = request_counts(mnt)
    for name in ("security.selinux", "system.posix_acl_access", "system.posix_acl_default", "security.capability"):
        for path in (mnt.path / "f", mnt.path):
            with pytest.raises(OSError) as e:
                os.getxattr(path, name)
            # ls -l's probes "not supported" (ls then stops asking on this mount), the kernel's "no such attribute"
            assert e.value.errno == (errno.ENODATA if name == "security.capability" else errno.ENOTSUP), name
    assert delta(before, request_counts(mnt)) == {}


def test_no_metadata_option_never_heads(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="d/", Body=b"", Metadata={"mode": str(stat.S_IFDIR | 0o700), "uid": "5"})
    put_many(s3, bucket, [f"d/f{i:02}" for i in range(20)], Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "5"})
    m = make_mount(bucket, options={"no_metadata": "", "uid": "1234", "gid": "2345", "umask": "002"})
    before = request_counts(m)
    out = subprocess.run(["ls", "-ln", str(m.path / "d")], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()[1:]
    assert len(lines) == 20
    assert all(line.startswith("-rw-rw-r--") and " 1234 2345 " in line for line in lines), out
    st = os.stat(m.path / "d")
    assert (st.st_mode, st.st_uid) == (stat.S_IFDIR | 0o775, 1234)
    assert "HeadObject" not in delta(before, request_counts(m))
    assert (m.path / "d" / "f07").read_bytes() == b"d/f07"


def test_ls_l_heads_concurrently_and_a_remount_uses_the_metadata_cache(make_mount, bucket: str, s3, rgw: LocalRGW) -> None:
    n = 300
    names = [f"f{i:03}" for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: s3.put_object(
            Bucket=bucket, Key=f"big/{names[i]}", Body=b"x" * i,
            Metadata={"mode": str(stat.S_IFREG | (0o600 + i % 64)), "uid": str(1000 + i), "gid": "7"}), range(n)))
    with FaultProxy(rgw.endpoint) as proxy:
        proxy.add_rule(Rule(op="HeadObject", delay=0.02))
        m = make_mount(bucket, endpoint=proxy.endpoint)
        proxy.reset_stats()
        subprocess.run(["ls", "-l", str(m.path / "big")], check=True, capture_output=True)
        heads = proxy.records("HeadObject")
        for i, name in enumerate(names):
            st = os.lstat(m.path / "big" / name)
            assert (st.st_size, st.st_mode, st.st_uid, st.st_gid) == (i, stat.S_IFREG | (0o600 + i % 64), 1000 + i, 7)
        twice = [k for k, c in collections.Counter(r.key for r in heads).items() if c > 1]
        assert not twice, f"HEAD sent more than once for {twice}"
        assert n <= len(heads) <= n + 5  # one HEAD per file (and the directory)
        # At least 8 HEADs were in flight at some moment: they ran concurrently.
        events = sorted([(r.started, 1) for r in heads] + [(r.started + (r.duration or 0), -1) for r in heads])
        in_flight = peak = 0
        for _, step in events:
            in_flight += step
            peak = max(peak, in_flight)
        assert peak >= 8, f"at most {peak} HEADs at once"
        # Another client changes one object between the mounts.
        assert m.unmount() == 0
        s3.put_object(Bucket=bucket, Key="big/f005", Body=b"changed!",
                      Metadata={"mode": str(stat.S_IFREG | 0o611), "uid": "42", "gid": "43"})
        proxy.reset_stats()
        m.start()
        proxy.reset_stats()
        out = subprocess.run(["ls", "-ln", str(m.path / "big")], check=True, capture_output=True, text=True).stdout
        assert len(out.splitlines()) == n + 1
        assert proxy.count("HeadObject") <= 5, proxy.stats  # the changed object, the directory: not 300
        assert proxy.count("ListObjectsV2") >= 1
        st = os.stat(m.path / "big" / "f005")
        assert (st.st_size, st.st_mode, st.st_uid, st.st_gid) == (8, stat.S_IFREG | 0o611, 42, 43)
        st = os.stat(m.path / "big" / "f006")
        assert (st.st_size, st.st_mode, st.st_uid) == (6, stat.S_IFREG | 0o606, 1006)
        assert m.unmount() == 0


def test_s3fs_style_chmod_of_a_cached_file_shows_after_a_remount(make_mount, bucket: str, s3) -> None:
    """s3fs's chmod copies the object onto itself with new metadata
    (MetadataDirective=REPLACE): RGW keeps the ETag, LastModified moves. A
    mount that cached the old metadata shows the new mode after a remount."""
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"data",
                  Metadata={"mode": str(stat.S_IFREG | 0o644), "uid": "1000", "gid": "1000", "mtime": "1700000000"})
    m = make_mount(bucket)
    subprocess.run(["ls", "-l", str(m.path / "d")], check=True, capture_output=True)
    assert stat.S_IMODE(os.stat(m.path / "d" / "f").st_mode) == 0o644  # its metadata is now cached
    assert m.unmount() == 0
    before = s3.head_object(Bucket=bucket, Key="d/f")
    time.sleep(1.1)  # a HEAD's Last-Modified has whole seconds (README: Listing)
    s3.copy_object(Bucket=bucket, Key="d/f", CopySource={"Bucket": bucket, "Key": "d/f"}, MetadataDirective="REPLACE",
                   Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "1000", "gid": "1000", "mtime": "1700000000"})
    after = s3.head_object(Bucket=bucket, Key="d/f")
    assert after["ETag"] == before["ETag"] and after["LastModified"] != before["LastModified"]  # as RGW does it
    m.start()
    out = subprocess.run(["ls", "-l", str(m.path / "d")], check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[1].startswith("-rw------- "), out
    assert stat.S_IMODE(os.stat(m.path / "d" / "f").st_mode) == 0o600
    assert (m.path / "d" / "f").read_bytes() == b"data"
    assert m.unmount() == 0
    s3.delete_object(Bucket=bucket, Key="d/f")
