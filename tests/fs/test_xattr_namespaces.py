"""Extended attributes of every namespace the kernel passes (trusted.*,
security.*, names without one), stored as s3fs 1.97 stores them; the names
asked on every write and every `ls -l` cost no request and are never stored."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount
from tests.support.s3fs_codec import s3fs_header, s3fs_parse

# As root: the kernel lets only CAP_SYS_ADMIN set trusted.* and security.*.
STORED = {"trusted.origin": b"t\x00rusted", "security.label": b"lbl", "user.note": b"n", "plain": b"p"}
PROBED = ("security.capability", "security.selinux", "system.posix_acl_access", "system.posix_acl_default")
# What a probe answers: ls -l's (the SELinux label, the POSIX ACLs) "not
# supported", so that ls asks once per mount instead of twice per file; the
# kernel's security.capability (on every write) "no such attribute".
PROBE_ERRNO = {"security.capability": errno.ENODATA, "security.selinux": errno.ENOTSUP,
               "system.posix_acl_access": errno.ENOTSUP, "system.posix_acl_default": errno.ENOTSUP}


def getfattr_all(path: Path) -> dict[str, bytes]:
    """getfattr -d -m - (every namespace the caller may read), values in hex."""
    out = subprocess.run(["getfattr", "-d", "-m", "-", "-e", "hex", "--absolute-names", str(path)],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = bytes.fromhex(value[2:]) if value.startswith("0x") else b""
    return found


def requests(mnt: ZosfsMount) -> dict[str, int]:
    return {op: int(v["count"]) for op, v in mnt.stats()["requests"].items()}


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_every_namespace_round_trips_lists_and_survives_a_remount(make_mount, bucket: str, s3) -> None:
    assert os.geteuid() == 0, "trusted.* and security.* need root"
    mnt = make_mount(bucket)
    f = mnt.path / "f.txt"
    f.write_text("data")
    (mnt.path / "d").mkdir()
    for target in (f, mnt.path / "d"):
        for name, value in STORED.items():
            subprocess.run(["setfattr", "-n", name, "-v", "0x" + value.hex(), str(target)], check=True)
        assert getfattr_all(target) == STORED
    os.removexattr(f, "plain")
    assert getfattr_all(f) == {k: v for k, v in STORED.items() if k != "plain"}
    # In the bucket as s3fs would read it.
    head = s3.head_object(Bucket=bucket, Key="f.txt")
    assert s3fs_parse(head["Metadata"]["xattr"]) == {k.encode(): v for k, v in STORED.items() if k != "plain"}
    mnt.unmount()
    again = make_mount(bucket)
    assert getfattr_all(again.path / "f.txt") == {k: v for k, v in STORED.items() if k != "plain"}
    assert getfattr_all(again.path / "d") == STORED
    assert (again.path / "f.txt").read_text() == "data"


def test_an_object_written_with_s3fs_s_header_reads_back_the_same(mnt: ZosfsMount, s3) -> None:
    table = {b"trusted.md5": b"\x01\x02", b"security.tag": b"secret", b"user.x": b"", b"bare": b"b",
             "user.\u00e9t\u00e9".encode(): "\u2603".encode()}
    # s3fs also stores what zosfs never shows (see README: Extended attributes).
    hidden = {b"security.capability": b"\x01\x00\x00\x02" + bytes(16), b"system.posix_acl_access": b"\x02\x00\x00\x00"}
    s3.put_object(Bucket=mnt.bucket, Key="from-s3fs", Body=b"body",
                  Metadata={"mode": "33188", "uid": "0", "gid": "0", "mtime": "1700000000",
                            "xattr": s3fs_header({**table, **hidden})})
    assert getfattr_all(mnt.path / "from-s3fs") == {k.decode(): v for k, v in table.items()}
    # A change here keeps everything s3fs wrote, in s3fs's form.
    os.setxattr(mnt.path / "from-s3fs", "trusted.more", b"m")
    head = s3.head_object(Bucket=mnt.bucket, Key="from-s3fs")
    assert head["Metadata"]["xattr"] == s3fs_header({**table, **hidden, b"trusted.more": b"m"})


def test_probed_names_cost_no_request_and_are_never_stored(make_mount, bucket: str, s3) -> None:
    mnt = make_mount(bucket)
    for i in range(20):
        (mnt.path / f"f{i}").write_text("x")
    mnt.unmount()
    # A fresh mount whose metadata goes stale at once: a probe that looked at
    # the object instead of answering at once would send a HEAD.
    m = make_mount(bucket, options={"attr_timeout": "0.2"})
    files = [open(m.path / f"f{i}", "r+b") for i in range(20)]
    try:
        time.sleep(0.5)
        before = requests(m)
        for fh in files:
            for name in PROBED:
                assert errno_of(os.getxattr, fh.fileno(), name) == PROBE_ERRNO[name], name
        assert requests(m) == before, "probes sent requests"
        files[0].write(b"y")  # (the kernel asks security.capability on every write)
        files[0].flush()
        os.fsync(files[0].fileno())
        assert requests(m).get("HeadObject") == before.get("HeadObject")
    finally:
        for fh in files:
            fh.close()
    # Set explicitly: refused (never silently dropped), so never to be returned.
    # (the kernel checks the values of the capability and the ACLs first)
    capability = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # VFS_CAP_REVISION_2, cap_net_raw+ep
    assert errno_of(os.setxattr, m.path / "f1", "security.capability", capability) == errno.ENOTSUP
    assert errno_of(os.setxattr, m.path / "f1", "security.selinux", b"system_u:object_r:tmp_t:s0") == errno.ENOTSUP
    (m.path / "dir").mkdir()
    # What `setfacl -m u:nobody:r` sets (setfacl itself is not installed here).
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in (
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 65534), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)))
    assert errno_of(os.setxattr, m.path / "f1", "system.posix_acl_access", acl) == errno.ENOTSUP
    assert errno_of(os.setxattr, m.path / "dir", "system.posix_acl_default", acl) == errno.ENOTSUP
    assert errno_of(os.getxattr, m.path / "f1", "system.posix_acl_access") == errno.ENOTSUP
    # (Without FUSE_POSIX_ACL the kernel passes ACLs on to zosfs, and would not enforce them.)
    assert "system.posix_acl_default is not stored" in m.log_text()
    assert "xattr" not in s3.head_object(Bucket=bucket, Key="f1")["Metadata"]
    assert errno_of(os.setxattr, m.path / "f1", "system.nfs4_acl", b"x") == errno.ENOTSUP


def test_trusted_names_are_the_kernel_s_to_guard_and_hidden_from_other_users(rgw, bucket: str, s3) -> None:
    """The kernel refuses trusted.* to a caller without CAP_SYS_ADMIN before
    zosfs sees it (EPERM to set, ENODATA to get); zosfs leaves them out of
    such a caller's listing, as ext4 does."""
    workdir = Path(tempfile.mkdtemp(prefix="zosfs-xattr-"))
    workdir.chmod(0o755)  # (pytest's own directories are root's alone)
    m = ZosfsMount(rgw.endpoint, bucket, workdir, options={"allow_other": ""}).start()
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        f = m.path / "shared"
        f.write_text("x")
        os.setxattr(f, "trusted.secret", b"s")
        os.setxattr(f, "user.public", b"p")
        listed = subprocess.run([*nobody, "getfattr", "-d", "-m", "-", "--absolute-names", str(f)],
                                capture_output=True, text=True, check=True).stdout
        assert 'user.public="p"' in listed and "trusted" not in listed
        names = subprocess.run([*nobody, sys.executable, "-c", f"import os; print(os.listxattr({str(f)!r}))"],
                               capture_output=True, text=True, check=True).stdout
        assert names.strip() == "['user.public']"
        got = subprocess.run([*nobody, "getfattr", "-n", "trusted.secret", str(f)], capture_output=True, text=True)
        assert got.returncode != 0 and "No such attribute" in got.stderr
        put = subprocess.run([*nobody, "setfattr", "-n", "trusted.other", "-v", "1", str(f)],
                             capture_output=True, text=True)
        assert put.returncode != 0 and "Operation not permitted" in put.stderr
        assert getfattr_all(f) == {"trusted.secret": b"s", "user.public": b"p"}
    finally:
        m.unmount()
        m.check_log()
        shutil.rmtree(workdir, ignore_errors=True)
