"""Writes feed the block cache, on real mounts.

What a user checks: a file written through the mount is read back without a
single GET byte (`zosfs stats --json` request counters), also after a
remount with the same disk cache; so is a file appended to and read whole,
and a file rewritten in place; an object replaced by another client
afterwards is read with its new bytes, never the cached ones.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from tests.fs.test_disk_cache import ATTR_TIMEOUT, block_files, get_bytes, read_all
from tests.support.mount import ZosfsMount, drop_page_cache, wait_until

MiB = 1024 * 1024


def options(cache: Path) -> dict[str, str]:
    # (The default block size, 8M, so that append chunks (4M, 4M, 4M, 6M,
    # 9M...) straddle blocks.)
    return {"disk_cache": str(cache), "attr_timeout": str(ATTR_TIMEOUT), "entry_timeout": str(ATTR_TIMEOUT)}


def write_file(path: Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        for i in range(0, len(data), MiB):
            f.write(data[i : i + MiB])


def wait_fed(m: ZosfsMount, nbytes: int) -> dict[str, Any]:
    """Until what was uploaded is in the cache, and on disk (written, and
    renamed to the object's ETag: no file change queued): the numbers."""
    def done() -> bool:
        s = m.stats()
        fed, disk = s["cache"]["from_writes"], s["disk_cache"]
        return (fed["pending"] == 0 and fed["stored_bytes"] >= nbytes and disk["bytes_written"] >= nbytes
                and disk["queued"] == 0)
    assert wait_until(done, timeout=30), m.stats()["cache"]["from_writes"]
    return m.stats()


def read_back(m: ZosfsMount, name: str, data: bytes | bytearray) -> int:
    """Read `name` through the mount with the page cache dropped and check
    its bytes: how many bytes of GETs that read cost."""
    before = get_bytes(m)
    drop_page_cache()
    assert read_all(m.path / name) == data, f"{name} read back wrong"
    return get_bytes(m) - before


def test_a_file_written_is_read_back_without_a_get_also_after_a_remount(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(11).randbytes(20 * MiB + 4321)
    m = make_mount(bucket, options=options(cache))
    write_file(m.path / "w.bin", data)
    etag = s3.head_object(Bucket=bucket, Key="w.bin")["ETag"].strip('"')
    stats = wait_fed(m, len(data))
    assert stats["cache"]["from_writes"]["stored_bytes"] == len(data)
    assert {p.name.split(".")[1] for p in block_files(cache)} == {etag}, "blocks not filed under the object's ETag"
    assert read_back(m, "w.bin", data) == 0, "reading back what was just written fetched it"
    assert m.unmount() == 0

    again = make_mount(bucket, options=options(cache))
    assert read_back(again, "w.bin", data) == 0, "reading back what was written before the remount fetched it"
    assert again.stats()["disk_cache"]["bytes_served"] >= len(data)

    # Replaced by another client: the new bytes, none of the cached ones.
    new = random.Random(12).randbytes(20 * MiB + 4321)
    s3.put_object(Bucket=bucket, Key="w.bin", Body=new)
    time.sleep(ATTR_TIMEOUT + 0.5)
    assert read_back(again, "w.bin", new) == len(new), "the new bytes were not all fetched"


def test_an_appended_file_is_read_whole_without_a_get(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    rng = random.Random(13)
    data = rng.randbytes(5 * MiB + 100)
    m = make_mount(bucket, options=options(cache))
    write_file(m.path / "log", data)
    wait_fed(m, len(data))
    for size in (3 * MiB + 33, 7, 9 * MiB + 1):
        more = rng.randbytes(size)
        write_file(m.path / "log", more, "ab")
        data += more
    head = s3.head_object(Bucket=bucket, Key="log")
    assert head["ContentLength"] == len(data)
    wait_fed(m, len(data))
    assert {p.name.split(".")[1] for p in block_files(cache)} == {head["ETag"].strip('"')}
    assert read_back(m, "log", data) == 0, "reading an appended file back fetched some of it"
    assert m.unmount() == 0

    again = make_mount(bucket, options=options(cache))
    assert read_back(again, "log", data) == 0


def test_a_file_rewritten_in_place_is_read_back_without_a_get(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    rng = random.Random(14)
    data = bytearray(rng.randbytes(9 * MiB + 5))
    m = make_mount(bucket, options=options(cache))
    write_file(m.path / "r.bin", bytes(data))
    wait_fed(m, len(data))
    patch = rng.randbytes(1000)
    with open(m.path / "r.bin", "r+b") as f:  # (a change below the end: the object is replaced by one PUT)
        f.seek(8 * MiB - 10)
        f.write(patch)
    data[8 * MiB - 10 : 8 * MiB - 10 + len(patch)] = patch
    head = s3.head_object(Bucket=bucket, Key="r.bin")
    assert s3.get_object(Bucket=bucket, Key="r.bin")["Body"].read() == data
    wait_fed(m, 2 * len(data))
    # (The old version's blocks are dropped: no one reads them any more.)
    assert {p.name.split(".")[1] for p in block_files(cache)} == {head["ETag"].strip('"')}
    assert read_back(m, "r.bin", data) == 0, "reading back a rewritten file fetched it"


def test_a_new_file_sent_by_multipart_is_read_back_without_a_get(bucket: str, s3: Any, make_mount,
                                                                  tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    # Past 16M, written fast, a new file leaves append mode, before its
    # first append (append_chunk 64M): it goes out in parts, freed from
    # staging as they are uploaded. (Appended bytes not yet copied into the
    # cache when a file leaves append mode are freed then, not cached.)
    m = make_mount(bucket, options={**options(cache), "multipart_threshold": "16M", "append_chunk": "64M"})
    data = random.Random(15).randbytes(60 * MiB + 77)
    write_file(m.path / "big.bin", data)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"].strip('"').endswith(f"-{-(-len(data) // (8 * MiB))}"), "not stored by multipart upload"
    assert "x-rgw-object-type" not in head["ResponseMetadata"]["HTTPHeaders"] or \
        head["ResponseMetadata"]["HTTPHeaders"]["x-rgw-object-type"] != "Appendable"
    wait_fed(m, len(data))
    assert {p.name.split(".")[1] for p in block_files(cache)} == {head["ETag"].strip('"')}
    assert read_back(m, "big.bin", data) == 0, "reading back a file sent by multipart upload fetched some of it"


def test_a_file_stored_by_put_is_read_back_without_a_get(versioned_bucket: str, s3: Any, make_mount,
                                                         tmp_path: Path) -> None:
    # (No appends in a versioned bucket: a new file is stored by one PUT.)
    cache = tmp_path / "dc"
    m = make_mount(versioned_bucket, options=options(cache))
    data = random.Random(16).randbytes(11 * MiB + 3)
    write_file(m.path / "p.bin", data)
    head = s3.head_object(Bucket=versioned_bucket, Key="p.bin")
    assert "-" not in head["ETag"]
    wait_fed(m, len(data))
    assert {p.name.split(".")[1] for p in block_files(cache)} == {head["ETag"].strip('"')}
    assert read_back(m, "p.bin", data) == 0, "reading back a file stored by PUT fetched it"


def test_only_a_files_first_cache_writes_bytes_are_copied(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    """A bulk write is copied only up to cache_writes: the rest is read back
    by GET (and the bytes are right either way)."""
    cache = tmp_path / "dc"
    data = random.Random(13).randbytes(20 * MiB + 99)
    m = make_mount(bucket, options={**options(cache), "cache_writes": "8M"})
    write_file(m.path / "bulk.bin", data)
    stats = wait_fed(m, 8 * MiB)
    assert stats["cache"]["from_writes"]["stored_bytes"] == 8 * MiB, stats["cache"]["from_writes"]
    assert read_back(m, "bulk.bin", data) == len(data) - 8 * MiB, "the first 8 MiB were not served from the cache"
