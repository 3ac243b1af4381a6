"""Older directory conventions (issue 17, point 6), read as s3fs 1.97 reads
them: an empty object `dir` (no slash) whose mode says directory or whose
Content-Type is `application/x-directory` (s3fs before 1.63 made those),
and `dir_$folder$` markers (older S3 tools, Hadoop). The objects are made
with boto3 exactly as those tools wrote them; the mount lists, looks up,
writes into, changes, renames and removes such directories, and a remount
reads what the first mount left."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from tests.support.mount import ZosfsMount

DIR_TYPE = "application/x-directory"


def keys(s3: Any, bucket: str) -> list[str]:
    """The bucket's keys, but for zosfs's own (the change feed, the metadata index)."""
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed if not o["Key"].startswith(".zosfs"))


def old_tree(s3: Any, bucket: str) -> None:
    """What s3fs before 1.63, and tools writing `_$folder$`, left in buckets."""
    put = s3.put_object
    old_meta = {"mode": str(stat.S_IFDIR | 0o751), "uid": "1234", "gid": "5678", "mtime": "1500000000"}
    put(Bucket=bucket, Key="oldmode", Body=b"", Metadata=old_meta)  # mode says directory
    put(Bucket=bucket, Key="oldtype", Body=b"", ContentType=DIR_TYPE)  # only the type says so
    put(Bucket=bucket, Key="oldfull", Body=b"", ContentType=DIR_TYPE, Metadata=old_meta)
    put(Bucket=bucket, Key="oldfull/a.txt", Body=b"in an old directory\n")
    put(Bucket=bucket, Key="hadoop_$folder$", Body=b"")
    put(Bucket=bucket, Key="hadoop/inner.txt", Body=b"inner\n")
    put(Bucket=bucket, Key="emptyfolder_$folder$", Body=b"")
    put(Bucket=bucket, Key="plain-empty", Body=b"")  # an empty file stays a file
    put(Bucket=bucket, Key="typed-file", Body=b"", ContentType=DIR_TYPE,
        Metadata={"mode": str(stat.S_IFREG | 0o644)})  # its mode's file type wins over the type


DIRS = ["emptyfolder", "hadoop", "oldfull", "oldmode", "oldtype"]


def test_old_directories_read_as_directories(make_mount, bucket: str, s3) -> None:
    old_tree(s3, bucket)
    m = make_mount(bucket)
    # Looked up by name first (no listing of the root yet: probed), then listed.
    st = os.stat(m.path / "oldmode")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime) == (stat.S_IFDIR | 0o751, 1234, 5678, 1500000000)
    assert stat.S_ISDIR(os.stat(m.path / "oldtype").st_mode)
    assert sorted(os.listdir(m.path)) == sorted(DIRS + ["plain-empty", "typed-file"])
    for d in DIRS:
        assert stat.S_ISDIR(os.lstat(m.path / d).st_mode), d
    kinds = {e.name: e.is_dir(follow_symlinks=False) for e in os.scandir(m.path)}
    assert kinds["hadoop"] and kinds["emptyfolder"] and not kinds["plain-empty"]
    assert stat.S_ISREG(os.stat(m.path / "plain-empty").st_mode)
    assert stat.S_ISREG(os.stat(m.path / "typed-file").st_mode)
    # The `dir` object and the keys below `dir/` are one directory.
    st = os.stat(m.path / "oldfull")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o751, 1234)
    assert os.listdir(m.path / "oldfull") == ["a.txt"]
    assert (m.path / "oldfull" / "a.txt").read_bytes() == b"in an old directory\n"
    assert os.listdir(m.path / "hadoop") == ["inner.txt"]
    assert os.listdir(m.path / "emptyfolder") == []
    # No marker and no mode: s3fs's default, 0750.
    assert stat.S_IMODE(os.stat(m.path / "oldtype").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(m.path / "hadoop").st_mode) == 0o750
    assert not (m.path / "hadoop_$folder$").exists()
    assert keys(s3, bucket) == sorted(["emptyfolder_$folder$", "hadoop/inner.txt", "hadoop_$folder$", "oldfull",
                                       "oldfull/a.txt", "oldmode", "oldtype", "plain-empty", "typed-file"])


def test_old_directories_change_like_others(make_mount, bucket: str, s3) -> None:
    old_tree(s3, bucket)
    # compat_dir: an empty `dir_$folder$` directory is found by name before
    # its parent is listed (without it, once the parent is listed).
    m = make_mount(bucket, options={"compat_dir": ""})
    # Writing into them works, and they stay directories.
    (m.path / "oldmode" / "new.txt").write_bytes(b"new\n")
    (m.path / "emptyfolder" / "sub").mkdir()
    assert os.listdir(m.path / "oldmode") == ["new.txt"]
    assert stat.S_ISDIR(os.stat(m.path / "oldmode").st_mode)
    # A change of attributes moves them to a `dir/` marker and removes the
    # older object, as s3fs does.
    os.chmod(m.path / "oldtype", 0o705)
    assert stat.S_IMODE(os.stat(m.path / "oldtype").st_mode) == 0o705
    head = s3.head_object(Bucket=bucket, Key="oldtype/")
    assert head["Metadata"]["mode"] == str(stat.S_IFDIR | 0o705) and head["ContentType"] == DIR_TYPE
    # rmdir removes the older marker too (else the directory would stay).
    (m.path / "oldmode" / "new.txt").unlink()
    os.rmdir(m.path / "oldmode")
    os.rmdir(m.path / "emptyfolder" / "sub")
    os.rmdir(m.path / "emptyfolder")
    try:
        os.rmdir(m.path / "hadoop")
    except OSError as err:
        assert err.errno == errno.ENOTEMPTY
    else:
        raise AssertionError("rmdir of a directory with a file in it succeeded")
    # rename carries the attributes to the new name's marker.
    os.rename(m.path / "hadoop", m.path / "renamed")
    os.rename(m.path / "oldfull", m.path / "renamed-full")
    assert sorted(os.listdir(m.path)) == ["oldtype", "plain-empty", "renamed", "renamed-full", "typed-file"]
    assert (m.path / "renamed" / "inner.txt").read_bytes() == b"inner\n"
    st = os.stat(m.path / "renamed-full")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 1234, 5678)
    expected = sorted(["oldtype/", "plain-empty", "renamed/", "renamed/inner.txt", "renamed-full/",
                       "renamed-full/a.txt", "typed-file"])
    assert keys(s3, bucket) == expected
    assert s3.head_object(Bucket=bucket, Key="renamed-full/")["Metadata"]["uid"] == "1234"
    # A second mount reads what the first left.
    m.unmount()
    again = make_mount(bucket)
    assert sorted(os.listdir(again.path)) == ["oldtype", "plain-empty", "renamed", "renamed-full", "typed-file"]
    st = os.stat(again.path / "renamed-full")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o751, 1234)
    assert stat.S_IMODE(os.stat(again.path / "oldtype").st_mode) == 0o705
    assert keys(s3, bucket) == expected


def test_directories_without_a_marker_show_s3fs_default_mode(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="implicit/file", Body=b"")
    s3.put_object(Bucket=bucket, Key="marker-no-mode/", Body=b"", ContentType=DIR_TYPE)
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    m = make_mount(bucket)
    assert stat.S_IMODE(os.stat(m.path / "implicit").st_mode) == 0o750  # s3fs: 0750 (metaheader.cpp get_mode)
    assert stat.S_IMODE(os.stat(m.path / "marker-no-mode").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(m.path / "plain").st_mode) == 0o644  # (s3fs: 0640; README Semantics)
    m.unmount()
    m = make_mount(bucket, options={"umask": "022"})  # an explicit umask decides
    assert stat.S_IMODE(os.stat(m.path / "implicit").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(m.path / "plain").st_mode) == 0o644
