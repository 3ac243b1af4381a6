"""Every valid S3 key works through a real mount (issue 18, point 6).

Keys put by another tool (boto3) holding control characters, `%`,
backslashes, spaces at either end, `+ ? #`, combining characters, emoji and
255-byte names are listed, looked up, read, renamed and deleted through the
mount, and names like these made through the mount land as exactly that key.
Keys that cannot be names (`a//b`, `.` and `..` segments, segments over 255
bytes) are never shown, move with their directory, and `rm -rf` of their
directory fails with ENOTEMPTY and a log line naming each key, or, with
`-o hidden_keys=delete`, deletes them and names each (README, Semantics: Names).

After every test the bucket, the staging directory and the log agree:
nothing is left in staging, no ERROR in the log, and the bucket holds exactly
what the test expects.

Every test runs with each ListObjects version (`-o list_api=v2` and `v1`),
as test_namespace does: V1 goes on from markers, which RGW echoes unencoded."""

from __future__ import annotations

import concurrent.futures
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.listapi import list_api, make_mount  # noqa: F401 (fixtures)
from tests.support.mount import ZosfsMount, staging_files, wait_until
from tests.support.rgw import LocalRGW
from zosfs.namespace.names import RESERVED_PREFIX

MountFactory = Callable[..., ZosfsMount]
UPLOADS = {"AppendObject", "PutObject", "UploadPart", "UploadPartCopy", "CreateMultipartUpload", "CompleteMultipartUpload"}
FAST = {"attr_timeout": "1", "entry_timeout": "1", "negative_timeout": "1", "dir_cache_ttl": "1"}

# Names (one path segment each) that S3 allows and a filesystem can show.
VALID = [
    "ctl\x01char", "unit\x1fsep", "del\x7fete", "tab\tname", "new\nline", "cr\rname",
    "pct%41", "lone%", "pct%2Fslash", "back\\slash", "trailing ", " leading", "  ",
    "plus+sign", "q?mark", "hash#tag", "amp&lt;", "<tag>", "quote\"'",
    "e\u0301combining", "emoji\U0001F600\U0001F469\u200d\U0001F4BB", "\u6587\u4ef6 \u00e9t\u00e9",
    "n" * 255, "\u00e9" * 127 + "x",  # 255 bytes each
]
# Keys below a directory that cannot be names (each has a segment that cannot).
UNNAMEABLE = ["/empty", "./dot", "../dotdot", ".", "s" * 256, "t" * 300 + "/below"]


