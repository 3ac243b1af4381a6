"""POSIX completeness on a real mount (issue 17): special files stored as
s3fs stores them, Content-Type on every object written, link counts, and
copies of trees holding a FIFO and a device by cp -a, tar and rsync -a.
Each is checked in the bucket, after a remount, and by a second mount."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.support.mount import ZosfsMount

DEV = os.makedev(1, 3)  # /dev/null's numbers
S3FS_FIFO_MODE = stat.S_IFIFO | 0o640


def head(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return s3.head_object(Bucket=bucket, Key=key)


def kinds(root: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (file type, permission bits, device number), as ls -l shows them."""
    out = {}
    for name in sorted(os.listdir(root)):
        st = os.lstat(root / name)
        out[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev)
    return out


def make_specials(root: Path) -> None:
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "chr", stat.S_IFCHR | 0o640, DEV)
    os.mknod(root / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))


# -- special files ---------------------------------------------------------------------------


def test_special_files_are_stored_as_s3fs_stores_them(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket)
    (m.path / "d").mkdir()
    make_specials(m.path / "d")
    umask = os.umask(0)
    os.umask(umask)
    sock_perms = 0o777 & ~umask  # bind() makes a socket 0777 less the umask
    expected = {"blk": (stat.S_IFBLK, 0o600, os.makedev(7, 0)), "chr": (stat.S_IFCHR, 0o640, DEV),
                "fifo": (stat.S_IFIFO, 0o640, 0), "sock": (stat.S_IFSOCK, sock_perms, 0)}
    assert kinds(m.path / "d") == expected
    for name, (kind, perms, rdev) in expected.items():
        obj = head(s3, bucket, f"d/{name}")
        assert obj["ContentLength"] == 0
        assert obj["Metadata"]["mode"] == str(kind | perms)
        assert obj["Metadata"].get("rdev") == (str(rdev) if kind in (stat.S_IFCHR, stat.S_IFBLK) else None)
    os.chmod(m.path / "d" / "fifo", 0o604)
    os.chown(m.path / "d" / "chr", 123, 456)
    os.rename(m.path / "d" / "chr", m.path / "d" / "chr2")
    os.unlink(m.path / "d" / "blk")
    expected["fifo"] = (stat.S_IFIFO, 0o604, 0)
    expected["chr2"] = expected.pop("chr")
    del expected["blk"]
    assert kinds(m.path / "d") == expected
    second = make_mount(bucket)
    assert kinds(second.path / "d") == expected
    assert (os.lstat(second.path / "d" / "chr2").st_uid, os.lstat(second.path / "d" / "chr2").st_gid) == (123, 456)
    m.unmount()
    again = make_mount(bucket)
    assert kinds(again.path / "d") == expected
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if not o["Key"].startswith(".zosfs/")) == [
        "d/", "d/chr2", "d/fifo", "d/sock"]


def test_s3fs_made_fifo_reads_back_and_opens_as_a_fifo(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="pipe", Body=b"", ContentType="application/octet-stream",
                  Metadata={"mode": str(S3FS_FIFO_MODE), "uid": "0", "gid": "0", "mtime": "1700000000"})
    m = make_mount(bucket)
    st = os.lstat(m.path / "pipe")
    assert (st.st_mode, st.st_size, st.st_rdev) == (S3FS_FIFO_MODE, 0, 0)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append((m.path / "pipe").read_bytes()))
    reader.start()
    (m.path / "pipe").write_bytes(b"through the kernel\n")  # blocks until the reader opens: a real FIFO
    reader.join(10)
    assert got == [b"through the kernel\n"]
    assert head(s3, bucket, "pipe")["ContentLength"] == 0  # nothing went to the bucket


# -- Content-Type ----------------------------------------------------------------------------


def content_type(s3: Any, bucket: str, key: str) -> str:
    return head(s3, bucket, key)["ContentType"]


