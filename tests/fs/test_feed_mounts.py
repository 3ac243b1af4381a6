"""The change feed between real mounts of one bucket: what one zosfs mount
creates, renames and deletes shows in `ls` on the others within 2 s with
default options, while changes by other tools (boto3) follow the timers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from tests.support.mount import ZosfsMount

SOON = 2.0  # the promise: another zosfs mount's change within 2 s


def appears(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `predicate()` held (polled every 20 ms), or None."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.02)


def listing(m: ZosfsMount, sub: str = "") -> list[str]:
    return sorted(os.listdir(m.path / sub))


def test_three_mounts_see_each_others_changes_within_two_seconds(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="d/old", Body=b"x")
    a, b, c = (make_mount(bucket) for _ in range(3))
    for m in (b, c):  # both have the directory cached
        assert listing(m, "d") == ["old"]
        assert not (m.path / "d" / "new").exists()
    waits: dict[str, list[float | None]] = {}

    def on_others(step: str, expected: list[str]) -> None:
        waits[step] = [appears(lambda m=m: listing(m, "d") == expected, SOON + 3) for m in (b, c)]

    (a.path / "d" / "new").write_bytes(b"hello")
    on_others("create", ["new", "old"])
    assert (b.path / "d" / "new").read_bytes() == b"hello"
    os.rename(a.path / "d" / "new", a.path / "d" / "renamed")
    on_others("rename", ["old", "renamed"])
    os.unlink(a.path / "d" / "renamed")
    on_others("delete", ["old"])
    assert os.stat(b.path / "d" / "old").st_size == 1
    (a.path / "d" / "old").write_bytes(b"new content")  # a change of content: a new size on the others
    waits["change"] = [appears(lambda m=m: os.stat(m.path / "d" / "old").st_size == 11, SOON + 3) for m in (b, c)]
    (c.path / "d" / "sub").mkdir()  # and from another mount, a directory
    waits["mkdir"] = [appears(lambda m=m: listing(m, "d") == ["old", "sub"], SOON + 3) for m in (a, b)]
    print(f"\nseconds until the other mounts' ls showed it: {waits}")
    assert all(w is not None and w < SOON for ws in waits.values() for w in ws), waits
    # stat of a name another mount deleted answers ENOENT at once, not after entry_timeout
    assert not (b.path / "d" / "renamed").exists()
    # the feed's own objects stay out of sight
    assert ".zosfs" not in listing(a) and ".zosfs" not in listing(b)
    stats = b.stats()["feed"]
    assert stats["records_read"] >= 4 and stats["invalidations"] >= 4, stats
    assert 0 < stats["max_lag"] < SOON, stats
    assert stats["disabled"] == ""
    assert set(b.stats()["revalidations"]) == {"checked", "changed", "gone"}
    assert b.stats()["feed"]["requests"]["GetObject"]["count"] > 0  # its polls, counted apart
    shown = subprocess.run([sys.executable, "-m", "zosfs", "stats", str(b.path)], capture_output=True, text=True,
                           check=True).stdout
    assert "change feed: lag" in shown and "revalidations: changed" in shown, shown


def test_changes_by_other_tools_follow_the_timers(make_mount, bucket: str, s3) -> None:
    a = make_mount(bucket, options={"dir_cache_ttl": "3", "negative_timeout": "3", "entry_timeout": "3",
                                    "attr_timeout": "3"})
    assert listing(a) == []
    s3.put_object(Bucket=bucket, Key="by-boto3", Body=b"x")
    took = appears(lambda: listing(a) == ["by-boto3"], 3 + 3)
    print(f"\na boto3 PUT showed after {took} s (dir_cache_ttl 3 s)")
    assert took is not None and took > 0.5  # the listing was cached: no feed record for it


def test_the_feed_not_the_timers_brings_the_change(make_mount, bucket: str) -> None:
    long = {"dir_cache_ttl": "60", "negative_timeout": "60", "entry_timeout": "60", "attr_timeout": "60"}
    a = make_mount(bucket, options=long)
    b = make_mount(bucket, options=long)
    off = make_mount(bucket, options={**long, "change_feed": "off"})
    for m in (b, off):
        assert listing(m) == []
    (a.path / "f").write_bytes(b"1")
    assert appears(lambda: listing(b) == ["f"], SOON) is not None
    assert listing(off) == []  # without the feed, the 60 s listing cache stands
    assert off.stats()["feed"] is None


def test_feed_is_off_in_a_versioned_bucket(make_mount, versioned_bucket: str, s3) -> None:
    a = make_mount(versioned_bucket)
    (a.path / "f").write_bytes(b"1")
    assert a.stats()["feed"] is None
    pages = s3.list_objects_v2(Bucket=versioned_bucket, Prefix=".zosfs/")
    assert pages.get("KeyCount", 0) == 0


def quiet(m: ZosfsMount) -> bool:
    """No record of another mount has arrived for longer than the feed's
    idle polling interval."""
    before = m.stats()["feed"]["records_read"]
    time.sleep(1.2)
    return m.stats()["feed"]["records_read"] == before


def test_a_file_rewritten_on_another_mount_costs_one_request_to_reopen(make_mount, bucket: str) -> None:
    """The feed's `change` record carries the version A stored (ETag, size,
    mode...): B takes it into the file's inode, so B's lookup (entry_timeout
    passed) and stat of the file send nothing, and `cat` costs the open's one
    conditional GET, which also brings the bytes; and they are the new ones."""
    n = 20
    a = make_mount(bucket)
    b = make_mount(bucket, options={"entry_timeout": "0.5"})
    (a.path / "x").mkdir()
    old = [os.urandom(100 + i) for i in range(n)]
    new = [os.urandom(100 + 2 * i) for i in range(n)]  # other bytes, other sizes
    for i, body in enumerate(old):
        (a.path / "x" / f"f{i}").write_bytes(body)
    # B hears of them (the directory's record makes B's kernel forget what it knew below it) ...
    assert appears(lambda: len(listing(b, "x")) == n and quiet(b), 2 * SOON + 5) is not None
    for i, body in enumerate(old):
        assert (b.path / "x" / f"f{i}").read_bytes() == body  # ... and reads them: it holds this version everywhere
    taken = b.stats()["feed"]["versions_taken"]
    for i, body in enumerate(new):
        (a.path / "x" / f"f{i}").write_bytes(body)
        os.chmod(a.path / "x" / f"f{i}", 0o600 + i % 8)
    assert appears(lambda: b.stats()["feed"]["versions_taken"] >= taken + 2 * n, 2 * SOON + 5) is not None, (
        taken, {k: v for k, v in b.stats()["feed"].items() if k != "requests"})
    time.sleep(0.6)  # past entry_timeout: the kernel looks each name up again
    os.stat(b.path / "x")  # (the directory's own revalidation, once: not what is counted here)
    before = {op: int(v["count"]) for op, v in b.stats()["requests"].items()}
    for i, body in enumerate(new):
        st = os.stat(b.path / "x" / f"f{i}")
        assert (st.st_size, st.st_mode & 0o777) == (len(body), 0o600 + i % 8), i
        assert (b.path / "x" / f"f{i}").read_bytes() == body, i
    after = {op: int(v["count"]) for op, v in b.stats()["requests"].items()}
    sent = {op: c - before.get(op, 0) for op, c in after.items() if c != before.get(op, 0)}
    assert sent == {"GetObject": n}, sent  # one request per file: the open's check, with the bytes
    for i in range(n):
        (a.path / "x" / f"f{i}").unlink()


def test_a_file_another_mount_just_made_is_opened_with_one_request(make_mount, bucket: str) -> None:
    """A name the feed just announced with its version: B's lookup needs no
    LIST or HEAD (within attr_timeout), the open's GET is all."""
    a = make_mount(bucket)
    b = make_mount(bucket)
    (a.path / "d").mkdir()
    assert appears(lambda: listing(b) == ["d"] and quiet(b), 2 * SOON + 5) is not None
    assert listing(b, "d") == []  # B knows the directory, and that it is empty
    taken = b.stats()["feed"]["versions_taken"]
    body = os.urandom(3000)
    (a.path / "d" / "new").write_bytes(body)
    assert appears(lambda: b.stats()["feed"]["versions_taken"] > taken, 2 * SOON + 5) is not None
    before = {op: int(v["count"]) for op, v in b.stats()["requests"].items()}
    assert (b.path / "d" / "new").read_bytes() == body
    assert os.stat(b.path / "d" / "new").st_size == len(body)
    assert listing(b, "d") == ["new"]
    after = {op: int(v["count"]) for op, v in b.stats()["requests"].items()}
    sent = {op: c - before.get(op, 0) for op, c in after.items() if c != before.get(op, 0)}
    assert sent == {"GetObject": 1}, sent
    (a.path / "d" / "new").unlink()
    assert appears(lambda: listing(b, "d") == [], SOON + 3) is not None  # the delete forgets what B heard
