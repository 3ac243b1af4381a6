"""ZOS features as files (issue 22): share links and upload forms, storage
classes, per-directory lifecycle rules, `zosfs restore` and `zosfs check`'s
table; on real mounts against the local RGW, links fetched with curl."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount, wait_until
from tests.support.rgw import LC_DAY_SECONDS, MAIN_USER, LocalRGW

ZOSFS = shutil.which("zosfs", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


def curl(*args: str) -> tuple[int, bytes]:
    """HTTP status and body of a curl request (no credentials of any kind)."""
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True,
                         timeout=30, check=True, env={"PATH": os.environ["PATH"]}).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


def xattr_error(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def getfattr_dump(path: Path) -> str:
    return subprocess.run(["getfattr", "-d", "-m", "-", "--absolute-names", str(path)],
                          capture_output=True, text=True, check=True).stdout


# -- share links --------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["v4", "v2"])
def test_share_link_fetches_the_bytes_then_expires(make_mount, bucket: str, signature: str) -> None:
    m = make_mount(bucket, options={"url_expiry": "6s", "signature": signature})
    f = m.path / "report.txt"
    f.write_bytes(b"quarterly numbers\n")
    url = subprocess.run(["getfattr", "--only-values", "-n", "user.zos.url", str(f)],
                         capture_output=True, text=True, check=True).stdout
    assert url.startswith(f"{m.endpoint}/{bucket}/report.txt?")
    assert ("X-Amz-Signature=" in url) if signature == "v4" else ("Signature=" in url and "Expires=" in url)
    assert curl(url) == (200, b"quarterly numbers\n")
    assert "user.zos.url" not in getfattr_dump(f)
    assert "user.zos.url" not in os.listxattr(f)
    time.sleep(7)
    status, body = curl(url)
    assert status == 403 and b"AccessDenied" in body
    log = m.log_text()
    assert "share link made for 'report.txt'" in log
    assert MAIN_USER.secret_key not in log and url.split("ignature=")[1][:20] not in log


def test_share_link_expiry_is_bounded(rgw: LocalRGW, bucket: str, tmp_path: Path) -> None:
    result = subprocess.run([ZOSFS, bucket, str(tmp_path), "-o", f"endpoint={rgw.endpoint},url_expiry=8d"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "at most 7d" in result.stderr


def test_upload_form_uploads_into_the_directory_only(mnt: ZosfsMount, tmp_path: Path, s3) -> None:
    inbox = mnt.path / "inbox"
    inbox.mkdir()
    form = json.loads(os.getxattr(inbox, "user.zos.upload_form"))
    assert form["key_prefix"] == "inbox/" and form["url"] == f"{mnt.endpoint}/{mnt.bucket}"
    local = tmp_path / "photo.jpg"
    local.write_bytes(b"not really a jpeg")
    fields = [arg for k, v in form["fields"].items() for arg in ("-F", f"{k}={v}")]
    status, body = curl(form["url"], *fields, "-F", f"file=@{local}")
    assert status in (200, 201, 204), body
    assert s3.get_object(Bucket=mnt.bucket, Key="inbox/photo.jpg")["Body"].read() == b"not really a jpeg"
    # The mount sees it once its listing of inbox/ and the kernel's negative
    # lookup have expired (dir_cache_ttl, negative_timeout: 5 s each).
    assert wait_until(lambda: (inbox / "photo.jpg").exists(), timeout=15)
    assert (inbox / "photo.jpg").read_bytes() == b"not really a jpeg"
    outside = [arg for k, v in form["fields"].items() for arg in ("-F", f"{k}={'elsewhere/x' if k == 'key' else v}")]
    status, _ = curl(form["url"], *outside, "-F", f"file=@{local}")
    assert status == 403
    assert "Contents" not in s3.list_objects_v2(Bucket=mnt.bucket, Prefix="elsewhere/")
    assert xattr_error(os.getxattr, inbox / "photo.jpg", "user.zos.upload_form") == errno.ENODATA
    assert xattr_error(os.getxattr, inbox, "user.zos.url") == errno.ENODATA
    assert "user.zos.upload_form" not in getfattr_dump(inbox)


# -- storage classes ----------------------------------------------------------------


def test_storage_class_option_applies_to_new_objects(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket, options={"storage_class": "STANDARD_IA"})
    (m.path / "appended.log").write_bytes(b"a" * 1000)  # created by append upload
    with open(m.path / "appended.log", "ab") as f:
        f.write(b"b" * 10)  # a later append carries no class: the object keeps its own
    s3.put_object(Bucket=bucket, Key="plain", Body=b"old")
    (m.path / "plain").write_bytes(b"new")  # a rewrite of a Normal object: one PUT
    big = os.urandom(17 * 2**20)  # above rewrite_threshold (16M): rebuilt by multipart upload
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    with open(m.path / "big", "r+b") as f:
        f.seek(9 * 2**20)
        f.write(b"changed")
    for key in ("appended.log", "plain", "big"):
        assert s3.head_object(Bucket=bucket, Key=key).get("StorageClass") == "STANDARD_IA", key
    assert (m.path / "appended.log").read_bytes() == b"a" * 1000 + b"b" * 10
    big_now = big[: 9 * 2**20] + b"changed" + big[9 * 2**20 + 7 :]
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big_now
    assert s3.get_object(Bucket=bucket, Key="appended.log")["Body"].read() == b"a" * 1000 + b"b" * 10


def test_setting_storage_class_keeps_data_metadata_tags_acl_and_appendability(mnt: ZosfsMount, s3) -> None:
    f = mnt.path / "keep.log"
    with open(f, "ab") as out:  # (a log: made through O_APPEND, by append upload)
        out.write(b"first line\n")
    os.chmod(f, 0o640)
    os.setxattr(f, "user.zos.tag.team", b"ops")
    os.setxattr(f, "user.zos.acl", b"public-read")
    os.setxattr(f, "user.note", b"kept")
    assert os.getxattr(f, "user.zos.object_type") == b"appendable"
    meta_before = s3.head_object(Bucket=mnt.bucket, Key="keep.log")["Metadata"]
    os.setxattr(f, "user.zos.storage_class", b"STANDARD_IA")
    head = s3.head_object(Bucket=mnt.bucket, Key="keep.log")
    assert head.get("StorageClass") == "STANDARD_IA"
    assert head["Metadata"] == meta_before
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="keep.log")["TagSet"] == [{"Key": "team", "Value": "ops"}]
    grants = s3.get_object_acl(Bucket=mnt.bucket, Key="keep.log")["Grants"]
    assert any(g["Permission"] == "READ" and g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    assert os.getxattr(f, "user.zos.storage_class") == b"STANDARD_IA"
    assert os.getxattr(f, "user.zos.object_type") == b"appendable"
    assert os.stat(f).st_mode & 0o777 == 0o640 and os.getxattr(f, "user.note") == b"kept"
    with open(f, "ab") as out:
        out.write(b"second line\n")
    assert f.read_bytes() == b"first line\nsecond line\n"
    assert s3.get_object(Bucket=mnt.bucket, Key="keep.log")["Body"].read() == b"first line\nsecond line\n"
    assert s3.head_object(Bucket=mnt.bucket, Key="keep.log").get("StorageClass") == "STANDARD_IA"
    os.chmod(f, 0o600)  # a metadata change keeps the class too
    assert s3.head_object(Bucket=mnt.bucket, Key="keep.log").get("StorageClass") == "STANDARD_IA"
    os.rename(f, mnt.path / "moved.log")  # and so does a rename (RGW's copy alone would not)
    assert s3.head_object(Bucket=mnt.bucket, Key="moved.log").get("StorageClass") == "STANDARD_IA"
    assert xattr_error(os.setxattr, mnt.path / "moved.log", "user.zos.storage_class", b"COLD") == errno.EINVAL
    d = mnt.path / "d"
    d.mkdir()
    assert xattr_error(os.setxattr, d, "user.zos.storage_class", b"GLACIER") == errno.EISDIR


def test_restore_command(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "cold").mkdir()
    (mnt.path / "cold" / "a.bin").write_bytes(b"a")
    (mnt.path / "cold" / "b.bin").write_bytes(b"b")
    os.setxattr(mnt.path / "cold" / "a.bin", "user.zos.storage_class", b"GLACIER")
    assert s3.head_object(Bucket=mnt.bucket, Key="cold/a.bin").get("StorageClass") == "GLACIER"
    result = subprocess.run([ZOSFS, "restore", "-r", str(mnt.path / "cold"), "--days", "2"],
                            capture_output=True, text=True, timeout=60)
    assert "b.bin: not archived (STANDARD), skipped" in result.stdout
    # RGW 16.2 has no archive tier: it answers RestoreObject with NotImplemented.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 restore(s) requested, 1 skipped, 1 failed" in result.stdout
    assert result.stderr.strip().splitlines() == [f"zosfs: {mnt.path / 'cold' / 'a.bin'}: Operation not supported"]
    assert "restore of 'cold/a.bin' refused" in mnt.log_text()
    nodir = subprocess.run([ZOSFS, "restore", str(mnt.path / "cold"), "--days", "1"], capture_output=True, text=True)
    assert nodir.returncode == 1 and "use -r" in nodir.stderr


# -- lifecycle ------------------------------------------------------------------------


def lifecycle_ids(s3, bucket: str) -> set[str]:
    try:
        return {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    except s3.exceptions.ClientError as err:
        assert err.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return set()


def test_lifecycle_rules_per_directory(rgw: LocalRGW, mnt: ZosfsMount, s3) -> None:
    other = {"ID": "someone-else", "Filter": {"Prefix": "archive/"}, "Status": "Enabled", "Expiration": {"Days": 365}}
    s3.put_bucket_lifecycle_configuration(Bucket=mnt.bucket, LifecycleConfiguration={"Rules": [other]})
    logs, keep = mnt.path / "logs", mnt.path / "keep"
    logs.mkdir()
    keep.mkdir()
    os.setxattr(logs, "user.zos.expire", b"1d")
    os.setxattr(logs, "user.zos.transition", b"STANDARD_IA:30d")
    assert os.getxattr(logs, "user.zos.expire") == b"1d"
    assert os.getxattr(logs, "user.zos.transition") == b"STANDARD_IA:30d"
    assert xattr_error(os.getxattr, keep, "user.zos.expire") == errno.ENODATA
    assert lifecycle_ids(s3, mnt.bucket) == {"someone-else", "zosfs-expire:logs/", "zosfs-transition:logs/"}
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=mnt.bucket)["Rules"]}
    assert rules["someone-else"]["Expiration"] == {"Days": 365}
    assert rules["zosfs-expire:logs/"]["Filter"] == {"Prefix": "logs/"}
    (logs / "old.log").write_text("x")
    (keep / "old.log").write_text("x")
    time.sleep(2 * LC_DAY_SECONDS)  # two lifecycle days of the test server
    rgw.process_lifecycle()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=mnt.bucket).get("Contents", [])}
    assert "logs/old.log" not in keys and "keep/old.log" in keys
    # The directory's marker object is under the prefix too: the emptied
    # directory goes with its files (README: Lifecycle rules per directory).
    assert "logs/" not in keys and not logs.exists()
    logs.mkdir()
    os.removexattr(logs, "user.zos.expire")
    assert lifecycle_ids(s3, mnt.bucket) == {"someone-else", "zosfs-transition:logs/"}
    assert xattr_error(os.removexattr, logs, "user.zos.expire") == errno.ENODATA
    os.removexattr(logs, "user.zos.transition")
    assert lifecycle_ids(s3, mnt.bucket) == {"someone-else"}
    s3.delete_bucket_lifecycle(Bucket=mnt.bucket)
    os.setxattr(keep, "user.zos.expire", b"7")
    os.removexattr(keep, "user.zos.expire")
    assert lifecycle_ids(s3, mnt.bucket) == set()  # the last rule gone: no configuration left
    assert xattr_error(os.setxattr, keep / "old.log", "user.zos.expire", b"1d") == errno.ENOTDIR
    assert xattr_error(os.getxattr, keep / "old.log", "user.zos.expire") == errno.ENODATA
    assert xattr_error(os.setxattr, keep, "user.zos.expire", b"soon") == errno.EINVAL
    assert xattr_error(os.setxattr, keep, "user.zos.transition", b"STANDARD:3d") == errno.EINVAL
    assert "user.zos.expire" not in getfattr_dump(keep)


# -- zosfs check ------------------------------------------------------------------------


def run_check(endpoint: str, bucket: str) -> tuple[dict[str, str], str]:
    """`zosfs check`'s table as {capability: yes/no/?}, and its whole output."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=MAIN_USER.access_key, AWS_SECRET_ACCESS_KEY=MAIN_USER.secret_key)
    result = subprocess.run([ZOSFS, "check", bucket, "-o", f"endpoint={endpoint}"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert MAIN_USER.secret_key not in result.stdout + result.stderr
    rows = {}
    for line in result.stdout.split("capability", 1)[1].splitlines()[1:]:
        name, _, rest = line.partition("  ")
        rows[name.strip()] = rest.split()[0]
    return rows, result.stdout


def test_check_prints_the_capability_table(rgw: LocalRGW, bucket: str, s3) -> None:
    rows, out = run_check(rgw.endpoint, bucket)
    assert rows == {"ListObjects V2": "yes", "versioning": "no", "object lock": "no", "ListObjectVersions": "yes",
                    "lifecycle rules": "yes", "append upload": "yes", "image processing": "no",
                    "presigned URLs": "yes"}
    assert "x-zos-process ignored" in out
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)  # its test object is gone


def test_check_in_a_versioned_bucket(rgw: LocalRGW, versioned_bucket: str) -> None:
    rows, _ = run_check(rgw.endpoint, versioned_bucket)
    assert (rows["versioning"], rows["ListObjectVersions"], rows["append upload"], rows["presigned URLs"]) == (
        "yes", "yes", "no", "yes")
