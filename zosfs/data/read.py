"""The read path: ranged GETs through a block cache, with prefetching.

An object is read in fixed-size blocks (`block_size`, one ranged GET each),
kept in a `DataCache` (zosfs/data/cache: an LRU in memory within a byte
budget, in front of an optional cache on disk) keyed by (key, ETag, block
number): a changed object has a new ETag, so it can never be served stale
blocks. Blocks of an older version are reused for a newer one only when the
append ETag chain proves the newer one starts with the same bytes (`adopt`).
Every GET carries If-Match with that ETag, so a block can never come from a
newer version either: an object changed under an open handle reads as ESTALE
(EIO for the reader), never as a mix of two versions.

A handle that reads sequentially gets a readahead window that doubles with
each sequential read, up to `readahead` and to a share of the cache budget
(blocks fetched ahead must not evict each other before they are read); the
blocks in the window are fetched in parallel in the background. Random reads
fetch exactly the bytes asked for (rounded out to 64 KiB), bypassing the
cache. A global limit on blocks in flight bounds memory however many files
are read at once, and its FIFO queue shares the bandwidth between readers.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import logging
import mmap
import sys

import trio

from zosfs.data.cache import BlockId, DataCache, MemoryCache, MultiLevelCache, NoCache
from zosfs.data.cache.base import Block, new_block
from zosfs.fserror import FsError
from zosfs.zos import ZosClient, ZosError, next_append_etag

log = logging.getLogger(__name__)

RANDOM_ALIGN = 64 * 1024
ADOPT_WAIT = 30.0  # seconds a reader waits for another's check of older cached blocks
MAX_IN_FLIGHT = 8  # block GETs at once, for all readers together (more do not read faster)
# Evicted block buffers kept for reuse (memory beyond the budget): this many,
# plus one for each block being loaded (whose room, reserved before it is
# read, was most often made by evicting a block: that buffer is the one it
# fills). With two only, a burst of seven loads had five zero-filled anew:
# a read from the disk cache after a remount spent a fifth of its CPU on it.
SPARE_BUFFERS = 2


class _Fetch:
    """One block on its way: waiters wait for `done`, then find the block in
    the cache or the reason it failed here."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: ZosError | None = None


