"""The disk tier in-process: cap, LRU order, rebuild by scan, checksums, renames, lock, write-behind."""

from __future__ import annotations

import mmap
import os
import random
from pathlib import Path

import pytest
import trio

from zosfs.data.cache import diskqueue
from zosfs.data.cache.disk import CacheLocked, DiskCache, open_disk_cache
from zosfs.data.cache.memory import MemoryCache
from zosfs.data.cache.multilevel import MultiLevelCache

KiB = 1024
MiB = 1024 * KiB
MD5 = "0123456789abcdef0123456789abcdef"


def run(cache: DiskCache, work) -> object:  # type: ignore[no-untyped-def]
    """Run `work(cache)` with the cache's writer task, then let it drain."""
    async def main() -> object:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.run)
            result = await work(cache)
            await cache.drain()
            nursery.cancel_scope.cancel()
        return result
    return trio.run(main)


async def read_block(cache: DiskCache, bid: tuple[str, str, int]) -> bytes | None:
    """A block's bytes as the disk tier gives them back (a buffer: a large
    one is an anonymous map, which does not compare equal to bytes)."""
    data = await cache.get(bid)
    return None if data is None else bytes(data)


def mapped(data: bytes) -> bytes | mmap.mmap:
    """`data` in an anonymous map (page-aligned: written without the bounce buffer)."""
    if not data:
        return data  # (a map cannot be empty)
    m = mmap.mmap(-1, len(data))
    m[:] = data
    return m


def files_size(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir())


def test_many_puts_at_once_never_exceed_the_cap_and_evict_least_recently_used(tmp_path: Path) -> None:
    cache = DiskCache(str(tmp_path), 1024 * KiB, "ns")
    cache.scan()
    blocks = {n: random.Random(n).randbytes(100 * KiB) for n in range(40)}
    peak = 0

    async def work(c: DiskCache) -> None:
        nonlocal peak
        async def one(n: int) -> None:
            nonlocal peak
            await c.wait_writable()
            c.put(("k", MD5, n), blocks[n])
            peak = max(peak, files_size(tmp_path))
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(one, n)

    run(cache, work)
    assert max(peak, files_size(tmp_path)) <= 1024 * KiB
    held = [n for n in range(40) if cache.contains(("k", MD5, n))]
    assert 5 <= len(held) < 10

    async def read_back(c: DiskCache) -> list[bytes | None]:
        return [await read_block(c, ("k", MD5, n)) for n in held]
    assert run(cache, read_back) == [blocks[n] for n in held]
    cache.close()


def test_a_scan_rebuilds_the_index_and_damaged_files_are_misses(tmp_path: Path) -> None:
    cache = DiskCache(str(tmp_path), 10 * 1024 * KiB, "ns")
    cache.scan()
    data = [random.Random(n).randbytes(64 * KiB) for n in range(3)]

    async def fill(c: DiskCache) -> None:
        for n, d in enumerate(data):
            await c.wait_writable()
            c.put(("key", MD5, n), d)
    run(cache, fill)
    cache.close()
    files = sorted(tmp_path.glob("*.blk"))
    raw = bytearray(files[0].read_bytes())
    raw[-1] ^= 0x80
    files[0].write_bytes(raw)

    again = DiskCache(str(tmp_path), 10 * 1024 * KiB, "ns")
    again.scan()
    assert all(again.contains(("key", MD5, n)) for n in range(3))

    async def read(c: DiskCache) -> list[bytes | None]:
        return [await read_block(c, ("key", MD5, n)) for n in range(3)]
    got = run(again, read)
    broken = [n for n in range(3) if got[n] is None]
    assert len(broken) == 1 and all(got[n] == data[n] for n in range(3) if n not in broken)
    assert again.corrupt == 1 and not files[0].exists()
    # Another namespace (another bucket) never sees these blocks.
    again.close()
    other = DiskCache(str(tmp_path), 10 * 1024 * KiB, "other")
    other.scan()
    assert not other.contains(("key", MD5, 1))
    other.close()


