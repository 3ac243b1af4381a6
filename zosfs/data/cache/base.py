"""The interface every block cache implements (memory, disk, both).

A block is a slice of one version of an object: it is keyed by the object's
key, the ETag of the version it was fetched from, and its index (offset /
block_size). A cache never serves a block for another ETag than the one it
was stored under, so a replaced object cannot be read stale from it. The
only exception is explicit: `rename` moves the blocks of a version to a
newer ETag when the caller knows the newer version starts with the same
bytes (an append, or a metadata-only change of an appendable object), or
that a block holds those bytes in the newer version (the write path, which
knows what it uploaded).
"""

from __future__ import annotations

import mmap
from abc import ABC, abstractmethod
from typing import Any

BlockId = tuple[str, str, int]  # object key, ETag, block index
Block = bytes | bytearray | mmap.mmap  # (mmap: an anonymous map a disk read filled)


MAP_FROM = 1024 * 1024  # buffers from this size on are anonymous maps
HUGE = 2 * 1024 * 1024  # ... and from this size on, asked to be backed by huge pages


def new_block(length: int) -> bytearray | mmap.mmap:
    """A writable buffer for a block of `length` bytes. A large one is an
    anonymous map: the kernel zero-fills its pages as a read or a GET fills
    them, without the GIL; `bytearray(length)` zero-fills the whole buffer
    holding it (8 MiB stalled the FUSE handlers on the trio thread)."""
    if length < MAP_FROM:
        return bytearray(length)
    buf = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE)
    if length >= HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return buf


class DataCache(ABC):
    """Blocks of objects, bounded by a byte budget (`cap`)."""

    @abstractmethod
    def contains(self, bid: BlockId) -> bool:
        """Whether the block is cached (no I/O; may be wrong if a block on
        disk turns out corrupt, which `get` then reports as a miss)."""

    @abstractmethod
    def peek(self, bid: BlockId) -> Block | None:
        """The block if it can be had without I/O (from memory), else None."""

    @abstractmethod
    async def get(self, bid: BlockId) -> Block | None:
        """The block, or None (not cached, or found damaged and dropped)."""

    @abstractmethod
    def put(self, bid: BlockId, data: Block) -> None:
        """Keep a block (evicting others to stay within `cap`). Never blocks:
        slow work (a disk write) happens in the background. `data` must not
        be changed afterwards by the caller."""

    async def wait_writable(self) -> None:
        """Wait (briefly, bounded) until a `put` would not be dropped because
        the cache is behind with its writes; the fetcher calls it before a
        GET, so that fetching slows down to what the cache can keep."""

    @abstractmethod
    def forget(self, key: str, etag: str | None = None) -> int:
        """Drop the blocks of one version of an object (all versions if
        `etag` is None); the number of blocks dropped."""

    @abstractmethod
    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        """The versions of `key` that have blocks here: ETag -> sorted
        [(block index, block length)]."""

    @abstractmethod
    def rename(self, key: str, old_etag: str, new_etag: str, only: set[int] | None = None) -> None:
        """File the blocks of (key, old_etag) under new_etag (`only`: just
        the blocks with these indexes)."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes held now."""

    @property
    @abstractmethod
    def cap(self) -> int:
        """Bytes it may hold at most."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Numbers for `zosfs stats`."""


class NoCache(DataCache):
    """A cache that holds nothing (a tier turned off)."""

    def contains(self, bid: BlockId) -> bool:
        return False

    def peek(self, bid: BlockId) -> Block | None:
        return None

    async def get(self, bid: BlockId) -> Block | None:
        return None

    def put(self, bid: BlockId, data: Block) -> None:
        pass

    def forget(self, key: str, etag: str | None = None) -> int:
        return 0

    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        return {}

    def rename(self, key: str, old_etag: str, new_etag: str, only: set[int] | None = None) -> None:
        pass

    @property
    def size(self) -> int:
        return 0

    @property
    def cap(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return {"enabled": False}
