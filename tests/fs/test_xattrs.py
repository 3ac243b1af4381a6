"""Extended attributes: tags, ACL, retention, legal hold, facts, user xattrs."""

from __future__ import annotations

import datetime as dt
import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount


def getfattr_dump(path: Path) -> str:
    return subprocess.run(["getfattr", "-d", "--absolute-names", str(path)], capture_output=True, text=True, check=True).stdout


def xattr_error(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_tags_round_trip_both_ways(mnt: ZosfsMount, s3) -> None:
    f = mnt.path / "tagged.txt"
    f.write_text("x")
    os.setxattr(f, "user.zos.tag.project", b"alpha")
    os.setxattr(f, "user.zos.tag.cost-center", b"42")
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=mnt.bucket, Key="tagged.txt")["TagSet"]}
    assert tags == {"project": "alpha", "cost-center": "42"}
    s3.put_object_tagging(Bucket=mnt.bucket, Key="tagged.txt", Tagging={"TagSet": [{"Key": "owner", "Value": "bob"}]})
    mnt2 = ZosfsMount(mnt.endpoint, mnt.bucket, mnt.workdir, name="second").start()
    try:
        g = mnt2.path / "tagged.txt"
        assert os.getxattr(g, "user.zos.tag.owner") == b"bob"
        assert "user.zos.tag.owner" in os.listxattr(g)
        assert xattr_error(os.getxattr, g, "user.zos.tag.project") == errno.ENODATA
        os.removexattr(g, "user.zos.tag.owner")
        assert s3.get_object_tagging(Bucket=mnt.bucket, Key="tagged.txt")["TagSet"] == []
    finally:
        mnt2.unmount()
        mnt2.check_log()


def test_tag_limits_give_clear_errnos(mnt: ZosfsMount) -> None:
    f = mnt.path / "limits"
    f.write_text("x")
    for i in range(10):
        os.setxattr(f, f"user.zos.tag.k{i}", b"v")
    assert xattr_error(os.setxattr, f, "user.zos.tag.k10", b"v") == errno.E2BIG
    assert xattr_error(os.setxattr, f, "user.zos.tag.k0", b"bad#value") == errno.EINVAL
    assert xattr_error(os.setxattr, f, "user.zos.tag." + "k" * 129, b"v") == errno.EINVAL
    assert xattr_error(os.setxattr, f, "user.zos.tag.k1", b"v" * 257) == errno.EINVAL
    assert "tags may contain" in mnt.log_text()


def test_user_xattrs_are_stored_as_s3fs_does(mnt: ZosfsMount, s3) -> None:
    f = mnt.path / "u.txt"
    f.write_text("hello")
    os.setxattr(f, "user.comment", b"\x00binary\xff")
    os.setxattr(f, "user.mime_type", b"text/plain")
    head = s3.head_object(Bucket=mnt.bucket, Key="u.txt")
    assert "xattr" in head["Metadata"]  # x-amz-meta-xattr, URL-encoded JSON of base64 values
    assert os.getxattr(f, "user.comment") == b"\x00binary\xff"
    os.removexattr(f, "user.comment")
    assert set(os.listxattr(f)) == {"user.mime_type"}
    assert xattr_error(os.setxattr, f, "system.nfs4_acl", b"1") == errno.ENOTSUP  # the kernel's own namespace
    assert f.read_text() == "hello"


def test_facts_are_readable_by_name_but_not_listed(mnt: ZosfsMount, s3) -> None:
    f = mnt.path / "facts"
    f.write_text("abc")  # (a new file closed whole is stored by one PUT: see whole_put)
    head = s3.head_object(Bucket=mnt.bucket, Key="facts")
    assert os.getxattr(f, "user.zos.etag").decode() == head["ETag"].strip('"')
    assert os.getxattr(f, "user.zos.storage_class") == b"STANDARD"
    assert os.getxattr(f, "user.zos.object_type") == b"normal"
    log = mnt.path / "facts.log"
    with open(log, "a") as out:  # (made through O_APPEND: by append upload)
        out.write("abc")
    assert os.getxattr(log, "user.zos.object_type") == b"appendable"
    headers = s3.head_object(Bucket=mnt.bucket, Key="facts.log")["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-rgw-object-type"] == "Appendable"
    assert os.getxattr(f, "user.zos.restore") == b"not archived"
    assert xattr_error(os.setxattr, f, "user.zos.etag", b"x") == errno.EPERM
    assert not [n for n in os.listxattr(f) if n.startswith("user.zos.")]
    s3.put_object(Bucket=mnt.bucket, Key="normal", Body=b"n", StorageClass="STANDARD_IA")
    g = mnt.path / "normal"
    assert os.getxattr(g, "user.zos.object_type") == b"normal"
    assert os.getxattr(g, "user.zos.storage_class") == b"STANDARD_IA"


