"""Close-to-open across mounts: two real mounts of one bucket.

What a user checks: a file written and closed on mount A reads, on mount B,
as its new content as soon as B opens it, whatever B had cached (block
cache, kernel page cache, kernel attributes); and what that costs B: one
request per open (the daemon's own request counters), no re-download of an
unchanged file.
"""

from __future__ import annotations

import mmap
import os
import random
import subprocess
from pathlib import Path
from typing import Any

from tests.support.mount import ZosfsMount

KiB = 1024
MiB = 1024 * KiB

# Sizes around the edges that matter: empty, tiny, a page, the open's
# one-GET limit (1 MiB), a block (1 MiB here), several blocks.
SIZES = [0, 1, 100, 4095, 4096, 4097, 64 * KiB + 3, MiB - 1, MiB, MiB + 1, 3 * MiB + 5]


def requests(m: ZosfsMount) -> dict[str, int]:
    """Requests the mount has sent so far, by operation."""
    return {op: int(v["count"]) for op, v in m.stats()["requests"].items()}


def sent_since(m: ZosfsMount, before: dict[str, int]) -> dict[str, int]:
    after = requests(m)
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


def read_as_user_would(path: Path, size: int) -> bytes:
    """open, fstat (the size `tail`, `mmap` and `cp` trust), read to EOF;
    and the same bytes by mmap."""
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == size, "fstat after open shows another version's size"
        chunks = []
        while piece := os.read(fd, 128 * KiB):
            chunks.append(piece)
        data = b"".join(chunks)
        if size:
            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped:
                assert mapped[:] == data, "mmap shows other bytes than read()"
        return data
    finally:
        os.close(fd)


