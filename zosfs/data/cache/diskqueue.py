"""The disk tier's queue of file changes (writes, unlinks, renames) and the
task that applies them (part of DiskCache, disk.py).

Changes start in the order they were queued. Writes of blocks overlap, two
at a time (LANES), each in its own thread; any other change, and a write of
a block whose file is still being written, waits for the writes it touches
to end, so the files of one block change in order. (A write mostly waits
for the disk, which a cold read's server shares: one batch at a time fell
behind a 650 MiB/s read whenever one write of a batch took 100 ms.)

Fetching never waits for the disk. A block queued for writing costs no
memory of its own while the memory tier still holds its buffer (`held`), so
every fetched block is queued, however far behind the writer is; only the
buffers the queue alone keeps (memory evicted them before their write
ended, or the write path's blocks, which memory never held) are bounded, by
WRITE_BEHIND bytes: past that, a block memory evicts is dropped from the
queue (`skipped`), and a `put` of a block memory does not hold is refused.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import trio

from zosfs.data.cache.base import Block, BlockId
from zosfs.lowprio import run_low

MiB = 1024 * 1024
WRITE_BEHIND = 32 * MiB  # bytes of queued blocks only the queue holds (beyond the memory budget)
MAX_QUEUED_WRITES = 256  # blocks queued at most (each held by memory, or within WRITE_BEHIND)
LANES = 2  # writes at once (the low-priority thread's: one)
WRITABLE_WAIT = 5.0  # seconds a fetch waits for the disk to catch up before its block skips the disk

Entry = tuple[str, str, int]  # key hash, ETag, block index


class Write:
    """A block queued for writing (mutable: a queued write can be dropped)."""

    __slots__ = ("entry", "bid", "name", "data", "low")

    def __init__(self, entry: Entry, bid: BlockId, name: bytes, data: Block, low: bool) -> None:
        self.entry, self.bid, self.name, self.data, self.low = entry, bid, name, data, low


class FileQueue:
    """The queue and its worker; DiskCache supplies the index and the files."""

    # (DiskCache's, used here:)
    _lru: collections.OrderedDict[Entry, tuple[int, int]]
    skipped: int
    bytes_written: int

    def _unindex(self, entry: Entry) -> None:
        raise NotImplementedError

    def _write(self, entry: Entry, name: bytes, data: Block) -> bool:
        raise NotImplementedError

    def _apply(self, kind: str, what: Any) -> None:
        raise NotImplementedError

    def _init_queue(self) -> None:
        self._jobs: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._queued: dict[Write, None] = {}  # writes not started yet, in order
        self._writing: list[Write] = []  # writes under way
        self._written = trio.Event()  # set whenever a queued change was done
        self._unsettled: collections.Counter[Entry] = collections.Counter()  # entries whose file is not in place yet
        # Whether the memory tier holds this very buffer for this block
        # (then a queued write of it costs no memory of its own).
        self.held: Callable[[BlockId, Block], bool] = lambda bid, data: False
        # Called with each written block's buffer, which the disk tier no
        # longer holds: the read path reuses it if no one else does.
        self.on_written: Callable[[Block], None] = lambda data: None

    def _queue(self, kind: str, what: Any) -> None:
        if kind == "write":
            self._queued[what] = None
        self._unsettled.update(_touched(kind, what))
        self._jobs.append((kind, what))
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    # -- write-behind -----------------------------------------------------------------

    def _alone(self) -> int:
        """Bytes of queued and running writes whose buffers only the queue
        holds now (beyond the memory budget)."""
        return sum(len(w.data) for ws in (self._writing, self._queued) for w in ws if not self.held(w.bid, w.data))

    def queue_full(self, bid: BlockId, data: Block) -> bool:
        """Whether a write of this block is refused now."""
        return len(self._queued) >= MAX_QUEUED_WRITES or (not self.held(bid, data) and self._alone() >= WRITE_BEHIND)

    @property
    def behind(self) -> bool:
        """Whether a `put` of a block memory does not hold would be refused now."""
        return self._alone() >= WRITE_BEHIND or len(self._queued) >= MAX_QUEUED_WRITES

    def released(self, bid: BlockId, data: Block) -> None:
        """The memory tier let go of `data` (block `bid`): if its write has
        not started and the queue holds too much alone, the block is not
        written (dropped from the queue, its buffer freed)."""
        for write in self._queued:
            if write.data is data and write.bid == bid:
                break
        else:
            return
        if self._alone() <= WRITE_BEHIND:
            return
        del self._queued[write]
        self._jobs.remove(("write", write))
        self._unsettled.subtract([write.entry])
        self._unsettled = +self._unsettled
        newer = any(w.entry == write.entry for ws in (self._queued, self._writing) for w in ws)
        if write.entry in self._lru and not newer:
            self._unindex(write.entry)  # (unless a newer write of this entry is on its way)
        self.skipped += 1
        self._written.set()  # (a `get` waiting for this entry's file finds it gone)

    def _settled_event(self) -> trio.Event:
        """Set when the worker next finishes a change."""
        if self._written.is_set():
            self._written = trio.Event()
        return self._written

    async def wait_writable(self) -> None:
        with trio.move_on_after(WRITABLE_WAIT):
            while self.behind:
                await self._settled_event().wait()

    # -- the worker -------------------------------------------------------------------

    async def run(self) -> None:
        """Apply queued file changes, in order (writes overlapping), in threads."""
        async with trio.open_nursery() as nursery:
            while True:
                if not self._jobs:
                    if not self._writing:
                        self._idle.set()
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                kind, what = self._jobs[0]
                if not self._may_start(kind, what):
                    await self._settled_event().wait()
                    continue
                self._jobs.popleft()
                if kind == "write":
                    del self._queued[what]
                    self._writing.append(what)
                    nursery.start_soon(self._write_one, what)
                    continue
                try:
                    await trio.to_thread.run_sync(self._apply, kind, what)
                finally:
                    self._settle(_touched(kind, what))

    def _may_start(self, kind: str, what: Any) -> bool:
        """Whether the next change may start now: no write under way touches
        its files, and (a write) a lane is free."""
        busy = {w.entry for w in self._writing}
        if kind == "write":
            lanes = 1 if what.low else LANES
            return what.entry not in busy and sum(w.low == what.low for w in self._writing) < lanes
        return not busy.intersection(_touched(kind, what) + _sources(kind, what))

    async def _write_one(self, write: Write) -> None:
        ok = False
        try:
            if write.low:
                ok = await run_low(self._write, write.entry, write.name, write.data)
            else:
                ok = await trio.to_thread.run_sync(self._write, write.entry, write.name, write.data)
        finally:
            self._writing.remove(write)
            self._settle([write.entry])
            if ok:
                self.bytes_written += len(write.data)
            elif write.entry in self._lru and write.entry not in self._unsettled:
                self._unindex(write.entry)  # the write failed (disk full?): no such block
            if not self._jobs and not self._writing:
                self._idle.set()
        self.on_written(_buffer(write))

    async def drain(self) -> None:
        """Wait until every queued change is on disk."""
        await self._idle.wait()

    def _settle(self, entries: list[Entry]) -> None:
        """A change was done (or failed): its entries are no longer unsettled."""
        self._unsettled.subtract(entries)
        self._unsettled = +self._unsettled  # (drops the zeros)
        self._written.set()


def _buffer(write: Write) -> Block:
    """A done write's buffer, which the write no longer holds."""
    data, write.data = write.data, b""
    return data


def _touched(kind: str, what: Any) -> list[Entry]:
    """The entries whose files a queued change puts in place."""
    if kind == "write":
        return [what.entry]
    if kind == "rename":
        return [new for _, new in what]
    return []


def _sources(kind: str, what: Any) -> list[Entry]:
    """The entries whose files a queued change removes or moves away."""
    if kind == "unlink":
        return list(what)
    if kind == "rename":
        return [old for old, _ in what]
    return []