def test_public_read_acl_lets_the_second_user_read(mnt: ZosfsMount, s3_second) -> None:
    f = mnt.path / "shared.txt"
    f.write_text("for everyone")
    with pytest.raises(Exception):
        s3_second.get_object(Bucket=mnt.bucket, Key="shared.txt")
    os.setxattr(f, "user.zos.acl", b"public-read")
    assert s3_second.get_object(Bucket=mnt.bucket, Key="shared.txt")["Body"].read() == b"for everyone"
    acl = os.getxattr(f, "user.zos.acl").decode()
    assert "READ:uri=http://acs.amazonaws.com/groups/global/AllUsers" in acl
    assert "user.zos.acl" in os.listxattr(f)  # a non-default ACL is listed
    os.setxattr(f, "user.zos.acl", b"private")
    assert "user.zos.acl" not in os.listxattr(f)


def test_acl_grant_list_round_trips(mnt: ZosfsMount, s3, s3_second) -> None:
    f = mnt.path / "granted"
    f.write_text("for the second user")
    owner = s3.get_object_acl(Bucket=mnt.bucket, Key="granted")["Owner"]["ID"]
    os.setxattr(f, "user.zos.acl", f"FULL_CONTROL:id={owner}, READ:id=zosfs-second".encode())
    assert s3_second.get_object(Bucket=mnt.bucket, Key="granted")["Body"].read() == b"for the second user"
    text = os.getxattr(f, "user.zos.acl")
    os.setxattr(f, "user.zos.acl", text)  # getfattr's output feeds back to setfattr
    assert os.getxattr(f, "user.zos.acl") == text
    assert xattr_error(os.setxattr, f, "user.zos.acl", b"READ:nobody") == errno.EINVAL
    assert xattr_error(os.setxattr, f, "user.zos.acl", b"everyone-may-write") == errno.EINVAL


def test_tags_acl_and_xattrs_survive_append_and_rename(mnt: ZosfsMount, s3, s3_second) -> None:
    f = mnt.path / "keep.log"
    f.write_text("one\n")
    os.setxattr(f, "user.zos.tag.team", b"ops")
    os.setxattr(f, "user.note", b"important")
    os.setxattr(f, "user.zos.acl", b"public-read")
    with open(f, "a") as out:
        out.write("two\n")
    head = s3.head_object(Bucket=mnt.bucket, Key="keep.log")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-rgw-object-type"] == "Appendable"
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="keep.log")["TagSet"] == [{"Key": "team", "Value": "ops"}]
    assert s3_second.get_object(Bucket=mnt.bucket, Key="keep.log")["Body"].read() == b"one\ntwo\n"
    os.rename(f, mnt.path / "kept.log")
    g = mnt.path / "kept.log"
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="kept.log")["TagSet"] == [{"Key": "team", "Value": "ops"}]
    assert os.getxattr(g, "user.note") == b"important"
    assert s3_second.get_object(Bucket=mnt.bucket, Key="kept.log")["Body"].read() == b"one\ntwo\n"


def test_directory_with_marker_has_attributes(mnt: ZosfsMount, s3) -> None:
    d = mnt.path / "project"
    d.mkdir()
    os.setxattr(d, "user.zos.tag.kind", b"dir")
    os.setxattr(d, "user.owner", b"team")
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="project/")["TagSet"] == [{"Key": "kind", "Value": "dir"}]
    assert os.getxattr(d, "user.owner") == b"team"
    assert xattr_error(os.setxattr, mnt.path, "user.x", b"1") == errno.ENOTSUP


