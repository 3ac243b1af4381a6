"""Memory in front of disk: one cache made of two tiers.

A block is looked up in memory, then on disk (a disk hit is copied into
memory); a new block goes into both (to disk in the background). Forgetting
and renaming apply to both tiers.

Fetching never waits for the disk: every new block is queued for the disk
at once, and the disk tier bounds only what its queue holds that memory no
longer does (disk.py: a block evicted from memory while far behind is not
written; the disk cache is best effort, a read never pays for it).
"""

from __future__ import annotations

from typing import Any

from zosfs.data.cache.base import Block, BlockId, DataCache
from zosfs.data.cache.disk import DiskCache
from zosfs.data.cache.memory import MemoryCache


class MultiLevelCache(DataCache):
    """`memory` first, then `disk`."""

    def __init__(self, memory: MemoryCache, disk: DataCache) -> None:
        self.memory = memory
        self.disk = disk
        if isinstance(disk, DiskCache):
            disk.held = lambda bid, data: memory.blocks.get(bid) is data
            memory.on_evict = disk.released

    def contains(self, bid: BlockId) -> bool:
        return self.memory.contains(bid) or self.disk.contains(bid)

    def peek(self, bid: BlockId) -> Block | None:
        return self.memory.peek(bid)

    async def get(self, bid: BlockId) -> Block | None:
        data = self.memory.peek(bid)
        if data is not None:
            return data
        data = await self.disk.get(bid)
        if data is not None:
            self.memory.put(bid, data)
        return data

    def put(self, bid: BlockId, data: Block) -> None:
        self.memory.put(bid, data)  # (first: the disk tier asks whether memory holds it)
        self.disk.put(bid, data)

    async def wait_writable(self) -> None:
        await self.disk.wait_writable()

    def forget(self, key: str, etag: str | None = None) -> int:
        return self.memory.forget(key, etag) + self.disk.forget(key, etag)

    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        merged: dict[str, dict[int, int]] = {}
        for tier in (self.memory, self.disk):
            for etag, blocks in tier.etags(key).items():
                for n, length in blocks:
                    merged.setdefault(etag, {})[n] = max(length, merged.get(etag, {}).get(n, 0))
        return {etag: sorted(blocks.items()) for etag, blocks in merged.items()}

    def rename(self, key: str, old_etag: str, new_etag: str, only: set[int] | None = None) -> None:
        self.memory.rename(key, old_etag, new_etag, only)
        self.disk.rename(key, old_etag, new_etag, only)

    @property
    def size(self) -> int:
        return self.memory.size + self.disk.size

    @property
    def cap(self) -> int:
        return self.memory.cap + self.disk.cap

    def stats(self) -> dict[str, Any]:
        return {"memory": self.memory.stats(), "disk": self.disk.stats()}
