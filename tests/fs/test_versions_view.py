"""The versions view (issue 22, point 4): `.zos-versions/PATH/<time>_<id>`
on real mounts of a versioned bucket of the local RGW."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount, wait_until

VIEW = ".zos-versions"


def os_error(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_versions_are_files_that_read_and_restore(make_mount, versioned_bucket: str, s3) -> None:
    m: ZosfsMount = make_mount(versioned_bucket)
    (m.path / "a").mkdir()
    write(m.path / "a" / "f.txt", b"first version")
    write(m.path / "a" / "f.txt", b"second, longer version")
    (m.path / "a" / "f.txt").unlink()
    write(m.path / "top.txt", b"top")
    # (zosfs sends deletes in the background: the marker comes a moment later)
    assert wait_until(lambda: "DeleteMarkers" in s3.list_object_versions(Bucket=versioned_bucket, Prefix="a/f.txt"))

    assert VIEW not in os.listdir(m.path)  # hidden from `ls -a` of the root
    assert sorted(os.listdir(m.path / VIEW)) == ["a", "top.txt"]
    assert "f.txt" in os.listdir(m.path / VIEW / "a")  # a deleted file is still there

    answer = s3.list_object_versions(Bucket=versioned_bucket, Prefix="a/f.txt")
    ids = {v["VersionId"]: v["Size"] for v in answer["Versions"]}
    markers = {d["VersionId"] for d in answer["DeleteMarkers"]}
    names = sorted(os.listdir(m.path / VIEW / "a" / "f.txt"))
    assert len(names) == 3
    assert {n.rsplit("_", 1)[1] for n in names if not n.endswith("_deleted")} == set(ids)
    assert {n[: -len("_deleted")].rsplit("_", 1)[1] for n in names if n.endswith("_deleted")} == markers
    # Names begin with the ISO time, so that they sort oldest first.
    first, second, deleted = names
    assert first[:4].isdigit() and first[10] == "T" and deleted.endswith("_deleted")
    assert (m.path / VIEW / "a" / "f.txt" / first).read_bytes() == b"first version"
    assert (m.path / VIEW / "a" / "f.txt" / second).read_bytes() == b"second, longer version"
    assert os.stat(m.path / VIEW / "a" / "f.txt" / second).st_size == len(b"second, longer version")
    assert (m.path / VIEW / "a" / "f.txt" / deleted).read_bytes() == b""

    # cp out of the view restores a version.
    shutil.copyfile(m.path / VIEW / "a" / "f.txt" / first, m.path / "a" / "f.txt")
    assert (m.path / "a" / "f.txt").read_bytes() == b"first version"
    assert s3.get_object(Bucket=versioned_bucket, Key="a/f.txt")["Body"].read() == b"first version"
    assert len(os.listdir(m.path / VIEW / "a" / "f.txt")) == 4  # the restore is a version too


def test_the_view_is_read_only(make_mount, versioned_bucket: str) -> None:
    m: ZosfsMount = make_mount(versioned_bucket)
    write(m.path / "f", b"data")
    version = m.path / VIEW / "f" / os.listdir(m.path / VIEW / "f")[0]
    assert os_error(os.open, version, os.O_WRONLY) in (errno.EROFS, errno.EACCES)
    assert os_error(os.mkdir, m.path / VIEW / "new") == errno.EROFS
    assert os_error(os.unlink, version) == errno.EROFS
    assert os_error(os.rename, version, m.path / "moved") == errno.EROFS
    assert os_error(os.rmdir, m.path / VIEW) == errno.EROFS
    assert os_error(write, m.path / VIEW / "f" / "x", b"") == errno.EROFS
    assert os.stat(version).st_mode & 0o777 == 0o444
    assert (m.path / "f").read_bytes() == b"data"


def test_find_and_rsync_of_the_root_skip_the_view(make_mount, versioned_bucket: str, tmp_path: Path) -> None:
    m: ZosfsMount = make_mount(versioned_bucket)
    write(m.path / "one", b"1")
    write(m.path / "one", b"11")
    found = subprocess.run(["find", str(m.path)], capture_output=True, text=True, check=True).stdout
    assert VIEW not in found and str(m.path / "one") in found
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", f"{m.path}/", str(tmp_path / "copy")], check=True, timeout=60)
        assert sorted(os.listdir(tmp_path / "copy")) == ["one"]
    assert os.path.isdir(m.path / VIEW)  # (while a lookup of the name works)


def test_shown_and_off(make_mount, versioned_bucket: str) -> None:
    shown: ZosfsMount = make_mount(versioned_bucket, options={"versions_view": "shown"})
    write(shown.path / "x", b"x")
    assert sorted(os.listdir(shown.path)) == [VIEW, "x"]
    assert len(os.listdir(shown.path / VIEW / "x")) == 1
    off: ZosfsMount = make_mount(versioned_bucket, options={"versions_view": "off"})
    assert not (off.path / VIEW).exists()
    assert os.listdir(off.path) == ["x"]


def test_no_view_in_a_bucket_never_versioned(mnt: ZosfsMount) -> None:
    write(mnt.path / "x", b"x")
    assert not (mnt.path / VIEW).exists()


def test_suspended_versioning_shows_null_versions(make_mount, versioned_bucket: str, s3) -> None:
    s3.put_object(Bucket=versioned_bucket, Key="f", Body=b"kept while enabled")
    s3.put_bucket_versioning(Bucket=versioned_bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=versioned_bucket, Key="f", Body=b"written while suspended")
    m: ZosfsMount = make_mount(versioned_bucket)
    names = sorted(os.listdir(m.path / VIEW / "f"))
    assert len(names) == 2 and names[1].endswith("_null")
    assert (m.path / VIEW / "f" / names[0]).read_bytes() == b"kept while enabled"
    assert (m.path / VIEW / "f" / names[1]).read_bytes() == b"written while suspended"