def test_rename_files_blocks_under_the_new_etag_and_forget_removes_them(tmp_path: Path) -> None:
    cache = DiskCache(str(tmp_path), 10 * 1024 * KiB, "ns")
    cache.scan()
    new = MD5[:-1] + "0-2"

    async def work(c: DiskCache) -> tuple[bytes | None, bytes | None]:
        c.put(("k", MD5, 0), b"x" * 1000)
        c.rename("k", MD5, new)
        return await read_block(c, ("k", MD5, 0)), await read_block(c, ("k", new, 0))
    assert run(cache, work) == (None, b"x" * 1000)
    assert cache.etags("k") == {new: [(0, 1000)]}
    cache.forget("k")

    async def settle(c: DiskCache) -> None:
        pass
    run(cache, settle)
    assert not list(tmp_path.glob("*.blk")) and cache.used == 0
    cache.close()


def test_a_second_owner_is_refused_clearly(tmp_path: Path) -> None:
    first, why = open_disk_cache(str(tmp_path), 1024 * KiB, "ns")
    assert first is not None and why == ""
    with pytest.raises(CacheLocked, match=f"in use by another zosfs mount \\(pid {os.getpid()}\\)"):
        DiskCache(str(tmp_path), 1024 * KiB, "ns")
    second, why = open_disk_cache(str(tmp_path), 1024 * KiB, "ns")
    assert second is None and "in use" in why
    assert open_disk_cache(str(tmp_path / "x"), 0, "ns") == (None, "off (disk_cache_size=0)")
    first.close()


@pytest.mark.parametrize("direct", [True, False], ids=["O_DIRECT", "buffered"])
def test_direct_and_buffered_writes_make_the_same_files(tmp_path: Path, direct: bool) -> None:
    """Blocks of every length (a partial last piece of the bounce buffer, an
    empty block, more than one bounce buffer), in bytes, bytearrays and
    anonymous maps (written straight from the map), read back intact, in files of
    the size the index charges for, whichever way they were written (the
    buffered way is what a filesystem without O_DIRECT gets)."""
    cache = DiskCache(str(tmp_path), 64 * 1024 * KiB, "ns")
    cache.scan()
    cache._files.direct = direct  # (tmp_path takes O_DIRECT: the other path is forced here)
    lengths = [0, 1, 4095, 4096, 4097, 1024 * KiB, 2 * 1024 * KiB + 123, 5, 3 * 4096 + 5]
    blocks = {n: random.Random(n).randbytes(length) for n, length in enumerate(lengths)}

    async def fill(c: DiskCache) -> list[bytes | None]:
        for n, data in blocks.items():
            await c.wait_writable()
            c.put(("key", MD5, n), (data, bytearray(data), mapped(data))[n % 3])
        await c.drain()
        return [await read_block(c, ("key", MD5, n)) for n in blocks]
    assert run(cache, fill) == list(blocks.values())
    assert cache._files.direct is direct
    sizes = sorted(p.stat().st_size - length for p, length in
                   zip(sorted(tmp_path.glob("*.blk"), key=lambda p: int(p.name.split(".")[2])), lengths))
    assert sizes == [4096] * len(lengths)  # the header's 4 KiB, then exactly the data
    assert sum(p.stat().st_blocks * 512 for p in tmp_path.glob("*.blk")) <= cache.used
    cache.close()
    again = DiskCache(str(tmp_path), 64 * 1024 * KiB, "ns")
    again.scan()
    assert all(again.contains(("key", MD5, n)) for n in blocks)
    again.close()


