"""The basics every user tries first, on a real mount."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.mount import ZosfsMount


def test_file_written_through_the_mount_is_an_object(mnt: ZosfsMount, s3) -> None:
    (mnt.path / "hello.txt").write_text("hello\n")
    body = s3.get_object(Bucket=mnt.bucket, Key="hello.txt")["Body"].read()
    assert body == b"hello\n"
    assert (mnt.path / "hello.txt").read_text() == "hello\n"


def test_objects_put_with_boto3_appear_as_files(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="dir/sub/data.bin", Body=b"x" * 1000)
    assert sorted(os.listdir(mnt.path)) == ["dir"]
    st = os.stat(mnt.path / "dir" / "sub" / "data.bin")
    assert st.st_size == 1000
    assert (mnt.path / "dir/sub/data.bin").read_bytes() == b"x" * 1000


def test_unmount_leaves_everything_in_the_bucket(mnt: ZosfsMount, s3, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (mnt.path / "blob").write_bytes(data)
    assert mnt.unmount() == 0
    assert s3.get_object(Bucket=mnt.bucket, Key="blob")["Body"].read() == data
