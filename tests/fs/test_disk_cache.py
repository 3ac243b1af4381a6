"""The persistent block cache on disk, on real mounts.

What a user checks: a file read once is read again after an unmount (or a
SIGKILL of the daemon) without a single GET byte; an object replaced by
another client is never served from its old blocks; an object that grew by
appends costs only its new bytes; the cache never holds more than its cap
on disk (by `du`); a damaged block file is fetched again, not returned; two
mounts never share one cache directory unsafely.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.mount import ZosfsMount, drop_page_cache, wait_until

MiB = 1024 * 1024
ATTR_TIMEOUT = 1.0
SMALL = {"cache_size": "4M", "block_size": "1M", "readahead": "4M", "attr_timeout": str(ATTR_TIMEOUT),
         "entry_timeout": str(ATTR_TIMEOUT)}


def disk_options(directory: Path, **more: str) -> dict[str, str]:
    return {**SMALL, "disk_cache": str(directory), **more}


def get_bytes(m: ZosfsMount) -> int:
    return int(m.stats()["requests"].get("GetObject", {}).get("bytes", 0))


def read_all(path: os.PathLike[str] | str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        out = bytearray()
        while piece := f.read(MiB):
            out += piece
        return bytes(out)


def block_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.blk"))


def wait_written(m: ZosfsMount, nbytes: int) -> None:
    """Until the daemon has written `nbytes` of blocks to its disk cache, and
    has no file change left to do."""
    def written() -> bool:
        dc = m.stats()["disk_cache"]
        return dc["bytes_written"] >= nbytes and dc["queued"] == 0
    assert wait_until(written, timeout=30), m.stats()["disk_cache"]


def wait_settled(m: ZosfsMount, nbytes: int, block: int) -> None:
    """Until every block of `nbytes` read is written to the disk cache or
    skipped (a block that arrives while the disk is behind stays in memory
    only: on a loaded machine, one of a burst may), with some written."""
    def settled() -> bool:
        dc = m.stats()["disk_cache"]
        return dc["bytes_written"] > 0 and dc["bytes_written"] + dc["skipped"] * block >= nbytes and dc["queued"] == 0
    assert wait_until(settled, timeout=30), m.stats()["disk_cache"]


def du(directory: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(directory)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0


def test_a_file_read_once_is_read_again_after_unmount_and_after_sigkill_without_a_get(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(1).randbytes(5 * MiB + 4321)
    other = random.Random(2).randbytes(3 * MiB + 17)
    s3.put_object(Bucket=bucket, Key="a.bin", Body=data)
    s3.put_object(Bucket=bucket, Key="b.bin", Body=other)

    first = make_mount(bucket, options=disk_options(cache))
    assert read_all(first.path / "a.bin") == data
    assert get_bytes(first) >= len(data)
    wait_written(first, len(data))
    assert first.unmount() == 0

    second = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(second.path / "a.bin") == data
    assert get_bytes(second) == 0, "a block already on disk was fetched again after a remount"
    assert second.stats()["disk_cache"]["bytes_served"] >= len(data)
    assert read_all(second.path / "b.bin") == other
    wait_written(second, len(other))
    second.kill()  # SIGKILL: no chance to tidy up

    third = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(third.path / "b.bin") == other
    assert read_all(third.path / "a.bin") == data
    assert get_bytes(third) == 0, "a block on disk was fetched again after SIGKILL"


def test_every_block_of_a_cold_read_far_larger_than_memory_ends_up_on_disk(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    """The read never waits for the disk, and still no block is left out:
    those memory evicts before the disk wrote them are written from the
    queue (24 MiB here, six times the memory cache, is within what the queue
    may hold on its own), so a remount reads the whole file without a GET."""
    cache = tmp_path / "dc"
    data = random.Random(3).randbytes(24 * MiB)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    first = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(first.path / "big.bin") == data
    wait_written(first, len(data))
    stats = first.stats()["disk_cache"]
    assert stats["skipped"] == 0 and stats["blocks"] == 24, stats
    assert first.unmount() == 0

    second = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(second.path / "big.bin") == data
    assert get_bytes(second) == 0, "a block of the cold read was not on disk after the remount"
    assert second.stats()["disk_cache"]["bytes_served"] >= len(data)


def test_a_replaced_object_is_never_served_from_its_old_blocks(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    old = random.Random(3).randbytes(3 * MiB)
    s3.put_object(Bucket=bucket, Key="f.bin", Body=old)
    old_etag = s3.head_object(Bucket=bucket, Key="f.bin")["ETag"].strip('"')
    m = make_mount(bucket, options=disk_options(cache))
    assert read_all(m.path / "f.bin") == old
    wait_written(m, len(old))
    assert any(old_etag in p.name for p in block_files(cache))

    # Replaced while mounted: the next open after attr_timeout has the new bytes only.
    new = random.Random(4).randbytes(3 * MiB)
    s3.put_object(Bucket=bucket, Key="f.bin", Body=new)
    time.sleep(ATTR_TIMEOUT + 0.5)
    before = get_bytes(m)
    assert read_all(m.path / "f.bin") == new
    assert get_bytes(m) - before == len(new)
    assert wait_until(lambda: not any(old_etag in p.name for p in block_files(cache)), timeout=10), \
        "the replaced version's blocks were not reclaimed"
    wait_written(m, len(old) + len(new))
    assert m.unmount() == 0

    # Replaced while unmounted: the next mount reads the newest bytes.
    newest = random.Random(5).randbytes(2 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="f.bin", Body=newest)
    m2 = make_mount(bucket, options=disk_options(cache))
    assert read_all(m2.path / "f.bin") == newest
    assert get_bytes(m2) == len(newest)


def test_a_growing_log_costs_only_its_new_bytes(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    writer = make_mount(bucket, options={"disk_cache_size": "0"})
    reader = make_mount(bucket, options=disk_options(cache))
    rng = random.Random(6)
    content = rng.randbytes(2 * MiB + 1000)
    with open(writer.path / "log", "ab") as f:  # (a log: made through O_APPEND, by append upload)
        f.write(content)
    assert s3.head_object(Bucket=bucket, Key="log")["ContentLength"] == len(content)
    time.sleep(ATTR_TIMEOUT + 0.5)
    assert read_all(reader.path / "log") == content
    fetched = get_bytes(reader)
    assert fetched == len(content)

    def append(nbytes: int) -> None:
        nonlocal content
        more = rng.randbytes(nbytes)
        with open(writer.path / "log", "ab") as f:
            f.write(more)
        content += more
        assert s3.head_object(Bucket=bucket, Key="log")["ContentLength"] == len(content)
        time.sleep(ATTR_TIMEOUT + 0.5)

    append(1 * MiB + 300)
    assert read_all(reader.path / "log") == content
    assert get_bytes(reader) - fetched == 1 * MiB + 300, "more than the appended bytes were fetched"
    wait_written(reader, len(content))
    assert reader.unmount() == 0

    append(700 * 1024)
    again = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(again.path / "log") == content
    assert get_bytes(again) == 700 * 1024, "after a remount, more than the appended bytes were fetched"


def test_the_cache_never_holds_more_than_its_cap_on_disk(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    cap = 64 * MiB
    objects = {f"big{i}.bin": random.Random(10 + i).randbytes(50 * MiB) for i in range(4)}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    m = make_mount(bucket, options=disk_options(cache, disk_cache_size="64M", cache_size="8M", readahead="8M"))
    peak = 0
    done = threading.Event()

    def measure() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, du(cache))
            time.sleep(0.05)

    sampler = threading.Thread(target=measure)
    sampler.start()
    failures: list[str] = []

    def read(key: str) -> None:
        if hashlib.sha256(read_all(m.path / key)).digest() != hashlib.sha256(objects[key]).digest():
            failures.append(key)

    try:
        # Two passes: blocks that arrive while the disk is behind are not all
        # written, so one pass of 200 MiB need not write twice the cap.
        for _ in range(2):
            Path("/proc/sys/vm/drop_caches").write_text("1")  # (the second pass must reach zosfs)
            readers = [threading.Thread(target=read, args=(key,)) for key in objects]
            for t in readers:
                t.start()
            for t in readers:
                t.join()
        wait_until(lambda: m.stats()["disk_cache"]["evicted"] > 0, timeout=10)
        time.sleep(1)  # the last queued writes
    finally:
        done.set()
        sampler.join()
    assert not failures
    peak = max(peak, du(cache))
    stats = m.stats()["disk_cache"]
    assert stats["bytes_written"] > 2 * cap, stats  # it was filled more than twice over
    assert peak <= cap, f"du saw {peak} bytes in a cache capped at {cap}"
    assert stats["bytes"] <= cap


def test_a_damaged_block_file_is_fetched_again(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(7).randbytes(4 * MiB)
    s3.put_object(Bucket=bucket, Key="c.bin", Body=data)
    m = make_mount(bucket, options=disk_options(cache))
    assert read_all(m.path / "c.bin") == data
    wait_written(m, len(data))
    assert m.unmount() == 0
    files = block_files(cache)
    assert len(files) == 4
    flipped, torn = files[1], files[2]
    raw = bytearray(flipped.read_bytes())
    raw[-1000] ^= 0x01  # one bit of the data
    flipped.write_bytes(raw)
    os.truncate(torn, torn.stat().st_size - 10)  # a torn write

    m2 = make_mount(bucket, options=disk_options(cache))
    drop_page_cache()
    assert read_all(m2.path / "c.bin") == data
    assert get_bytes(m2) == 2 * MiB, "exactly the two damaged blocks are fetched again"
    assert "checksum" in m2.log_text()


def test_two_mounts_never_share_one_cache_directory_unsafely(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(8).randbytes(2 * MiB)
    s3.put_object(Bucket=bucket, Key="d.bin", Body=data)
    first = make_mount(bucket, options=disk_options(cache))
    second = make_mount(bucket, options=disk_options(cache))
    assert first.stats()["disk_cache"]["enabled"]
    refused = second.stats()["disk_cache"]
    assert not refused["enabled"] and "in use by another zosfs mount" in refused["reason"]
    assert "in use by another zosfs mount" in second.log_text()
    assert read_all(second.path / "d.bin") == data
    assert read_all(first.path / "d.bin") == data


def zosfs_cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "zosfs", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_zosfs_cache_shows_and_drops_a_files_blocks_and_stats_shows_the_disk_cache(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(9).randbytes(3 * MiB + 1)
    s3.put_object(Bucket=bucket, Key="dir/e.bin", Body=data)
    m = make_mount(bucket, options=disk_options(cache))
    assert read_all(m.path / "dir" / "e.bin") == data
    wait_written(m, len(data))
    assert f"disk {len(data)} bytes in 4 blocks" in zosfs_cli("cache", str(m.path / "dir"))
    assert "disk cache " in zosfs_cli("stats", str(m.path)) and "hit ratio" in zosfs_cli("stats", str(m.path))

    assert "memory 0 bytes in 0 blocks, disk 0 bytes in 0 blocks" in zosfs_cli("cache", "--drop", str(m.path / "dir" / "e.bin"))
    assert wait_until(lambda: not block_files(cache), timeout=10), "dropped blocks are still on disk"
    before = get_bytes(m)
    drop_page_cache()
    assert read_all(m.path / "dir" / "e.bin") == data
    assert get_bytes(m) - before == len(data)


def test_prefetch_whole_fetches_a_small_file_whole_on_its_first_read(bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    data = random.Random(11).randbytes(6 * MiB)
    s3.put_object(Bucket=bucket, Key="w.bin", Body=data)
    m = make_mount(bucket, options=disk_options(tmp_path / "dc", prefetch_whole="8M", readahead="1M"))
    with open(m.path / "w.bin", "rb", buffering=0) as f:
        assert f.read(4096) == data[:4096]
        assert wait_until(lambda: get_bytes(m) >= len(data), timeout=20), get_bytes(m)
    assert get_bytes(m) == len(data)
    wait_written(m, len(data))
    drop_page_cache()
    assert read_all(m.path / "w.bin") == data
    assert get_bytes(m) == len(data), "the whole-file prefetch did not keep the file"


def test_an_appendable_object_made_anew_and_larger_is_not_taken_for_an_append(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    """Deleted and written again by more appends to a larger size: the ETag
    count grew as an append's would, but the bytes are new; the old blocks
    must not be served."""
    writer = make_mount(bucket, options={"disk_cache_size": "0"})
    reader = make_mount(bucket, options=disk_options(tmp_path / "dc"))
    rng = random.Random(12)
    old = rng.randbytes(MiB + 5000)
    (writer.path / "r").write_bytes(old)
    time.sleep(ATTR_TIMEOUT + 0.5)
    assert read_all(reader.path / "r") == old
    os.unlink(writer.path / "r")
    new = rng.randbytes(2 * MiB + 7000)
    with open(writer.path / "r", "wb") as f:
        f.write(new[:MiB])
        f.flush()
        os.fsync(f.fileno())  # a first append, then a second one at close
        f.write(new[MiB:])
    assert s3.head_object(Bucket=bucket, Key="r")["ETag"].strip('"').endswith("-2")
    time.sleep(ATTR_TIMEOUT + 0.5)
    assert read_all(reader.path / "r") == new


def test_a_remount_with_another_block_size_never_reads_the_old_blocks_as_its_own(
        bucket: str, s3: Any, make_mount, tmp_path: Path) -> None:
    cache = tmp_path / "dc"
    data = random.Random(7).randbytes(6 * MiB + 99)
    s3.put_object(Bucket=bucket, Key="bs.bin", Body=data)
    first = make_mount(bucket, options=disk_options(cache))  # 1 MiB blocks
    assert read_all(first.path / "bs.bin") == data
    wait_settled(first, len(data), MiB)  # (the blocks on disk are what the next mount must not misread)
    assert first.unmount() == 0

    second = make_mount(bucket, options=disk_options(cache, block_size="2M", cache_size="8M", readahead="4M"))
    drop_page_cache()
    assert read_all(second.path / "bs.bin") == data