def keys(s3: Any, bucket: str) -> dict[str, bytes]:
    """The bucket's objects and their bytes (zosfs's own left out)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(RESERVED_PREFIX)]

    def get(key: str) -> bytes | None:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None  # deleted since the listing (unlink's deletes are batched)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return {k: b for k, b in zip(found, pool.map(get, found)) if b is not None}


def put_many(s3: Any, bucket: str, items: dict[str, bytes]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def content(name: str) -> bytes:
    return f"<{name}>".encode() * 3


def assert_agree(m: ZosfsMount, s3: Any, expected: dict[str, bytes], staging: Path | None = None) -> None:
    """The bucket holds exactly `expected`, staging holds nothing, and the
    log has no ERROR (which would claim data is somewhere else)."""
    # unlink's deletes go out in batches within milliseconds
    wait_until(lambda: keys(s3, m.bucket) == expected, 10)
    assert keys(s3, m.bucket) == expected
    staging = staging or m.cache_dir / "staging"
    wait_until(lambda: staging_files(staging) == [])  # (uploaded files are removed in the background)
    left = staging_files(staging)
    assert left == [], left
    errors = [line for line in m.log_text().splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], m.tail(40)


def test_odd_keys_are_looked_up_listed_read_renamed_and_deleted(make_mount: MountFactory, bucket: str, s3) -> None:
    # (with a marker: an implicit directory would vanish with its last key,
    # sooner or later as the kernel's entry expires)
    put_many(s3, bucket, {"odd/": b""} | {f"odd/{n}": content(n) for n in VALID})
    m = make_mount(bucket)
    d = m.path / "odd"
    # Looked up by name before any listing (the probe: HEAD and a one-key LIST).
    for n in VALID[:6]:
        st = os.stat(d / n)
        assert st.st_size == len(content(n)), n
    assert sorted(os.listdir(d)) == sorted(VALID)
    shown = subprocess.run(["ls", "-1", "--quoting-style=c", str(d)], capture_output=True, text=True, check=True)
    assert len(shown.stdout.splitlines()) == len(VALID)
    for n in VALID:
        assert os.stat(d / n).st_size == len(content(n)), n
        assert (d / n).read_bytes() == content(n), n
    # Renamed to another odd name in another directory: the new key holds the bytes.
    (m.path / "moved").mkdir()
    for n in VALID:
        os.rename(d / n, m.path / "moved" / (n[:100] + "\x02"))
    expected = {"odd/": b"", "moved/": b""} | {f"moved/{n[:100]}\x02": content(n) for n in VALID}
    assert keys(s3, bucket) == expected
    assert sorted(os.listdir(m.path / "moved")) == sorted(n[:100] + "\x02" for n in VALID)
    assert os.listdir(d) == []
    os.rmdir(d)
    # Deleted one by one (DeleteObjects cannot carry a control character).
    for n in VALID:
        os.unlink(m.path / "moved" / (n[:100] + "\x02"))
    assert os.listdir(m.path / "moved") == []
    os.rmdir(m.path / "moved")
    assert_agree(m, s3, {})


def test_a_directory_of_odd_names_is_renamed_and_removed_with_rm_rf(make_mount: MountFactory, bucket: str, s3) -> None:
    put_many(s3, bucket, {f"d\x01ir/{n}": content(n) for n in VALID} | {"d\x01ir/sub\x1f/x": b"x"})
    m = make_mount(bucket)
    os.rename(m.path / "d\x01ir", m.path / "e\x7f dir ")
    expected = {f"e\x7f dir /{n}": content(n) for n in VALID} | {"e\x7f dir /sub\x1f/x": b"x"}
    assert keys(s3, bucket) == expected
    assert sorted(os.listdir(m.path)) == ["e\x7f dir "]
    assert (m.path / "e\x7f dir " / "sub\x1f" / "x").read_bytes() == b"x"
    shutil.rmtree(m.path / "e\x7f dir ")
    assert os.listdir(m.path) == []
    assert_agree(m, s3, {})


def test_odd_names_made_through_the_mount_land_as_the_same_keys(make_mount: MountFactory, bucket: str, s3) -> None:
    m = make_mount(bucket)
    names = ["new\x01file", "x\x1f\x7f", "pct%41", "back\\slash", "trailing ", " leading", "q?#+", "e\u0301\U0001F600"]
    for n in names:
        fd = os.open(m.path / n, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, content(n))
        os.close(fd)
    os.mkdir(m.path / "dir\x01")
    (m.path / "dir\x01" / "in\x02side").write_bytes(b"inside")
    os.symlink("target\x01", m.path / "link\x03")
    expected = {n: content(n) for n in names} | {"dir\x01/": b"", "dir\x01/in\x02side": b"inside", "link\x03": b"target\x01"}
    assert keys(s3, bucket) == expected
    m.unmount()
    # A fresh mount (nothing cached) shows and reads them all.
    m2 = make_mount(bucket)
    assert os.readlink(m2.path / "link\x03") == "target\x01"
    assert sorted(os.listdir(m2.path)) == sorted([*names, "dir\x01", "link\x03"])
    for n in names:
        assert (m2.path / n).read_bytes() == content(n)
    assert os.listdir(m2.path / "dir\x01") == ["in\x02side"]
    for n in [*names, "link\x03"]:
        os.unlink(m2.path / n)
    shutil.rmtree(m2.path / "dir\x01")
    assert os.listdir(m2.path) == []
    assert_agree(m2, s3, {})


def test_a_large_file_with_a_control_character_goes_by_multipart_upload(make_mount: MountFactory, bucket: str, s3) -> None:
    """A file written faster than the append path (a copy streaming in) above
    multipart_threshold goes by multipart upload: its answers echo the key."""
    m = make_mount(bucket, options={"multipart_threshold": "8M", "part_size": "5M"})
    data = os.urandom(20 * 1024 * 1024)
    (m.path / "big\x01file").write_bytes(data)
    assert keys(s3, bucket) == {"big\x01file": data}
    (m.path / "big\x01file").unlink()
    assert_agree(m, s3, {})


def test_keys_that_cannot_be_names_move_with_their_directory_and_rm_rf_names_them(
    make_mount: MountFactory, bucket: str, s3
) -> None:
    # ... and a file `old/x` hidden by the directory `old/x/`: once rm -r has
    # emptied the directory, the file is still there, unseen by rm.
    hidden = ["old/x", *("old/" + k for k in UNNAMEABLE)]
    put_many(s3, bucket, {k: content(k) for k in hidden} | {"old/seen": b"seen", "old/sub/also": b"also", "old/x/in": b"in"})
    m = make_mount(bucket, options=FAST)
    assert sorted(os.listdir(m.path / "old")) == ["seen", "sub", "x"]
    assert os.path.isdir(m.path / "old" / "x")
    # A rename of the directory moves every key below it, shown or not.
    os.rename(m.path / "old", m.path / "bad")
    moved = {"bad" + k[3:]: content(k) for k in hidden}
    assert keys(s3, bucket) == moved | {"bad/seen": b"seen", "bad/sub/also": b"also", "bad/x/in": b"in"}
    result = subprocess.run(["rm", "-rf", str(m.path / "bad")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Directory not empty" in result.stderr
    with pytest.raises(OSError) as err:
        os.rmdir(m.path / "bad")
    assert err.value.errno == errno.ENOTEMPTY
    assert os.listdir(m.path / "bad") == []  # what could be shown was removed
    # The log names every key that kept the directory, and what to do.
    lines = [line for line in m.log_text().splitlines() if "not empty" in line and "'bad/'" in line]
    assert lines, m.tail(40)
    for k in moved:
        assert repr(k) in lines[-1], (k, lines[-1])
    assert "cannot be names" in lines[-1] and "delete or rename them" in lines[-1]
    assert f"aws s3 rm --recursive s3://{bucket}/bad/" in lines[-1]
    assert_agree(m, s3, moved)  # nothing unseen was deleted
    # Once they are gone, the directory goes (the file `bad/x` shows now, and goes with rm -r).
    for k in moved:
        if k != "bad/x":
            s3.delete_object(Bucket=bucket, Key=k)
    time.sleep(1.2)  # FAST: the listing and the kernel's entries expire
    assert os.listdir(m.path / "bad") == ["x"]
    subprocess.run(["rm", "-rf", str(m.path / "bad")], check=True)
    assert os.listdir(m.path) == []
    assert_agree(m, s3, {})


def test_a_killed_daemons_file_with_an_odd_name_is_uploaded_to_the_same_key_by_the_next_mount(
    make_mount: MountFactory, bucket: str, s3, rgw: LocalRGW, tmp_path: Path
) -> None:
    """The staging journal keeps the key (JSON escapes the control
    character); the next mount's recovery uploads to exactly that key and
    its log names it."""
    name = "un\x01saved %41 "
    options = {"staging_dir": str(tmp_path / "staging")}
    with FaultProxy(rgw.endpoint) as proxy:
        m = make_mount(bucket, endpoint=proxy.endpoint, options=options, check_log=False)
        proxy.add_rule(Rule(op=UPLOADS, stall=True))  # nothing gets out
        f = open(m.path / name, "wb", buffering=0)
        f.write(content(name))
        m.kill(f)
        proxy.clear_rules()
        m2 = make_mount(bucket, endpoint=proxy.endpoint, options=options)
        assert wait_until(lambda: "recovery of " in m2.log_text(), 60), m2.tail(40)
        assert f"recovered {name!r}" in m2.log_text()
        assert (m2.path / name).read_bytes() == content(name)
        assert keys(s3, bucket) == {name: content(name)}
        os.unlink(m2.path / name)
        assert_agree(m2, s3, {}, tmp_path / "staging")


def test_with_hidden_keys_delete_rm_rf_deletes_them_and_names_each(make_mount: MountFactory, bucket: str, s3) -> None:
    hidden = ["bad/" + k for k in UNNAMEABLE]
    put_many(s3, bucket, {k: content(k) for k in hidden} | {"bad/seen": b"seen", "bad/sub/also": b"also",
                                                           "keep/seen": b"seen"})
    m = make_mount(bucket, options={**FAST, "hidden_keys": "delete"})
    assert sorted(os.listdir(m.path / "bad")) == ["seen", "sub"]
    subprocess.run(["rm", "-rf", str(m.path / "bad")], check=True, capture_output=True)
    assert os.listdir(m.path) == ["keep"]
    log = m.log_text()
    for k in hidden:
        deleted = [line for line in log.splitlines() if f"rmdir 'bad/': deleted {k!r}, a key that cannot be a name" in line]
        assert len(deleted) == 1, (k, m.tail(20))
    assert_agree(m, s3, {"keep/seen": b"seen"})
    # A name the mount did not show (written by another client after the
    # listing) is never deleted with them: ENOTEMPTY, and the line names it.
    put_many(s3, bucket, {"keep/./dot": b"dot", "keep/../dd": b"dotdot"})
    assert os.listdir(m.path / "keep") == ["seen"]
    os.unlink(m.path / "keep" / "seen")
    s3.put_object(Bucket=bucket, Key="keep/late", Body=b"late")
    with pytest.raises(OSError) as err:
        os.rmdir(m.path / "keep")
    assert err.value.errno == errno.ENOTEMPTY
    line = [line for line in m.log_text().splitlines() if "rmdir 'keep/': not empty" in line][-1]
    assert "'keep/late' (a name, not in the listing this mount showed)" in line
    assert "'keep/./dot' (empty, '.' or '..' path segment)" in line
    assert_agree(m, s3, {"keep/./dot": b"dot", "keep/../dd": b"dotdot", "keep/late": b"late"})
    for k in ("keep/./dot", "keep/../dd", "keep/late"):
        s3.delete_object(Bucket=bucket, Key=k)
