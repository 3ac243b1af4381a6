"""What the object store cannot hold gives the errno a local disk gives:
EFBIG beyond the largest object, and hard links refused with EPERM."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount
from zosfs.limits import MAX_FILE_SIZE

TIB = 2**40


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_truncate_and_write_beyond_5_tib_give_efbig_as_ext4_beyond_its_limit(mnt: ZosfsMount, s3,
                                                                           tmp_path: Path) -> None:
    assert MAX_FILE_SIZE == 5 * TIB  # S3's largest object
    local = tmp_path / "local"  # ext4 (16 TiB - 4 KiB at most): the errno to mirror
    local.write_bytes(b"")
    ext4_errno = errno_of(os.truncate, local, 17 * TIB)
    assert ext4_errno == errno.EFBIG
    f = mnt.path / "f"
    f.write_bytes(b"abc")
    assert errno_of(os.truncate, f, MAX_FILE_SIZE + 1) == ext4_errno
    r = subprocess.run(["truncate", "-s", "6T", str(f)], capture_output=True, text=True)
    assert r.returncode != 0 and "File too large" in r.stderr
    with open(f, "r+b") as fh:
        assert errno_of(os.ftruncate, fh.fileno(), MAX_FILE_SIZE + 1) == ext4_errno
        assert errno_of(os.pwrite, fh.fileno(), b"x", MAX_FILE_SIZE) == ext4_errno
        assert errno_of(os.pwrite, fh.fileno(), b"x", 6 * TIB) == ext4_errno
    assert errno_of(os.truncate, f, -1) == errno.EINVAL  # (the kernel's, as on ext4)
    assert f.read_bytes() == b"abc" and f.stat().st_size == 3
    assert s3.get_object(Bucket=mnt.bucket, Key="f")["Body"].read() == b"abc"
    assert "at most 5497558138880 bytes" in mnt.log_text()


def test_hard_links_are_refused_with_eperm_and_tools_report_it(mnt: ZosfsMount, tmp_path: Path) -> None:
    """EPERM is what link(2) documents for "the filesystem does not support
    the creation of hard links" and what the kernel itself answers for every
    filesystem without them (vfat, exfat); cp -a, tar -x and rsync -aH
    report it and go on with the other files (they do the same for
    EOPNOTSUPP, EMLINK and EXDEV: none falls back to a copy)."""
    (mnt.path / "f").write_bytes(b"x")
    assert errno_of(os.link, mnt.path / "f", mnt.path / "g") == errno.EPERM
    assert sorted(os.listdir(mnt.path)) == ["f"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("A")
    os.link(src / "a", src / "b")
    (src / "c").write_text("C")
    subprocess.run(["tar", "-C", str(src), "-cf", str(tmp_path / "h.tar"), "."], check=True)
    (mnt.path / "tar").mkdir()
    for name, cmd in (("cp", ["cp", "-a", str(src), str(mnt.path / "cp")]),
                      ("tar", ["tar", "-C", str(mnt.path / "tar"), "-xf", str(tmp_path / "h.tar")]),
                      ("rsync", ["rsync", "-aH", f"{src}/", f"{mnt.path}/rsync/"])):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (name, r.stderr)
        copy = mnt.path / name
        assert (copy / "c").read_text() == "C", name
        # One of the two names of the linked file is there, with its data.
        assert [(copy / n).read_text() for n in ("a", "b") if (copy / n).exists()] == ["A"], name
