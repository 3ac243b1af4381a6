"""Writes feed the block cache: what this mount uploads is cached under the
identity the upload produced, so that reading it back costs no GET.

Its one job: after an upload succeeded (an append, a PUT, a part of a
multipart upload), copy the bytes it carried from the staging file into the
block cache (its disk tier, or memory if it has none: see
`BlockCache.write_tier`), in the background, one block at a time, in order
per object; and file blocks under the ETag the object has now.

Only bytes that are certainly what that version of the object holds are
stored: every job carries a `Watch` begun before its upload, and a block
any byte of which was written (or truncated away) since, or freed from
staging meanwhile, is skipped, as is a block that is neither whole nor the
object's last (a short block is only ever used as a prefix by the read
path). An append moves the blocks of the version before it to the new ETag
(the object is the same bytes plus new ones: RGW's append ETag chain) and
completes the block that straddled the old end from the cached head of that
block. A part's blocks wait under a provisional name (`provisional_etag`:
upload, part number and part ETag) until the upload completes; a part
copied on the server takes the blocks of the version it copied. When the
upload completes, the blocks of the parts it was completed with are filed
under its ETag, the others dropped (and all of them if it is aborted). A
replacement (PUT, completed rebuild, a new object) drops the blocks of the
versions it replaced. A failed upload queues nothing.

Appended bytes and uploaded parts of new files are punched out of staging
once uploaded (staging.py): the job that reads them runs that punch
(`after`) when done, so that it never reads a hole (a writer that leaves
append mode punches at once what its jobs have not read yet). A job reads through its
own duplicate of the staging descriptor (the writer may close, and staging
be discarded, before it runs). Bounds: at most FEED_BACKLOG bytes queued per
object (PART_BACKLOG for parts; beyond, a job only moves blocks, and
punches at once); a job whose bytes wait for it to leave staging reads
nothing if it waited FEED_MAX_AGE for its turn; one block read at a time per object and
FEED_SLOTS at a time for the mount, each waiting (bounded) for the disk tier
to catch up rather than piling blocks up in memory. A writer is never made
to wait for any of it. The copying (reading staging, writing block files) runs in one
thread at a low scheduling priority (zosfs/lowprio.py): it costs about as
much CPU as staging the write did, and takes only the CPU left over.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from zosfs.data.cache import DiskCache
from zosfs.data.cache.base import Block, new_block
from zosfs.data.write.state import Watch
from zosfs.lowprio import run_low

if TYPE_CHECKING:
    from zosfs.data.read import BlockCache
    from zosfs.data.write.registry import WritePath
    from zosfs.data.write.writer import Writer

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)

MiB = 1024 * 1024
FEED_BACKLOG = 256 * MiB  # bytes queued for the cache per object, at most
# Parts wait for their job to free them from staging, and a writer streaming
# a new file is held while too little of it is freed (Replace.behind): a few
# parts queued at most, beyond which parts are not cached.
PART_BACKLOG = 64 * MiB
FEED_MAX_AGE = 5.0  # seconds a job that holds bytes in staging may wait for its turn; then they are not read
FEED_SLOTS = 2  # blocks read from staging at once (in the low-priority thread), for the whole mount


Move = tuple[str, str, int, int]  # blocks of one version filed under another: (from, to, lo, hi)


@dataclass
class _Job:
    """Version `etag` (`size` bytes) of object `key` holds staging's bytes
    in `ranges` (unless changed since `watch` began). First, the blocks of
    other versions in `moves` that lie within [lo, hi) are filed under
    another (the bytes are the same there), those of versions in `drops`
    are dropped, and with `replaces` every other version no reader has
    open is dropped."""

    writer: Writer
    key: str
    etag: str
    size: int
    ranges: list[tuple[int, int]]
    watch: Watch
    moves: list[Move] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    replaces: bool = False
    fd: int = -1
    after: Callable[[], None] | None = None
    frees_parts: bool = False  # `after` frees an uploaded part from staging (see CacheFeeds.queued)
    queued_at: float = field(default_factory=trio.current_time)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(e - s for s, e in self.ranges)


def provisional_etag(upload_id: str, number: int, part_etag: str) -> str:
    """The name under which the blocks of one uploaded part wait for its
    multipart upload to complete: no object has an ETag ending in "-0"."""
    return hashlib.md5(f"{upload_id}/{number}/{part_etag}".encode()).hexdigest() + "-0"


class CacheFeeds:
    """The queues of a mount's write-fed cache jobs, one per object key, and
    the parts of multipart uploads whose blocks wait for their completion."""

    def __init__(self, path: WritePath) -> None:
        self.path = path  # (its nursery runs the jobs)
        self.blocks: BlockCache | None = None  # set by the daemon; None: writes feed nothing
        self._queues: dict[str, collections.deque[_Job]] = {}
        self._queued: collections.Counter[str] = collections.Counter()  # bytes queued per key
        self._freeing: collections.Counter[str] = collections.Counter()  # of which parts that wait to be freed
        self._parts: dict[str, dict[int, set[str]]] = {}  # upload id -> part number -> part ETags cached
        self._slots = trio.Semaphore(FEED_SLOTS)
        self._idle = trio.Event()
        self._idle.set()
        self.stored_blocks = self.stored_bytes = self.skipped_blocks = self.skipped_jobs = 0

    # -- what the write path calls ----------------------------------------------------

    def uploaded(self, w: Writer, etag: str, size: int, ranges: list[tuple[int, int]], since: Watch, *,
                 base: str | None = "", moves: list[Move] | None = None, drops: list[str] | None = None,
                 after: Callable[[], None] | None = None, backlog: int = FEED_BACKLOG) -> None:
        """An upload made version `etag` (`size` bytes) of `w`'s object, which
        holds staging's bytes in `ranges` except where changed since `since`
        began (call this with no await since the upload's answer, so that no
        change can slip between `since` and the job's own watch). `base`: the
        ETag of the version whose bytes the new one begins with (an append:
        its blocks move to `etag`), "" if it replaced the object whole (the
        other versions' blocks are dropped), None if it is not an object's
        version (a part: see `part_uploaded`). `after` runs once the bytes
        were read (at once if they are not read). No more than `backlog`
        bytes are queued for the object: beyond that the bytes are not read."""
        key = w.path.ns.key(w.inode)
        # Only a file's first cache_writes bytes: copying a bulk write slows
        # it (the copy's CPU is the server's on a small machine), and a bulk
        # upload is seldom read back at once.
        limit = min(size, self.path.opts.cache_writes)
        ranges = [(s, min(e, limit)) for s, e in ranges if s < min(e, limit)]
        if self.blocks is None or self.path.nursery is None or not etag:
            if after is not None:
                after()
            return
        # A watch of our own, taking over what the upload's saw: no change
        # can come between (no await), so none is missed.
        watch = w.watch()
        for s, e in since.changed:
            watch.changed.add(s, e)
        if since.truncated_to is not None:
            watch.truncated(since.truncated_to)
        moves = list(moves or [])
        if base:
            moves.insert(0, (base, etag, 0, size))
        job = _Job(w, key, etag, size, ranges, watch, moves, list(drops or []), base == "", after=after)
        if job.nbytes and self._queued[key] + job.nbytes > backlog:
            job.ranges, job.nbytes = [], 0  # (behind: the bytes are not read, the moves still made)
            self.skipped_jobs += 1
        if job.nbytes and w.staged is not None:
            try:
                job.fd = os.dup(w.staged.fd)
            except OSError as err:
                log.debug("not caching what was uploaded of %r: %s", key, err)
                job.ranges, job.nbytes = [], 0
        else:
            job.ranges, job.nbytes = [], 0
        if not job.nbytes and job.after is not None:
            job.after()  # (nothing to read: staging may let go of the bytes now)
            job.after = None
        job.frees_parts = job.after is not None and base is None
        self._queued[key] += job.nbytes
        self._freeing[key] += job.nbytes if job.frees_parts else 0
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = collections.deque([job])
        if self._idle.is_set():
            self._idle = trio.Event()
        self.path.nursery.start_soon(self._run, key)

    def part_uploaded(self, w: Writer, upload_id: str, number: int, part_etag: str, start: int, end: int,
                      since: Watch, after: Callable[[], None] | None = None) -> None:
        """Part `number` of a multipart upload was sent from staging's
        [start, end): its blocks are cached under a provisional name, and
        filed under the object's ETag if the upload completes with this part
        (`completed`). Parts never hold back a writer (see PART_BACKLOG)."""
        if self.blocks is not None:
            self._parts.setdefault(upload_id, {}).setdefault(number, set()).add(part_etag)
        self.uploaded(w, provisional_etag(upload_id, number, part_etag), end, [(start, end)], since, base=None,
                      after=after, backlog=PART_BACKLOG)

    def part_copied(self, w: Writer, upload_id: str, number: int, part_etag: str, start: int, end: int,
                    source: str) -> None:
        """Part `number` was copied on the server from [start, end) of
        version `source` of the object: the blocks of that version within
        it are the part's."""
        if self.blocks is None or not source:
            return
        self._parts.setdefault(upload_id, {}).setdefault(number, set()).add(part_etag)
        self.uploaded(w, provisional_etag(upload_id, number, part_etag), end, [], Watch(), base=None,
                      moves=[(source, provisional_etag(upload_id, number, part_etag), start, end)])

    def completed(self, w: Writer, upload_id: str, parts: list[tuple[int, str]], etag: str, size: int) -> None:
        """A multipart upload completed with `parts` ((number, ETag)) as
        version `etag`: the blocks of those parts are that version's; those
        of parts uploaded and then replaced are dropped."""
        cached = self._parts.pop(upload_id, {})
        final = dict(parts)
        moves: list[Move] = []
        drops = []
        for number, etags in cached.items():
            for part_etag in etags:
                name = provisional_etag(upload_id, number, part_etag)
                if final.get(number) == part_etag:
                    moves.append((name, etag, 0, size))
                else:
                    drops.append(name)
        if moves or drops:
            self.uploaded(w, etag, size, [], Watch(), base=None, moves=moves, drops=drops)

    def aborted(self, w: Writer, upload_id: str) -> None:
        """A multipart upload was aborted: its parts' blocks are of no use."""
        cached = self._parts.pop(upload_id, {})
        drops = [provisional_etag(upload_id, n, e) for n, etags in cached.items() for e in etags]
        if drops:
            self.uploaded(w, drops[0], 0, [], Watch(), base=None, drops=drops)

    def release_now(self, w: Writer) -> None:
        """`w` leaves append mode: its appended bytes that wait to be copied
        leave staging at once (only in append mode may they: see
        AppendUpload._release_appended), and are not copied (a copy under
        way finds them gone, and stores nothing of them)."""
        key = w.path.ns.key(w.inode)
        for job in self._queues.get(key, ()):
            if job.writer is w and job.after is not None and not job.frees_parts:
                after, job.after = job.after, None
                self._queued[key] -= job.nbytes
                job.ranges, job.nbytes = [], 0
                after()

    def holds_appended(self, w: Writer) -> bool:
        """Whether appended bytes of `w` wait for a job to free them from staging."""
        return bool(self._queues) and any(job.writer is w and job.after is not None and not job.frees_parts
                   for job in self._queues.get(w.path.ns.key(w.inode), ()))

    def queued(self, w: Writer) -> int:
        """Bytes of uploaded parts of `w`'s object that wait to be cached before they are freed from staging."""
        return self._freeing.get(w.path.ns.key(w.inode), 0)

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return sum(len(q) for q in self._queues.values())

    async def drain(self) -> None:
        """Wait until every queued job is done."""
        await self._idle.wait()

    def stats(self) -> dict[str, Any]:
        return {"stored_blocks": self.stored_blocks, "stored_bytes": self.stored_bytes,
                "skipped_blocks": self.skipped_blocks, "skipped_uploads": self.skipped_jobs,
                "pending": self.pending}

    # -- the jobs -------------------------------------------------------------------------

    async def _run(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                job = queue[0]
                try:
                    await self._feed(job)
                except Exception:  # a bug must not end the mount: the cache is best effort
                    log.exception("caching what was uploaded of %r failed", key)
                finally:
                    queue.popleft()
                    self._queued[key] -= job.nbytes
                    self._freeing[key] -= job.nbytes if job.frees_parts else 0
                    self._finish(job)
        finally:
            for job in queue:  # (cancelled: the mount stops)
                self._finish(job)
            del self._queues[key]
            del self._queued[key]
            self._freeing.pop(key, None)
            if not self._queues:
                self._idle.set()

    def _finish(self, job: _Job) -> None:
        if job.fd >= 0:
            os.close(job.fd)
            job.fd = -1
        try:
            job.writer.unwatch(job.watch)
        except ValueError:
            pass  # (never registered)
        if job.after is not None:
            after, job.after = job.after, None
            try:
                after()
            except OSError as err:
                log.warning("freeing uploaded data from staging failed: %s", err)

    async def _feed(self, job: _Job) -> None:
        assert self.blocks is not None
        reads = self.blocks
        cache, bs = reads.cache, reads.block_size
        for old, new, lo, hi in job.moves:
            if old != new:
                held = cache.etags(job.key).get(old, [])
                cache.rename(job.key, old, new, {n for n, ln in held if lo <= n * bs and n * bs + ln <= hi})
        for old in job.drops:
            cache.forget(job.key, old)
        if job.replaces:
            reads.replaced(job.key, job.etag)  # (the blocks of the version it replaced are of no use)
        if job.ranges and job.after is not None and trio.current_time() - job.queued_at > FEED_MAX_AGE:
            self.skipped_jobs += 1  # (far behind: staging must not hold the bytes any longer)
            return
        tier = reads.write_tier
        for start, end in job.ranges:
            for n in range(start // bs, -(-end // bs)):
                lo, hi = n * bs, min((n + 1) * bs, job.size)
                s, e = max(lo, start), min(hi, end)
                if e < hi or job.writer.discarded:
                    self.skipped_blocks += 1  # (not whole, not the object's end; or the file is gone)
                    continue
                head: bytes | bytearray = b""
                if s > lo:
                    # The block began before these bytes: its head is this
                    # version's already (moved here from the previous one).
                    got = await tier.get((job.key, job.etag, n))
                    if got is None or len(got) != s - lo:
                        self.skipped_blocks += 1
                        continue
                    head = got
                async with self._slots:
                    await tier.wait_writable()
                    data = await run_low(_pread_block, job.fd, e - s, s, reads.spare_for(e - s))
                watch, w = job.watch, job.writer
                if (len(data) != e - s or watch.changed.overlaps(s, e) or not w.local.covers(s, e)
                        or (watch.truncated_to is not None and e > watch.truncated_to) or w.discarded):
                    # Changed since the upload (not this version's bytes), or
                    # freed from staging meanwhile (a part that holds them
                    # went out): the read may have met the hole.
                    self.skipped_blocks += 1
                    continue
                block = bytes(head) + data if head else data
                if len(block) <= bs:
                    if isinstance(tier, DiskCache):
                        tier.put((job.key, job.etag, n), block, low=True)
                    else:
                        tier.put((job.key, job.etag, n), block)
                    if tier is reads.memory and len(block) == bs:
                        reads.consumed(job.key, job.etag, n)  # (first to go: the page cache has it)
                    self.stored_blocks += 1
                    self.stored_bytes += len(data)


def _pread_block(fd: int, length: int, offset: int, spare: bytearray | mmap.mmap | None) -> Block:
    """Up to `length` bytes of staging at `offset`, in `spare` (a recycled
    block buffer of that length) or a new one (`new_block`: a page-aligned
    map for a large block, which the disk tier writes with O_DIRECT without
    copying it through its bounce buffer)."""
    buf = spare if spare is not None else new_block(length)
    got = os.preadv(fd, [buf], offset) if length else 0
    return buf if got == length else bytes(memoryview(buf)[:got])
