"""The in-memory tier: an LRU of blocks within a byte budget.

Evicted full-size buffers go to a recycler (the fetcher reuses them for the
next GETs: a fresh buffer costs a zero-fill and page faults). A per-object
index of the blocks held lets the read path find older versions of an
object (to reuse the prefix of an appended object, or to drop them).
A block a sequential reader has read past can be demoted to the cold end:
the kernel's page cache and the disk tier hold it now, and the memory is
better spent on blocks fetched ahead and not yet read.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from zosfs.data.cache.base import Block, BlockId, DataCache


class MemoryCache(DataCache):
    """Blocks in memory, least recently used first out."""

    def __init__(self, budget: int, recycle: Callable[[Block], None] = lambda _: None) -> None:
        self._recycle = recycle
        self._cap = budget
        self._used = 0
        self._reserved = 0  # bytes of blocks on their way (GETs in flight), held to the same budget
        # Least recently used first; `demote` moves a block to the front.
        self.blocks: collections.OrderedDict[BlockId, Block] = collections.OrderedDict()
        self._index: dict[str, dict[str, set[int]]] = {}  # key -> etag -> block indexes
        # Told of each block evicted for room (before its buffer is recycled):
        # the disk tier may still have it queued for writing.
        self.on_evict: Callable[[BlockId, Block], None] = lambda bid, data: None

    def _make_room(self, nbytes: int) -> None:
        while self.blocks and self._used + self._reserved + nbytes > self._cap:
            bid, data = self.blocks.popitem(last=False)
            self._used -= len(data)
            self._unindex(bid)
            self.on_evict(bid, data)
            self._recycle(data)  # (our `data` is the one reference the recycler is told of)

    def _pop(self, bid: BlockId) -> Block | None:
        data = self.blocks.pop(bid, None)
        if data is not None:
            self._used -= len(data)
        self._unindex(bid)
        return data

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
        data = self.blocks.get(bid)
        if data is not None:
            self.blocks.move_to_end(bid)
        return data

    async def get(self, bid: BlockId) -> Block | None:
        return self.peek(bid)

    def put(self, bid: BlockId, data: Block) -> None:
        if len(data) > self._cap:
            return
        old = self._pop(bid)
        del old
        self._make_room(len(data))
        self.blocks[bid] = data
        self._used += len(data)
        self._index.setdefault(bid[0], {}).setdefault(bid[1], set()).add(bid[2])

    def reserve(self, nbytes: int) -> None:
        """Make room now for a block about to be fetched (`release` when it
        arrives or fails): blocks held plus blocks in flight stay within the
        budget, least recently used (and demoted) blocks going first."""
        self._make_room(nbytes)
        self._reserved += nbytes

    def release(self, nbytes: int) -> None:
        self._reserved -= nbytes

    def demote(self, bid: BlockId) -> None:
        """Make a block the first to go when room is needed (it was read
        through and is unlikely to be wanted from memory again soon)."""
        if bid in self.blocks:
            self.blocks.move_to_end(bid, last=False)

    def forget(self, key: str, etag: str | None = None) -> int:
        versions = self._index.get(key, {})
        dropped = 0
        for e in [etag] if etag is not None else list(versions):
            for n in list(versions.get(e, ())):
                if self._pop((key, e, n)) is not None:
                    dropped += 1
        return dropped

    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        return {
            etag: sorted((n, len(self.blocks[(key, etag, n)])) for n in ns if (key, etag, n) in self.blocks)
            for etag, ns in self._index.get(key, {}).items()
        }

    def rename(self, key: str, old_etag: str, new_etag: str, only: set[int] | None = None) -> None:
        for n in sorted(self._index.get(key, {}).get(old_etag, ())):
            if only is not None and n not in only:
                continue
            data = self._pop((key, old_etag, n))
            if data is not None:
                self.put((key, new_etag, n), data)

    @property
    def size(self) -> int:
        return self._used

    @property
    def cap(self) -> int:
        return self._cap

    def stats(self) -> dict[str, Any]:
        return {"bytes": self.size, "blocks": len(self.blocks)}