def test_retention_and_legal_hold_in_a_locked_bucket(make_mount, locked_bucket: str, s3) -> None:
    mnt = make_mount(locked_bucket, options={"bypass_governance": "1"})
    f = mnt.path / "record.txt"
    f.write_text("keep me")
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    os.setxattr(f, "user.zos.retention", f"GOVERNANCE {until:%Y-%m-%dT%H:%M:%SZ}".encode())
    got = s3.get_object_retention(Bucket=locked_bucket, Key="record.txt")["Retention"]
    assert got["Mode"] == "GOVERNANCE" and got["RetainUntilDate"] == until
    assert os.getxattr(f, "user.zos.retention").decode() == f"GOVERNANCE {until:%Y-%m-%dT%H:%M:%SZ}"
    os.setxattr(f, "user.zos.legal_hold", b"ON")
    assert s3.get_object_legal_hold(Bucket=locked_bucket, Key="record.txt")["LegalHold"]["Status"] == "ON"
    assert os.getxattr(f, "user.zos.legal_hold") == b"ON"
    assert {"user.zos.retention", "user.zos.legal_hold"} <= set(os.listxattr(f))
    assert xattr_error(os.setxattr, f, "user.zos.legal_hold", b"MAYBE") == errno.EINVAL
    assert xattr_error(os.setxattr, f, "user.zos.retention", b"FOREVER 2030-01-01") == errno.EINVAL
    os.setxattr(f, "user.zos.legal_hold", b"OFF")
    # GOVERNANCE may be changed by the mount's owner with bypass_governance;
    # shortening COMPLIANCE retention is refused by the service even so: EPERM.
    os.setxattr(f, "user.zos.retention", f"COMPLIANCE {until:%Y-%m-%dT%H:%M:%SZ}".encode())
    shorter = until - dt.timedelta(hours=1)
    assert xattr_error(os.setxattr, f, "user.zos.retention", f"COMPLIANCE {shorter:%Y-%m-%dT%H:%M:%SZ}".encode()) == errno.EPERM
    assert "COMPLIANCE retention cannot be shortened" in mnt.log_text()


def test_rsync_xattrs_round_trip(mnt: ZosfsMount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(5000))
    os.setxattr(src / "a.txt", "user.origin", b"local")
    os.setxattr(src / "sub" / "b.bin", "user.checksum", b"1234")
    os.setxattr(src / "sub", "user.dirnote", b"d")
    subprocess.run(["rsync", "-aX", f"{src}/", f"{mnt.path}/copy/"], check=True)
    back = tmp_path / "back"
    subprocess.run(["rsync", "-aX", f"{mnt.path}/copy/", f"{back}/"], check=True)
    for rel in ("a.txt", "sub", "sub/b.bin"):
        a, b = src / rel, back / rel
        assert {n: os.getxattr(a, n) for n in os.listxattr(a)} == {n: os.getxattr(b, n) for n in os.listxattr(b)}, rel
        if a.is_file():
            assert a.read_bytes() == b.read_bytes()
            assert a.stat().st_mode == b.stat().st_mode
            assert int(a.stat().st_mtime) == int(b.stat().st_mtime)


def test_held_or_retained_files_cannot_be_removed_overwritten_or_renamed(make_mount, locked_bucket: str, s3) -> None:
    mnt = make_mount(locked_bucket)
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    held, retained = mnt.path / "held.txt", mnt.path / "retained.txt"
    held.write_text("on hold")
    retained.write_text("retained")
    os.setxattr(held, "user.zos.legal_hold", b"ON")
    os.setxattr(retained, "user.zos.retention", f"GOVERNANCE {until:%Y-%m-%dT%H:%M:%SZ}".encode())
    for f, body in ((held, b"on hold"), (retained, b"retained")):
        with pytest.raises(PermissionError):
            f.unlink()
        with pytest.raises(PermissionError):
            f.write_text("overwritten")
        with pytest.raises(PermissionError):
            with open(f, "a") as out:
                out.write("appended")
        with pytest.raises(PermissionError):
            os.rename(f, mnt.path / "elsewhere")
        assert f.read_bytes() == body
        key = f.name
        assert s3.get_object(Bucket=locked_bucket, Key=key)["Body"].read() == body
        versions = s3.list_object_versions(Bucket=locked_bucket, Prefix=key)
        assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")
    log = mnt.log_text()
    assert "legal hold" in log and "retention" in log
    os.setxattr(held, "user.zos.legal_hold", b"OFF")
    held.unlink()  # released: now it can go
    assert not held.exists()