def test_content_type_from_the_name_kept_and_settable(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket, options={"append_chunk": "1M"})
    page = m.path / "index.html"
    page.write_bytes(b"<p>hi</p>\n")
    assert content_type(s3, bucket, "index.html") == "text/html"
    with open(page, "ab") as f:  # an append replaces the type unless it carries it
        f.write(b"<p>more</p>\n")
    assert content_type(s3, bucket, "index.html") == "text/html"
    os.chmod(page, 0o600)
    assert content_type(s3, bucket, "index.html") == "text/html"
    (m.path / "archive.tar.gz").write_bytes(b"x")
    (m.path / "noext").write_bytes(b"x")
    assert content_type(s3, bucket, "archive.tar.gz") == "application/gzip"
    assert content_type(s3, bucket, "noext") == "application/octet-stream"
    # A rename to a new extension gives the automatic type of the new name.
    os.rename(page, m.path / "notes.txt")
    assert content_type(s3, bucket, "notes.txt") == "text/plain"
    assert os.getxattr(m.path / "notes.txt", "user.zos.content_type") == b"text/plain"
    # A type set by the user survives rewrites, appends and renames.
    os.setxattr(m.path / "notes.txt", "user.zos.content_type", b"text/markdown; charset=utf-8")
    assert content_type(s3, bucket, "notes.txt") == "text/markdown; charset=utf-8"
    (m.path / "notes.txt").write_bytes(b"# rewritten\n")
    with open(m.path / "notes.txt", "ab") as f:
        f.write(b"appended\n")
    os.rename(m.path / "notes.txt", m.path / "notes.json")
    assert content_type(s3, bucket, "notes.json") == "text/markdown; charset=utf-8"
    assert "user.zos.content_type" not in os.listxattr(m.path / "notes.json")  # cp -a must not copy it
    try:
        os.setxattr(m.path / "notes.json", "user.zos.content_type", b"not a type")
        raise AssertionError("an invalid type was accepted")
    except OSError as err:
        assert err.errno == 22
    second = make_mount(bucket)
    assert os.getxattr(second.path / "notes.json", "user.zos.content_type") == b"text/markdown; charset=utf-8"
    assert (second.path / "notes.json").read_bytes() == b"# rewritten\nappended\n"


# -- link counts --------------------------------------------------------------------------


def test_link_counts(mnt: ZosfsMount) -> None:
    (mnt.path / "d" / "sub").mkdir(parents=True)
    assert os.stat(mnt.path / "d").st_nlink == 1  # "unknown": find then descends everywhere
    out = subprocess.run(["find", str(mnt.path), "-type", "d"], capture_output=True, text=True, check=True).stdout
    assert sorted(out.split()) == sorted([str(mnt.path), str(mnt.path / "d"), str(mnt.path / "d" / "sub")])
    f = mnt.path / "f"
    f.write_bytes(b"data")
    assert os.stat(f).st_nlink == 1
    fd = os.open(f, os.O_RDONLY)
    try:
        os.unlink(f)
        assert os.fstat(fd).st_nlink == 0
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)


def test_setgid_directory_gives_its_group(mnt: ZosfsMount) -> None:
    shared = mnt.path / "shared"
    shared.mkdir()
    os.chown(shared, -1, 4242)
    os.chmod(shared, 0o2775)
    (shared / "file").write_bytes(b"x")
    (shared / "sub").mkdir()
    os.symlink("file", shared / "link")
    for name in ("file", "sub", "link"):
        assert os.lstat(shared / name).st_gid == 4242, name
    assert os.stat(shared / "sub").st_mode & stat.S_ISGID
    assert not os.stat(shared / "file").st_mode & stat.S_ISGID


# -- tools -------------------------------------------------------------------------------


def test_cp_tar_rsync_copy_fifos_and_devices(mnt: ZosfsMount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "in").mkdir(parents=True)
    (src / "in" / "file.txt").write_bytes(b"text\n")
    os.mkfifo(src / "in" / "fifo", 0o640)
    os.mknod(src / "in" / "chr", stat.S_IFCHR | 0o600, DEV)
    want = kinds(src / "in")
    subprocess.run(["cp", "-a", str(src / "in"), str(mnt.path / "cp")], check=True)
    subprocess.run(["tar", "-C", str(src / "in"), "-cf", str(tmp_path / "t.tar"), "."], check=True)
    (mnt.path / "tar").mkdir()
    subprocess.run(["tar", "-C", str(mnt.path / "tar"), "-xf", str(tmp_path / "t.tar")], check=True)
    subprocess.run(["rsync", "-a", "--devices", "--specials", f"{src / 'in'}/", str(mnt.path / "rsync")], check=True)
    for name in ("cp", "tar", "rsync"):
        assert kinds(mnt.path / name) == want, name
        assert (mnt.path / name / "file.txt").read_bytes() == b"text\n"
    # and back out of the mount
    subprocess.run(["cp", "-a", str(mnt.path / "rsync"), str(tmp_path / "back")], check=True)
    assert kinds(tmp_path / "back") == want