def test_blocks_arriving_faster_than_the_disk_writes_are_all_queued_within_the_write_behind_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block memory still holds costs the disk queue nothing, so every one
    is queued however far behind the writer is; blocks memory evicts before
    the writer gets to them are still written up to WRITE_BEHIND bytes, and
    only those past it are skipped (the memory the queue holds alone stays
    bounded)."""
    monkeypatch.setattr(diskqueue, "WRITE_BEHIND", 3 * MiB)
    disk = DiskCache(str(tmp_path), 64 * MiB, "ns")
    disk.scan()
    memory = MemoryCache(4 * MiB)
    both = MultiLevelCache(memory, disk)
    blocks = {n: random.Random(n).randbytes(MiB) for n in range(12)}
    alone_peak = 0

    async def main() -> list[bytes | None]:
        nonlocal alone_peak
        for n, data in blocks.items():  # (the writer is not running yet: as far behind as can be)
            both.put(("k", MD5, n), mapped(data))
            alone_peak = max(alone_peak, disk._alone())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(disk.run)
            await disk.drain()
            nursery.cancel_scope.cancel()
        return [await read_block(disk, ("k", MD5, n)) for n in blocks]

    got = trio.run(main)
    on_disk = [n for n in blocks if got[n] is not None]
    assert all(got[n] == blocks[n] for n in on_disk)
    assert set(range(8, 12)) <= set(on_disk), "the blocks memory held were not all written"
    assert len(on_disk) == 4 + 3 and disk.skipped == 12 - 7
    assert disk.bytes_written == 7 * MiB
    assert alone_peak <= 3 * MiB
    disk.close()


def test_files_and_index_agree_after_overlapping_writes_replacements_renames_and_forgets(tmp_path: Path) -> None:
    """Writes run two at once; whatever is queued meanwhile (a block written
    again longer or shorter, renamed to a newer ETag, forgotten, evicted for
    room), the files left are exactly the blocks the index holds, each with
    the bytes and length the index says, and none of a forgotten version."""
    cache = DiskCache(str(tmp_path), 6 * MiB, "ns")
    cache.scan()
    rng = random.Random(11)
    newer = MD5[:-1] + "0-2"
    base = {(f"k{k}", n): random.Random(100 * k + n).randbytes(MiB) for k in range(3) for n in range(6)}
    alive: set[tuple[str, str, int]] = set()  # blocks put (or renamed) and not forgotten since

    async def storm(c: DiskCache) -> None:
        for step in range(300):
            key, n = f"k{rng.randrange(3)}", rng.randrange(6)
            action = rng.random()
            if action < 0.7:  # (a block's bytes are its version's: a longer one extends a shorter one)
                c.put((key, MD5, n), mapped(base[(key, n)][:rng.choice([MiB, MiB // 2 + 1, 4096, 100])]))
                alive.add((key, MD5, n))
            elif action < 0.85:
                c.rename(key, MD5, newer)
                alive.update({(k, newer, i) for k, e, i in alive if k == key and e == MD5})
                alive.difference_update({b for b in alive if b[0] == key and b[1] == MD5})
            else:
                c.forget(key)
                alive.difference_update({b for b in alive if b[0] == key})
            if step % 7 == 0:
                await trio.sleep(0)  # (let the worker start some of it meanwhile)
        await c.drain()
        for n in range(3):  # (and some blocks surely held at the end)
            c.put(("k0", MD5, n), mapped(base[("k0", n)]))
            alive.add(("k0", MD5, n))
        await c.drain()

    run(cache, storm)
    held = {(k, e, n): length
            for k in ("k0", "k1", "k2") for e, blocks in cache.etags(k).items() for n, length in blocks}
    assert set(held) <= alive and len(held) >= 3
    assert len(list(tmp_path.glob("*.blk"))) == cache.blocks == len(held)
    assert not list(tmp_path.glob(".tmp-*"))

    async def read_back(c: DiskCache) -> dict[tuple[str, str, int], bytes | None]:
        return {b: await read_block(c, b) for b in sorted(held)}
    assert run(cache, read_back) == {b: base[(b[0], b[2])][:held[b]] for b in sorted(held)}
    assert cache.corrupt == 0 and cache.used <= 6 * MiB
    cache.close()
