"""A key the bucket lets read but not change (a bucket policy granting
SECOND_USER reads only): reads work, and every change fails with EACCES at
the call that made it. Nothing is reported done that the bucket does not
hold, and the mount goes on showing what the bucket holds."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import wait_until
from tests.support.objects import get
from tests.support.rgw import SECOND_USER

READS = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration",
         "s3:GetObjectTagging", "s3:GetObjectAcl"]


def read_only(s3: Any, bucket: str) -> None:
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{SECOND_USER.uid}"]}, "Action": READS,
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))


def errno_of(fn: Any, *args: Any) -> int | None:
    try:
        fn(*args)
    except OSError as err:
        return err.errno
    return None


def test_a_read_only_key_reads_and_every_change_is_eacces(bucket: str, s3: Any, make_mount: Any) -> None:
    for key, body in (("a.txt", b"hello\n"), ("b.txt", b"bee\n"), ("d/c.txt", b"sea\n")):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    read_only(s3, bucket)
    m = make_mount(bucket, user=SECOND_USER)
    root = m.path
    assert (root / "a.txt").read_bytes() == b"hello\n" and (root / "d" / "c.txt").read_bytes() == b"sea\n"

    # rm: the first delete of a mount waits for the server's answer.
    assert errno_of(os.unlink, root / "b.txt") == errno.EACCES
    assert errno_of(os.unlink, root / "a.txt") == errno.EACCES
    rm = subprocess.run(["rm", "-rf", str(root / "d")], capture_output=True, text=True, timeout=60)
    assert rm.returncode != 0 and "Permission denied" in rm.stderr, rm.stderr
    # A new file: its close says so, and the name does not stay behind.
    assert errno_of((root / "new.txt").write_bytes, b"x") == errno.EACCES
    assert errno_of(os.mkdir, root / "newdir") == errno.EACCES
    assert errno_of(os.symlink, "a.txt", root / "ln") == errno.EACCES
    assert errno_of(os.rename, root / "a.txt", root / "moved.txt") == errno.EACCES
    assert errno_of(os.truncate, root / "a.txt", 0) == errno.EACCES
    # Attributes: refused, and what stat shows right after is what the bucket holds.
    before = os.stat(root / "a.txt")
    assert errno_of(os.chmod, root / "a.txt", 0o600) == errno.EACCES
    assert errno_of(os.utime, root / "a.txt", (1577836800, 1577836800)) == errno.EACCES
    assert errno_of(os.chown, root / "a.txt", 1000, 1000) == errno.EACCES
    after = os.stat(root / "a.txt")
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns, after.st_size) == \
        (before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns, 6)

    def append() -> None:
        with open(root / "b.txt", "ab") as f:
            f.write(b"more\n")
    reader = open(root / "b.txt", "rb")  # (open across the failed append: its close reports nothing)
    assert errno_of(append) == errno.EACCES
    reader.close()
    # Once its last handle is released (just after close returns), the file
    # shows what the bucket holds again; the log says where the data is.
    assert wait_until(lambda: "the data of 'b.txt' could not be uploaded" in m.log_text(), 10), m.tail(20)
    assert (root / "b.txt").read_bytes() == b"bee\n"

    assert sorted(os.listdir(root)) == ["a.txt", "b.txt", "d"]
    assert sorted(os.listdir(root / "d")) == ["c.txt"]
    assert (root / "a.txt").read_bytes() == b"hello\n"  # (not the size the failed truncate gave it)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["a.txt", "b.txt", "d/c.txt"] and get(s3, bucket, "a.txt") == b"hello\n"


def test_a_key_that_may_delete_still_deletes_in_batches(bucket: str, s3: Any, make_mount: Any, tmp_path: Path) -> None:
    # (The first delete waits; the next ones are queued and batched as before.)
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=f"f{i:02d}", Body=b"x")
    m = make_mount(bucket)
    for i in range(30):
        os.unlink(m.path / f"f{i:02d}")
    assert os.listdir(m.path) == []
    requests = m.stats()["requests"]
    assert requests.get("DeleteObject", {}).get("count", 0) == 1
    assert requests.get("DeleteObjects", {}).get("count", 0) >= 1
    m.unmount()
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in left if not k.startswith(".zosfs/")] == []  # (the change feed's object stays)
