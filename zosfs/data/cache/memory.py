"""The in-memory tier: an LRU of blocks within a byte budget.

Evicted full-size buffers go to a recycler (the fetcher reuses them for the
next GETs: a fresh buffer costs a zero-fill and page faults). A per-object
index of the blocks held lets the read path find older versions of an
object (to reuse the prefix of an appended object, or to drop them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cachetools

from zosfs.data.cache.base import Block, BlockId, DataCache


class _LRU(cachetools.LRUCache):
    """The LRU of blocks, telling its owner what it evicts."""

    def __init__(self, maxsize: int, evicted: Callable[[BlockId, Block], None]) -> None:
        super().__init__(maxsize, getsizeof=len)
        self._evicted = evicted

    def popitem(self) -> tuple[BlockId, Block]:
        key, value = super().popitem()
        self._evicted(key, value)
        return key, value


class MemoryCache(DataCache):
    """Blocks in memory, least recently used first out."""

    def __init__(self, budget: int, recycle: Callable[[Block], None] = lambda _: None) -> None:
        self._recycle = recycle
        self.blocks = _LRU(budget, self._evicted)
        self._index: dict[str, dict[str, set[int]]] = {}  # key -> etag -> block indexes

    def _evicted(self, bid: BlockId, data: Block) -> None:
        self._unindex(bid)
        self._recycle(data)

    def _unindex(self, bid: BlockId) -> None:
        key, etag, n = bid
        versions = self._index.get(key)
        if versions is None or etag not in versions:
            return
        versions[etag].discard(n)
        if not versions[etag]:
            del versions[etag]
            if not versions:
                del self._index[key]

    def contains(self, bid: BlockId) -> bool:
        return bid in self.blocks

    def peek(self, bid: BlockId) -> Block | None:
        """The block if held (marks it recently used); no await needed."""
        return self.blocks.get(bid)

    async def get(self, bid: BlockId) -> Block | None:
        return self.blocks.get(bid)

    def put(self, bid: BlockId, data: Block) -> None:
        if len(data) > self.blocks.maxsize:
            return
        self.blocks[bid] = data
        self._index.setdefault(bid[0], {}).setdefault(bid[1], set()).add(bid[2])

    def forget(self, key: str, etag: str | None = None) -> int:
        versions = self._index.get(key, {})
        dropped = 0
        for e in [etag] if etag is not None else list(versions):
            for n in list(versions.get(e, ())):
                if self.blocks.pop((key, e, n), None) is not None:
                    dropped += 1
                self._unindex((key, e, n))
        return dropped

    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        return {
            etag: sorted((n, len(self.blocks[(key, etag, n)])) for n in ns if (key, etag, n) in self.blocks)
            for etag, ns in self._index.get(key, {}).items()
        }

    def rename(self, key: str, old_etag: str, new_etag: str) -> None:
        for n in sorted(self._index.get(key, {}).get(old_etag, ())):
            data = self.blocks.pop((key, old_etag, n), None)
            self._unindex((key, old_etag, n))
            if data is not None:
                self.put((key, new_etag, n), data)

    @property
    def size(self) -> int:
        return int(self.blocks.currsize)

    @property
    def cap(self) -> int:
        return int(self.blocks.maxsize)

    def stats(self) -> dict[str, Any]:
        return {"bytes": self.size, "blocks": len(self.blocks)}
