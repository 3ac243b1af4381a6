"""The bucket's metadata index: a first mount lists a large directory
without a HEAD per file, and the index never makes a listing wrong."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.mount import ZosfsMount

META = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345", "mtime": "1700000000"}
FILES = 80  # above the index's threshold (64 files)


def put_dir(s3: Any, bucket: str, prefix: str, n: int = FILES) -> list[str]:
    keys = [f"{prefix}f{i:03d}" for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x" * 10, Metadata=META), keys))
    return keys


def heads(m: ZosfsMount) -> int:
    return int(m.stats()["requests"].get("HeadObject", {}).get("count", 0))


def ls_rows(path: Any) -> dict[str, str]:
    """name -> 'mode uid gid size' as `ls -ln` shows them."""
    out = subprocess.run(["ls", "-ln", str(path)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        f = line.split()
        rows[f[-1]] = " ".join([f[0], f[2], f[3], f[4]])
    return rows


def test_a_new_mount_lists_from_the_index_and_sees_objects_changed_behind_it(make_mount, bucket: str, s3) -> None:
    put_dir(s3, bucket, "big/")
    first = make_mount(bucket)
    assert set(ls_rows(first.path / "big").values()) == {"-rw-r----- 1234 2345 10"}
    assert heads(first) >= FILES
    first.unmount()  # writes the index of big/ (at the latest)
    index = s3.get_object(Bucket=bucket, Key=".zosfs/index/big/.index")["Body"].read()
    assert len(json.loads(zlib.decompress(index))["entries"]) == FILES

    # Behind the index: metadata replaced in place (RGW keeps the ETag of
    # such a copy), and content replaced.
    s3.copy_object(Bucket=bucket, Key="big/f007", CopySource={"Bucket": bucket, "Key": "big/f007"},
                   MetadataDirective="REPLACE",
                   Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "77", "gid": "88", "mtime": "1700000000"})
    s3.put_object(Bucket=bucket, Key="big/f011", Body=b"longer body", Metadata={**META, "uid": "99"})

    second = make_mount(bucket)  # another cache_dir: as a new host
    rows = ls_rows(second.path / "big")
    assert len(rows) == FILES
    assert rows["f007"] == "-rw------- 77 88 10"
    assert rows["f011"] == "-rw-r----- 99 2345 11"
    assert all(v == "-rw-r----- 1234 2345 10" for k, v in rows.items() if k not in ("f007", "f011"))
    assert heads(second) <= 6, f"{heads(second)} HEADs: the index was not used"
    # The reserved prefix is no directory of the mount.
    assert ".zosfs" not in os.listdir(second.path)
    assert not os.path.exists(second.path / ".zosfs")


def test_a_corrupt_or_foreign_index_is_ignored_with_a_log_line(make_mount, bucket: str, s3) -> None:
    put_dir(s3, bucket, "bad/")
    put_dir(s3, bucket, "other/")
    s3.put_object(Bucket=bucket, Key=".zosfs/index/bad/.index", Body=b"\x00garbage, not an index")
    foreign = {"format": "zosfs-meta-index-1", "prefix": "elsewhere/",
               "entries": {"f001": ["x", 0, {"mode": str(stat.S_IFREG | 0o777)}, None, False]}}
    s3.put_object(Bucket=bucket, Key=".zosfs/index/other/.index", Body=zlib.compress(json.dumps(foreign).encode()))
    m = make_mount(bucket)
    for d in ("bad", "other"):
        rows = ls_rows(m.path / d)
        assert len(rows) == FILES and set(rows.values()) == {"-rw-r----- 1234 2345 10"}, d
    log = m.log_text()
    assert "ignoring metadata index '.zosfs/index/bad/.index': not readable" in log
    assert "ignoring metadata index '.zosfs/index/other/.index': not a zosfs index of this directory" in log


def test_meta_index_off_neither_writes_nor_reads_one(make_mount, bucket: str, s3) -> None:
    put_dir(s3, bucket, "plain/")
    m = make_mount(bucket, options={"meta_index": "off"})
    assert set(ls_rows(m.path / "plain").values()) == {"-rw-r----- 1234 2345 10"}
    m.unmount()
    assert s3.list_objects_v2(Bucket=bucket, Prefix=".zosfs/index/").get("KeyCount", 0) == 0


def test_rmdir_removes_the_directory_index(make_mount, bucket: str, s3) -> None:
    keys = put_dir(s3, bucket, "gone/")
    m = make_mount(bucket)
    ls_rows(m.path / "gone")
    m.unmount()
    assert s3.list_objects_v2(Bucket=bucket, Prefix=".zosfs/index/gone/").get("KeyCount", 0) == 1
    m = make_mount(bucket)
    subprocess.run(["rm", "-r", str(m.path / "gone")], check=True, timeout=120)
    m.unmount()
    assert s3.list_objects_v2(Bucket=bucket, Prefix="gone/").get("KeyCount", 0) == 0, keys[:1]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=".zosfs/index/").get("KeyCount", 0) == 0


def test_an_index_at_the_old_prefix_is_ignored(make_mount, bucket: str, s3) -> None:
    """Indexes of zosfs versions before the one reserved prefix (`.zosfs-index/`)
    are neither read nor hidden: an ordinary directory one may delete."""
    put_dir(s3, bucket, "big/")
    first = make_mount(bucket)
    ls_rows(first.path / "big")
    first.unmount()
    s3.copy_object(Bucket=bucket, Key=".zosfs-index/big/.index", CopySource={"Bucket": bucket, "Key": ".zosfs/index/big/.index"})
    s3.delete_object(Bucket=bucket, Key=".zosfs/index/big/.index")
    second = make_mount(bucket)
    assert set(ls_rows(second.path / "big").values()) == {"-rw-r----- 1234 2345 10"}
    assert heads(second) >= FILES, "the index at the old prefix was used"
    assert "ignoring metadata index" not in second.log_text()
    assert os.listdir(second.path / ".zosfs-index") == ["big"]
    subprocess.run(["rm", "-r", str(second.path / ".zosfs-index")], check=True)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=".zosfs-index/").get("KeyCount", 0) == 0