class BlockCache:
    """Fetches blocks of objects into a `DataCache` (memory, or memory in
    front of disk) and prefetches them for sequential readers."""

    def __init__(self, zos: ZosClient, budget: int, block_size: int, disk: DataCache | None = None,
                 prefetch_whole: int = 0) -> None:
        self.zos = zos
        self.budget = budget
        self.block_size = block_size
        self.prefetch_whole = prefetch_whole  # objects up to this size are prefetched whole on first read
        # Blocks being fetched at once, for all readers together, in FIFO
        # order (a fair share of the pipe). Their buffers count against the
        # budget (reserved before the GET): held plus in flight never exceed it.
        self.slots = trio.Semaphore(max(2, min(MAX_IN_FLIGHT, budget // block_size - 1)))
        self.spare: list[bytearray | mmap.mmap] = []  # evicted block buffers, for the next GETs and disk reads
        self.loading = 0  # blocks in `_load`: from their room's reservation to their arrival
        self.memory = MemoryCache(budget, self._recycle)
        self.disk: DataCache = disk or NoCache()
        self.cache: DataCache = MultiLevelCache(self.memory, self.disk) if disk is not None else self.memory
        if hasattr(disk, "on_written"):
            # A block evicted from memory while its disk write was queued
            # could not be reused then; it may be once written.
            disk.on_written = self._recycle_written  # type: ignore[union-attr]
        if hasattr(disk, "buffer_for"):
            disk.buffer_for = self.spare_for  # type: ignore[union-attr]
        self._inflight: dict[BlockId, _Fetch] = {}
        self._open: collections.Counter[tuple[str, str]] = collections.Counter()  # versions with open Readers
        self._adopting: dict[tuple[str, str], trio.Event] = {}  # versions whose older blocks are being checked
        self.hits = 0
        self.misses = 0
        self.readers = 0  # open Readers, which share the budget for their windows
        self.nursery: trio.Nursery | None = None  # for prefetches; set by the daemon

    @property
    def size(self) -> int:
        return self.memory.size

    def window_limit(self) -> int:
        """The largest readahead window one reader may have now: each reader's
        window plus the block it is reading fit in its share of the budget,
        so that blocks fetched ahead are not evicted by other readers' blocks
        fetched ahead before they are read (blocks read through go first)."""
        return max(self.block_size, self.budget // max(1, self.readers) - self.block_size)

    def consumed(self, key: str, etag: str, n: int) -> None:
        """A sequential reader has read past block `n`: memory keeps it last
        (the page cache and the disk tier have it)."""
        self.memory.demote((key, etag, n))

    def _length(self, n: int, object_size: int) -> int:
        return max(0, min(object_size, (n + 1) * self.block_size) - n * self.block_size)

    def cached(self, key: str, etag: str, n: int) -> bool:
        """Whether block `n` is held by any tier (possibly only a prefix of it)."""
        return self.cache.contains((key, etag, n))

    def opened(self, key: str, etag: str) -> None:
        """A reader begins on this version (its blocks are not renamed or dropped meanwhile)."""
        self._open[(key, etag)] += 1

    async def adopt(self, key: str, etag: str, size: int, appendable: bool) -> None:
        """Before the first read of a version: blocks cached for older versions
        of the object are filed under this one if it provably starts with the
        same bytes, else dropped (unless a reader of that version is open).
        Proof is RGW's append ETag chain: a metadata-only change (empty
        appends, `same_data`), or one append whose bytes, fetched here (they
        are needed anyway), chain the old ETag to the new one."""
        busy = self._adopting.get((key, etag))
        if busy is not None:
            with trio.move_on_after(ADOPT_WAIT):
                await busy.wait()
            return
        done = self._adopting[(key, etag)] = trio.Event()
        try:
            for old, blocks in self.cache.etags(key).items():
                if old == etag or not blocks or self._open[(key, old)]:
                    continue
                if same_data(old, etag) and all(n * self.block_size + ln <= size for n, ln in blocks):
                    self.cache.rename(key, old, etag)
                elif not (appendable and await self._appended_once(key, old, etag, blocks, size)):
                    self.cache.forget(key, old)
        finally:
            del self._adopting[(key, etag)]
            done.set()

    async def _appended_once(self, key: str, old: str, etag: str, blocks: list[tuple[int, int]], size: int) -> bool:
        """Whether `etag` is `old` plus one append (then the old blocks are
        filed under `etag` and the appended bytes cached); False if that
        cannot be shown cheaply."""
        bs = self.block_size
        last, length = blocks[-1]
        old_size = last * bs + length
        log.debug("cache: %r changed from %s (%d bytes cached) to %s (%d bytes)", key, old, old_size, etag, size)
        if _appends(etag) != _appends(old) + 1 or length >= bs or not old_size < size <= old_size + max(self.budget // 2, 2 * bs):
            return False  # (the old size is known only from a short last block)
        try:
            async with self.slots:
                tail = await self.zos.get(key, old_size, size, if_match=etag or None)
        except ZosError:
            return False
        digest = await trio.to_thread.run_sync(lambda: hashlib.md5(tail).hexdigest())
        if next_append_etag(old, digest) != etag or (last, length) not in self.cache.etags(key).get(old, []):
            return False
        log.debug("cache: %r grew by one append (%s -> %s); its cached prefix stays", key, old, etag)
        self.cache.rename(key, old, etag)
        head = await self.cache.get((key, etag, last))
        if head is not None and len(head) == length:
            await self.cache.wait_writable()
            self.cache.put((key, etag, last), bytes(head) + bytes(tail[: bs - length]))
        for n in range(last + 1, (size - 1) // bs + 1):
            lo = n * bs - old_size
            await self.cache.wait_writable()
            self.cache.put((key, etag, n), bytes(tail[lo : lo + bs]))
        return True

    def closed(self, key: str, etag: str) -> None:
        self._open[(key, etag)] -= 1
        if self._open[(key, etag)] <= 0:
            del self._open[(key, etag)]

    def store(self, key: str, etag: str, n: int, data: bytes | bytearray) -> None:
        """Block `n` of version `etag` of an object holds `data` (whole, or
        the object's last block). Only for data known to be exactly what the
        server holds under that ETag."""
        if data and len(data) <= self.block_size:
            self.cache.put((key, etag, n), data)

    @property
    def write_tier(self) -> DataCache:
        """Where the write path puts what it uploaded (zosfs/data/write/
        cachefeed.py): the disk tier if there is one, else memory. Not both:
        written data is in the kernel's page cache already, and filling the
        memory budget with it would add cache_size to the memory of a mount
        that only writes."""
        return self.memory if isinstance(self.disk, NoCache) else self.disk

    def store_first(self, key: str, etag: str, data: bytes | bytearray | memoryview, whole: bool) -> None:
        """Hook for the check of an open: `data` is block 0 of version `etag`
        (`whole`: all of it). Blocks of older versions no reader has open
        are then of no use: dropped at once, so that the first read does not
        try to chain them to this version (`adopt`) at the cost of a GET."""
        if whole:
            self.replaced(key, etag)
        self.store(key, etag, 0, bytes(data))

    def replaced(self, key: str, etag: str) -> None:
        """Version `etag` of an object is not made of any other version's
        bytes (a new object, or one replaced whole): drop the blocks of the
        others, unless a reader has one open."""
        for old in list(self.cache.etags(key)):
            if old != etag and not self._open[(key, old)]:
                self.cache.forget(key, old)

    def drop(self, key: str) -> int:
        """Drop every cached block of an object (all versions, all tiers)."""
        return self.cache.forget(key)

    def describe(self, key: str) -> dict[str, int]:
        """What the tiers hold of an object (all versions), for `zosfs cache`."""
        counts = {}
        for tier, name in ((self.memory, "memory"), (self.disk, "disk")):
            blocks = [ln for held in tier.etags(key).values() for _, ln in held]
            counts[f"{name}_blocks"], counts[f"{name}_bytes"] = len(blocks), sum(blocks)
        return counts

    async def block(self, key: str, etag: str, n: int, object_size: int) -> bytes | bytearray:
        """Block `n` of an object, from the cache or the server."""
        bid = (key, etag, n)
        want = self._length(n, object_size)
        data = self.cache.peek(bid)
        if data is not None and len(data) == want:
            self.hits += 1
            return data
        self.misses += 1
        while True:
            fetch = self._inflight.get(bid)
            if fetch is None:
                await self._fetch(bid, object_size)
            else:
                await fetch.done.wait()
                if fetch.error is not None:
                    raise fetch.error
            data = self.cache.peek(bid)
            if data is not None and len(data) == want:
                return data
            # A prefetch that gave up (its reader left, or it failed: the
            # error is raised by our own fetch), or a block already evicted
            # by other readers: fetch it (again).

    def prefetch(self, key: str, etag: str, n: int, object_size: int, still_wanted: trio.Event) -> None:
        """Fetch a block in the background unless in memory or on its way.
        `still_wanted` is set when the reader went away before its turn."""
        bid = (key, etag, n)
        data = self.cache.peek(bid)
        if (data is not None and len(data) == self._length(n, object_size)) or bid in self._inflight or self.nursery is None:
            return
        self._inflight[bid] = _Fetch()
        self.nursery.start_soon(self._prefetch, bid, object_size, still_wanted)

    async def _prefetch(self, bid: BlockId, object_size: int, cancelled: trio.Event) -> None:
        fetch = self._inflight[bid]
        try:
            async with self.slots:
                if cancelled.is_set():
                    return
                await self._load(bid, object_size)
        except ZosError as err:
            log.debug("prefetch of %r block %d failed: %s", bid[0], bid[2], err)
        finally:
            del self._inflight[bid]
            fetch.done.set()

    async def _fetch(self, bid: BlockId, object_size: int) -> None:
        fetch = self._inflight[bid] = _Fetch()
        try:
            async with self.slots:
                await self._load(bid, object_size)
        except ZosError as err:
            fetch.error = err  # for those who wait for this fetch
            raise
        finally:
            del self._inflight[bid]
            fetch.done.set()

    async def _load(self, bid: BlockId, object_size: int) -> None:
        """Bring a block into memory: from the disk tier, or from the server
        (only the bytes past a cached prefix, for an object that grew)."""
        key, etag, n = bid
        start = n * self.block_size
        end = min(object_size, start + self.block_size)
        # The block's room is taken from the budget before it is read from
        # disk or fetched (evicting first: a recycled buffer may come of it).
        # No waiting for the disk tier to catch up with its writes: a GET is
        # never slowed by the disk.
        self.loading += 1
        self.memory.reserve(end - start)
        reserved = True
        try:
            prefix = self.memory.peek(bid)
            if prefix is None:
                prefix = await self.disk.get(bid)
            if prefix is not None and len(prefix) == end - start:
                # A disk hit lands in memory, in the room reserved for it:
                # putting it while still reserved would count it twice and
                # evict a block fetched ahead and not yet read (every block
                # of a warm read was then read from disk twice).
                self.memory.release(end - start)
                reserved = False
                self.memory.put(bid, prefix)
                return
            if prefix is not None and len(prefix) > end - start:
                prefix = None  # cannot be: not this version's block
            have = len(prefix) if prefix is not None else 0
            buf = self.spare.pop() if end - start == self.block_size and self.spare else new_block(end - start)
            try:
                await self.zos.get(key, start + have, end, if_match=etag or None, into=memoryview(buf)[have:])
            except BaseException:
                self._recycle(buf, callers=1)
                raise
        finally:
            self.loading -= 1
            del self.spare[SPARE_BUFFERS + self.loading :]  # (beyond what the loads still running may use)
            if reserved:
                self.memory.release(end - start)
        if prefix is not None:
            buf[:have] = prefix
        self.cache.put(bid, buf)

    def spare_for(self, length: int) -> bytearray | mmap.mmap | None:
        """A recycled buffer for a read of a whole block (from the disk tier,
        or from staging by the write feed), if one is spare."""
        return self.spare.pop() if length == self.block_size and self.spare else None

    def _recycle_written(self, buf: Block) -> None:
        self._recycle(buf, callers=1)

    def _recycle(self, buf: Block, callers: int = 1) -> None:
        """Keep an evicted full-size buffer for reuse: a fresh 4 MiB buffer
        costs a zero-fill and a thousand page faults (half the CPU of a cold
        read). Only if no reader still holds it (a memoryview of it in flight
        to the kernel, a GET still filling it, or a disk write, holds a
        reference), and at most a few. `callers`: the references our callers
        hold (the memory tier's eviction, or a failed GET's frame). At most
        SPARE_BUFFERS, plus one per block being loaded."""
        if (
            isinstance(buf, (bytearray, mmap.mmap))
            and len(buf) == self.block_size
            and sys.getrefcount(buf) <= callers + 2  # (+ our argument, getrefcount's own)
            and len(self.spare) < SPARE_BUFFERS + self.loading
        ):
            self.spare.append(buf)

    def forget(self, key: str, etag: str, nblocks: int) -> None:
        """Drop the blocks of one version of an object (it changed)."""
        self.cache.forget(key, etag)


def _appends(etag: str) -> int:
    """How many appends an appendable object's ETag says made it (1 for a plain MD5)."""
    digest, _, count = etag.partition("-")
    if len(digest) != 32:
        return 0
    return int(count) if count.isdigit() else (0 if count else 1)


class Reader:
    """One open handle's reads of one version of an object."""

    def __init__(self, cache: BlockCache, key: str, etag: str, size: int, max_window: int,
                 appendable: bool = False) -> None:
        self.cache = cache
        self.key = key
        self.etag = etag
        self.size = size
        self.max_window = max_window
        self.next_offset = 0
        self.window = 0
        self.prefetched = -1  # highest block number asked for in advance
        self.consumed_upto = 0  # blocks below this were read through sequentially
        self.gone = trio.Event()  # set on close: queued prefetches are dropped
        self.appendable = appendable
        self.adopted = False  # older versions' blocks checked (on the first read)
        cache.readers += 1
        cache.opened(key, etag)

    def close(self) -> None:
        if not self.gone.is_set():
            self.gone.set()
            self.cache.readers -= 1
            self.cache.closed(self.key, self.etag)

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes [offset, offset+length) of the object, short at its end."""
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        if not self.adopted:
            self.adopted = True
            await self.cache.adopt(self.key, self.etag, self.size, self.appendable)
            if self.size <= self.cache.prefetch_whole:
                self.prefetched = (self.size - 1) // self.cache.block_size
                for n in range(self.prefetched + 1):
                    self.cache.prefetch(self.key, self.etag, n, self.size, self.gone)
        bs = self.cache.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        sequential = self.next_offset - bs <= offset <= self.next_offset + max(self.window, bs)
        self.next_offset = offset + length
        if sequential:
            # The first window already covers two blocks: a file read from its
            # start is most often read whole, and the first block's GET alone
            # would leave the pipe half empty until it arrives.
            self.window = min(self.max_window, self.cache.window_limit(), max(2 * bs, self.window * 2))
            self._prefetch_ahead(last, offset + length)
            for n in range(max(0, self.consumed_upto), first):
                self.cache.consumed(self.key, self.etag, n)
            self.consumed_upto = max(self.consumed_upto, first)
        else:
            self.window = 0
            if not any(self.cache.cached(self.key, self.etag, n) for n in range(first, last + 1)):
                return await self._read_direct(offset, length)
        return await self._assemble(offset, length, first, last)

    def _prefetch_ahead(self, last: int, end: int) -> None:
        bs = self.cache.block_size
        final = (self.size - 1) // bs
        upto = min(final, (end + self.window - 1) // bs)
        for n in range(max(last + 1, self.prefetched + 1), upto + 1):
            self.cache.prefetch(self.key, self.etag, n, self.size, self.gone)
        self.prefetched = max(self.prefetched, upto)

    async def _assemble(self, offset: int, length: int, first: int, last: int) -> bytes | memoryview:
        bs = self.cache.block_size
        try:
            if first == last:
                block = await self.cache.block(self.key, self.etag, first, self.size)
                start = offset - first * bs
                return memoryview(block)[start : start + length]
            blocks: dict[int, bytes | bytearray] = {}
            errors: list[ZosError] = []

            async def fetch(n: int) -> None:
                try:
                    blocks[n] = await self.cache.block(self.key, self.etag, n, self.size)
                except ZosError as err:  # (raised inside the nursery it would be wrapped in a group)
                    errors.append(err)

            async with trio.open_nursery() as nursery:
                for n in range(first, last + 1):
                    nursery.start_soon(fetch, n)
            if errors:
                raise errors[0]
        except ZosError as err:
            raise _read_error(self.key, err) from None
        out = bytearray()
        for n in range(first, last + 1):
            block = blocks[n]
            lo = max(offset, n * bs) - n * bs
            hi = min(offset + length, (n + 1) * bs) - n * bs
            out += memoryview(block)[lo:hi]
        return out

    async def _read_direct(self, offset: int, length: int) -> bytes | memoryview:
        """A random read: fetch just these bytes (aligned out a little)."""
        start = offset - offset % RANDOM_ALIGN
        end = min(self.size, -(-(offset + length) // RANDOM_ALIGN) * RANDOM_ALIGN)
        try:
            async with self.cache.slots:
                data = await self.cache.zos.get(self.key, start, end, if_match=self.etag or None)
        except ZosError as err:
            raise _read_error(self.key, err) from None
        return memoryview(data)[offset - start : offset - start + length]


EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def same_data(old_etag: str, new_etag: str, max_appends: int = 16) -> bool:
    """Whether an object whose ETag went from `old_etag` to `new_etag` still
    holds the same bytes: a metadata change of an appendable object (chmod,
    touch, tags) is a zero-length append, which moves the running-hash ETag
    on without changing the data. (A copy of a normal object keeps its ETag.)"""
    if not old_etag:
        return False
    etag = old_etag
    for _ in range(max_appends):
        etag = next_append_etag(etag, EMPTY_MD5)
        if etag == new_etag:
            return True
    return False


def _read_error(key: str, err: ZosError) -> FsError:
    """The errno a reader sees, with the reason for the log."""
    if err.code == "PreconditionFailed" or err.errno == errno.ESTALE:
        return FsError(errno.EIO, f"{key!r} changed on the server while open; reopen it to read the new version")
    if err.errno == errno.ENOENT:
        return FsError(errno.EIO, f"{key!r} was deleted on the server while open")
    if err.code == "InvalidObjectState":
        return FsError(errno.EAGAIN, f"{key!r} is archived; restore it first: setfattr -n user.zos.restore -v 'days=1' FILE")
    return FsError(err.errno, str(err))
