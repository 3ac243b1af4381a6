"""Walking a tree costs LISTs, not a HEAD per file; rm -r deletes in batches."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.mount import ZosfsMount

META = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "2345", "mtime": "1700000000"}


def put_tree(s3: Any, bucket: str, dirs: int, files: int, prefix: str = "tree/") -> list[str]:
    keys = [f"{prefix}d{d:02d}/f{f:04d}" for d in range(dirs) for f in range(files)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x" * 10, Metadata=META), keys))
    return keys


def requests(m: ZosfsMount) -> dict[str, int]:
    """Request counts by operation, from the mount's live stats."""
    stats = json.loads(os.getxattr(m.path, "user.zosfs.stats"))
    return {op: int(v["count"]) for op, v in stats["requests"].items()}


def test_find_needs_no_head_per_file_and_ls_l_still_shows_metadata(mnt: ZosfsMount, s3) -> None:
    keys = put_tree(s3, mnt.bucket, dirs=4, files=150)
    before = requests(mnt).get("HeadObject", 0)
    found = subprocess.run(["find", str(mnt.path / "tree"), "-type", "f"], capture_output=True, text=True, check=True)
    assert len(found.stdout.splitlines()) == len(keys)
    heads = requests(mnt).get("HeadObject", 0) - before
    assert heads <= 4 * 2 + 2, f"find sent {heads} HEADs for {len(keys)} files"
    # The attributes readdir guessed are not cached: stat shows the real ones.
    st = os.lstat(mnt.path / "tree" / "d01" / "f0007")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o640, 1234, 2345, 1700000000)
    listing = subprocess.run(["ls", "-ln", str(mnt.path / "tree" / "d02")], capture_output=True, text=True, check=True)
    rows = [r for r in listing.stdout.splitlines() if r.startswith("-")]
    assert len(rows) == 150 and all(r.startswith("-rw-r----- 1 1234 2345 10 ") for r in rows), rows[:3]


def test_a_symlink_unknown_to_readdir_is_found_on_stat(mnt: ZosfsMount, s3) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="links/target", Body=b"data")
    s3.put_object(Bucket=mnt.bucket, Key="links/ln", Body=b"target", Metadata={"mode": str(stat.S_IFLNK | 0o777)})
    assert sorted(os.listdir(mnt.path / "links")) == ["ln", "target"]
    assert os.path.islink(mnt.path / "links" / "ln")
    assert os.readlink(mnt.path / "links" / "ln") == "target"
    assert (mnt.path / "links" / "ln").read_bytes() == b"data"


def test_rm_r_deletes_in_batches_and_the_bucket_is_empty_when_it_returns(mnt: ZosfsMount, s3) -> None:
    keys = put_tree(s3, mnt.bucket, dirs=3, files=400, prefix="big/")
    (mnt.path / "big" / "made-here").mkdir()  # a marker too
    before = requests(mnt)
    subprocess.run(["rm", "-r", str(mnt.path / "big")], check=True, timeout=120)
    after = requests(mnt)
    assert s3.list_objects_v2(Bucket=mnt.bucket, Prefix="big/").get("KeyCount", 0) == 0
    batches = after.get("DeleteObjects", 0) - before.get("DeleteObjects", 0)
    singles = after.get("DeleteObject", 0) - before.get("DeleteObject", 0)
    assert batches <= len(keys) // 100, f"{batches} DeleteObjects for {len(keys)} files"
    assert singles <= 6  # directory markers, and the mount's first delete (sent at once: see deletes.py)
    assert not (mnt.path / "big").exists()


def test_a_name_deleted_and_made_again_keeps_the_new_file(mnt: ZosfsMount, s3) -> None:
    for round_ in range(5):
        f = mnt.path / "again.txt"
        f.write_text(f"version {round_}")
        f.unlink()
        f.write_text(f"new {round_}")
        assert f.read_text() == f"new {round_}"
    time.sleep(0.3)  # any queued delete has gone out by now
    assert s3.get_object(Bucket=mnt.bucket, Key="again.txt")["Body"].read() == b"new 4"


def test_unmount_sends_queued_deletes(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="gone.txt", Body=b"x")
    m = make_mount(bucket)
    os.unlink(m.path / "gone.txt")
    assert m.unmount() == 0
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed if not o["Key"].startswith(".zosfs/")] == []  # (the change feed stays)