def test_file_closed_on_one_mount_is_new_on_the_other_at_once(bucket: str, make_mount: Any) -> None:
    """50 rounds: write and close on A, open on B at once: the new content,
    every time, with B holding the previous version in every cache; and B
    sends one request per open (a GET that also brings a small file's
    bytes, or a HEAD for an empty or large file, then the large file's GETs)."""
    # The change feed off: this counts what an open itself costs. (With the
    # feed, A's change also makes B forget the file's attributes, and the
    # kernel's getattr before the open costs a HEAD of its own: README.)
    a = make_mount(bucket, options={"block_size": "1M", "change_feed": "off"})
    b = make_mount(bucket, options={"block_size": "1M", "change_feed": "off"})
    rng = random.Random(20)
    previous = 5
    (a.path / "f").write_bytes(b"first")
    assert (b.path / "f").read_bytes() == b"first"
    for round_ in range(50):
        size = SIZES[round_ % len(SIZES)] if round_ < len(SIZES) else rng.choice(SIZES)
        data = rng.randbytes(size)
        (a.path / "f").write_bytes(data)  # closed: stored
        before = requests(b)
        got = read_as_user_would(b.path / "f", size)
        assert got == data, f"round {round_}: {size} bytes written on A, B read {len(got)} other bytes"
        sent = sent_since(b, before)
        if 0 < size <= MiB and previous <= MiB:
            assert sent == {"GetObject": 1}, f"round {round_} ({size} bytes): {sent}"
        elif 0 < size <= MiB:
            # The check is chosen by the size last seen: a file that was
            # large is checked by a HEAD, then read by a GET.
            assert sent == {"HeadObject": 1, "GetObject": 1}, f"round {round_} ({size} bytes): {sent}"
        elif size == 0 and 0 < previous <= MiB:
            # The documented exception: the ranged GET is refused (416) by
            # an object that became empty; a HEAD then reads it.
            assert sent == {"GetObject": 1, "HeadObject": 1}, f"round {round_} ({size} bytes): {sent}"
        else:
            # Empty, or larger than one GET of the open: the check is a HEAD
            # (or the GET of the first block, where the file was small
            # before), and the blocks are fetched once each.
            blocks = -(-size // MiB)
            assert set(sent) <= {"GetObject", "HeadObject"} and sent.get("HeadObject", 0) <= 1, sent
            assert sum(sent.values()) == blocks + sent.get("HeadObject", 0), f"round {round_} ({size} bytes): {sent}"
        previous = size
    # The same content once more, by a shell tool.
    assert subprocess.run(["cat", str(b.path / "f")], capture_output=True, check=True).stdout == data
    (b.path / "f").unlink()


def test_unchanged_file_reopened_costs_one_small_request_and_no_bytes(bucket: str, make_mount: Any) -> None:
    a = make_mount(bucket)
    b = make_mount(bucket)
    small, large = os.urandom(10 * KiB), os.urandom(2 * MiB + 7)
    (a.path / "small").write_bytes(small)
    (a.path / "large").write_bytes(large)
    assert (b.path / "small").read_bytes() == small
    assert (b.path / "large").read_bytes() == large
    for name, want, op in (("small", small, "GetObject"), ("large", large, "HeadObject")):
        before_bytes = b.stats()["requests"][op]["bytes"]
        before = requests(b)
        assert (b.path / name).read_bytes() == want
        assert sent_since(b, before) == {op: 1}, name  # If-None-Match: 304, page cache kept
        assert b.stats()["requests"][op]["bytes"] == before_bytes, name
    for name in ("small", "large"):
        (b.path / name).unlink()


def test_file_grown_elsewhere_is_read_whole_after_a_recent_stat(bucket: str, make_mount: Any) -> None:
    """B's kernel holds the old size (stat just now, within attr_timeout):
    the open still reads the grown file to its new end (cat, tail -c)."""
    a = make_mount(bucket)
    b = make_mount(bucket, options={"attr_timeout": "60", "entry_timeout": "60"})
    (a.path / "log").write_bytes(b"one\n")
    assert (b.path / "log").read_bytes() == b"one\n"
    assert os.stat(b.path / "log").st_size == 4
    with open(a.path / "log", "ab") as f:
        f.write(b"two\n")
    assert subprocess.run(["cat", str(b.path / "log")], capture_output=True, check=True).stdout == b"one\ntwo\n"
    with open(a.path / "log", "ab") as f:
        f.write(b"three\n")
    assert subprocess.run(["tail", "-c", "6", str(b.path / "log")], capture_output=True, check=True).stdout == b"three\n"
    (a.path / "log").write_bytes(b"x")  # shrunk
    assert subprocess.run(["cat", str(b.path / "log")], capture_output=True, check=True).stdout == b"x"
    (a.path / "log").unlink()


def test_open_revalidate_ttl_trusts_recent_attributes(bucket: str, make_mount: Any) -> None:
    """The documented relaxation: with open_revalidate=ttl an open within
    attr_timeout of the last check sends nothing (and may read the old version)."""
    a = make_mount(bucket)
    b = make_mount(bucket, options={"open_revalidate": "ttl", "attr_timeout": "60", "entry_timeout": "60"})
    (a.path / "f").write_bytes(b"old")
    assert (b.path / "f").read_bytes() == b"old"
    (a.path / "f").write_bytes(b"new")
    before = requests(b)
    assert (b.path / "f").read_bytes() == b"old"
    assert sent_since(b, before) == {}
    (a.path / "f").unlink()


def test_file_deleted_elsewhere_is_gone_at_the_next_open(bucket: str, make_mount: Any) -> None:
    """Deleted on A: B's next open says ENOENT at once, though B read it just before."""
    a = make_mount(bucket)
    b = make_mount(bucket, options={"attr_timeout": "60", "entry_timeout": "60"})
    (a.path / "f").write_bytes(b"data")
    assert (b.path / "f").read_bytes() == b"data"
    (a.path / "f").unlink()
    a.unmount()  # its queued delete is sent
    try:
        (b.path / "f").read_bytes()
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("B opened a file deleted on A")
