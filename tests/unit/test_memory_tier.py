"""The memory tier and the block cache's memory budget, in-process."""

from __future__ import annotations

import trio

from zosfs.data import read as read_module
from zosfs.data.cache.base import Block, BlockId, NoCache
from zosfs.data.cache.memory import MemoryCache
from zosfs.data.read import BlockCache

MiB = 1024 * 1024
BS = 1 * MiB


def block(fill: int) -> bytearray:
    return bytearray([fill]) * BS


def test_the_cache_stays_within_its_budget_and_evicts_least_recently_used_first() -> None:
    cache = MemoryCache(3 * BS)
    for n in range(3):
        cache.put(("k", "e", n), block(n))
    assert cache.peek(("k", "e", 0)) is not None  # 0 is now the most recently used
    cache.put(("k", "e", 3), block(3))
    assert cache.size == 3 * BS
    assert not cache.contains(("k", "e", 1))
    assert [cache.contains(("k", "e", n)) for n in (0, 2, 3)] == [True, True, True]
    assert cache.etags("k") == {"e": [(0, BS), (2, BS), (3, BS)]}


def test_a_block_read_through_goes_before_blocks_not_yet_read() -> None:
    cache = MemoryCache(3 * BS)
    for n in range(3):  # 0 is being read; 1 and 2 were fetched ahead
        cache.put(("k", "e", n), block(n))
    cache.peek(("k", "e", 0))
    cache.demote(("k", "e", 0))  # the reader moved on to block 1
    cache.put(("k", "e", 3), block(3))
    assert not cache.contains(("k", "e", 0))
    assert all(cache.contains(("k", "e", n)) for n in (1, 2, 3))


def test_forget_and_rename_keep_the_byte_count() -> None:
    cache = MemoryCache(4 * BS)
    for n in range(3):
        cache.put(("k", "old", n), block(n))
    cache.rename("k", "old", "new")
    assert cache.etags("k") == {"new": [(0, BS), (1, BS), (2, BS)]}
    assert cache.size == 3 * BS
    assert cache.forget("k") == 3
    assert cache.size == 0 and not cache.etags("k")


def test_blocks_in_flight_count_against_the_budget() -> None:
    cache = MemoryCache(4 * BS)
    for n in range(4):
        cache.put(("k", "e", n), block(n))
    cache.demote(("k", "e", 2))
    cache.reserve(2 * BS)  # two GETs start: the demoted block, then the oldest, make room
    assert [cache.contains(("k", "e", n)) for n in range(4)] == [False, True, False, True]
    cache.release(BS)
    cache.put(("k", "e", 4), block(4))  # one arrived; the other is still reserved
    assert cache.size == 3 * BS and all(cache.contains(("k", "e", n)) for n in (1, 3, 4))
    cache.put(("k", "e", 5), block(5))  # over budget with the one still reserved: the oldest goes
    assert cache.size == 3 * BS and not cache.contains(("k", "e", 1))


def test_evicted_buffers_are_reused_and_the_default_budget_bounds_gets_in_flight() -> None:
    reads = BlockCache(None, 64 * MiB, 8 * MiB)  # type: ignore[arg-type]  (no GETs here)
    assert reads.slots.value == 7  # the budget's blocks, less the one a reader is reading
    assert reads.memory.cap == 64 * MiB
    small = BlockCache(None, 4 * BS, BS)  # type: ignore[arg-type]
    held = small.memory.cap // BS
    for n in range(held + 3):
        small.memory.put(("k", "e", n), bytearray(BS))
    assert small.memory.size <= small.memory.cap
    assert len(small.spare) == 2  # evicted buffers nobody else holds are kept, at most two
    assert all(len(b) == BS for b in small.spare)


def test_a_burst_of_loads_reuses_the_buffers_it_evicts_instead_of_zero_filling_new_ones(monkeypatch) -> None:
    """Each load reserves its room before it reads, evicting a block: that
    buffer is the one it fills. With only two kept spare, a burst of seven
    loads (the default GETs in flight) had five buffers mapped and zero-filled
    anew; a read from the disk cache after a remount spent a fifth of the
    daemon's CPU on that."""
    made = []

    def counting_new_block(length: int) -> bytearray:
        made.append(length)
        return bytearray(length)

    monkeypatch.setattr(read_module, "new_block", counting_new_block)

    class SlowZos:
        async def get(self, key: str, start: int, end: int, *, if_match: str | None = None,
                      into: memoryview | None = None) -> memoryview:
            await trio.sleep(0.01)  # (all seven are on their way at once)
            assert into is not None
            into[: end - start] = bytes([start // BS % 251]) * (end - start)
            return into

    class EmptyDisk(NoCache):
        """A disk tier that holds none of these blocks, and (as the real one
        does, in a thread) yields before it says so."""

        async def get(self, bid: BlockId) -> Block | None:
            await trio.lowlevel.checkpoint()
            return None

    cache = BlockCache(SlowZos(), 8 * BS, BS, disk=EmptyDisk())  # type: ignore[arg-type]
    size = 32 * BS

    async def burst(first: int) -> None:
        async with trio.open_nursery() as nursery:
            for n in range(first, first + cache.slots.value):
                nursery.start_soon(cache.block, "k", "e", n, size)

    async def main() -> None:
        for n in range(8):  # the budget fills
            await cache.block("k", "e", n, size)
        assert len(made) == 8
        await burst(8)
        await burst(15)
        assert await cache.block("k", "e", 20, size) == bytes([20]) * BS

    trio.run(main)
    assert cache.slots.value == 7
    assert len(made) == 8, f"{len(made) - 8} buffers made anew for two bursts of 7 loads"
    assert len(cache.spare) <= 2  # (no load running: the idle allowance only)
